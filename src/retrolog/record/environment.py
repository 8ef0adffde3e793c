"""The environment a run ran in, recorded once as it ends (an ``env`` journal event).

The full list of installed distributions (``name==version``, sorted, hashed so the store keeps
each distinct list once and two runs compare by hash), the Python version and implementation,
the platform, host and interpreter, the CUDA devices when the script imported torch, and, with
``RETROLOG_CAPTURE_OUTPUT=1``, what the script wrote to stdout and stderr (the first MiB of
each). Collected at ``close``, after training: reading the installed metadata costs tens of
milliseconds that the training thread never pays while it trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from .. import settings
from .._warn import warn_once

CAPTURE_ENV = settings.CAPTURE_OUTPUT.name
OUTPUT_CAP = 1 << 20  # characters kept per stream
_TRUNCATED = "\n[retrolog: output truncated at 1 MiB]\n"
REPORTED_PACKAGES = (  # (distribution, import name)
    ("torch", "torch"),
    ("numpy", "numpy"),
    ("pandas", "pandas"),
    ("scikit-learn", "sklearn"),
    ("retrolog", "retrolog"),
)


def distributions() -> list[str]:
    """Installed distributions as sorted, de-duplicated ``name==version`` lines (names
    normalised as PEP 503 does: lower case, runs of ``-_.`` as one ``-``)."""
    import importlib.metadata
    import re

    found: set[str] = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue
        found.add(f"{re.sub(r'[-_.]+', '-', name).lower()}=={dist.version}")
    return sorted(found)


def cached_distributions(cache_dir: Path | None) -> list[str]:
    """``distributions()``, reused while no directory of ``sys.path`` changed (installing,
    upgrading or removing a distribution changes its directory's modification time): reading
    every distribution's metadata costs tens of milliseconds, a stat of each path a few µs."""
    if cache_dir is None:
        return distributions()
    parts = []
    for entry in sys.path:
        try:
            parts.append(f"{entry}\0{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            continue
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    path = cache_dir / "distributions.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("key") == key and isinstance(doc.get("lines"), list):
            return [str(line) for line in doc["lines"]]
    except (OSError, ValueError, AttributeError):
        pass
    lines = distributions()
    try:
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        partial.write_text(json.dumps({"key": key, "lines": lines}), encoding="utf-8")
        partial.replace(path)
    except OSError:
        pass
    return lines


def packages_hash(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def accelerator() -> dict[str, Any] | None:
    """CUDA devices seen by torch, when the script imported torch (never imported here)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        count = torch.cuda.device_count()
        return {
            "kind": "cuda",
            "cuda": getattr(torch.version, "cuda", None),
            "devices": [torch.cuda.get_device_name(i) for i in range(count)],
        }
    except Exception:  # noqa: BLE001 - a broken driver must not cost the run its record
        return None


class _Tee:
    """A text stream that writes through to the real one and keeps the first OUTPUT_CAP chars."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._parts: list[str] = []
        self._size = 0
        self._truncated = False
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if isinstance(text, str) and not self._truncated:
            with self._lock:
                room = OUTPUT_CAP - self._size
                if len(text) > room:
                    text, self._truncated = text[:room], True
                self._parts.append(text)
                self._size += len(text)
        return written

    def take(self) -> str:
        """What was captured since the last take (and a note when it was cut)."""
        with self._lock:
            text = "".join(self._parts) + (_TRUNCATED if self._truncated else "")
            self._parts, self._size, self._truncated = [], 0, False
        return text

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...
        return getattr(self._stream, name)


_tees: dict[str, _Tee] = {}


def capture_wanted() -> bool:
    return bool(settings.CAPTURE_OUTPUT.get())


def start_capture() -> None:
    """Tee stdout and stderr for this run when RETROLOG_CAPTURE_OUTPUT=1 (once per process;
    a later run of the same process starts from an empty capture)."""
    if not capture_wanted():
        return
    try:
        for stream in ("stdout", "stderr"):
            tee = _tees.get(stream)
            if tee is not None:
                tee.take()
                continue
            current = getattr(sys, stream)
            if current is None:
                continue
            _tees[stream] = _Tee(current)
            setattr(sys, stream, _tees[stream])
    except Exception as exc:  # noqa: BLE001 - never fail the run for its output
        warn_once("capture-output", f"retrolog: cannot capture the output of this run: {exc!r}")


def facts(cache_dir: Path | None = None) -> dict[str, Any]:
    """The ``env`` event's payload (docs/data-model.md); ``cache_dir`` keeps the distribution
    list between runs (``cached_distributions``)."""
    out: dict[str, Any] = {
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        # not platform.platform(): it reads the interpreter binary for the libc version (~40 ms)
        "platform": f"{platform.system()}-{platform.release()}-{platform.machine()}",
        "host": socket.gethostname(),
        "executable": sys.executable,
        "accelerator": accelerator(),
    }
    try:
        lines = cached_distributions(cache_dir)
        out["packages"] = lines
        out["hash"] = packages_hash(lines)
    except Exception as exc:  # noqa: BLE001 - damaged metadata: the rest is still worth keeping
        warn_once("distributions", f"retrolog: cannot list the installed packages: {exc!r}")
    for stream, tee in _tees.items():
        out[stream] = tee.take()
    return out


def event(cache_dir: Path | None = None) -> tuple[Any, ...]:
    """The ``env`` event to append to a session's events."""
    return ("env", facts(cache_dir))


def reported_packages() -> dict[str, str]:
    """Versions of the reported packages this run imported (their ``__version__``: reading
    installed metadata instead cost ~15 ms per run)."""
    found = {}
    for name, module_name in REPORTED_PACKAGES:
        module = sys.modules.get(module_name)
        version = getattr(module, "__version__", None)
        if isinstance(version, str):
            found[name] = version
    return found
