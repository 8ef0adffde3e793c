"""Log-statement propagation across code versions (see docs/propagation.md).

``propagate(new_source, old_source, line)`` puts the statement found at ``line`` of today's
script into an older version of it, at the equivalent place, renaming identifiers the older
version calls differently, and changing nothing else in the old text.  The matching of the two
versions is GumTree (top-down, bottom-up, recovery) over Python syntax trees.

This package imports only the standard library, so that ``retrolog propagate`` starts fast.
"""

from .api import THRESHOLD, Placement, Propagation, PropagationError, propagate

__all__ = ["THRESHOLD", "Placement", "Propagation", "PropagationError", "propagate"]
