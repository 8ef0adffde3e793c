"""Notebooks: runs recorded from a Jupyter kernel or IPython span cells, and replay as scripts.

``kernel`` finds the notebook and its project, follows the executed cells and versions them;
``cells`` turns cells into the script replay propagates into and re-executes. See
docs/notebooks.md. Importing this package imports neither IPython nor the recording runtime.
"""

from __future__ import annotations

from typing import Any


def display(*objs: Any, **kwargs: Any) -> None:
    """IPython's ``display`` where no kernel shows anything: a replayed notebook script imports
    this so its cells' ``display(...)`` calls still run (their output has nowhere to go)."""
    if _shell_running():
        from IPython.display import display as ipython_display

        ipython_display(*objs, **kwargs)


def _shell_running() -> bool:
    import sys

    module = sys.modules.get("IPython")
    return module is not None and module.get_ipython() is not None


def watch() -> None:
    """Follow this IPython shell's cells (``import retrolog`` calls this inside IPython)."""
    from .kernel import watch as start

    start()


__all__ = ["display", "watch"]
