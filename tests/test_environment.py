"""The environment of a run: installed distributions (stored once per distinct list), Python,
host, accelerator, and the optional capture of stdout/stderr; shown by `show` and the UI, with
the UI's environment diff between two runs."""

from __future__ import annotations

import json
import platform
import socket
import sqlite3
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from fastapi.testclient import TestClient

from retrolog.relational import describe_run
from retrolog.store import Store

from .conftest import run_python, script_env, write_script

TRAIN = """
import sys
import retrolog

for epoch in retrolog.loop("epoch", range(2)):
    retrolog.log("loss", 1.0 / (epoch + 1))
    print(f"epoch {epoch} done")
print("a warning on stderr", file=sys.stderr)
"""


def _db(project: Path) -> sqlite3.Connection:
    return sqlite3.connect(project / ".retrolog" / "retrolog.db")


def _run_ids(project: Path) -> list[str]:
    with _db(project) as conn:
        return [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY run_id")]


def test_environment_is_recorded_once_per_distinct_list(project: Path) -> None:
    write_script(project, TRAIN)
    run_python(project, "train.py")
    run_python(project, "train.py")
    first, second = _run_ids(project)
    report = describe_run(first, project=project, with_diff=False)
    env = report["environment"]
    assert env["python"].endswith(platform.python_version())
    assert env["host"] == socket.gethostname()
    assert env["executable"] == sys.executable
    assert env["accelerator"] is None  # torch not imported by the script
    assert f"pandas=={version('pandas')}" in env["distributions"]
    assert env["distributions"] == sorted(env["distributions"])
    assert env["stdout"] is None and env["stderr"] is None  # capture is off by default
    other = describe_run(second, project=project, with_diff=False)["environment"]
    assert other["hash"] == env["hash"]
    with _db(project) as conn:
        assert conn.execute("SELECT count(*) FROM environments").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM run_environment").fetchone()[0] == 2


def test_output_capture_is_opt_in_and_capped(project: Path) -> None:
    write_script(project, TRAIN)
    proc = run_python(project, "train.py", RETROLOG_CAPTURE_OUTPUT="1")
    assert "epoch 1 done" in proc.stdout  # still written through
    (run_id,) = _run_ids(project)
    env = describe_run(run_id, project=project, with_diff=False)["environment"]
    assert env["stdout"] == "epoch 0 done\nepoch 1 done\n"
    assert "a warning on stderr" in env["stderr"]
    write_script(
        project,
        "import retrolog\nretrolog.log('x', 1)\nprint('y' * 1_500_000)\n",
        name="loud.py",
    )
    run_python(project, "loud.py", RETROLOG_CAPTURE_OUTPUT="1")
    loud = _run_ids(project)[-1]
    out = describe_run(loud, project=project, with_diff=False)["environment"]["stdout"]
    assert out.startswith("y" * 1000) and out.endswith("[retrolog: output truncated at 1 MiB]\n")
    assert len(out) < (1 << 20) + 100


def test_show_and_the_ui_show_the_environment_and_its_diff(project: Path) -> None:
    write_script(project, TRAIN)
    run_python(project, "train.py")
    run_python(project, "train.py", RETROLOG_CAPTURE_OUTPUT="1")
    first, second = _run_ids(project)
    # the second run's environment as if a package had been upgraded and one added
    with _db(project) as conn:
        (packages,) = conn.execute(
            "SELECT p.packages FROM environments p JOIN run_environment e ON e.env_hash = p.hash "
            "JOIN runs r ON r.id = e.run WHERE r.run_id = ?",
            (second,),
        ).fetchone()
        lines = [
            "pandas==0.0.1" if line.startswith("pandas==") else line
            for line in json.loads(packages)
        ] + ["zz-new-package==1.0"]
        conn.execute("INSERT INTO environments VALUES ('changed', ?)", (json.dumps(lines),))
        conn.execute(
            "UPDATE run_environment SET env_hash = 'changed' WHERE run = "
            "(SELECT id FROM runs WHERE run_id = ?)",
            (second,),
        )
    shown = subprocess.run(
        [sys.executable, "-m", "retrolog", "show", first, "--no-diff"],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="200"),
    )
    assert shown.returncode == 0, shown.stderr
    assert "environment" in shown.stdout and "distributions" in shown.stdout
    from retrolog.ui import create_app

    client = TestClient(create_app(project), base_url="http://127.0.0.1")
    page = client.get(f"/runs/{second}")
    assert page.status_code == 200
    assert 'id="environment"' in page.text and "epoch 1 done" in page.text  # captured stdout
    assert f'<option value="{first}"' in page.text
    diff = client.get(f"/runs/{first}", params={"env_against": second})
    assert diff.status_code == 200
    body = diff.text
    assert 'id="env-diff"' in body
    assert f"{version('pandas')}</td><td" in body and "0.0.1" in body
    assert "zz-new-package" in body and "(absent)" in body
    same = client.get(f"/runs/{first}", params={"env_against": first})
    assert 'id="env-diff"' not in same.text  # a run is not compared with itself


def test_a_schema_2_store_is_migrated(project: Path) -> None:
    write_script(project, TRAIN)
    run_python(project, "train.py")
    with _db(project) as conn:
        for table in ("run_names", "run_tags", "run_notes", "environments", "run_environment"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE retrolog_meta SET value = '2' WHERE key = 'schema_version'")
    store = Store(f"sqlite:///{project / '.retrolog' / 'retrolog.db'}")
    try:
        assert any("run names, tags, notes and environments" in m for m in store.migrated)
        assert store.fetch("SELECT count(*) FROM run_tags")[0][0] == 0
    finally:
        store.dispose()
    run_python(project, "train.py")  # a run after the migration records its environment
    assert describe_run(_run_ids(project)[-1], project=project, with_diff=False)["environment"]
