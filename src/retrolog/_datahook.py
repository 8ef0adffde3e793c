"""``RETROLOG_TRACK_DATA``'s audit hook on ``open``, installed by ``import retrolog``.

Installed at import (standard library only) so that files a script reads before its first
retrolog call (a dataset loaded before ``retrolog.arg``) are seen too; until the run's tracker
(record/data.py) takes over, candidate opens are kept in ``pending``. An audit hook cannot be
removed: once installed it checks one string per audit event for the life of the process.
"""

from __future__ import annotations

import contextlib
import sys

# Not `from typing import ...` (see retrolog/__init__.py). mypy treats this as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_CODE = (".py", ".pyc", ".so", ".pth")
pending: list[tuple[Any, ...]] = []  # ``open`` arguments seen before a tracker took over
sink: Callable[..., None] | None = None  # the tracker's ``consider(file, mode, flags)``
installed = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event != "open":
        return
    target = sink
    if target is not None:
        with contextlib.suppress(Exception):  # an audit hook must never break the script's open()
            target(*args)
        return
    file, mode = args[0], args[1]
    if isinstance(file, str) and not file.endswith(_CODE) and (mode is None or "r" in mode):
        pending.append(args)


def install() -> None:
    """Install the hook once per process."""
    global installed
    if not installed:
        installed = True
        sys.addaudithook(_hook)


def take_over(consider: Callable[..., None]) -> None:
    """Route every later ``open`` to ``consider``, after the ones seen so far."""
    global sink
    install()
    seen = list(pending)
    pending.clear()
    sink = consider
    for args in seen:
        with contextlib.suppress(Exception):
            consider(*args)
