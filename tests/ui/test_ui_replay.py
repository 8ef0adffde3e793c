"""The UI over a real replay: rows written by ``retrolog.replay`` light up every replay view."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import run_python, script_env, write_script

import retrolog
from retrolog.ui import create_app

SCRIPT = """
import retrolog

lr = retrolog.arg("lr", 0.1)
for epoch in retrolog.loop("epoch", range(3)):
    for step in retrolog.loop("step", range(4)):
        retrolog.log("loss", lr / (1 + epoch * 4 + step))
"""


def test_real_replay_shows_up_everywhere(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_script(project, SCRIPT)
    run_python(project, "train.py", "--kwargs", "lr=0.2")
    write_script(
        project,
        SCRIPT.replace(
            '        retrolog.log("loss"',
            '        retrolog.log("scaled", lr * (epoch * 4 + step))\n        retrolog.log("loss"',
        ),
    )
    for key, value in script_env().items():
        monkeypatch.setenv(key, value)
    report = retrolog.replay(["scaled"], where="epoch >= 1", workers=1, project=project)
    client = TestClient(create_app(project), base_url="http://127.0.0.1")

    (replay,) = client.get("/api/replays").json()["replays"]
    assert replay["replay_id"] == report.replay_id and replay["status"] == "finished"
    assert replay["progress"] == 1.0 and replay["fidelity"] == {"reproduced": 1}
    detail = client.get(f"/api/replays/{report.replay_id}").json()
    assert detail["statements"] == 'retrolog.log("scaled", lr * (epoch * 4 + step))'
    assert detail["plan_summary"]["levels"] == {"inner": 1}
    assert {r["iterations"] for r in detail["plan_summary"]["runs"]} == {"1–2"}
    assert all(t["status"] == "done" for t in detail["tasks"])
    page = client.get(f"/replays/{report.replay_id}").text
    assert "Plan per run" in page and "reproduced" in page and 'hx-trigger="every 2s"' not in page

    data = client.get("/api/metrics", params={"names": ["scaled", "loss"], "x": "step"}).json()
    hindsight = [s for s in data["series"] if s["hindsight"]]
    assert len(hindsight) == 1 and all(s["name"] == "scaled" for s in hindsight)
    assert all(s["x"] == list(range(4, 12)) for s in hindsight)  # epochs 1 and 2 only
    assert all(s["replay_ids"] == [report.replay_id] for s in hindsight)
    lr_of = {r["run_id"]: r["args"]["lr"] for r in client.get("/api/runs").json()["runs"]}
    for s in hindsight:
        assert s["y"][0] == lr_of[s["run_id"]] * 4
    runs_page = client.get("/runs").text
    assert runs_page.count(f"logged in hindsight by replay {report.replay_id}") == 1
    versions = client.get("/api/versions").json()["versions"]
    placed = [p for v in versions for p in v["propagations"]]
    assert placed and all(p["replay_id"] == report.replay_id and not p["refused"] for p in placed)
