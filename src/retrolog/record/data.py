"""Data versions: a content identity for the files and directories a run trained on.

``retrolog.data(name, path)`` hashes a file or a directory tree and records it with the run (a
``data`` journal event, the ``data_versions`` table). Hashing is xxHash's XXH3-128 when the
``data`` extra (``xxhash``) is installed, else the standard library's BLAKE2b (16 bytes): XXH3 is
a non-cryptographic hash at memory speed (13.9 GiB/s in memory here, BLAKE2b 0.46), which is
what identifying a dataset needs; the algorithm is recorded with each digest, so digests of the
two are never compared.

A per-file cache (``.retrolog/datahash.sqlite``, keyed by absolute path, inode, size, mtime_ns
and ctime_ns) skips reading files that did not change: re-hashing an unchanged tree costs one
``stat`` per file. Files modified within the last two seconds are not cached (a write in the same
mtime tick as the hash would go unseen). When DVC tracks the path, the md5 its ``.dvc`` file or
``dvc.lock`` records is kept beside the digest (read as text; DVC itself is not needed).

``RETROLOG_TRACK_DATA=1`` records every project file the script opens for reading (an audit hook
on ``open``), hashed on a background thread so training never waits for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._warn import warn_once
from ..store.data_versions import HashCache

CACHE_NAME = "datahash.sqlite"
MANIFEST_LIMIT = 5000  # directories with more files record their digest only, not each file's
SHORT = 12  # hex digits shown in runs() and the CLI
_CHUNK = 1 << 22
_RACY_NS = 2_000_000_000
_SKIP_DIRS = frozenset({".git", "__pycache__", ".retrolog", ".dvc"})


def hash_algorithm() -> tuple[str, Callable[[], Any]]:
    """The best available hash: (name, constructor of an object with ``update``/``hexdigest``)."""
    try:
        import xxhash
    except ImportError:
        return "blake2b", lambda: hashlib.blake2b(digest_size=16)
    return "xxh3_128", xxhash.xxh3_128


def hasher_for(algo: str) -> Callable[[], Any] | None:
    """The constructor of a named algorithm, or None when it is not available here."""
    if algo == "blake2b":
        return lambda: hashlib.blake2b(digest_size=16)
    if algo == "xxh3_128":
        try:
            import xxhash
        except ImportError:
            return None
        return xxhash.xxh3_128
    return None


@dataclass
class DataVersion:
    """The identity of one data path at one moment."""

    name: str
    path: str  # relative to the project root when inside it
    kind: str  # file | dir | missing
    digest: str  # hex; "" when missing
    algo: str
    files: int = 0
    bytes: int = 0
    dvc_md5: str | None = None
    manifest: dict[str, list[Any]] | None = None  # dir: relative path -> [size, digest]
    auto: bool = False

    @property
    def short(self) -> str:
        return self.digest[:SHORT] if self.digest else "missing"

    def event(self) -> tuple[Any, ...]:
        """The journal event (docs/data-model.md): kind ``data``."""
        manifest = json.dumps(self.manifest, separators=(",", ":")) if self.manifest else None
        return (
            "data",
            self.name,
            self.path,
            self.kind,
            self.digest,
            self.algo,
            self.files,
            self.bytes,
            self.dvc_md5,
            manifest,
            int(self.auto),
            time.time(),
        )


def _hash_file(path: str, new: Callable[[], Any], cache: HashCache) -> str:
    h = new()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            cache.bytes_read += n
    cache.files_read += 1
    return str(h.hexdigest())


def _walk(top: str, rel: str = "") -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative path, absolute path, stat) of every regular file under ``top``, sorted;
    directory symlinks are not followed (no cycles), file symlinks are."""
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        name = rel + entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in _SKIP_DIRS:
                    yield from _walk(entry.path, name + "/")
            elif entry.is_file():
                yield name, entry.path, entry.stat()
        except OSError:
            continue


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def hash_path(
    path: Path,
    cache: HashCache,
    algo: str | None = None,
) -> tuple[str, str, int, int, dict[str, list[Any]] | None]:
    """(kind, digest, files, bytes, manifest) of a file or directory; kind ``missing`` if absent.

    Raises LookupError when ``algo`` is named and not available here."""
    if algo is None:
        algo, new = hash_algorithm()
    else:
        found = hasher_for(algo)
        if found is None:
            raise LookupError(f"the {algo} hash is not available here (pip install xxhash)")
        new = found
    absolute = os.path.abspath(path)
    now_ns = time.time_ns()
    fresh: list[tuple[Any, ...]] = []
    if os.path.isfile(absolute):
        st = os.stat(absolute)
        known = cache.known(absolute, True, algo).get(absolute)
        if known is not None and known[:4] == _key(st):
            cache.hits += 1
            digest = str(known[4])
        else:
            digest = _hash_file(absolute, new, cache)
            if st.st_mtime_ns < now_ns - _RACY_NS:
                fresh.append((absolute, *_key(st), digest))
        cache.save(algo, fresh, [])
        return "file", digest, 1, st.st_size, None
    if not os.path.isdir(absolute):
        return "missing", "", 0, 0, None
    known_all = cache.known(absolute, False, algo)
    tree = new()
    manifest: dict[str, list[Any]] = {}
    files = total = 0
    for rel, full, st in _walk(absolute):
        key = _key(st)
        known = known_all.pop(full, None)
        if known is not None and known[:4] == key:
            cache.hits += 1
            digest = str(known[4])
        else:
            try:
                digest = _hash_file(full, new, cache)
            except OSError:
                continue  # vanished or unreadable while walking
            if st.st_mtime_ns < now_ns - _RACY_NS:
                fresh.append((full, *key, digest))
        tree.update(f"{rel}\0{st.st_size}\0{digest}\n".encode())
        files += 1
        total += st.st_size
        if files <= MANIFEST_LIMIT:
            manifest[rel] = [st.st_size, digest]
    cache.save(algo, fresh, list(known_all))
    return (
        "dir",
        str(tree.hexdigest()),
        files,
        total,
        (manifest if files <= MANIFEST_LIMIT else None),
    )


