"""Runs recorded from a Jupyter kernel or an IPython shell (docs/notebooks.md).

- **Project.** The notebook's git repository: the notebook's directory when the frontend says
  where the notebook is (VS Code's ``__vsc_ipynb_file__``, Jupyter server's ``JPY_SESSION_NAME``;
  else, in a kernel, the only ``.ipynb`` of the working directory), else the kernel's working
  directory; never ``sys.argv[0]`` (``ipykernel_launcher`` in site-packages).
- **A run spans cells**: from the first retrolog call to ``retrolog.commit()`` or the kernel's
  end. A cell that raises does not end it; the run ends ``failed`` (``interrupted`` for a
  KeyboardInterrupt) naming the last such cell, and that cell's code is left out of its script
  (an interrupted cell's is kept: it ran as written until it was stopped).
- **Version.** The working tree is snapshotted at the run's start as for a script; at its end the
  cells the kernel executed (in execution order, from IPython's history: every cell since the
  kernel started except those of earlier runs of this kernel) are added as ``<nb>.ipynb.py``
  (``cells.py``), the run's script, which replay propagates into and executes as a script.

Code run by ``%run train.py`` (or ``ipython train.py``) is a script run, as outside IPython: it
ends with the cell that ran it. Nothing here imports IPython; it is only used when running.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._warn import warn_once
from ..project import Project
from ..record.session import RunSession
from .cells import Cell, cells_script, notebook_cells, script_path
from .locate import _notebook, cell_code_calling, shell

INTERACTIVE = "<interactive>"
SESSION_SCRIPT = "ipython_session.py"  # the executed code of a run whose notebook is unknown
_watcher: CellWatcher | None = None


# -- executed cells ---------------------------------------------------------------------------
@dataclass
class Executed:
    """One executed cell: its raw source, its ``In [n]`` number (None when IPython kept no
    history of it) and, when it raised, ``Kind: message`` and whether it was interrupted."""

    source: str
    number: int | None = None
    error: str | None = None
    interrupted: bool = False

    @property
    def label(self) -> str:
        return f"cell [{self.number}]" if self.number is not None else "a cell"


class CellWatcher:
    """The cells this shell executed, in order: those before ``import retrolog`` from IPython's
    history (counted as having succeeded: nobody watched them), the later ones from the
    ``pre_run_cell``/``post_run_cell`` events (with their errors); and which cells belong to runs
    that ended. Positions in ``cells`` identify cells (cells run without history have no number)."""

    def __init__(self, sh: Any) -> None:
        self.shell = sh
        self.cells: list[Executed] = []
        self.current: int | None = None  # the position of the cell executing now
        self.claimed: set[int] = set()  # positions of the cells of runs that ended
        self.run_open = False  # a run of cells (NotebookSession) is open: set by the session
        try:
            history = list(sh.history_manager.input_hist_raw)
        except Exception:
            history = [""]
        self.cells = [Executed(source, n) for n, source in enumerate(history) if n]
        count = getattr(sh, "execution_count", None)
        if self.cells and isinstance(count, int) and len(history) == count + 1:
            self.current = len(self.cells) - 1  # this cell (the import's) is in the history
        sh.events.register("pre_run_cell", self._before_cell)
        sh.events.register("post_run_cell", self._after_cell)

    def _before_cell(self, info: Any) -> None:
        stored = getattr(info, "store_history", False)
        number = getattr(self.shell, "execution_count", None) if stored else None
        self.cells.append(Executed(str(getattr(info, "raw_cell", "")), number))
        self.current = len(self.cells) - 1

    def _after_cell(self, result: Any) -> None:
        if self.current is None:  # the cell that imported retrolog, without history
            info = getattr(result, "info", None)
            self.cells.append(Executed(str(getattr(info, "raw_cell", ""))))
            self.current = len(self.cells) - 1
        cell, self.current = self.cells[self.current], None
        stored = getattr(getattr(result, "info", None), "store_history", False)
        if stored and isinstance(getattr(result, "execution_count", None), int):
            cell.number = result.execution_count
        error = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        if error is None:
            return
        cell.error, cell.interrupted = _describe(error), isinstance(error, KeyboardInterrupt)
        if self.run_open:
            warn_once(
                "nb-cell-error",
                "retrolog: a cell raised during a run: the run stays open (its code leaves that "
                "cell out, unless it was interrupted); retrolog.commit() ends it, as failed",
            )

    def position(self) -> int:
        """The position of the cell executing now (or of the next one, between cells)."""
        return self.current if self.current is not None else len(self.cells)

    def end_run(self, first: int) -> list[tuple[int, Executed]]:
        """(position, cell) of the cells a run that started in the cell at ``first`` depends on,
        up to now: every cell executed so far but those of earlier runs of this shell, which
        this run's cells then become."""
        last = self.current if self.current is not None else len(self.cells) - 1
        cells = [
            (position, cell)
            for position, cell in enumerate(self.cells[: last + 1])
            if position >= first or position not in self.claimed
        ]
        self.claimed.update(range(first, last + 1))
        return cells


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def watch(sh: Any | None = None) -> CellWatcher | None:
    """Start watching this shell's cells (at ``import retrolog``, and again at a run's start);
    None outside IPython."""
    global _watcher
    sh = sh if sh is not None else shell()
    if sh is None:
        return None
    if _watcher is None or _watcher.shell is not sh:
        try:
            _watcher = CellWatcher(sh)
        except Exception as exc:  # an unusual shell: runs still record, per cell
            warn_once("nb-watch", f"retrolog: cannot follow this shell's cells ({exc!r})")
            return None
    return _watcher


