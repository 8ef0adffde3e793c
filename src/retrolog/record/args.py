"""Hyper-parameters: ``arg(name, default)`` overridable as ``--kwargs name=value ...``.

FlorDB's command-line syntax: everything after ``--kwargs`` up to the next ``--flag`` is taken as
``key=value`` pairs and removed from ``sys.argv`` (at ``import retrolog``, see ``retrolog._early``)
so the script's own argparse never sees it. ``args(config)`` records a whole config at once; its
fields are listed by ``flatten_config``.
"""

from __future__ import annotations

import dataclasses
import json
from types import ModuleType
from typing import Any

from .._early import split_kwargs
from ..errors import UsageError


class ArgumentError(UsageError):
    """A ``--kwargs`` override is malformed, unknown or cannot be cast to its default's type."""


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def extract_kwargs(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split ``argv`` into (argv without the --kwargs block, the overrides as raw strings)."""
    rest, overrides, problem = split_kwargs(argv)
    if problem is not None:
        raise ArgumentError(problem)
    return rest, overrides


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


def flatten_config(config: Any, prefix: str = "") -> dict[str, tuple[Any, Any, Any]]:
    """The public fields of a config as ``{name: (container, key, value)}``, nested configs
    flattened as ``outer.inner`` (``container[key]`` is where the value lives, for updates).

    A dict gives its items (keys that are not strings are left out), a dataclass instance its
    fields, anything else the public attributes of its ``__dict__`` (callables and modules left
    out: they are a config module's imports and helpers, not its values).
    """
    fields: dict[str, tuple[Any, Any, Any]] = {}
    for key, value in _public_fields(config):
        name = f"{prefix}{key}"
        if _is_config(value):
            fields.update(flatten_config(value, name + "."))
        else:
            fields[name] = (config, key, value)
    return fields


def _public_fields(config: Any) -> list[tuple[str, Any]]:
    if isinstance(config, dict):
        return [(key, value) for key, value in config.items() if isinstance(key, str)]
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return [(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)]
    try:
        attributes = vars(config)
    except TypeError:
        raise TypeError(
            f"retrolog.args() takes a dict, a namespace, a dataclass or an object with "
            f"attributes, not {type(config).__qualname__}"
        ) from None
    return [
        (key, value)
        for key, value in attributes.items()
        if not key.startswith("_") and not callable(value) and not isinstance(value, ModuleType)
    ]


def _is_config(value: Any) -> bool:
    """Nested configs that are flattened: dicts, dataclass instances, argparse namespaces."""
    if isinstance(value, dict):
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return True
    return type(value).__name__ == "Namespace" and type(value).__module__ == "argparse"
