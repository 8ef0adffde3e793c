"""Export runs into an MLflow tracking store with MLflow's own client, to open them in its UI.

One MLflow experiment per script (``retrolog:<script>``), one MLflow run per retrolog run (tag
``retrolog.run_id``). Args become params (text; containers as JSON). Numeric values (floats,
ints, booleans as 0/1, NaN and infinities included) become metrics; MLflow has one ``step`` per
value, so a value's step is its position among the run's values of that name (an epoch metric's
step is the epoch index; a per-batch metric inside epochs counts batches across epochs). Strings,
None and JSON values have no MLflow equivalent and are counted, not exported. A value a replay
produced is exported where the run has no recorded value of that name at those coordinates.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..record.values import from_cell
from ..store import exchange as stored
from .export import ExportResult, select_runs

_STATUS = {
    "finished": "FINISHED",
    "imported": "FINISHED",
    "failed": "FAILED",
    "crashed": "FAILED",
    "interrupted": "KILLED",
}
_BAD_KEY = re.compile(r"[^\w\-. /]")
_BATCH = 1000  # MLflow's log_batch limit on metrics


def mlflow_uri(target: str | Path) -> tuple[str, str | None]:
    """The tracking URI for ``target`` and the artifact location of new experiments: a URI as is
    (MLflow's defaults); a ``*.db`` file as SQLite; a directory as ``DIR/mlflow.db`` (SQLite,
    MLflow's recommended backend: MLflow 3 refuses new file stores by default) with artifacts in
    ``DIR/artifacts``."""
    text = str(target)
    if "://" in text:
        return text, None
    path = Path(text).resolve()
    if path.suffix not in (".db", ".sqlite"):
        path.mkdir(parents=True, exist_ok=True)
        path = path / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}", (path.parent / "artifacts").as_uri()


def mlflow_key(name: str) -> str:
    """MLflow allows letters, digits, ``_ - . /`` and spaces in names."""
    return _BAD_KEY.sub("_", name)[:250]


def export_mlflow(
    project: Any,
    target: str | Path,
    run_ids: Sequence[str] | None = None,
    where: str | None = None,
) -> ExportResult:
    """Create one MLflow run per selected retrolog run in ``target`` (see the module docstring)."""
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UsageError("exporting to MLflow needs mlflow: pip install mlflow") from None
    from ..relational import open_store

    store = open_store(project)
    selected = select_runs(project, store, run_ids, where)
    uri, artifacts = mlflow_uri(target)
    result = ExportResult(Path(str(target)))
    counts = {"runs": 0, "params": 0, "metrics": 0, "skipped values": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's deprecation notices are not ours to show
        client = MlflowClient(tracking_uri=uri)
        experiments: dict[str, str] = {}
        for key, run_id in selected:
            run = stored.run_row(store, key)
            script = f"retrolog:{run.script or '?'}"
            if script not in experiments:
                found = client.get_experiment_by_name(script)
                experiments[script] = (
                    found.experiment_id
                    if found
                    else client.create_experiment(script, artifact_location=artifacts)
                )
            start_ms = int((run.start_time or 0) * 1000)
            tags = {
                "retrolog.run_id": run_id,
                "retrolog.status": run.status,
                "mlflow.runName": run_id,
                "mlflow.source.name": run.script or "",
            }
            if run.version:
                tags["retrolog.version"] = run.version
            if run.git_head:
                tags["mlflow.source.git.commit"] = run.git_head
            created = client.create_run(experiments[script], start_time=start_ms, tags=tags)
            mlflow_id = created.info.run_id
            params = [
                Param(mlflow_key(r.name), _text(from_cell(r.vtype, r.value_num, r.value_text)))
                for r in stored.run_args(store, key)
            ]
            metrics, skipped = _metrics(store, key, start_ms, Metric)
            for i in range(0, len(params), 100):  # MLflow's log_batch limit on params
                client.log_batch(mlflow_id, params=params[i : i + 100])
            for i in range(0, len(metrics), _BATCH):
                client.log_batch(mlflow_id, metrics=metrics[i : i + _BATCH])
            if run.status != "running":
                end_ms = int((run.end_time or run.start_time or 0) * 1000)
                client.set_terminated(mlflow_id, _STATUS.get(run.status, "FINISHED"), end_ms)
            counts["runs"] += 1
            counts["params"] += len(params)
            counts["metrics"] += len(metrics)
            counts["skipped values"] += skipped
    result.tables = counts
    return result


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _metrics(store: Any, key: int, start_ms: int, metric: Any) -> tuple[list[Any], int]:
    """The run's numeric values as MLflow metrics, and how many values could not be."""
    rows = stored.timed_log_rows(store, key)
    recorded = {(r.ctx_id, r.name) for r in rows if r.replay_id is None}
    steps: dict[str, int] = {}
    out, skipped = [], 0
    for r in sorted(rows, key=lambda r: (r.ctx_id, r.replay_id is not None, r.seq)):
        if r.replay_id is not None and (r.ctx_id, r.name) in recorded:
            continue
        value = from_cell(r.vtype, r.value_num, r.value_text)
        if r.vtype not in ("f", "i", "b") or value is None:
            skipped += 1
            continue
        name = mlflow_key(r.name)
        step = steps.get(name, 0)
        steps[name] = step + 1
        stamp = int(r.start_time * 1000) if r.start_time else start_ms
        out.append(metric(name, float(value), stamp, step))
    return out, skipped
