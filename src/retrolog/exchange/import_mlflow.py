"""Import MLflow runs (a tracking directory, ``mlflow.db`` or any tracking URI) with MLflow's own
client. Params become args (parsed back to numbers and booleans where their text is one), each
metric's history becomes rows on a ``step`` loop (iteration = MLflow's step), user tags become
run tags where the store has them. Artifacts, models and traces are not imported."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import ImportedRun, ImportResult, cell, need, parse_param, stable_run_id, write_runs


def tracking_uri(source: str) -> str:
    """The MLflow tracking URI of a directory, a database file or a URI."""
    if "://" in source:
        return source
    path = Path(source).resolve()
    if path.is_file():
        return f"sqlite:///{path}"
    if (path / "mlflow.db").is_file():
        return f"sqlite:///{path / 'mlflow.db'}"
    if (path / "mlruns").is_dir():
        return (path / "mlruns").as_uri()
    return path.as_uri()


@contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """MLflow 3 refuses to open a file store (``mlruns/``) unless ``MLFLOW_ALLOW_FILE_STORE`` is
    set; reading a team's existing one is what an import is for, so it is allowed while it runs."""
    if not uri.startswith("file:"):
        yield
        return
    previous = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = previous


def import_mlflow(store: Any, source: str) -> ImportResult:
    """Store every run of every experiment (active and deleted ones alike) of ``source``."""
    need("mlflow", "MLflow")
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(source)
    result = ImportResult(source=uri)
    with warnings.catch_warnings(), _file_store_allowed(uri):
        warnings.simplefilter("ignore")  # the file store's deprecation notice is not ours to show
        client = MlflowClient(tracking_uri=uri)
        experiments = {
            e.experiment_id: e.name for e in client.search_experiments(view_type=ViewType.ALL)
        }
        runs: list[ImportedRun] = []
        token = None
        while experiments:
            page = client.search_runs(
                list(experiments),
                run_view_type=ViewType.ALL,
                max_results=1000,
                page_token=token,
            )
            for run in page:
                runs.append(_run(client, run, experiments.get(run.info.experiment_id, ""), uri))
            token = page.token
            if not token:
                break
    write_runs(store, runs, result)
    return result


def _run(client: Any, run: Any, experiment: str, uri: str) -> ImportedRun:
    info, data = run.info, run.data
    start = info.start_time / 1000 if info.start_time else None
    out = ImportedRun(run_id=stable_run_id(start, f"mlflow:{uri}:{info.run_id}"))
    out.facts = {
        "script": f"mlflow:{experiment}",
        "argv": json.dumps([info.run_name]) if info.run_name else None,
        "cwd": uri,
        "start_time": start,
        "host": data.tags.get("mlflow.source.name"),
        "git_head": data.tags.get("mlflow.source.git.commit"),
    }
    out.end_time = info.end_time / 1000 if info.end_time else None
    if info.status != "FINISHED":
        out.error = f"MLflow status {info.status}"
    for name, text in sorted(data.params.items()):
        encoded = cell(parse_param(text))
        if encoded is not None:
            out.args.append((name, encoded))
    points = []
    for key in sorted(data.metrics):
        for metric in client.get_metric_history(info.run_id, key):
            points.append((int(metric.step), int(metric.timestamp), key, metric.value))
    points.sort()
    steps: dict[int, int] = {}
    for seq, (step, stamp, key, value) in enumerate(points, start=1):
        if step not in steps:
            steps[step] = len(steps) + 1
            out.loops.append((steps[step], 0, 1, "step", step, json.dumps(step), stamp / 1000))
        encoded = cell(float(value))
        if encoded is not None:
            out.logs.append((seq, steps[step], key, *encoded, None))
    out.tags = {k: str(v) for k, v in data.tags.items() if not k.startswith("mlflow.")}
    out.tags.update(
        {"imported_from": "mlflow", "source_run_id": info.run_id, "source_experiment": experiment}
    )
    if info.run_name:
        out.tags["source_name"] = info.run_name
    return out