# -- DVC ------------------------------------------------------------------------------------
_MD5 = re.compile(r"^\s*-?\s*md5:\s*['\"]?([0-9a-f]{32}(?:\.dir)?)", re.M)
_PATH = re.compile(r"^\s*-?\s*path:\s*['\"]?([^'\"\n]+?)['\"]?\s*$")


def dvc_md5(path: Path) -> str | None:
    """The md5 DVC recorded for ``path`` in ``<path>.dvc`` or a ``dvc.lock`` above it, if any."""
    absolute = Path(os.path.abspath(path))
    sidecar = absolute.with_name(absolute.name + ".dvc")
    try:
        match = _MD5.search(sidecar.read_text())
        if match:
            return match.group(1)
    except OSError:
        pass
    for parent in absolute.parents:
        lock = parent / "dvc.lock"
        if lock.is_file():
            found = _md5_in_lock(lock, absolute.relative_to(parent).as_posix())
            if found:
                return found
        if (parent / ".git").exists() or (parent / ".dvc").is_dir():
            break
    return None


def _md5_in_lock(lock: Path, rel: str) -> str | None:
    """The md5 of the out whose ``path`` is ``rel`` in a dvc.lock (a list item holds both keys,
    in either order)."""
    try:
        lines = lock.read_text().splitlines()
    except OSError:
        return None
    item_path: str | None = None
    item_md5: str | None = None
    for line in lines:
        if line.lstrip().startswith("- "):  # a new list item
            if item_path == rel and item_md5:
                return item_md5
            item_path = item_md5 = None
        path_match = _PATH.match(line)
        if path_match:
            item_path = path_match.group(1).strip().rstrip("/")
        md5_match = _MD5.match(line)
        if md5_match:
            item_md5 = md5_match.group(1)
    return item_md5 if item_path == rel and item_md5 else None


