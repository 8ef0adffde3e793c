"""The UI's pages and JSON endpoints over a real store filled by recording real scripts."""

from __future__ import annotations

import html
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, update
from tests.conftest import run_python, write_script
from ui_support import XSS_NAME, store_of

import retrolog
from retrolog.store import schema
from retrolog.ui import create_app
from retrolog.ui.db import Reader
from retrolog.ui.downsample import lttb, minmax, minmax_many

TABLES = ["runs", "args", "loops", "logs", "timings", "checkpoints", "replays", "replay_tasks"]


@pytest.fixture(scope="module")
def client(ui_project: dict[str, Any]) -> TestClient:
    return TestClient(create_app(ui_project["repo"]), base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def api_runs(client: TestClient) -> list[dict[str, Any]]:
    return client.get("/api/runs").json()["runs"]


def _train_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r["script"] == "train.py"]


def test_runs_page_lists_runs_args_and_last_values(client: TestClient, api_runs: list) -> None:
    page = client.get("/runs")
    assert page.status_code == 200
    body = page.text
    assert len(api_runs) == 6
    for run in api_runs:
        assert run["run_id"] in body
        assert run["version"][:10] in body
    assert 'class="badge failed"' in body and 'class="badge finished"' in body
    for column in ("lr", "optimizer", "epochs", "loss", "acc", "val_loss", "grad_norm"):
        assert f">{column}</a></th>" in body
    first = _train_runs(api_runs)[0]
    assert first["args"] == {"epochs": 4, "lr": 0.1, "optimizer": "sgd", "seed": 0}
    assert first["last"]["acc"] == pytest.approx(0.3297, abs=1e-4)
    assert first["last"]["status_note"] == "done"
    assert first["last"]["grad_norm"] == pytest.approx(1.0 + 0.05 * 74)  # a hindsight value
    assert body.count('title="logged in hindsight by replay rp0001"') == 1
    assert body.count(' hindsight"') == 1  # only that cell is styled as hindsight


def test_filter_takes_the_cli_where_syntax(client: TestClient) -> None:
    data = client.get("/api/runs", params={"where": "lr > 0.2 AND status = 'finished'"}).json()
    assert sorted(r["args"]["lr"] for r in data["runs"]) == [0.3, 0.5, 1.0]
    assert data["total"] == 6 and data["count"] == 3
    assert [
        r["args"]["optimizer"]
        for r in client.get("/api/runs", params={"where": "optimizer = 'adam'"}).json()["runs"]
    ] == ["adam"]
    # metric columns (last values) and facts are filterable too
    assert client.get("/api/runs", params={"where": "val_loss IS NOT NULL"}).json()["count"] == 1
    assert client.get("/api/runs", params={"where": "status = 'failed'"}).json()["count"] == 1
    page = client.get("/runs", params={"where": "lr > 0.2 AND status = 'finished'"}).text
    assert "3 of 6 runs" in page


def test_runs_sorting_and_pages(client: TestClient, api_runs: list) -> None:
    lrs = [r["args"]["lr"] for r in client.get("/api/runs", params={"sort": "lr"}).json()["runs"]]
    assert lrs == sorted(lrs)
    data = client.get("/api/runs", params={"sort": "lr", "desc": 1, "limit": 2, "offset": 1}).json()
    assert [r["args"]["lr"] for r in data["runs"]] == sorted(lrs, reverse=True)[1:3]
    assert data["count"] == 2 and data["matched"] == 6
    # a column mixing text and numbers, and missing values, still sorts (missing last)
    notes = client.get("/api/runs", params={"sort": "status_note"}).json()["runs"]
    assert [r["last"].get("status_note") for r in notes][:4] == ["done"] * 4
    page = client.get("/runs", params={"limit": 2, "sort": "lr", "desc": 0}).text
    assert "runs 1–2 of 6" in page and "Next &rarr;" in page and "Show all 6" in page
    assert page.index(api_runs[4]["run_id"]) < page.index(api_runs[0]["run_id"])  # 0.05 < 0.1
    assert 'class="num sorted-asc"><a href="/runs?sort=lr&amp;desc=1' in page
    newest_first = client.get("/runs").text
    assert newest_first.index(api_runs[-1]["run_id"]) < newest_first.index(api_runs[0]["run_id"])


