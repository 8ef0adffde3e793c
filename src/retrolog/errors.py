"""One error model: every error retrolog raises on purpose is a ``RetrologError``.

Each class carries the exit code the CLI ends with (the way click's ``UsageError`` carries 2), so
the command line maps any of them to one line and that code; a traceback is a bug. The codes are
documented in docs/cli.md. Warnings have one category, ``retrolog._warn.RetrologWarning``.
"""

from __future__ import annotations


class RetrologError(Exception):
    """Base of every error retrolog raises for a reason a user can act on."""

    exit_code = 1


class UsageError(RetrologError, ValueError):
    """Bad input: an unknown option value, a malformed argument, a bad ``--where`` or SQL text."""

    exit_code = 2


class NotFoundError(UsageError, LookupError):
    """A run, metric, project or other named thing does not exist (or a prefix is ambiguous).
    Bad input too, so it keeps the exit code 2 that unknown runs have always had."""


class QueryTimeout(UsageError):
    """A query ran past its time limit (``RETROLOG_QUERY_TIMEOUT`` or the surface's default) or
    was cancelled because its client went away; the message names the limit."""


class MissingVersionError(RetrologError):
    """A run's code version (or a checkpoint object) is not available here; says how to fetch it."""

    exit_code = 4


class StoreError(RetrologError):
    """The metadata store cannot be read or written (damaged, locked, unreachable)."""

    exit_code = 5


class ReplayRefused(RetrologError):
    """A replay would do nothing or cannot be done; the message says why."""

    exit_code = 6


__all__ = [
    "MissingVersionError",
    "NotFoundError",
    "QueryTimeout",
    "ReplayRefused",
    "RetrologError",
    "StoreError",
    "UsageError",
]
