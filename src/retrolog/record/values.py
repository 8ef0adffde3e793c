"""Turning logged Python values into typed store cells.

A cell is ``(vtype, number, text)``: numbers go to ``number`` (so SQL can compare them), everything
else to ``text``. The one-letter vtypes are part of the data model (docs/data-model.md):

``f`` float, ``i`` int, ``b`` bool, ``s`` str, ``n`` None, ``j`` JSON container.

Non-finite floats and integers beyond 2**53 keep their exact value in ``text`` with ``number`` NULL,
because SQLite turns NaN into NULL and a REAL cannot hold a 64-bit integer exactly.

Containers are stored as strict JSON (RFC 8259), which has no NaN or infinity: a non-finite float
inside a container is stored as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (the
names JavaScript and Python's ``json`` use), and read back as that string. Every reader (SQL,
pandas, other tools) can parse what is stored; docs/data-model.md documents the encoding.
"""

from __future__ import annotations

import json
import math
from typing import Any

Cell = tuple[str, float | None, str | None]

MAX_TEXT_BYTES = 1 << 20  # 1 MiB: larger strings are refused with a warning
_EXACT_INT = 1 << 53


class UnsupportedValue(TypeError):
    """The value cannot be stored; the message says why."""


def normalise(value: Any) -> Any:
    """Turn numpy / torch scalars and one-element arrays into Python numbers; leave others alone.

    Called on the training thread for anything that is not a plain Python scalar, so the stored
    value is the one at the time of the call even if a tensor is later modified in place.
    """
    cls = type(value)
    module = cls.__module__
    if module == "numpy":
        if hasattr(value, "item") and getattr(value, "size", 1) == 1:
            return value.item()
        return value
    if module.startswith("torch"):
        numel = getattr(value, "numel", None)
        if numel is not None and numel() == 1:
            return value.item()
        return value
    return value


def to_cell(value: Any) -> Cell:
    """Encode a normalised value as a store cell, or raise UnsupportedValue."""
    cls = type(value)
    if cls is float:
        if math.isfinite(value):
            return ("f", value, None)
        return ("f", None, repr(value))
    if cls is bool:
        return ("b", float(value), None)
    if cls is int:
        if -_EXACT_INT <= value <= _EXACT_INT:
            return ("i", float(value), None)
        return ("i", None, str(value))
    if cls is str:
        if (
            len(value) > MAX_TEXT_BYTES // 4
            and len(value.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES
        ):
            raise UnsupportedValue(f"string of {len(value)} characters is over the 1 MiB limit")
        return ("s", None, value)
    if value is None:
        return ("n", None, None)
    if isinstance(value, (list, tuple, dict)):
        try:
            text = container_json(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise UnsupportedValue(f"container is not JSON-serialisable: {exc}") from None
        if len(text) > MAX_TEXT_BYTES:
            raise UnsupportedValue("JSON container is over the 1 MiB limit")
        return ("j", None, text)
    if isinstance(value, float):  # float subclasses
        return to_cell(float(value))
    if isinstance(value, int):  # int subclasses (IntEnum, ...)
        return to_cell(int(value))
    if isinstance(value, str):
        return to_cell(str(value))
    raise UnsupportedValue(f"values of type {cls.__module__}.{cls.__qualname__} are not supported")


NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def container_json(value: Any) -> str:
    """Strict JSON of a container; non-finite floats become ``"NaN"``/``"Infinity"``/
    ``"-Infinity"`` (see the module docstring)."""
    try:
        return json.dumps(value, default=_json_default, allow_nan=False)
    except ValueError:  # a non-finite float somewhere: rare, so only then walk the container
        return json.dumps(_finite(value), default=_json_default, allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (numpy/torch scalars included) spelled as a string."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if not isinstance(value, (str, int, bool)) and value is not None:
        value = normalise(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else NON_FINITE[value]
    return value


def _json_default(obj: Any) -> Any:
    normal = normalise(obj)
    if normal is obj:
        raise TypeError(f"{type(obj).__qualname__} is not JSON-serialisable")
    return normal


def from_cell(vtype: str, number: float | None, text: str | None) -> Any:
    """Decode a store cell back into the Python value that was logged."""
    if number is not None and number != number:  # NULL read through pandas arrives as NaN
        number = None
    if vtype == "f":
        return float(text) if number is None and text is not None else number
    if vtype == "i":
        if number is None:
            return int(text) if text is not None else None
        return int(number)
    if vtype == "b":
        return bool(number)
    if vtype == "s":
        return text
    if vtype == "j":
        return json.loads(text) if text is not None else None
    return None


def check_name(name: Any) -> str | None:
    """Return why ``name`` is not a usable metric / arg / loop name, or None when it is."""
    if not isinstance(name, str):
        return f"names must be strings, not {type(name).__qualname__}"
    if not name.strip():
        return "names must not be empty"
    if len(name) > 200:
        return "names must be at most 200 characters"
    if any(ord(ch) < 32 for ch in name):
        return "names must not contain control characters"
    return None
