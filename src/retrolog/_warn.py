"""Warnings that are said once: a training loop must not drown in repeated messages."""

from __future__ import annotations

import threading
import warnings

_said: set[str] = set()
_lock = threading.Lock()


class RetrologWarning(UserWarning, RuntimeWarning):
    """Something retrolog could not do; training goes on. The one warning category retrolog
    uses (filter it with ``-W ignore::retrolog.RetrologWarning``); a RuntimeWarning too, the
    category some of these warnings had before."""


def warn_once(
    key: str, message: str, stacklevel: int = 3, location: tuple[str, int] | None = None
) -> None:
    """Emit ``message`` as a RetrologWarning the first time ``key`` is seen in this process.

    ``location`` (file, line) names the user's line explicitly, for warnings raised on a
    background thread, whose stack holds only ``threading.py``.
    """
    with _lock:
        if key in _said:
            return
        _said.add(key)
    if location is not None:
        warnings.warn_explicit(message, RetrologWarning, location[0], location[1])
    else:
        warnings.warn(message, RetrologWarning, stacklevel=stacklevel)


def reset_warnings() -> None:
    """Forget which warnings were said (tests, and a new run in the same interpreter)."""
    with _lock:
        _said.clear()
