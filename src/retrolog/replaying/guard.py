"""The replay worker's copy-on-write guard: a replayed script never writes the user's files.

A replay task runs in its own scratch tree (``sandbox.py``): the old code version's files plus a
mirror of the user's untracked and ignored entries, where directories are real directories and
files are symlinks to the user's files, so reading in place works. ``install()`` adds an audit
hook (``sys.addaudithook``) before the user's script runs. On an ``open`` that may write (builtins
``open``, ``io.open``, ``os.open``), ``os.truncate``, ``os.chmod``/``chown``/``utime`` and
``sqlite3.connect``:

- a path in the scratch tree that is a symlink to a file outside it (or a version file hard
  linked into several task trees) is made private first: a truncating write removes the link
  (the write creates a new file), any other write replaces the link with a copy of the file;
- a path whose real location is the user's project (through a directory symlink the sandbox
  left because of its cap, ``..``, an absolute path) or another mirrored user directory is
  refused with ``PermissionError("retrolog replay: refusing to write ...")``; so are deleting,
  renaming, creating directories or links there. Removing or renaming a link inside the scratch
  tree only removes the link.

Libraries that open a file by name in C never reach the audit hook; ``torch.save``, safetensors'
``save_file`` and pandas' Parquet/Feather/HDF/ORC writers are wrapped so a path argument goes
through the same check first (at install when already imported, as in the fork server, otherwise
by an import hook when the script imports them).

This module imports only the standard library: it runs before anything else in the worker, and
``python guard.py SCRIPT ARGS...`` runs SCRIPT as ``__main__`` with the guard installed (the plain
subprocess path, and the fork server's exec fallback).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import stat
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

ENV = "RETROLOG_SANDBOX"  # settings.SANDBOX: path of the task's sandbox manifest (JSON), set by the coordinator
GUARD_FILE = os.path.abspath(__file__)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_TRUNCATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC  # what a library writing a whole file does
_MODIFY = os.O_RDWR  # a change in place: needs the file's content
_FOLLOWING = {"os.truncate", "os.chmod", "os.chown", "os.utime", "sqlite3.connect"}
_NAMING = {"os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree"}  # act on the name itself
_EVENTS = frozenset(
    {"open", "os.rename", "os.symlink", "os.link", "os.chdir", *_FOLLOWING, *_NAMING}
)

# module -> (attribute path, index of the path argument, its keyword); see _wrap_writer
WRITERS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "torch.serialization": (("save", 1, "f"),),
    "torch": (("save", 1, "f"),),
    "safetensors.torch": (("save_file", 1, "filename"),),
    "safetensors.numpy": (("save_file", 1, "filename"),),
    "pandas": (
        ("DataFrame.to_parquet", 1, "path"),
        ("DataFrame.to_feather", 1, "path"),
        ("DataFrame.to_hdf", 1, "path_or_buf"),
        ("DataFrame.to_orc", 1, "path"),
    ),
}


class Policy:
    """What the guard protects: the task's scratch tree may be written; the user's project root
    (except retrolog's own ``.retrolog``) and the real locations of mirrored or capped user
    directories and files may not."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.scratch = os.path.realpath(manifest["scratch"])
        self.protected = [os.path.realpath(p) for p in manifest.get("protected", [])]
        self.allowed = [os.path.realpath(p) for p in manifest.get("allowed", [])]
        self.files = {os.path.realpath(p) for p in manifest.get("files", [])}
        self.capped = [os.path.realpath(p) for p in manifest.get("capped", [])]
        self.cap = int(manifest.get("cap", 0))
        self.budget = self.cap - int(manifest.get("mirrored", 0))  # entries left to mirror lazily
        self._local = threading.local()

    # -- the audit hook ------------------------------------------------------------------
    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in _EVENTS:
            return
        if event == "open" and not (isinstance(args[2], int) and args[2] & _WRITE_FLAGS):
            return  # a read: most events a worker sees (every import)
        if getattr(self._local, "busy", False):
            return  # our own copying
        self._local.busy = True
        try:
            self._event(event, args)
        finally:
            self._local.busy = False

    def _event(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, _mode, flags = args
            if _is_path(path):
                self.before_write(path, flags)
        elif event in _FOLLOWING:
            path = args[0]
            if not _is_path(path) or event == "sqlite3.connect" and _memory_db(path):
                return
            self.before_write(path, _MODIFY, _dir_fd(event, args))
        elif event in _NAMING:
            if _is_path(args[0]):
                self.before_name_change(args[0], _dir_fd(event, args), event)
        elif event == "os.rename":
            src, dst, src_fd, dst_fd = args
            for path, fd in ((src, src_fd), (dst, dst_fd)):
                if _is_path(path):
                    self.before_name_change(path, fd, event)
        elif event == "os.chdir":
            if _is_path(args[0]):  # into a directory left as a link: make it a real one first
                self._open_up(os.path.join(_absolute(args[0]), "-"))
        elif event in ("os.symlink", "os.link"):
            dst, fd = args[1], args[-1]
            if _is_path(dst):
                self.before_name_change(dst, fd if isinstance(fd, int) else None, event)

    # -- checks ----------------------------------------------------------------------------
    def before_write(self, path: Any, flags: int, dir_fd: int | None = None) -> None:
        """Make ``path`` safe to open with ``flags``: a private file if it is a link in scratch;
        ``PermissionError`` if the write would land in the user's files."""
        full = _absolute(path, dir_fd)
        self._open_up(full)
        parent, name = os.path.split(full)
        parent_real = os.path.realpath(parent)
        target = os.path.join(parent_real, name)
        if _inside(parent_real, self.scratch):
            self._private(target, flags)
            return
        self._refuse_if_protected(os.path.realpath(target), full, "write")

    def before_name_change(self, path: Any, dir_fd: int | None, event: str) -> None:
        """Deleting, renaming or creating a name: harmless in scratch (a link goes, not the
        file it points to), refused in the user's directories."""
        full = _absolute(path, dir_fd)
        self._open_up(full)
        parent, name = os.path.split(full)
        target = os.path.join(os.path.realpath(parent), name)
        if event == "shutil.rmtree":
            target = os.path.realpath(full)
        if not _inside(target, self.scratch):
            self._refuse_if_protected(target, full, event.split(".")[-1])

    def _open_up(self, full: str) -> None:
        """Directory links of the scratch tree on the way to ``full`` (directories the sandbox
        did not mirror up front) become real directories of links, one level at a time, within
        the task's cap; past it the write is refused (``_refuse_if_protected``)."""
        rel = os.path.relpath(full, self.scratch) if _inside(full, self.scratch) else ""
        parts = rel.split(os.sep)[:-1] if rel and rel != "." else []
        if ".." in parts:
            return  # resolved by the kernel, not here: the real path decides
        current = self.scratch
        for part in parts:
            current = os.path.join(current, part)
            if not os.path.islink(current):
                if not os.path.isdir(current):
                    return
                continue
            real = os.path.realpath(current)
            if _inside(real, self.scratch):
                current = real  # a relative link the mirror kept (latest -> out/run3)
            elif os.path.isdir(real) and not self._mirror_dir(current):
                return

    def _mirror_dir(self, link: str) -> bool:
        """Replace the directory link ``link`` by a directory of links to its entries."""
        source = os.readlink(link)
        if not os.path.isabs(source):
            source = os.path.join(os.path.dirname(link), source)
        try:
            with os.scandir(source) as it:
                entries = [(e.name, e.is_dir(), e.is_symlink()) for e in it]
        except OSError:
            return False
        if len(entries) > self.budget:
            return False
        self.budget -= len(entries)
        for name, is_dir, is_link in entries:
            if is_link:  # the user's link to data elsewhere: that stays read-only too
                real = os.path.realpath(os.path.join(source, name))
                if is_dir:
                    self.capped.append(real)
                else:
                    self.files.add(real)
        staging = f"{link}.retrolog-dir-{os.getpid()}-{threading.get_ident()}"
        os.mkdir(staging)
        for name, is_dir, _link in entries:
            os.symlink(os.path.join(source, name), os.path.join(staging, name), is_dir)
        os.unlink(link)
        os.rename(staging, link)
        return True

    def _private(self, target: str, flags: int) -> None:
        try:
            st = os.lstat(target)
        except OSError:
            return  # a new file in a scratch directory
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(target)
            if _inside(real, self.scratch) or os.path.isdir(real):
                return
        elif not (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
            return  # already private
        if flags & os.O_EXCL and flags & os.O_CREAT:
            return  # fails with FileExistsError, as it would in the user's tree
        if flags & os.O_CREAT and (flags & os.O_TRUNC or not os.path.exists(target)):
            os.unlink(target)  # the open creates a private file
            return
        tmp = f"{target}.retrolog-cow-{os.getpid()}-{threading.get_ident()}"
        if flags & os.O_TRUNC:
            open(tmp, "wb").close()  # O_TRUNC without O_CREAT: the file must exist, empty
        else:
            shutil.copyfile(target, tmp)  # follows the link: the user's content, now private
        shutil.copymode(target, tmp)
        os.replace(tmp, target)

    def _refuse_if_protected(self, real: str, given: str, action: str) -> None:
        if _inside(real, self.scratch) or any(_inside(real, a) for a in self.allowed):
            return
        capped = next((c for c in self.capped if _inside(real, c)), None)
        if capped is not None:
            why = (
                f"it lies under {capped}, a directory of the user's the replay sandbox could not "
                f"mirror (more than {self.cap} entries per task, or reached through '..')"
            )
        elif real in self.files or any(_inside(real, p) for p in self.protected):
            why = (
                "it lies in the user's project or data, which a replay only reads (write relative "
                "to the task's working directory, its own scratch tree)"
            )
        else:
            return
        shown = real if real == given else f"{real} (as {given})"
        raise PermissionError(f"retrolog replay: refusing to {action} {shown}: {why}")


def _is_path(path: Any) -> bool:
    return isinstance(path, (str, bytes, os.PathLike))


def _memory_db(path: Any) -> bool:
    text = os.fsdecode(os.fspath(path))
    return text == "" or text.startswith((":memory:", "file:"))


def _dir_fd(event: str, args: tuple[Any, ...]) -> int | None:
    fd = args[-1] if len(args) > 1 and event != "os.truncate" else None
    return fd if isinstance(fd, int) and fd >= 0 else None


def _absolute(path: Any, dir_fd: int | None = None) -> str:
    text = os.fsdecode(os.fspath(path))
    if os.path.isabs(text):
        return text
    base = None
    if dir_fd is not None:
        try:
            base = os.readlink(f"/proc/self/fd/{dir_fd}")
        except OSError:
            base = None
    return os.path.join(base or os.getcwd(), text)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep) or root == os.sep


# -- libraries that write by name in C -----------------------------------------------------
def _wrap_writer(fn: Callable[..., Any], index: int, keyword: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        target = args[index] if len(args) > index else kwargs.get(keyword)
        if _is_path(target) and _policy is not None:
            _policy.hook("open", (target, "w", _TRUNCATE))
        return fn(*args, **kwargs)

    guarded.__retrolog_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def _patch(module: types.ModuleType) -> None:
    for attribute, index, keyword in WRITERS.get(module.__name__, ()):
        *owners, name = attribute.split(".")
        owner: Any = module
        for part in owners:
            owner = getattr(owner, part, None)
        fn = getattr(owner, name, None) if owner is not None else None
        if callable(fn) and not getattr(fn, "__retrolog_guarded__", False):
            with contextlib.suppress(AttributeError, TypeError):  # a read-only extension type
                setattr(owner, name, _wrap_writer(fn, index, keyword))


class _PatchingLoader:
    """Runs the real loader, then wraps the module's writers."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _patch(module)


class _WriterFinder:
    """A meta path finder for the modules of ``WRITERS`` only; finds them with the others."""

    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in WRITERS:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is cls or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


# -- installation -------------------------------------------------------------------------
_policy: Policy | None = None


def install(manifest_path: str | None = None) -> Policy | None:
    """Install the guard described by ``manifest_path`` (default: ``$RETROLOG_SANDBOX``); once
    per process. Returns the policy, or None when the process is not a sandboxed replay task."""
    global _policy
    if _policy is not None:
        return _policy
    if not manifest_path:
        # absolute: this file also runs as a script (python guard.py SCRIPT ...)
        from retrolog.settings import SANDBOX

        manifest_path = SANDBOX.get()
    if not manifest_path:
        return None
    with open(manifest_path) as fh:
        policy = Policy(json.load(fh))
    sys.addaudithook(policy.hook)
    _policy = policy
    for name in WRITERS:
        module = sys.modules.get(name)
        if module is not None:
            _patch(module)
    sys.meta_path.insert(0, _WriterFinder)
    return policy


def wrap_argv(argv: Sequence[str]) -> list[str]:
    """``python SCRIPT ARGS...`` as ``python guard.py SCRIPT ARGS...`` (other commands as given)."""
    argv = list(argv)
    if len(argv) >= 2 and not argv[1].startswith("-"):
        return [argv[0], GUARD_FILE, *argv[1:]]
    return argv


def _run_as_main(script: str) -> None:
    """Run ``script`` as ``__main__`` the way ``python SCRIPT`` would, this module kept alive."""
    import importlib.machinery

    sys.modules["_retrolog_guard"] = sys.modules[__name__]
    sys.argv = sys.argv[1:]
    if not getattr(sys.flags, "safe_path", False):
        sys.path[0] = os.path.dirname(os.path.realpath(script))
    main = types.ModuleType("__main__")
    main.__dict__.update(
        __file__=script,
        __cached__=None,
        __loader__=importlib.machinery.SourceFileLoader("__main__", script),
        __builtins__=sys.modules["builtins"],
    )
    sys.modules["__main__"] = main
    with open(script, "rb") as fh:
        code = compile(fh.read(), script, "exec", dont_inherit=True)
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next  # a plain interpreter shows none of this runner's frames
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        if isinstance(exc, KeyboardInterrupt):
            import signal

            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(1) from None


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python guard.py SCRIPT [ARGS...]")
    install()
    _run_as_main(sys.argv[1])
