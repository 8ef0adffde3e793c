"""The `retrolog` console script: routes `retrolog propagate` before typer and rich are imported
(replay runs propagation once per past version, so it must start in tens of milliseconds)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "propagate":
        from .propagation.cli import main as propagate_main

        raise SystemExit(propagate_main(args[1:]))
    from .cli import main as cli_main

    cli_main(args)