# -- recording ------------------------------------------------------------------------------
def display_path(path: Path, root: Path) -> str:
    """``path`` relative to the project root when inside it (portable between clones)."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return str(absolute)


def version_of(
    name: str, path: Path, root: Path, cache: HashCache, auto: bool = False
) -> DataVersion:
    """Hash ``path`` (through the cache) into a DataVersion."""
    algo, _ = hash_algorithm()
    kind, digest, files, total, manifest = hash_path(path, cache, algo)
    return DataVersion(
        name=name,
        path=display_path(path, root),
        kind=kind,
        digest=digest,
        algo=algo,
        files=files,
        bytes=total,
        dvc_md5=dvc_md5(path) if kind != "missing" else None,
        manifest=manifest,
        auto=auto,
    )


def cache_for(data_dir: Path) -> HashCache:
    return HashCache(data_dir / CACHE_NAME)


def record(session: Any, name: str, path: str | os.PathLike[str]) -> None:
    """``retrolog.data``'s work: hash now (the user's explicit call, before the loop) and append
    the event. Never raises into training: failures warn once."""
    if getattr(session, "silent", False) or hasattr(session, "spec"):
        return  # a non-recording rank, or a replay (the planner checked the data already)
    root = session.project.root
    resolved = Path(path) if os.path.isabs(path) else Path(os.getcwd()) / path
    cache = cache_for(session.project.data_dir)
    try:
        version = version_of(name, resolved, root, cache)
    except OSError as exc:
        warn_once(f"data:{name}", f"retrolog: data({name!r}, ...) not recorded: {exc}")
        return
    finally:
        cache.close()
    if version.kind == "missing":
        warn_once(f"data:{name}", f"retrolog: data({name!r}, {str(path)!r}): no such file or dir")
    session.events.append(version.event())
    session.flush()


# -- automatic mode -------------------------------------------------------------------------
class _Tracker:
    """Files opened for reading inside the project, hashed on a background thread."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.root = os.path.abspath(session.project.root) + os.sep
        self.data_dir = os.path.abspath(session.project.data_dir) + os.sep
        self.seen: set[str] = set()
        self.queue: list[str] = []
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._work, name="retrolog-data", daemon=True)
        self.busy = False
        self.thread.start()

    def consider(self, file: Any, mode: Any, flags: Any) -> None:
        if isinstance(file, int) or threading.current_thread().name.startswith("retrolog-"):
            return  # a descriptor, or retrolog's own threads (versioning, storing, hashing)
        if isinstance(mode, str):
            if "r" not in mode or "+" in mode:
                return
        elif isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR):
            return
        try:
            path = os.path.abspath(os.fsdecode(file))
        except (TypeError, ValueError):
            return
        if path in self.seen:
            return
        self.seen.add(path)
        if (
            not path.startswith(self.root)
            or path.startswith(self.data_dir)
            or "site-packages" in path
            or path.endswith((".py", ".pyc", ".so", ".pth"))
            or f"{os.sep}.git{os.sep}" in path
        ):
            return
        self.queue.append(path)
        self.wake.set()

    def _work(self) -> None:
        cache = cache_for(self.session.project.data_dir)
        while True:
            self.wake.wait()
            self.wake.clear()
            while self.queue:
                self.busy = True
                path = self.queue.pop(0)
                if not os.path.isfile(path):
                    continue
                rel = display_path(Path(path), self.session.project.root)
                try:
                    version = version_of(rel, Path(path), self.session.project.root, cache, True)
                except OSError:
                    continue
                self.session.events.append(version.event())
            self.busy = False


_tracker: _Tracker | None = None


def start_tracking(session: Any) -> None:
    """Start hashing what the audit hook (``retrolog._datahook``) saw, when
    ``RETROLOG_TRACK_DATA`` is on; opens before this call included."""
    global _tracker
    from .. import settings

    if not settings.TRACK_DATA.get():
        return
    if getattr(session, "silent", False) or hasattr(session, "spec"):
        return
    if _tracker is not None:  # a new run in the same process (after commit())
        _tracker.session = session
        _tracker.seen.clear()
        return
    from .. import _datahook  # installed at `import retrolog` already when the setting is on

    _tracker = _Tracker(session)
    _datahook.take_over(_tracker.consider)


def drain_tracking(timeout: float = 30.0) -> None:
    """Wait (bounded) for queued automatic hashes before the run closes."""
    tracker = _tracker
    if tracker is None:
        return
    deadline = time.monotonic() + timeout
    while (tracker.queue or tracker.busy) and time.monotonic() < deadline:
        time.sleep(0.01)
