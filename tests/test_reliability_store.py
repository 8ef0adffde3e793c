"""A store that can be verified and repaired: ``retrolog doctor`` on real damaged files, digests
that name the run whose stored values changed, the schema migration, SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import retrolog
from retrolog.store.ingest import SCHEMA_VERSION

from .conftest import (
    SIMPLE_TRAIN,
    fresh_database,
    git,
    kill_after,
    run_python,
    script_env,
    write_script,
)

TICKER = """
import time, retrolog
for i in retrolog.loop("tick", range(100000)):
    retrolog.log("i", i)
    print(i, flush=True)
    time.sleep(0.01)
"""


def cli(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrolog", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="200", **env),
        timeout=300,
    )


def db_path(project: Path) -> Path:
    return project / ".retrolog" / "retrolog.db"


@pytest.fixture
def two_runs(project: Path) -> tuple[Path, list[str]]:
    write_script(project, SIMPLE_TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    run_python(project, "train.py", "--kwargs", "lr=0.5")
    run_python(project, "train.py", "--kwargs", "lr=0.25")
    ids = sorted(retrolog.runs()["run_id"])
    return project, ids


def flip_one_float(path: Path, run_id: str) -> None:
    """Change one stored loss of ``run_id`` the way a flipped bit would: same row, other value."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE logs SET value_num = value_num / 2 WHERE rowid = (SELECT min(l.rowid) "
            "FROM logs l JOIN runs r ON r.id = l.run WHERE r.run_id = ? AND l.name = 'loss')",
            (run_id,),
        )
    conn.close()


def test_doctor_names_the_run_whose_stored_value_changed(two_runs: tuple[Path, list[str]]) -> None:
    project, (first, second) = two_runs
    healthy = cli(project, "doctor")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "2 value digest(s) match" in healthy.stdout and "no problems found" in healthy.stdout
    flip_one_float(db_path(project), second)
    # SQLite itself sees nothing wrong
    conn = sqlite3.connect(db_path(project))
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    report = cli(project, "doctor")
    assert report.returncode == 1
    values = [line for line in report.stdout.splitlines() if " values:" in line]
    assert len(values) == 1 and "problem" in values[0], report.stdout
    assert second in values[0] and first not in values[0]


