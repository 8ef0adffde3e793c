"""``retrolog import SOURCE``: which kind of history ``SOURCE`` holds, and importing it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, UsageError
from .common import ImportResult

KINDS = ("retrolog", "mlflow", "tensorboard", "wandb")
_SCAN_LIMIT = 20_000  # files looked at to recognise a directory


def detect(source: str) -> str:
    """The kind of history at ``source`` (a directory, an MLflow database file or URI)."""
    if "://" in source:
        return "mlflow"
    path = Path(source)
    if not path.exists():
        raise NotFoundError(f"no such file or directory: {source}")
    if path.is_file():
        if path.suffix in (".db", ".sqlite", ".sqlite3"):
            return "mlflow"
        if path.suffix == ".wandb":
            return "wandb"
        if "tfevents" in path.name:
            return "tensorboard"
        raise UsageError(f"cannot tell what {source} holds; name the kind with --from")
    from .export import MANIFEST

    if (path / MANIFEST).is_file():
        return "retrolog"
    if (path / "mlruns").is_dir() or (path / "mlflow.db").is_file() or _mlruns(path):
        return "mlflow"
    for found in itertools.islice(path.rglob("*"), _SCAN_LIMIT):
        if found.name.endswith(".wandb"):
            return "wandb"
        if "tfevents" in found.name:
            return "tensorboard"
    raise UsageError(
        f"{source} holds no retrolog export, MLflow store, TensorBoard event file or W&B run"
    )


def _mlruns(path: Path) -> bool:
    """An MLflow file store: experiment directories with a meta.yaml."""
    return any((child / "meta.yaml").is_file() for child in itertools.islice(path.iterdir(), 200))


def import_history(project: Any, source: str, kind: str | None = None) -> ImportResult:
    """Import ``source`` into the project's store as ``imported`` runs (docs/export.md)."""
    from ..relational import open_store

    kind = kind or detect(source)
    if kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    store = open_store(project)
    if kind == "retrolog":
        from .import_parquet import import_parquet

        return import_parquet(store, Path(source))
    if kind == "mlflow":
        from .import_mlflow import import_mlflow

        return import_mlflow(store, source)
    if kind == "tensorboard":
        from .import_tb import import_tensorboard

        return import_tensorboard(store, Path(source))
    from .import_wandb import import_wandb

    return import_wandb(store, Path(source))
