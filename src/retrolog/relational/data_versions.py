"""Data versions (``retrolog.data``, record/data.py) as columns of ``runs()`` and in reports."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ..errors import StoreError
from ..record.data import SHORT
from ..store import query as reads

PREFIX = "data."  # runs() column of the data named ``train``: ``data.train`` (short digest)


def data_frame(store: Any) -> pd.DataFrame:
    """One row per run key (index ``run``), one ``data.<name>`` column per recorded data name
    holding the digest's first 12 hex digits ("missing" when the path was absent)."""
    try:
        rows = reads.data_version_digests(store)
    except StoreError:  # a store this version has not migrated (read-only access)
        rows = []
    if not rows:
        return pd.DataFrame(index=pd.Index([], name="run"))
    frame = pd.DataFrame(
        [
            (int(r[0]), PREFIX + r[1], r[3][:SHORT] if r[2] != "missing" else "missing")
            for r in rows
        ],
        columns=["run", "name", "value"],
    )
    wide = frame.drop_duplicates(["run", "name"], keep="last").pivot(
        index="run", columns="name", values="value"
    )
    wide.columns.name = None
    return wide


def run_data(store: Any, run_key: int, manifest: bool = False) -> list[dict[str, Any]]:
    """A run's data versions for ``retrolog show`` and the UI; ``manifest``: with each
    directory's recorded file list (relative path -> [size, digest]), for the data diff."""
    try:
        rows = reads.run_data_versions(store, run_key)
    except StoreError:
        return []
    out = []
    for name, path, kind, digest, algo, files, size, dvc, listing, auto in rows:
        out.append(
            {
                "name": name,
                "path": path,
                "kind": kind,
                "digest": digest,
                "short": digest[:SHORT] if digest else "missing",
                "algo": algo,
                "files": files,
                "bytes": size,
                "dvc_md5": dvc,
                "auto": bool(auto),
                "manifest": json.loads(listing) if listing and manifest else None,
            }
        )
    return out


def diff_data(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per data name of either run: both short digests, ``same``/``changed``/``only in a``/
    ``only in b``, and for directories the files that differ (from the recorded manifests)."""
    by_a = {d["name"]: d for d in a}
    by_b = {d["name"]: d for d in b}
    out = []
    for name in sorted(set(by_a) | set(by_b)):
        da, db = by_a.get(name), by_b.get(name)
        if da is None or db is None:
            status = "only in b" if da is None else "only in a"
            files: list[str] = []
        else:
            same = (da["kind"], da["digest"], da["algo"]) == (db["kind"], db["digest"], db["algo"])
            status = "same" if same else "changed"
            ma, mb = da.get("manifest"), db.get("manifest")
            files = (
                sorted(n for n in set(ma) | set(mb) if ma.get(n) != mb.get(n))
                if ma is not None and mb is not None and not same
                else []
            )
        out.append(
            {
                "name": name,
                "path": (da or db or {}).get("path"),
                "a": da["short"] if da else None,
                "b": db["short"] if db else None,
                "status": status,
                "files": files,
            }
        )
    return out
