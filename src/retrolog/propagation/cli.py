"""``retrolog propagate``: argparse front end, kept free of heavy imports to start fast.

Exit codes: 0 placed (or already present), 3 refused (reason on stderr), 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line like every other retrolog error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``retrolog propagate``."""
    p = _Parser(
        prog="retrolog propagate",
        description=(
            "Insert the statement at --line of NEW_FILE into OLD_FILE at the equivalent place, "
            "renaming identifiers the old version calls differently; the rest of OLD_FILE is "
            "kept byte for byte. Exits 3 with the reason when the statement's context does not "
            "exist in OLD_FILE."
        ),
    )
    p.add_argument(
        "--line",
        "-l",
        type=int,
        action="append",
        required=True,
        metavar="N",
        help="line of the statement in NEW_FILE (repeat for several statements)",
    )
    p.add_argument("new_file", metavar="NEW_FILE", help="today's version of the script")
    p.add_argument("old_file", metavar="OLD_FILE", help="the older version to insert into")
    p.add_argument("-o", "--output", metavar="OUT", help="write the result here, not to stdout")
    p.add_argument(
        "--json", action="store_true", help="print the placement report (JSON) instead of the file"
    )
    p.add_argument(
        "--accept-low-confidence",
        action="store_true",
        help="place the statement even when the placement's confidence is below the threshold",
    )
    return p


def _read(path: str) -> str:
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        new_source = _read(args.new_file)
        old_source = _read(args.old_file)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"retrolog propagate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from .api import propagate

    if args.accept_low_confidence:
        result = propagate(new_source, old_source, args.line, min_confidence=0.0)
    else:
        result = propagate(new_source, old_source, args.line)
    if result.refused is not None:
        if args.json:
            _print_json(result.to_dict())
        for w in result.warnings:
            print(f"retrolog propagate: warning: {w}", file=sys.stderr)
        print(f"retrolog propagate: refused: {result.refused}", file=sys.stderr)
        return EXIT_REFUSED
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8", newline="") as f:
                f.write(result.source)
        except OSError as exc:
            print(f"retrolog propagate: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.json:
        _print_json(result.to_dict())
    elif not args.output:
        sys.stdout.write(result.source)
        sys.stdout.flush()
    for w in result.warnings:
        print(f"retrolog propagate: warning: {w}", file=sys.stderr)
    return EXIT_OK


def _print_json(report: dict[str, object]) -> None:
    import json  # only when asked for: every import delays the command

    print(json.dumps(report, indent=2))
