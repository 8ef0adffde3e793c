"""Replay on cluster engines: a local Ray (2 CPUs) and submitit's local mode.

Real torch training recorded in a real git repository; the same inner-level replay runs on the
local process pool and on each engine, and the values must be equal bit for bit. A Ray worker
killed mid-task (the replayed script kills the worker process that runs it) is reported and
retried, or marked failed when it dies every time; the store keeps only whole results.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import retrolog
from retrolog.replaying import replay
from retrolog.replaying.executor import Job
from retrolog.replaying.guard import ENV as SANDBOX_ENV
from retrolog.replaying.remote import VersionFiles, pack, run_task

from ..conftest import git, script_env, write_script
from .scripts import ARG_SETS, TRAIN, with_statements

ray = pytest.importorskip("ray")
pytest.importorskip("submitit")

pytestmark = pytest.mark.slow

# Kills the Ray worker that runs it (and itself), once when armed, every time when told so; only
# ever under a Ray worker (its process title "ray::...", or Ray's default_worker.py), never under
# the test process.
KILLER = """import os, signal
marker = retrolog.arg("marker", "")
if marker and (os.path.exists(marker + ".always") or (
    os.path.exists(marker + ".armed") and not os.path.exists(marker)
)):
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as fh:
        parent = fh.read()
    under_ray = parent.startswith(b"ray::") or b"default_worker.py" in parent
    if under_ray:
        open(marker, "w").close()
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
"""
SCRIPT = TRAIN.replace("torch.set_num_threads(1)\n", "torch.set_num_threads(1)\n" + KILLER, 1)
NAME = "grad_norm"  # an inner-level statement: every step of every epoch


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two recorded runs (2 epochs each) of SCRIPT; today's script has the new statement."""
    base = tmp_path_factory.mktemp("cluster")
    repo, marker = base / "proj", base / "marker"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_script(repo, SCRIPT)
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "train")
    recordings = [
        subprocess.Popen(
            [sys.executable, "train.py", "--kwargs", *args, "epochs=2", f"marker={marker}"],
            cwd=repo,
            env=script_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for args in ARG_SETS
    ]
    for proc in recordings:
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, output.decode()
    write_script(repo, with_statements(SCRIPT, NAME))
    return repo, marker


def copy_of(history: tuple[Path, Path], dest: Path) -> Path:
    shutil.copytree(history[0], dest, symlinks=True)
    return dest


def values(root: Path) -> pd.DataFrame:
    frame = retrolog.dataframe("lr", NAME, project=root)
    out = frame.loc[frame[NAME].notna(), ["lr", "epoch", "step", NAME]]
    return out.sort_values(["lr", "epoch", "step"]).reset_index(drop=True)


@pytest.fixture(autouse=True)
def own_store(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RETROLOG_DB", "RETROLOG_OBJECTS"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def local_values(
    history: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> pd.DataFrame:
    """What the local process pool stores: the reference for every engine."""
    with pytest.MonkeyPatch.context() as mp:
        for key in ("RETROLOG_DB", "RETROLOG_OBJECTS"):
            mp.delenv(key, raising=False)
        root = copy_of(history, tmp_path_factory.mktemp("local") / "proj")
        report = replay(NAME, workers=2, project=root, executor="process")
        assert {r.fidelity for r in report.runs} == {"reproduced"}, report.summary()
        frame = values(root)
    assert len(frame) == 2 * 2 * 10  # runs x epochs x steps
    return frame


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray of 2 CPUs for the whole session, shut down at its end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def store_rows(root: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(root / ".retrolog" / "retrolog.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def replay_with(root: Path, executor: str, **options: object) -> tuple[object, list[str]]:
    events: list[str] = []
    report = replay(
        NAME,
        workers=2,
        project=root,
        executor=executor,
        executor_options=options,
        on_event=lambda kind, task, info: events.append(f"{kind}:{task}"),
    )
    return report, events


def check_stored_like_local(root: Path, report: object, local: pd.DataFrame) -> None:
    from retrolog.replaying.api import ReplayReport

    assert isinstance(report, ReplayReport)
    assert {r.fidelity for r in report.runs} == {"reproduced"}, report.summary()
    assert all(job.ok for job in report.jobs)
    assert report.stored == len(local)
    pd.testing.assert_frame_equal(values(root), local, check_exact=True)
    # provenance: the replay, its tasks and every stored value name this replay
    assert store_rows(root, "SELECT status FROM replays") == [("finished",)]
    assert {s for (s,) in store_rows(root, "SELECT status FROM replay_tasks")} == {"done"}
    ids = store_rows(root, f"SELECT DISTINCT replay_id FROM logs WHERE name = '{NAME}'")
    assert ids == [(report.replay_id,)]


def test_ray_stores_the_values_of_the_local_pool(
    history: tuple[Path, Path], local_values: pd.DataFrame, ray_cluster: None, tmp_path: Path
) -> None:
    root = copy_of(history, tmp_path / "proj")
    report, events = replay_with(root, "ray")
    check_stored_like_local(root, report, local_values)
    tasks = {e.split(":")[1] for e in events}
    assert {f"started:{t}" for t in tasks} <= set(events)
    assert {f"finished:{t}" for t in tasks} <= set(events)
    assert ray.is_initialized()  # a session it did not start is left running


def test_submitit_local_from_the_command_line_stores_the_values_of_the_local_pool(
    history: tuple[Path, Path], local_values: pd.DataFrame, tmp_path: Path
) -> None:
    root = copy_of(history, tmp_path / "proj")
    command = ["replay", NAME, "--executor", "slurm", "--cluster", "local", "-j", "2", "--yes"]
    command += ["--time", "10", "--cpus-per-task", "1", "--mem", "1G"]
    proc = subprocess.run(
        [sys.executable, "-m", "retrolog", *command],
        cwd=root,
        capture_output=True,
        text=True,
        env=script_env(OMP_NUM_THREADS="1"),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reproduced" in proc.stdout
    pd.testing.assert_frame_equal(values(root), local_values, check_exact=True)
    assert store_rows(root, "SELECT status FROM replays") == [("finished",)]
    assert {s for (s,) in store_rows(root, "SELECT status FROM replay_tasks")} == {"done"}
    assert list((root / ".retrolog" / "submitit").iterdir()) == []  # its job folder is removed


def test_bad_cluster_options_are_one_line_errors(history: tuple[Path, Path]) -> None:
    for args, message in (
        (["--executor", "nope"], "unknown executor 'nope'"),
        (["--executor", "slurm", "--mem", "lots"], "--mem 'lots'"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "retrolog", "replay", NAME, "--yes", *args],
            cwd=history[0],
            capture_output=True,
            text=True,
            env=script_env(),
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
        assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_killed_ray_worker_is_reported_and_its_task_retried(
    history: tuple[Path, Path], local_values: pd.DataFrame, ray_cluster: None, tmp_path: Path
) -> None:
    root = copy_of(history, tmp_path / "proj")
    marker = history[1]
    Path(str(marker) + ".armed").touch()
    try:
        report, _ = replay_with(root, "ray")
    finally:
        Path(str(marker) + ".armed").unlink()
    assert marker.exists()  # a worker was killed
    marker.unlink()
    retried = [job for job in report.jobs if job.attempts == 2]  # type: ignore[attr-defined]
    assert retried, [job.attempts for job in report.jobs]  # type: ignore[attr-defined]
    assert all("Ray worker running task" in job.history[0] for job in retried)
    check_stored_like_local(root, report, local_values)
    attempts = store_rows(root, "SELECT max(attempts) FROM replay_tasks")
    assert attempts == [(2,)]


def test_a_worker_that_dies_every_time_fails_its_task_and_stores_nothing(
    history: tuple[Path, Path], ray_cluster: None, tmp_path: Path
) -> None:
    root = copy_of(history, tmp_path / "proj")
    marker = history[1]
    Path(str(marker) + ".always").touch()
    try:
        report, _ = replay_with(root, "ray")
    finally:
        Path(str(marker) + ".always").unlink()
        marker.unlink(missing_ok=True)
    runs = report.runs  # type: ignore[attr-defined]
    assert {r.fidelity for r in runs} == {"failed"}
    assert all("was lost" in r.detail for r in runs)
    assert store_rows(root, f"SELECT count(*) FROM logs WHERE name = '{NAME}'") == [(0,)]
    assert store_rows(root, "SELECT status FROM replays") == [("failed",)]
    assert {s for (s,) in store_rows(root, "SELECT status FROM replay_tasks")} == {"failed"}


SHIPPED = """
import json, os, sys
spec = json.load(open(os.environ["RETROLOG_REPLAY"]))
try:
    open(sys.argv[1], "w")
    print("wrote the user's file")
except PermissionError:
    print("refused")
with open(spec["output"], "w") as fh:
    json.dump({"cwd": os.getcwd(), "spec": spec, "data": open("../data/in.txt").read(),
               "own": open(os.path.join(os.path.dirname(__file__), "lib.py")).read()}, fh)
"""


def test_a_shipped_task_needs_none_of_the_coordinators_files(tmp_path: Path) -> None:
    """``pack`` takes everything by value: with the coordinator's work directory gone, the worker
    builds the tree (version files, links to the user's data), runs the script under the guard,
    and returns the output."""
    user = tmp_path / "user"
    (user / "data").mkdir(parents=True)
    (user / "data" / "in.txt").write_text("user data")
    work = tmp_path / "coordinator"
    root = work / "scratch-1"
    (root / "sub").mkdir(parents=True)
    (root / "train.py").write_text(SHIPPED)
    (root / "lib.py").write_text("x = 1\n")
    os.symlink(user / "data", root / "data")
    manifest = {"scratch": str(root), "protected": [str(user)], "allowed": [str(work)]}
    (work / "scratch-1.json").write_text(json.dumps(manifest))
    spec = {"output": str(work / "task-1.out.journal"), "progress": str(work / "p"), "x": 1}
    (work / "task-1.spec.json").write_text(json.dumps(spec))
    env = script_env(RETROLOG_REPLAY=str(work / "task-1.spec.json"))
    env[SANDBOX_ENV] = str(work / "scratch-1.json")
    job = Job(
        1,
        [sys.executable, str(root / "train.py"), str(user / "written.txt")],
        root / "sub",
        env,
        work / "task-1.log",
        work / "task-1.progress",
        work / "task-1.out.journal",
    )
    cache: dict[tuple[object, ...], VersionFiles] = {}
    task, key = pack(job, cache)
    shutil.rmtree(work)
    outcome = run_task(task, cache[key])
    assert outcome.returncode == 0, outcome.log.decode()
    lines = outcome.log.decode().splitlines()
    assert "refused" in lines and "wrote the user's file" not in lines  # the guard ran there
    assert not (user / "written.txt").exists()
    assert outcome.output is not None and outcome.output_name == "task-1.out.journal"
    result = json.loads(outcome.output)
    assert result["data"] == "user data" and result["own"] == "x = 1\n"
    assert result["cwd"].endswith(os.sep + "sub") and not result["cwd"].startswith(str(work))
    assert result["spec"]["x"] == 1 and not result["spec"]["output"].startswith(str(work))
