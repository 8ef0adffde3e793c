"""Static analysis of the user's code shared by recording and replay (stdlib ``ast`` only).

:func:`carried_names` says which names a ``for`` loop hands to the code that runs after it (the
loop-carried state a checkpoint must hold for the loop to be skippable on replay).
"""

from retrolog.code.carried import Carried, carried_at, carried_in_tree, carried_names, find_for_loop

__all__ = ["Carried", "carried_at", "carried_in_tree", "carried_names", "find_for_loop"]
