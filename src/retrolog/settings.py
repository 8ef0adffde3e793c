"""Every ``RETROLOG_*`` environment variable retrolog reads, in one place.

Each :class:`Setting` has a name, a type, a default, a one-line meaning and a parser. Values are
read from ``os.environ`` at each access, never cached: tests and notebooks change the environment
between runs in one process, and none of these is read on the recording hot path. A value that
does not parse warns once (``RetrologWarning``) and the default applies; no setting stops a
training run. Stdlib ``os`` only: ``import retrolog`` reads ``RETROLOG_ARGPARSE`` through here.

``docs/settings.md`` is generated from :data:`ALL` (``python -m retrolog.settings``); a test keeps
the two equal.
"""

from __future__ import annotations

import os

# Not `from typing import ...`: this module is imported by `import retrolog` (see __init__.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


class Setting:
    """One environment variable: its name, documented type and default, meaning and parser.

    ``parse`` turns a non-empty raw value into the setting's value or raises ValueError; an
    unset or empty variable gives ``default``. ``internal`` ones are channels between retrolog's
    own processes, listed for completeness.
    """

    __slots__ = ("default", "default_text", "internal", "meaning", "name", "parse", "type")

    def __init__(
        self,
        name: str,
        type: str,
        default: Any,
        meaning: str,
        parse: Callable[[str], Any],
        default_text: str | None = None,
        internal: bool = False,
    ) -> None:
        self.name = name
        self.type = type
        self.default = default
        self.meaning = meaning
        self.parse = parse
        self.default_text = default_text if default_text is not None else repr(default)
        self.internal = internal

    def get(self) -> Any:
        """The current value: parsed from the environment, or the default (warned once when
        the variable holds something that does not parse)."""
        raw = os.environ.get(self.name)
        if not raw:
            return self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            from ._warn import warn_once

            warn_once(
                f"setting:{self.name}",
                f"retrolog: {self.name}={raw!r} is not {exc}; using {self.default_text}",
            )
            return self.default


# -- parsers: each raises ValueError("<what was expected>") --------------------------------------
def _text(raw: str) -> str:
    return raw


def _flag(raw: str) -> bool:
    text = raw.strip().lower()
    if text in _OFF:
        return False
    if text in _ON:
        return True
    raise ValueError("one of 1/true/yes/on or 0/false/no/off")


def _number(low: float) -> Callable[[str], float]:
    """A finite number >= ``low``."""

    def parse(raw: str) -> float:
        value = _finite(raw)
        if value < low:
            raise ValueError(f"a number >= {low:g}")
        return value

    return parse


def _clamped(low: float, high: float) -> Callable[[str], float]:
    """Any finite number, brought into [low, high]."""
    return lambda raw: min(high, max(low, _finite(raw)))


