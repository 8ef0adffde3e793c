"""Import W&B offline runs (``wandb/offline-run-*/run-*.wandb``).

A ``.wandb`` file is a LevelDB-style log of ``wandb_internal_pb2.Record`` protobufs. The wandb SDK
(0.2x and later) no longer ships a Python reader of these files (its ``datastore`` module moved
into the Go ``wandb-core`` binary), so the log framing is read here (32 KiB blocks, 7-byte record
headers: CRC-32, length, type FULL/FIRST/MIDDLE/LAST) and each record is decoded with the SDK's own
protobuf classes. Config becomes args, history rows become rows on a ``step`` loop (W&B's
``_step``); summaries, media, files and system metrics are not imported.
"""

from __future__ import annotations

import itertools
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .common import ImportedRun, ImportResult, cell, need, stable_run_id, write_runs

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_IDENT = b":W&B"
_SCAN_LIMIT = 100_000


def read_records(path: Path) -> Iterator[bytes]:
    """The records' payloads; a torn or damaged tail ends the file (as W&B's own reader does)."""
    data = path.read_bytes()
    if len(data) < _HEADER or data[:4] != _IDENT:
        raise UsageError(f"{path} is not a W&B run file (no {_IDENT.decode()} header)")
    index, pending = _HEADER, b""
    checked: bool | None = None  # whether checksums are W&B's CRC-32 (decided by the first one)
    while index + _HEADER <= len(data):
        left = _BLOCK - index % _BLOCK
        if left < _HEADER:  # the rest of a block too small for a header is zero padding
            index += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[index : index + _HEADER])
        index += _HEADER
        payload = data[index : index + length]
        index += length
        if len(payload) < length or kind not in (_FULL, _FIRST, _MIDDLE, _LAST):
            return
        valid = zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == checksum
        if checked is None:
            checked = valid
        elif checked and not valid:
            return
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        else:
            yield pending + payload
            pending = b""


def run_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(itertools.islice(root.rglob("*.wandb"), _SCAN_LIMIT))


def import_wandb(store: Any, root: Path) -> ImportResult:
    """Store one run per ``.wandb`` file under ``root``."""
    need("wandb", "W&B")
    from wandb.proto import wandb_internal_pb2 as pb

    result = ImportResult(source=str(root))
    runs = []
    for path in run_files(root):
        run = _read_run(path, pb, result)
        if run is not None:
            runs.append(run)
    write_runs(store, runs, result)
    return result


def _key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def _value(item: Any) -> Any:
    if item.value_json:
        return json.loads(item.value_json)
    which = item.WhichOneof("value") if hasattr(item, "WhichOneof") else None
    if which is None or which == "none":
        return None
    value = getattr(item, which)
    return json.loads(value) if which == "json" else value


def _config_value(value: Any) -> Any:
    """W&B wraps config values as ``{"value": ..., "desc": ...}`` in some places."""
    if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
        return value["value"]
    return value


def _read_run(path: Path, pb: Any, result: ImportResult) -> ImportedRun | None:
    info: Any = None
    config: dict[str, Any] = {}
    rows: list[tuple[int, float | None, dict[str, Any]]] = []
    exit_code: int | None = None
    for payload in read_records(path):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError: a damaged record ends the file
            break
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            for item in record.run.config.update:
                config[_key(item)] = _config_value(json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                config[_key(item)] = _config_value(json.loads(item.value_json))
        elif kind == "history":
            values = {_key(item): _value(item) for item in record.history.item}
            step = values.get("_step", record.history.step.num)
            rows.append((int(step), values.get("_timestamp"), values))
        elif kind == "exit":
            exit_code = record.exit.exit_code
    if info is None:
        result.notes.append(f"{path}: no run record, not imported")
        return None
    start = float(info.start_time.seconds) + info.start_time.nanos / 1e9 or None
    run = ImportedRun(run_id=stable_run_id(start, f"wandb:{info.project}:{info.run_id}"))
    run.facts = {
        "script": f"wandb:{info.project or 'offline'}",
        "argv": json.dumps([info.display_name]) if info.display_name else None,
        "cwd": str(path.parent),
        "start_time": start,
        "host": info.host or None,
        "git_head": info.git.commit or None,
    }
    stamps = [stamp for _s, stamp, _v in rows if isinstance(stamp, (int, float))]
    run.end_time = max(stamps) if stamps else None
    if exit_code not in (None, 0):
        run.error = f"W&B exit code {exit_code}"
    for name, value in sorted(config.items()):
        encoded = cell(value) if not name.startswith("_") else None
        if encoded is not None:
            run.args.append((name, encoded))
    steps: dict[int, int] = {}
    seq = 0
    for step, stamp, values in rows:
        if step not in steps:
            steps[step] = len(steps) + 1
            wall = float(stamp) if isinstance(stamp, (int, float)) else None
            run.loops.append((steps[step], 0, 1, "step", step, json.dumps(step), wall))
        for name, value in values.items():
            if name.startswith("_") or (isinstance(value, dict) and "_type" in value):
                continue  # W&B's own bookkeeping, and media (images, tables, ...)
            encoded = cell(value)
            if encoded is not None:
                seq += 1
                run.logs.append((seq, steps[step], name, *encoded, None))
    run.tags = {"imported_from": "wandb", "source_run_id": info.run_id}
    if info.display_name:
        run.tags["source_name"] = info.display_name
    if info.notes:
        run.tags["source_notes"] = info.notes
    for tag in info.tags:
        run.tags[f"wandb_tag:{tag}"] = ""
    return run
