"""The way in and out: Parquet export and import of a history, and imports from other trackers.

Every module here imports its third-party library (pyarrow, mlflow, tensorboard, wandb) inside
its functions, so ``import retrolog`` and the CLI's start never load them. Imported runs are
written through the store's journal-event ingest (``store.ingest``) with status ``imported`` and
no code version: they are queryable beside recorded runs and never replayed. See docs/export.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .common import ImportResult

__all__ = ["ImportResult", "export_mlflow", "export_parquet", "import_history"]


def export_parquet(*args: Any, **kwargs: Any) -> Any:
    """``export.export_parquet``: runs, args, loops, metrics and extension tables to Parquet."""
    from .export import export_parquet as run

    return run(*args, **kwargs)


def export_mlflow(*args: Any, **kwargs: Any) -> Any:
    """``export_mlflow.export_mlflow``: runs into an MLflow tracking directory or database."""
    from .export_mlflow import export_mlflow as run

    return run(*args, **kwargs)


def import_history(*args: Any, **kwargs: Any) -> Any:
    """``detect.import_history``: a retrolog export, MLflow store, TensorBoard logs or W&B runs."""
    from .detect import import_history as run

    return run(*args, **kwargs)