def test_a_truncated_store_is_one_line_everywhere_and_repair_keeps_the_old_file(
    two_runs: tuple[Path, list[str]],
) -> None:
    project, ids = two_runs
    path = db_path(project)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    damaged = path.read_bytes()
    for args in (("runs",), ("df", "loss"), ("sql", "SELECT count(*) FROM logs"), ("show", ids[0])):
        out = cli(project, *args)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 5 and len(lines) == 1, (args, out.stderr)
        assert "retrolog doctor" in lines[0] and "damaged" in lines[0]
    # training goes on with one warning and keeps its rows in the journal
    trained = run_python(project, "train.py", "--kwargs", "lr=0.125")
    assert trained.stderr.count("RetrologWarning") <= 2, trained.stderr
    assert list((project / ".retrolog" / "journals").glob("*.journal"))
    report = cli(project, "doctor")
    assert report.returncode == 1 and "integrity" in report.stdout, report.stdout
    repaired = cli(project, "doctor", "--repair")
    assert "recovered the damaged SQLite file" in repaired.stdout, repaired.stdout
    assert "stored the journals of 1 ended run(s)" in repaired.stdout, repaired.stdout
    kept = list(path.parent.glob("retrolog.damaged-*.db"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged  # the old file, untouched
    after = cli(project, "runs", "-f", "json")
    assert after.returncode == 0, after.stderr
    assert '"lr":0.125' in after.stdout  # the run recorded while the store was damaged


def test_doctor_reports_and_repair_stores_the_journal_of_a_killed_run(project: Path) -> None:
    write_script(project, TICKER)
    kill_after(project, 1.5)
    report = cli(project, "doctor")
    assert report.returncode == 1
    assert "1 journal(s) of runs that ended without being stored" in report.stdout
    repaired = cli(project, "doctor", "--repair")
    assert repaired.returncode == 0, repaired.stdout
    assert "stored the journals of 1 ended run(s)" in repaired.stdout
    assert retrolog.runs()["status"].tolist() == ["crashed"]


def test_doctor_names_runs_whose_code_version_is_gone(two_runs: tuple[Path, list[str]]) -> None:
    project, (first, _second) = two_runs
    git(project, "update-ref", "-d", f"refs/retrolog/runs/{first}")
    warned = cli(project, "doctor")
    assert first in warned.stdout and "warning  versions" in warned.stdout, warned.stdout
    # a run of uncommitted code has a snapshot commit of its own, reachable only from its ref
    with open(project / "train.py", "a") as fh:
        fh.write("# an uncommitted edit\n")
    run_python(project, "train.py")
    edited = retrolog.query("SELECT run_id FROM runs ORDER BY start_time DESC LIMIT 1")
    dirty = edited["run_id"].iloc[0]
    git(project, "update-ref", "-d", f"refs/retrolog/runs/{dirty}")
    git(project, "reflog", "expire", "--expire=now", "--all")
    git(project, "gc", "-q", "--prune=now")
    gone = cli(project, "doctor")
    assert gone.returncode == 1 and "missing from git" in gone.stdout, gone.stdout
    line = next(x for x in gone.stdout.splitlines() if "missing from git" in x)
    assert dirty in line and first not in line


CHECKPOINTED = """
import torch, retrolog
torch.set_num_threads(1)
torch.manual_seed(0)
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
with retrolog.checkpointing(model=model, optimizer=opt):
    for epoch in retrolog.loop("epoch", range(2)):
        for step in retrolog.loop("step", range(3)):
            loss = model(torch.ones(1, 4)).pow(2).sum()
            opt.zero_grad(); loss.backward(); opt.step()
            retrolog.log("loss", loss.item())
"""


@pytest.mark.slow
def test_doctor_rehashes_checkpoint_objects(project: Path) -> None:
    write_script(project, CHECKPOINTED)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    run_python(project, "train.py")
    run_id = retrolog.runs()["run_id"].iloc[0]
    ok = cli(project, "doctor")
    assert ok.returncode == 0 and "every object hashes right" in ok.stdout, ok.stdout
    blobs = sorted(
        p
        for p in (project / ".retrolog" / "objects").rglob("*")
        if p.is_file() and p.stat().st_size
    )
    victim = max(blobs, key=lambda p: p.stat().st_size)  # a tensor blob, not a manifest
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))
    bad = cli(project, "doctor")
    assert bad.returncode == 1 and "corrupt" in bad.stdout and run_id in bad.stdout, bad.stdout


