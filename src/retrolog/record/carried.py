"""What a nested loop hands to the code after it, read from the user's frame at the loop's exit:
the loop-carried variables a checkpoint holds so that replay can skip the loop (the names come
from the static analysis in ``retrolog.code.carried``)."""

from __future__ import annotations

import os
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._warn import warn_once

if TYPE_CHECKING:
    from ..code import Carried


class LoopSite:
    """A nested loop's ``for`` statement as recording sees it: its carried state (None: not
    known) and whether a value it carries made its checkpoints useless for the rest of the run."""

    __slots__ = ("carried", "disabled", "where")

    def __init__(self, carried: Carried | None, where: str) -> None:
        self.carried = carried
        self.where = where
        self.disabled = False


def user_frame() -> FrameType | None:
    """The innermost frame outside the retrolog package (the user's code that drives a loop)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and _is_ours(frame.f_globals.get("__name__")):
        frame = frame.f_back
    return frame


def _is_ours(module: object) -> bool:
    return isinstance(module, str) and (module == "retrolog" or module.startswith("retrolog."))


def carried_state(
    sites: dict[tuple[Any, int], LoopSite], objects: dict[str, Any], name: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
    """The loop-carried variables and the modules (of the registered ``objects``) whose gradients
    to capture at this nested loop's exit (docs/checkpoints.md); None when the loop can never be
    skipped. ``sites``: the session's loop sites, filled as loops are met.

    Runs in the loop's generator as it finishes, so the user's frame executing the ``for``
    is the first frame outside retrolog. The analysis runs once per loop site; what is left
    per exit is reading a few names and checking their types.
    """
    frame = user_frame()
    if frame is None:
        return None, None
    site = sites.get((frame.f_code, frame.f_lineno))
    if site is None:
        from ..code import carried_at

        code = frame.f_code
        where = f"{os.path.basename(code.co_filename)}:{frame.f_lineno}"
        site = LoopSite(carried_at(code.co_filename, frame.f_lineno), where)
        sites[(code, frame.f_lineno)] = site
    if site.disabled:
        return None
    carried = site.carried
    if carried is None:  # not a for statement we can see: nothing known to carry
        return None, None
    from ..checkpoint.capture import uncapturable
    from ..checkpoint.codec import torch_module

    values: dict[str, Any] = {}
    names = frame.f_globals if carried.module_level else frame.f_locals
    for var in sorted(carried.names):
        space = frame.f_globals if var in carried.global_names else names
        problem = uncapturable(space[var]) if var in space else "unbound"
        if problem is not None:
            site.disabled = True
            warn_once(
                f"carried:{site.where}",
                f"retrolog: the loop {name!r} at {site.where} leaves {var!r} ({problem}) to "
                "the code after it, which a checkpoint cannot hold; it is no longer "
                "checkpointed in this run and replay will re-execute it",
            )
            return None
        values[var] = space[var]
    grads = None
    torch = torch_module()
    if carried.needs_grads and torch is not None:
        grads = {key: obj for key, obj in objects.items() if isinstance(obj, torch.nn.Module)}
    return values, grads