def _finite(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("a number")
    return value


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError("a whole number >= 0")
    return value


def _ranks(raw: str) -> str:
    text = raw.strip().lower()
    if text not in ("0", "all"):
        raise ValueError("0 or all")
    return text


def _remote(raw: str) -> str | None:
    """``RETROLOG_AUTO_PUSH``: None (off), ``origin`` (on) or the named remote."""
    text = raw.strip()
    if text.lower() in _OFF or not text:
        return None
    return "origin" if text.lower() in _ON else text


# -- the variables ---------------------------------------------------------------------------
DB = Setting(
    "RETROLOG_DB",
    "URL",
    None,
    "the metadata store (sqlite:///path or postgresql+psycopg://...)",
    _text,
    "sqlite:///<root>/.retrolog/retrolog.db",
)
OBJECTS = Setting(
    "RETROLOG_OBJECTS",
    "path or URL",
    None,
    "the checkpoint object store (a folder, file:// or an fsspec URL such as s3://bucket/prefix)",
    _text,
    "<root>/.retrolog/objects",
)
ARGPARSE = Setting(
    "RETROLOG_ARGPARSE",
    "flag",
    True,
    "record the script's own top-level argparse values as args (0: off)",
    _flag,
    "1",
)
CHECKPOINT_BUDGET = Setting(
    "RETROLOG_CHECKPOINT_BUDGET",
    "number >= 0",
    0.05,
    "share of training time checkpoints may cost (0: record without checkpoints)",
    _number(0.0),
    "0.05",
)
PROGRESS = Setting(
    "RETROLOG_PROGRESS",
    "flag",
    True,
    "show a progress bar for loops on a terminal (needs tqdm; 0: never)",
    _flag,
    "1",
)
RANKS = Setting(
    "RETROLOG_RANKS",
    "0 or all",
    "0",
    "under torchrun, which ranks record: rank 0 only, or every rank as its own run",
    _ranks,
    "0",
)
AUTO_PUSH = Setting(
    "RETROLOG_AUTO_PUSH",
    "flag or remote",
    None,
    "push each run's version when its process ends: 1 to origin, or the name of a remote",
    _remote,
    "off",
)
TRACK_DATA = Setting(
    "RETROLOG_TRACK_DATA",
    "flag",
    False,
    "record every project file the script reads as a data version of the run (1: on)",
    _flag,
    "0",
)
CAPTURE_OUTPUT = Setting(
    "RETROLOG_CAPTURE_OUTPUT",
    "flag",
    False,
    "keep what the script writes to stdout and stderr with the run (1: on; capped)",
    _flag,
    "0",
)
FOLLOWER_EVENTS = Setting(
    "RETROLOG_FOLLOWER_EVENTS",
    "whole number >= 0",
    20_000,
    "events in one flush past which a follower process takes over storing a fast run",
    _count,
    "20000",
)
FOLLOWER_DUTY = Setting(
    "RETROLOG_FOLLOWER_DUTY",
    "number 0.05-1",
    0.25,
    "share of the time the follower process works while its run is alive",
    _clamped(0.05, 1.0),
    "0.25",
)
QUERY_TIMEOUT = Setting(
    "RETROLOG_QUERY_TIMEOUT",
    "seconds >= 0",
    None,
    "time limit of every query users write (0: none); overrides each surface's default",
    _number(0.0),
    "UI 10, CLI 120, API 600",
)
FORKSERVER_PERSIST = Setting(
    "RETROLOG_FORKSERVER_PERSIST",
    "flag",
    True,
    "replays reuse a persistent fork server (0: a private server per replay)",
    _flag,
    "1",
)
FORKSERVER_IDLE = Setting(
    "RETROLOG_FORKSERVER_IDLE",
    "seconds >= 1",
    600.0,
    "how long a persistent fork server waits for the next replay",
    _clamped(1.0, float("inf")),
    "600",
)
FORKSERVER_DIR = Setting(
    "RETROLOG_FORKSERVER_DIR",
    "path",
    None,
    "where persistent fork servers keep sockets, pid files and logs",
    _text,
    "<tmp>/retrolog-forkservers-<uid>",
)
REPLAY = Setting(
    "RETROLOG_REPLAY",
    "path",
    None,
    "the task spec of a replay worker: the script runs in replay mode",
    _text,
    "unset",
    internal=True,
)
SANDBOX = Setting(
    "RETROLOG_SANDBOX",
    "path",
    None,
    "the sandbox manifest whose write guard a replay task installs",
    _text,
    "unset",
    internal=True,
)

ALL: tuple[Setting, ...] = (
    DB,
    OBJECTS,
    ARGPARSE,
    CHECKPOINT_BUDGET,
    PROGRESS,
    RANKS,
    AUTO_PUSH,
    TRACK_DATA,
    CAPTURE_OUTPUT,
    FOLLOWER_EVENTS,
    FOLLOWER_DUTY,
    QUERY_TIMEOUT,
    FORKSERVER_PERSIST,
    FORKSERVER_IDLE,
    FORKSERVER_DIR,
    REPLAY,
    SANDBOX,
)


PAGE_HEAD = """# Settings

Every environment variable retrolog reads. Each is read when it is used (a run's start, a
query, a replay), so a change applies to the next one. A value that does not parse warns once
(`RetrologWarning`) and the default applies; a flag takes `1`/`true`/`yes`/`on` or
`0`/`false`/`no`/`off`; an empty variable counts as unset. The internal ones are how retrolog's
own processes talk to each other; do not set them.

"""
PAGE_TAIL = """
This page is generated from `src/retrolog/settings.py` (`tests/test_settings.py` fails when they
differ). To regenerate it:
`.venv/bin/python -c "import retrolog.settings as s; print(s.page(), end='')" > docs/settings.md`.
"""


def markdown_table() -> str:
    """The table of ``docs/settings.md``, one row per variable."""
    lines = ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
    for s in ALL:
        meaning = s.meaning + (" (internal)" if s.internal else "")
        lines.append(f"| `{s.name}` | {s.type} | `{s.default_text}` | {meaning} |")
    return "\n".join(lines) + "\n"


def page() -> str:
    """The whole of ``docs/settings.md``."""
    return PAGE_HEAD + markdown_table() + PAGE_TAIL
