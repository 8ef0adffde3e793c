"""Names, tags and notes of runs: set from a script and from the CLI, unique names, filterable
with --where on SQLite and PostgreSQL, shown by `retrolog show` and on the UI's pages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import retrolog
from retrolog.relational import describe_run, open_store
from retrolog.ui import create_app

from .conftest import git, kill_after, run_python, script_env, write_script

TRAIN = """
import sys
import retrolog

lr = retrolog.arg("lr", 0.1)
retrolog.tag("team", sys.argv[2])
retrolog.tag("tuned", lr > 0.2)
retrolog.name(sys.argv[1])
for epoch in retrolog.loop("epoch", range(2)):
    retrolog.log("loss", lr / (epoch + 1))
"""


def cli(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrolog", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="200", **env),
    )


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def record_two(project: Path, **env: str) -> list[str]:
    write_script(project, TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    run_python(project, "train.py", "first", "vision", **env)
    run_python(project, "train.py", "second", "nlp", "--kwargs", "lr=0.5", **env)
    return list(retrolog.runs(project=project)["run_id"])


def test_script_tags_and_names_are_filterable(project: Path) -> None:
    first, second = record_two(project)
    frame = retrolog.runs(project=project, where="tag_team = 'vision'")
    assert list(frame["run_id"]) == [first]
    assert frame["run_name"].iloc[0] == "first"
    assert list(retrolog.runs(project=project, where="tag_tuned = 'true'")["run_id"]) == [second]
    assert list(retrolog.runs(project=project, where="run_name = 'second'")["run_id"]) == [second]
    rows = _json(cli(project, "runs", "-f", "json", "--where", "tag_team = 'nlp' AND lr > 0.2"))
    assert [r["run_id"] for r in rows] == [second]
    assert rows[0]["run_name"] == "second" and rows[0]["tag_team"] == "nlp"


def test_names_are_unique_and_commands_take_them(project: Path) -> None:
    first, second = record_two(project)
    # a third run asking for a taken name stays unnamed, with a warning
    third = run_python(project, "train.py", "first", "vision")
    assert "the name 'first' is taken by run" in third.stderr
    runs = retrolog.runs(project=project)
    assert runs["run_name"].tolist()[:2] == ["first", "second"]
    assert runs["run_name"].isna().tolist()[2]
    third_id = runs["run_id"].iloc[2]
    # the CLI refuses a taken name, in one line naming its holder
    taken = cli(project, "name", third_id, "second")
    assert taken.returncode != 0
    assert f"the name 'second' is taken by run {second}" in taken.stderr
    assert "Traceback" not in taken.stderr
    assert cli(project, "name", third_id, "third").returncode == 0
    assert cli(project, "name", "second", "renamed").returncode == 0  # a name finds the run
    assert _json(cli(project, "show", "renamed", "-f", "json", "--no-diff"))["run_id"] == second
    assert cli(project, "show", "second", "--no-diff").returncode != 0  # the old name is gone
    # tags and notes from the CLI, by name and by id prefix
    assert cli(project, "tag", "first", "stage=prod", "team=robotics").returncode == 0
    assert cli(project, "tag", third_id[:12].lower(), "--remove", "team").returncode == 0
    assert cli(project, "note", "third", "diverged after epoch 3: bad shard").returncode == 0
    assert cli(project, "note", "third", "rerun with the fixed shard").returncode == 0
    rows = _json(cli(project, "runs", "-f", "json", "--where", "tag_stage = 'prod'"))
    assert [r["run_id"] for r in rows] == [first] and rows[0]["tag_team"] == "robotics"
    rows = _json(cli(project, "runs", "-f", "json", "--where", "notes LIKE '%bad shard%'"))
    assert [r["run_name"] for r in rows] == ["third"]
    report = _json(cli(project, "show", "third", "-f", "json", "--no-diff"))
    assert report["name"] == "third"
    assert report["tags"] == {"tuned": "false"}
    assert [n["text"] for n in report["notes"]] == [
        "diverged after epoch 3: bad shard",
        "rerun with the fixed shard",
    ]
    table = cli(project, "show", "third", "--no-diff")
    assert table.returncode == 0 and "bad shard" in table.stdout and "third" in table.stdout
    assert "tags tuned=false" in table.stdout
    listing = cli(project, "runs")
    assert listing.returncode == 0 and "renamed" in listing.stdout
    # bad input: one line, no traceback
    for args in (("tag", "first", "novalue"), ("tag", "first", "1bad=x"), ("name", "first")):
        proc = cli(project, *args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    # deleting a run frees its name
    assert cli(project, "rm", "-y", "renamed").returncode == 0
    assert cli(project, "name", "first", "renamed").returncode == 0


def test_ui_shows_names_tags_notes(project: Path) -> None:
    first, second = record_two(project)
    assert cli(project, "note", "first", "the <baseline> we compare with").returncode == 0
    client = TestClient(create_app(project), base_url="http://127.0.0.1")
    page = client.get("/runs/first")
    assert page.status_code == 200
    body = page.text
    assert first in body and 'id="run-name">first' in body
    assert "team=vision" in body and "tuned=false" in body
    assert "the &lt;baseline&gt; we compare with" in body  # escaped
    runs = client.get("/runs")
    assert runs.status_code == 200
    assert '<span class="run-name">second</span>' in runs.text
    assert "team=nlp" in runs.text
    filtered = client.get("/runs", params={"where": "tag_team = 'nlp'"})
    assert second in filtered.text and first not in filtered.text
    api = {r["run_id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert api[first]["run_name"] == "first"
    assert api[first]["tags"] == {"team": "vision", "tuned": "false"}
    assert "tag_team" not in api[first]["args"] and api[first]["args"] == {"lr": 0.1}


# -- PostgreSQL --------------------------------------------------------------------------------
from .conftest import fresh_database  # noqa: E402


@pytest.mark.slow
def test_tags_names_and_notes_on_postgresql(
    pg_server: Any,  # noqa: F811
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = fresh_database(pg_server)
    monkeypatch.setenv("RETROLOG_DB", url)
    try:
        first, second = record_two(project, RETROLOG_DB=url)
        frame = retrolog.runs(project=project, where="tag_team = 'nlp'")
        assert list(frame["run_id"]) == [second] and frame["run_name"].iloc[0] == "second"
        taken = cli(project, "name", "first", "second", RETROLOG_DB=url)
        assert taken.returncode != 0 and "is taken by run" in taken.stderr
        assert cli(project, "tag", "first", "stage=prod", RETROLOG_DB=url).returncode == 0
        assert cli(project, "note", "second", "on postgres", RETROLOG_DB=url).returncode == 0
        rows = _json(
            cli(project, "runs", "-f", "json", "--where", "tag_stage = 'prod'", RETROLOG_DB=url)
        )
        assert [r["run_name"] for r in rows] == ["first"]
        report = describe_run("second", project=project, with_diff=False)
        assert [n["text"] for n in report["notes"]] == ["on postgres"]
        assert report["environment"]["distributions"]
    finally:
        open_store(project, recover=False).dispose()


CRASH = """
import time
import retrolog

retrolog.tag("team", "vision")
retrolog.name("crashed-one")
for i in retrolog.loop("i"):
    retrolog.log("x", i)
    print(i, flush=True)
    time.sleep(0.05)
"""


def test_labels_of_a_killed_run_come_back_from_its_journal(project: Path) -> None:
    write_script(project, CRASH)
    assert kill_after(project, 2.5) > 0
    frame = retrolog.runs(project=project)  # reading recovers the dead run's journal
    assert frame["status"].tolist() == ["crashed"]
    assert frame["run_name"].iloc[0] == "crashed-one" and frame["tag_team"].iloc[0] == "vision"
    report = describe_run("crashed-one", project=project, with_diff=False)
    assert report["environment"] is None  # collected at a run's end only