def _fingerprint(repo: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(repo / ".retrolog" / "retrolog.db")
    try:
        return [conn.execute(f"SELECT count(*), max(rowid) FROM {t}").fetchone() for t in TABLES]
    finally:
        conn.close()


@pytest.mark.parametrize(
    "where",
    [
        "1=1; DROP TABLE runs",
        "1=1); DELETE FROM runs; --",
        "status = 'x' UNION SELECT 1",
        "lr > 0 AND (SELECT load_extension('x')) IS NULL",
        "ATTACH DATABASE 'pwn.db' AS pwn",
        "run_id IN (SELECT run_id FROM frame) OR 1=1 --",
    ],
)
def test_filter_box_cannot_inject_sql(client: TestClient, ui_project: dict, where: str) -> None:
    before = _fingerprint(ui_project["repo"])
    page = client.get("/runs", params={"where": where})
    assert page.status_code == 200
    api = client.get("/api/runs", params={"where": where})
    assert api.status_code in (200, 400)
    if api.status_code == 400:
        assert "bad filter" in api.json()["detail"]
        assert 'role="alert"' in page.text
    assert _fingerprint(ui_project["repo"]) == before
    assert not (ui_project["repo"] / "pwn.db").exists()


def test_reader_refuses_writes(ui_project: dict) -> None:
    reader = Reader(ui_project["repo"])
    for sql in ("DELETE FROM runs", "UPDATE runs SET status = 'x'", "PRAGMA journal_mode=DELETE"):
        with pytest.raises(sqlite3.DatabaseError):
            reader.rows(sql)
    assert reader.rows("SELECT count(*) FROM runs WHERE status = :s", {"s": "finished"})[0][0] == 5


def test_metrics_x_axes(client: TestClient, api_runs: list) -> None:
    run = _train_runs(api_runs)[0]
    params: dict[str, Any] = {"names": ["loss"], "runs": [run["run_id"]]}
    step = client.get("/api/metrics", params={**params, "x": "step"}).json()
    (series,) = step["series"]
    assert series["x"] == list(range(100)) and not series["hindsight"]
    frame = retrolog.dataframe(
        "loss", where=f"run_id = '{run['run_id']}'", project=project_of(client)
    )
    assert series["y"] == pytest.approx(list(frame["loss"]))
    epoch = client.get("/api/metrics", params={**params, "x": "epoch"}).json()["series"][0]
    assert epoch["x"][:3] == pytest.approx([0.0, 0.04, 0.08]) and epoch["x"][25] == 1.0
    wall = client.get("/api/metrics", params={**params, "x": "wall"}).json()["series"][0]
    assert len(wall["x"]) == 100 and wall["x"] == sorted(wall["x"])
    started = client.get(f"/api/runs/{run['run_id']}").json()["start_time"]
    assert abs(wall["x"][0] - _iso_to_epoch(started)) < 5
    acc = client.get("/api/metrics", params={"names": "acc", "runs": run["run_id"]}).json()
    assert acc["series"][0]["x"] == [0, 1, 2, 3]
    bad = client.get("/api/metrics", params={**params, "x": "banana"})
    assert bad.status_code == 400


def project_of(client: TestClient) -> Path:
    return client.app.state.reader.project.root  # type: ignore[attr-defined]


def _iso_to_epoch(value: str) -> float:
    import pandas as pd

    return pd.Timestamp(value).timestamp()


def test_hindsight_values_are_their_own_series(client: TestClient, ui_project: dict) -> None:
    data = client.get(
        "/api/metrics",
        params={"names": ["loss", "grad_norm"], "runs": [ui_project["run_id"]], "x": "step"},
    ).json()
    by_name = {s["name"]: s for s in data["series"]}
    hind = by_name["grad_norm"]
    assert hind["hindsight"] and hind["replay_ids"] == ["rp0001"]
    assert hind["x"] == list(range(50, 75))  # epoch 2's steps, aligned with the recorded loss
    assert not by_name["loss"]["hindsight"]
    epoch = client.get(
        "/api/metrics",
        params={"names": "grad_norm", "runs": ui_project["run_id"], "x": "epoch"},
    ).json()["series"][0]
    assert epoch["x"][0] == 2.0 and epoch["x"][-1] == pytest.approx(2.96)


def test_metrics_default_runs_group_and_comma_lists(client: TestClient, api_runs: list) -> None:
    data = client.get("/api/metrics", params={"names": "loss", "group": "arg:lr"}).json()
    assert {r["run_id"] for r in data["runs"]} == {r["run_id"] for r in api_runs}
    assert {r["group"] for r in data["runs"]} == {
        f"lr={v}" for v in (0.1, 0.3, 1.0, 0.5, 0.05, 0.2)
    }
    ids = [r["run_id"] for r in _train_runs(api_runs)[:2]]
    listed = client.get("/api/metrics", params={"names": "loss,acc", "runs": ",".join(ids)}).json()
    assert {s["run_id"] for s in listed["series"]} == set(ids)
    assert {s["name"] for s in listed["series"]} == {"loss", "acc"}
    by_version = client.get("/api/metrics", params={"names": "loss", "group": "version"}).json()
    assert len({r["group"] for r in by_version["runs"]}) >= 3
    filtered = client.get("/api/metrics", params={"names": "loss", "where": "lr >= 0.5"}).json()
    assert len(filtered["runs"]) == 2
    assert (
        client.get("/api/metrics", params={"names": "loss", "where": "nope ="}).status_code == 400
    )


def test_server_side_downsampling(client: TestClient, api_runs: list) -> None:
    run = _train_runs(api_runs)[0]["run_id"]
    full = client.get("/api/metrics", params={"names": "loss", "runs": run}).json()["series"][0]
    for method in ("minmax", "lttb"):
        small = client.get(
            "/api/metrics",
            params={"names": "loss", "runs": run, "max_points": 20, "method": method},
        ).json()["series"][0]
        assert small["points"] == 100 and 10 <= len(small["x"]) <= 20
        assert small["x"][0] == 0 and small["x"][-1] == 99
        assert set(small["x"]) <= set(full["x"])
        if method == "minmax":
            assert max(small["y"]) == max(full["y"]) and min(small["y"]) == min(full["y"])


def test_downsample_functions_keep_extremes_and_ends() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(10_000)
    y[1234], y[8765] = 50.0, -50.0
    kept = minmax(y, 200)
    assert len(kept) <= 200 and kept[0] == 0 and kept[-1] == 9_999
    assert {1234, 8765} <= set(kept.tolist())
    picked = lttb(np.arange(10_000.0), y, 200)
    assert len(picked) == 200 and {0, 9_999, 1234, 8765} <= set(picked.tolist())
    many = np.concatenate([y, y[:50], y])
    starts = np.array([0, 10_000, 10_050])
    kept = minmax_many(many, starts, 100)
    assert set(range(10_000, 10_050)) <= set(kept.tolist())  # a short series stays whole
    assert len(kept) <= 100 + 50 + 100


def test_run_page_facts_metrics_checkpoints_and_diff(
    client: TestClient, api_runs: list, ui_project: dict
) -> None:
    first = ui_project["run_id"]
    page = client.get(f"/runs/{first}")
    assert page.status_code == 200
    body = page.text
    for text in (
        "optimizer",
        "sgd",
        "loss",
        "grad_norm",
        "hindsight",
        "3.3 MiB",
        "1.1 MiB",
        "Checkpoints",
    ):
        assert text in body
    assert 'id="run-charts"' in body
    v2 = next(r for r in _train_runs(api_runs) if r["args"]["lr"] == 0.5)
    diff = client.get(f"/api/runs/{v2['run_id']}/diff", params={"against": first}).json()
    # against another run's version: no such run id, so not a known version
    assert diff["text"] is None and "not a version" in diff["note"]
    other_version = client.get(f"/api/runs/{first}").json()["version"]
    diff = client.get(f"/api/runs/{v2['run_id']}/diff", params={"against": other_version}).json()
    assert diff["base"] == other_version and diff["target"] == v2["version"]
    assert diff["files"] == ["train.py"] and '+    retrolog.log("val_loss"' in diff["text"]
    head = client.get(f"/api/runs/{v2['run_id']}/diff").json()
    assert head["base"] == "HEAD" and "+    retrolog.log" in head["text"]
    fragment = client.get(f"/runs/{v2['run_id']}/diff", params={"against": "HEAD"}).text
    assert 'class="d-add"' in fragment and "val_loss" in fragment
    assert client.get(f"/runs/{first}", params={"against": other_version}).status_code == 200
    assert client.get("/runs/NOPE").status_code == 404
    assert client.get("/api/runs/NOPE").status_code == 404


def test_diff_never_passes_user_strings_to_git(
    client: TestClient, ui_project: dict, tmp_path: Path
) -> None:
    target = tmp_path / "pwned"
    for against in (f"--output={target}", "HEAD~1", "main", "../../etc/passwd"):
        data = client.get(
            f"/api/runs/{ui_project['run_id']}/diff", params={"against": against}
        ).json()
        assert data["text"] is None and data["note"]
        fragment = client.get("/diff", params={"a": against, "b": "HEAD"})
        assert fragment.status_code == 200 and "d-add" not in fragment.text
    assert not target.exists()


def test_versions_page_and_api(client: TestClient, api_runs: list) -> None:
    versions = client.get("/api/versions").json()["versions"]
    assert len(versions) == 4  # v1 (committed), v2 (edited), + failing.py, + hostile.py
    assert [len(v["runs"]) for v in versions] == [3, 1, 1, 1]
    assert versions[0]["commit"]["subject"] == "train: first version"
    assert versions[0]["is_head"] and not versions[0]["dirty"]
    assert not versions[0]["snapshot"] and versions[1]["snapshot"]
    assert versions[1]["dirty"] and versions[1]["commit"]["subject"] == "retrolog: train.py"
    assert versions[1]["previous"] == versions[0]["version"]
    placed = versions[0]["propagations"][0]
    assert placed["line"] == 12 and placed["scope"] == ["<module>", "for epoch", "for step"]
    refused = versions[1]["propagations"][0]
    assert "does not exist" in refused["refused"] and refused["renames"] == {"model": "net"}
    body = client.get("/versions").text
    assert "train: first version" in body and "refused" in body and "model → net" in body
    assert "for epoch › for step" in body and "42%" in body
    assert f'hx-get="/diff?a={versions[0]["version"]}&amp;b={versions[1]["version"]}"' in body
    diff = client.get("/diff", params={"a": versions[0]["version"], "b": versions[1]["version"]})
    assert "val_loss" in diff.text


def test_replays_pages(client: TestClient) -> None:
    listing = client.get("/replays").text
    assert "rp0001" in listing and "rp0002" in listing
    assert "1 reproduced" in listing and "1 diverged" in listing
    api = {r["replay_id"]: r for r in client.get("/api/replays").json()["replays"]}
    assert api["rp0001"]["progress"] == 1.0 and api["rp0001"]["task_counts"] == {"done": 2}
    detail = client.get("/replays/rp0001").text
    for text in (
        "inner: 1",
        "outer: 1",
        "not replayed: 1",
        "recorded iteration timings",
        "the statement&#39;s loop does not exist",
        "190.7 MiB/s",
        "0.82×",
        "reproduced",
        "diverged",
        "grad_norm(model)",
    ):
        assert text in detail
    assert 'hx-trigger="every 2s"' not in detail  # finished: no polling
    failed = client.get("/replays/rp0002").text
    assert "NameError: name &#39;grad_norm&#39; is not defined" in failed
    assert "worker failed: see task 0" in failed
    assert "not json &lt;b&gt;at all&lt;/b&gt;" in failed
    data = client.get("/api/replays/rp0001").json()
    assert data["plan_summary"]["levels"] == {"inner": 1, "outer": 1, "not replayed": 1}
    assert [t["iterations_text"] for t in data["tasks"]] == ["2", "0–3"]
    assert client.get("/replays/nope").status_code == 404
    assert client.get("/api/replays/nope").status_code == 404


def test_empty_project_renders_empty_states(project: Path) -> None:
    client = TestClient(create_app(project), base_url="http://127.0.0.1")
    assert "No runs yet" in client.get("/runs").text
    assert "No numeric values logged yet" in client.get("/metrics").text
    assert "No versions yet" in client.get("/versions").text
    assert "No replays yet" in client.get("/replays").text
    assert client.get("/api/runs").json() == {
        "count": 0,
        "matched": 0,
        "total": 0,
        "args": [],
        "metrics": [],
        "runs": [],
    }
    assert client.get("/api/metrics", params={"names": "loss"}).json()["series"] == []
    assert client.get("/api/replays").json() == {"replays": []}
    default = TestClient(create_app(), base_url="http://127.0.0.1")  # the project around the cwd
    assert default.get("/api/versions").json() == {"versions": []}


def test_replay_progress_updates_live(project: Path) -> None:
    client = TestClient(create_app(project), base_url="http://127.0.0.1")
    store = store_of(project)
    now = time.time()
    with store.writer.begin() as conn:
        conn.execute(
            insert(schema.replays).values(
                replay_id="live1", created=now, status="running", names=json.dumps(["x"]), plan="{}"
            )
        )
        conn.execute(
            insert(schema.replay_tasks),
            [
                {
                    "replay_id": "live1",
                    "task_id": i,
                    "run_id": f"r{i}",
                    "status": s,
                    "attempts": 1,
                    "progress": p,
                }
                for i, (s, p) in enumerate(
                    [("done", 1.0), ("running", 0.5), ("pending", None), ("pending", None)]
                )
            ],
        )
    page = client.get("/replays/live1").text
    assert 'hx-get="/replays/live1/live" hx-trigger="every 2s"' in page and "38%" in page
    assert 'hx-get="/replays/live" hx-trigger="every 2s"' in client.get("/replays").text
    with store.writer.begin() as conn:
        conn.execute(
            update(schema.replay_tasks)
            .where(schema.replay_tasks.c.replay_id == "live1")
            .values(status="done", progress=1.0)
        )
        conn.execute(
            update(schema.replays).values(status="finished", finished=now + 5, actual_seconds=5.0)
        )
    fragment = client.get("/replays/live1/live").text
    assert "100%" in fragment and "hx-trigger" not in fragment and "finished" in fragment
    store.dispose()


def test_output_is_escaped(client: TestClient) -> None:
    raw = XSS_NAME
    escaped = html.escape(raw, quote=True)
    for path in ("/runs", "/metrics?names=" + raw, "/replays/rp0002"):
        body = client.get(path).text
        assert raw not in body, path
        assert escaped in body or "&lt;script&gt;" in body, path
    runs = client.get("/api/runs").json()["runs"]
    hostile = next(r for r in runs if r["script"] == "hostile.py")
    body = client.get(f"/runs/{hostile['run_id']}").text
    assert "<img src=x" not in body and "&lt;img src=x onerror=alert(2)&gt;" in body
    failed = next(r for r in runs if r["status"] == "failed")
    assert "diverged &lt;b&gt;badly&lt;/b&gt;" in client.get(f"/runs/{failed['run_id']}").text
    series = client.get("/api/metrics", params={"names": raw, "runs": hostile["run_id"]}).json()
    assert series["series"][0]["name"] == raw and series["series"][0]["y"] == [0.0, 1.0, 2.0]


def test_headers_static_files_and_host_check(client: TestClient) -> None:
    response = client.get("/runs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    for name in (
        "uPlot.iife.min.js",
        "uPlot.min.css",
        "htmx.min.js",
        "retrolog.js",
        "retrolog.css",
        "uPlot.LICENSE.txt",
        "htmx.LICENSE.txt",
    ):
        assert client.get(f"/static/{name}").status_code == 200, name
    evil = client.get("/api/runs", headers={"host": "evil.example"})
    assert evil.status_code == 400
    assert client.get("/", follow_redirects=False).headers["location"] == "/runs"


DEEP = """
import retrolog

for epoch in retrolog.loop("epoch", range(2)):
    for batch in retrolog.loop("batch", range(3)):
        for micro in retrolog.loop("micro", range(2)):
            retrolog.log("g", epoch * 100 + batch * 10 + micro)
        retrolog.log("b", batch)
"""


def test_new_runs_show_up_and_deep_loops_get_coordinates(project: Path) -> None:
    client = TestClient(create_app(project), base_url="http://127.0.0.1")
    assert client.get("/api/runs").json()["count"] == 0  # fills the cache ...
    write_script(project, DEEP)
    run_python(project, "train.py")
    assert client.get("/api/runs").json()["count"] == 1  # ... which a new run invalidates
    assert client.get("/api/names").json()["numeric"] == ["b", "g"]

    def axis(name: str, x: str) -> list[float]:
        return client.get("/api/metrics", params={"names": name, "x": x}).json()["series"][0]["x"]

    assert axis("g", "step") == list(range(12))  # the innermost loop counted across the run
    assert axis("b", "step") == list(range(6))
    assert axis("b", "epoch") == pytest.approx([0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3])
    third = [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3]
    assert axis("g", "epoch") == pytest.approx(third + [1 + t for t in third])
    values = client.get("/api/metrics", params={"names": "g"}).json()["series"][0]["y"]
    assert values == [0, 1, 10, 11, 20, 21, 100, 101, 110, 111, 120, 121]
    assert len(axis("g", "wall")) == 12