# -- the run ----------------------------------------------------------------------------------
class NotebookSession(RunSession):
    """A run of cells: it lasts until ``commit()`` and its version adds the executed code."""

    spans_cells = True

    def __init__(
        self,
        project: Project,
        watcher: CellWatcher,
        notebook: Path | None,
        overrides: dict[str, str],
    ) -> None:
        self.watcher = watcher
        self.notebook = notebook
        self.first_cell = watcher.position()
        self.code_path = _code_path(project, notebook)
        script = self.code_path if notebook is not None else INTERACTIVE
        super().__init__(project, script, [script], overrides)
        watcher.run_open = True

    def _seconds_before_run(self) -> float:
        return 0.0  # the kernel's age is no start-up of this run (a replay's script imports anew)

    def close(self, status: str = "finished", error: str | None = None) -> None:
        if self._closed:
            return
        self.watcher.run_open = False
        cells = self.watcher.end_run(self.first_cell)
        failed = [c for p, c in cells if p >= self.first_cell and c.error]
        if failed and status == "finished":
            last = failed[-1]
            status = "interrupted" if last.interrupted else "failed"
            error = f"{last.label}: {last.error}"
        try:
            # a cell stopped by an interrupt is kept: its code ran as written until it was stopped
            # (as for a script stopped by Ctrl-C); one that raised would raise again in a replay
            code = [Cell(c.source, None if c.interrupted else c.error) for _, c in cells]
            self._version_code(code)
        except Exception as exc:  # the run still ends, with the working tree's version
            warn_once(
                "nb-version", f"retrolog: could not add the executed cells to the version: {exc}"
            )
        super().close(status, error)

    def _version_code(self, cells: list[Cell]) -> None:
        """Add the executed cells as the run's script to the version taken at its start."""
        self._versioner.join(timeout=60)
        snap = getattr(self, "snapshot", None)
        if snap is None:
            return  # outside git, or the snapshot failed (already warned)
        from ..versions import GitRepo

        name = self.notebook.name if self.notebook is not None else "this IPython session"
        code = cells_script(name, cells)
        repo = GitRepo(self.project.root)
        version = repo.add_files(
            self.run_id,
            snap.version,
            snap.head,
            {self.code_path: code.encode()},
            message=f"retrolog: {self.script}",
        )
        self.events.append(("run", {"version": version}))


def _code_path(project: Project, notebook: Path | None) -> str:
    """Where the executed code goes in the version (relative to the project root)."""
    root = project.root.resolve()
    if notebook is not None:
        try:
            return script_path(notebook.resolve().relative_to(root).as_posix())
        except ValueError:
            pass
    try:
        here = Path.cwd().resolve().relative_to(root).as_posix()
    except ValueError:
        here = "."
    return SESSION_SCRIPT if here == "." else f"{here}/{SESSION_SCRIPT}"


def new_session(project: Project, overrides: dict[str, str]) -> RunSession | None:
    """A run of this shell's cells, or None when the calling code is not cell code."""
    if not cell_code_calling():
        return None
    sh = shell()
    watcher = watch(sh)
    if watcher is None:
        return None
    found = _notebook(sh)
    notebook = found[0] if found else None
    if found and found[1] and not _verified(found[0], watcher):
        notebook = None  # the directory's only notebook is not where these cells come from
    return NotebookSession(project, watcher, notebook, overrides)


def _verified(notebook: Path, watcher: CellWatcher) -> bool:
    """Whether one executed cell is a code cell of ``notebook`` (a guessed notebook)."""
    try:
        sources = {s.strip() for s in notebook_cells(notebook)}
    except (OSError, ValueError):
        return False
    return any(c.source.strip() in sources for c in watcher.cells if c.source.strip())
