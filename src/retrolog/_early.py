"""What ``import retrolog`` does at once, before any run starts (stdlib only, no heavy imports).

1. Takes the ``--kwargs key=value ...`` block out of ``sys.argv``, so code that reads ``sys.argv``
   before the first retrolog call (a nanoGPT-style configurator, the script's argparse) never sees
   it. A malformed block is still removed; its error is raised by the first API call, never here.
2. Watches ``argparse``: the script's own top-level parse of the command line (``parse_args()`` /
   ``parse_known_args()`` with ``args=None``, outermost call, called from the project's code rather
   than from the standard library or an installed package) leaves its namespace here; the run
   records it as args when its main loop starts (``record.api``). ``argparse`` is not imported for
   this: when the script has not imported it yet, a ``sys.meta_path`` finder waits for its import
   (one dictionary-free name comparison per later import) and patches the class right after.
   ``RETROLOG_ARGPARSE=0`` turns the capture off; a replay (``RETROLOG_REPLAY``) never captures.
"""

from __future__ import annotations

import os
import sys

from . import settings

# Not `from typing import ...` (see retrolog/__init__.py). mypy treats this as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


kwargs_overrides: dict[str, str] = {}  # the --kwargs block as raw strings
kwargs_error: str | None = None  # why the --kwargs block is malformed (raised at the first call)
parsed: dict[str, tuple[Any, tuple[str, ...]]] = {}  # argparse dest -> (value, option strings)
_depth = 0  # nesting of parse_known_args calls (subparsers parse recursively)


def split_kwargs(argv: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    """Split ``argv`` into (argv without the --kwargs block, the overrides, the first problem).

    The block is everything after ``--kwargs`` up to the next ``--flag``.
    """
    if "--kwargs" not in argv:
        return list(argv), {}, None
    start = argv.index("--kwargs")
    end = start + 1
    overrides: dict[str, str] = {}
    problem = None
    while end < len(argv) and not argv[end].startswith("--"):
        token = argv[end]
        key, sep, raw = token.partition("=")
        if problem is None:
            if not sep or not key:
                problem = f"--kwargs expects key=value pairs, got {token!r}"
            elif key in overrides:
                problem = f"--kwargs gives {key!r} twice"
        overrides.setdefault(key, raw)
        end += 1
    return argv[:start] + argv[end:], overrides, problem


def take_kwargs() -> None:
    """Remove ``--kwargs`` from ``sys.argv`` (once per process; later blocks: see record.api)."""
    global kwargs_overrides, kwargs_error
    if not isinstance(getattr(sys, "argv", None), list) or "--kwargs" not in sys.argv:
        return
    argv, overrides, problem = split_kwargs(sys.argv)
    sys.argv[:] = argv
    kwargs_overrides.update(overrides)
    if kwargs_error is None:
        kwargs_error = problem


def take_parsed() -> dict[str, tuple[Any, tuple[str, ...]]]:
    """The argparse values captured so far (and forget them: they belong to one run)."""
    taken = dict(parsed)
    parsed.clear()
    return taken


def watch_argparse() -> None:
    """Patch ``argparse.ArgumentParser.parse_known_args`` now or when argparse gets imported."""
    if not settings.ARGPARSE.get() or settings.REPLAY.get():
        return
    module = sys.modules.get("argparse")
    if module is not None:
        _patch(module)
    elif not any(isinstance(finder, _ArgparseFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ArgparseFinder())


class _ArgparseFinder:
    """A meta-path finder that finds nothing itself: when ``argparse`` is being imported, it lets
    the other finders locate it and wraps the loader so the module is patched once executed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "argparse":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one import of argparse per process: the job is done
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader:
    """Runs the real loader, then patches the module and puts the real loader back."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        spec = module.__spec__
        if spec is not None:
            spec.loader = self._loader
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        _patch(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def _patch(argparse: Any) -> None:
    cls = argparse.ArgumentParser
    original = cls.parse_known_args
    if getattr(original, "_retrolog", False):
        return

    def parse_known_args(self: Any, args: Any = None, namespace: Any = None) -> Any:
        global _depth
        outermost = args is None and _depth == 0
        _depth += 1
        try:
            result = original(self, args, namespace)
        finally:
            _depth -= 1
        if outermost:
            # Recording args must never break the script's own parsing. (Not contextlib.suppress:
            # importing contextlib would cost `import retrolog` ~4 ms.)
            try:  # noqa: SIM105
                _capture(self, result[0], argparse.__file__)
            except Exception:
                pass
        return result

    parse_known_args.__doc__ = original.__doc__
    parse_known_args.__wrapped__ = original  # type: ignore[attr-defined]
    parse_known_args._retrolog = True  # type: ignore[attr-defined]
    cls.parse_known_args = parse_known_args


def _capture(parser: Any, namespace: Any, argparse_file: str) -> None:
    """Keep the namespace of a parse called from the project's code (not a tool's, not stdlib's)."""
    if settings.REPLAY.get():
        return
    frame: Any = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename in (argparse_file, __file__):
        frame = frame.f_back
    if frame is None or not _is_project_code(frame.f_code.co_filename):
        return
    options: dict[str, tuple[str, ...]] = {}
    for action in getattr(parser, "_actions", ()):
        if action.option_strings and action.dest not in options:
            options[action.dest] = tuple(action.option_strings)
    for dest, value in vars(namespace).items():
        parsed[dest] = (value, options.get(dest, ()))


def _is_project_code(filename: str) -> bool:
    """False for the standard library and installed packages: their parsers are not the script's."""
    if "site-packages" in filename or "dist-packages" in filename:
        return False
    stdlib = os.path.dirname(os.__file__)
    return not filename.startswith(stdlib + os.sep)
