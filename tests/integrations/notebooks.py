"""A real Jupyter kernel for tests: notebooks written with nbformat, cells run through nbclient and
ipykernel, one kernel per ``with Kernel(...)`` block (its end is the kernel's end: atexit runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from ..conftest import script_env


def write_notebook(path: Path, cells: list[str]) -> Path:
    """Save a notebook of code cells, as a user's frontend would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, str(path))
    return path


class Kernel:
    """One ipykernel whose working directory is ``cwd``; ``env`` adds to the test environment
    (``JPY_SESSION_NAME``: the notebook path, as Jupyter server sets it)."""

    def __init__(self, cwd: Path, **env: str) -> None:
        self._nb = nbformat.v4.new_notebook()
        self._client = NotebookClient(
            self._nb,
            kernel_name="python3",
            timeout=120,
            resources={"metadata": {"path": str(cwd)}},
        )
        self._env = script_env(**env)
        self._context: Any = None

    def __enter__(self) -> Kernel:
        self._context = self._client.setup_kernel(env=self._env)
        self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)  # a graceful shutdown: the kernel's atexit handlers run

    def run(self, source: str, *, error: bool = False) -> str:
        """Execute one cell; return what it printed. ``error``: the cell is expected to raise."""
        cell = nbformat.v4.new_code_cell(source)
        self._nb.cells.append(cell)
        try:
            self._client.execute_cell(cell, len(self._nb.cells) - 1)
        except CellExecutionError as exc:
            if not error:
                raise AssertionError(f"cell failed:\n{source}\n{exc}") from None
            return str(exc)
        if error:
            raise AssertionError(f"cell did not raise:\n{source}")
        return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")

    def run_all(self, notebook: Path) -> None:
        """Execute every code cell of a saved notebook, in order (Run All)."""
        for cell in nbformat.read(str(notebook), as_version=4).cells:
            if cell.cell_type == "code":
                self.run(cell.source)

    def value(self, expression: str) -> Any:
        """The JSON value of an expression evaluated in the kernel."""
        text = self.run(f"import json as _json\nprint(_json.dumps({expression}, default=str))")
        return json.loads(text.strip().splitlines()[-1])
