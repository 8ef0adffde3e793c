"""Where a notebook's cells run: the IPython shell, the notebook file, and so the project.

Standard library only (IPython is looked up in ``sys.modules``, never imported), so
``project.py`` can ask it without importing the recording runtime that ``kernel`` builds on.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import FrameType
from typing import Any


def shell() -> Any | None:
    """The IPython shell running this process's cells, or None (a script, ``python -c``)."""
    module = sys.modules.get("IPython")
    if module is None:
        return None
    try:
        return module.get_ipython()
    except Exception:
        return None


def is_kernel(sh: Any) -> bool:
    """Whether ``sh`` is a Jupyter kernel's shell (not the terminal IPython)."""
    return "ipykernel" in sys.modules and type(sh).__module__.startswith("ipykernel")


def notebook_path(sh: Any | None = None) -> Path | None:
    """The notebook file the cells come from, when the frontend says (or, in a kernel, the only
    notebook of the working directory)."""
    found = _notebook(sh if sh is not None else shell())
    return found[0] if found else None


def _notebook(sh: Any | None) -> tuple[Path, bool] | None:
    """(notebook, guessed): told by the frontend, or guessed as the working directory's only one."""
    if sh is None:
        return None
    vsc = getattr(sh, "user_ns", {}).get("__vsc_ipynb_file__")
    if isinstance(vsc, str) and os.path.isfile(vsc):
        return Path(vsc).resolve(), False
    name = os.environ.get("JPY_SESSION_NAME", "")
    if name.endswith(".ipynb"):
        given = Path(name)
        for candidate in (given, Path.cwd() / given, Path.cwd() / given.name):
            if candidate.is_file():
                return candidate.resolve(), False
    if is_kernel(sh):
        found = sorted(Path.cwd().glob("*.ipynb"))
        if len(found) == 1:
            return found[0].resolve(), True
    return None


def start_dir() -> Path | None:
    """Where a run of this process's cells finds its project (the notebook's directory, else the
    working directory), or None when no IPython shell runs cells here or the caller is a script
    that IPython runs (``%run train.py``: its project is the script's)."""
    sh = shell()
    if sh is None or not cell_code_calling():
        return None
    notebook = notebook_path(sh)
    return notebook.parent if notebook is not None else Path.cwd()


def cell_code_calling() -> bool:
    """Whether the retrolog call on the stack comes from cell code (not a script that ``%run``
    or ``ipython train.py`` executes): the frames below the shell's own are not ``sys.argv[0]``."""
    if shell() is None:
        return False
    argv0 = sys.argv[0] if sys.argv else ""
    script = os.path.realpath(argv0) if argv0.endswith(".py") and os.path.isfile(argv0) else None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__")
        if isinstance(module, str) and module.startswith(("IPython.", "ipykernel.")):
            return True  # reached the shell executing a cell: no script file in between
        if script is not None and os.path.realpath(frame.f_code.co_filename) == script:
            return False
        frame = frame.f_back
    return script is None or os.path.basename(script) == "ipykernel_launcher.py"
