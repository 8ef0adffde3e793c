"""The `retrolog` console script: routes `retrolog propagate` before typer and rich are imported
(replay runs propagation once per past version, so it must start in tens of milliseconds), and is
the one place where errors become what the user sees: any ``RetrologError`` is printed as
``retrolog: <one line>`` with its exit code (docs/cli.md). Anything else is a bug and keeps its
traceback."""

from __future__ import annotations

import sys

from .errors import RetrologError


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "propagate":
            from .propagation.cli import main as propagate_main

            raise SystemExit(propagate_main(args[1:]))
        from .cli import main as cli_main

        cli_main(args)
    except RetrologError as exc:
        sys.stderr.write(f"retrolog: {one_line(exc)}\n")
        raise SystemExit(exc.exit_code) from None


def one_line(error: BaseException) -> str:
    """The error's message on one line (continuation lines joined), never empty."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__
