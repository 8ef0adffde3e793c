"""Hyper-parameters: ``arg(name, default)`` overridable as ``--kwargs name=value ...``.

FlorDB's command-line syntax: everything after ``--kwargs`` up to the next ``--flag`` is taken as
``key=value`` pairs and removed from ``sys.argv`` so the script's own argparse never sees it.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import UsageError


class ArgumentError(UsageError):
    """A ``--kwargs`` override is malformed, unknown or cannot be cast to its default's type."""


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def extract_kwargs(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split ``argv`` into (argv without the --kwargs block, the overrides as raw strings)."""
    if "--kwargs" not in argv:
        return list(argv), {}
    start = argv.index("--kwargs")
    end = start + 1
    overrides: dict[str, str] = {}
    while end < len(argv) and not argv[end].startswith("--"):
        token = argv[end]
        key, sep, raw = token.partition("=")
        if not sep or not key:
            raise ArgumentError(f"--kwargs expects key=value pairs, got {token!r}")
        if key in overrides:
            raise ArgumentError(f"--kwargs gives {key!r} twice")
        overrides[key] = raw
        end += 1
    return argv[:start] + argv[end:], overrides


def cast_like(name: str, raw: str, default: Any) -> Any:
    """Cast the command-line string ``raw`` to the type of ``default``."""
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, str) or default is None:
            return raw
        if isinstance(default, (list, tuple, dict)):
            value = json.loads(raw)
            if not isinstance(value, (list, dict)):
                raise ValueError(f"expected JSON {type(default).__name__}")
            return type(default)(value) if isinstance(default, tuple) else value
    except ValueError as exc:
        raise ArgumentError(
            f"--kwargs {name}={raw!r}: cannot read it as {type(default).__name__} "
            f"(the type of its default {default!r}): {exc}"
        ) from None
    return raw