def test_a_schema_1_store_is_migrated_and_its_values_sealed(
    two_runs: tuple[Path, list[str]],
) -> None:
    project, (first, second) = two_runs
    path = db_path(project)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TABLE digests")
        conn.execute("UPDATE retrolog_meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    out = cli(project, "runs")
    assert out.returncode == 0, out.stderr
    conn = sqlite3.connect(path)
    version = conn.execute("SELECT value FROM retrolog_meta WHERE key = 'schema_version'")
    assert int(version.fetchone()[0]) == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM digests WHERE scope = ''").fetchone()[0] == 2
    conn.close()
    assert cli(project, "doctor").returncode == 0
    flip_one_float(path, first)
    report = cli(project, "doctor")
    assert report.returncode == 1 and first in report.stdout and second not in report.stdout


@pytest.mark.slow
def test_digests_on_postgres(
    pg_server: Any,  # noqa: F811
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg

    url = fresh_database(pg_server)
    write_script(project, SIMPLE_TRAIN)
    run_python(project, "train.py", RETROLOG_DB=url)
    run_python(project, "train.py", "--kwargs", "lr=0.25", RETROLOG_DB=url)
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as conn:  # make it a schema-1 store: opening migrates it
        conn.execute("DROP TABLE digests")
        conn.execute("UPDATE retrolog_meta SET value = '1' WHERE key = 'schema_version'")
    assert cli(project, "runs", RETROLOG_DB=url).returncode == 0
    healthy = cli(project, "doctor", RETROLOG_DB=url)
    assert healthy.returncode == 0 and "2 value digest(s) match" in healthy.stdout, healthy.stdout
    with psycopg.connect(plain) as conn:
        run_id = conn.execute("SELECT run_id FROM runs ORDER BY run_id LIMIT 1").fetchone()[0]
        conn.execute(
            "UPDATE logs SET value_num = value_num / 2 WHERE seq = (SELECT min(seq) FROM logs "
            "WHERE name = 'loss' AND run = (SELECT id FROM runs WHERE run_id = %s)) "
            "AND run = (SELECT id FROM runs WHERE run_id = %s)",
            (run_id, run_id),
        )
    report = cli(project, "doctor", RETROLOG_DB=url)
    assert report.returncode == 1 and run_id in report.stdout, report.stdout


@pytest.mark.slow
def test_doctor_names_the_replay_whose_stored_value_changed(
    two_runs: tuple[Path, list[str]],
) -> None:
    project, (first, second) = two_runs
    script = (project / "train.py").read_text()
    (project / "train.py").write_text(
        script.replace(
            'random.seed(retrolog.arg("seed", 0))',
            'random.seed(retrolog.arg("seed", 0))\nretrolog.log("double_lr", lr * 2)',
        )
    )
    replayed = cli(project, "replay", "double_lr", "--yes", "-j", "1")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    replay_id = retrolog.query("SELECT replay_id FROM replays")["replay_id"].iloc[0]
    sealed = retrolog.query(f"SELECT count(*) AS n FROM digests WHERE scope = '{replay_id}'")
    assert sealed["n"].tolist() == [2]
    assert cli(project, "doctor").returncode == 0
    conn = sqlite3.connect(db_path(project))
    with conn:
        conn.execute(
            "UPDATE logs SET value_num = 99 WHERE name = 'double_lr' AND run = "
            "(SELECT id FROM runs WHERE run_id = ?)",
            (first,),
        )
    conn.close()
    report = cli(project, "doctor")
    line = next(x for x in report.stdout.splitlines() if " values:" in x)
    assert report.returncode == 1 and f"run {first} (replay {replay_id})" in line, line
    assert second not in line


def test_repair_without_the_sqlite3_program_copies_every_readable_row(
    two_runs: tuple[Path, list[str]], tmp_path: Path
) -> None:
    project, ids = two_runs
    path = db_path(project)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    with open(path, "r+b") as fh:  # garbage over one page in the middle of the file
        fh.seek(4096 * (pages // 2))
        fh.write(b"\xff" * 4096)
    bin_dir = tmp_path / "bin"  # a PATH with git but no sqlite3 program
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    repaired = cli(project, "doctor", "--repair", PATH=str(bin_dir))
    assert "recovered the damaged SQLite file (a copy of every readable row)" in repaired.stdout, (
        repaired.stdout + repaired.stderr
    )
    assert len(list(path.parent.glob("retrolog.damaged-*.db"))) == 1
    after = cli(project, "runs", "-f", "json")
    assert after.returncode == 0, after.stderr


def test_an_unreachable_server_store_is_one_line_without_its_password(project: Path) -> None:
    url = "postgresql+psycopg://reader:s3cret@127.0.0.1:1/retrolog"  # nothing listens on port 1
    out = cli(project, "runs", RETROLOG_DB=url)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 5 and len(lines) == 1, out.stderr
    assert "retrolog doctor" in lines[0] and "s3cret" not in lines[0] and "***" in lines[0]
    report = cli(project, "doctor", RETROLOG_DB=url)
    assert report.returncode == 1 and "s3cret" not in report.stdout
