"""Time-sortable unique run ids.

A run id is 26 Crockford base32 characters: 48 bits of milliseconds since the epoch, then 80 random
bits (the ULID layout). Two runs started in the same millisecond still differ, and ids sort by start
time as plain strings. Written here rather than pulled in as a dependency: it is ten lines.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_run_id(now: float | None = None) -> str:
    """Return a new 26-character, lexicographically time-ordered unique id."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
