"""The fork-server executor: same results, events and process semantics as plain subprocesses.

Real processes throughout; the replay test trains a real torch model in forked children.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import retrolog
from retrolog.replaying import replay
from retrolog.replaying.executor import Job, JobResult, LocalProcessExecutor
from retrolog.replaying.forkserver import (
    DIR_ENV,
    IDLE_ENV,
    PERSIST_ENV,
    ForkServerExecutor,
    script_imports,
    server_key,
    shareable_preload,
    shutdown_servers,
)

from ..conftest import git, run_python, script_env, write_script
from .scripts import ARG_SETS, TRAIN, with_statements

pytestmark = pytest.mark.slow

Events = list[tuple[str, int, dict[str, Any]]]


def make_job(
    tmp: Path, task_id: int, code: str, *args: str, cwd: Path | None = None, **env: str
) -> Job:
    script = tmp / "scripts" / f"task{task_id}.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(textwrap.dedent(code))
    base = tmp / f"task-{task_id}"
    return Job(
        task_id,
        [sys.executable, str(script), *args],
        cwd or tmp,
        script_env(**env),
        base.with_suffix(".log"),
        base.with_suffix(".progress"),
        base.with_suffix(".out.jsonl"),
    )


def run(executor: Any, jobs: list[Job]) -> tuple[list[JobResult], Events]:
    events: Events = []
    results = executor.run(jobs, lambda kind, task, info: events.append((kind, task, info)))
    return results, events


def test_replay_stores_the_same_values_as_with_local_processes(
    project: Path, tmp_path: Path
) -> None:
    write_script(project, TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    recordings = [  # both at once: two cores
        subprocess.Popen(
            [sys.executable, "train.py", "--kwargs", *args],
            cwd=project,
            env=script_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for args in ARG_SETS
    ]
    for proc in recordings:
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, output.decode()
    write_script(project, with_statements(TRAIN, "weight_norm"))
    other = tmp_path / "copy"
    shutil.copytree(project, other, symlinks=True)

    forking = ForkServerExecutor(2, preload=["torch"])
    reports, frames = [], []
    for root, executor in ((project, LocalProcessExecutor(2)), (other, forking)):
        report = replay("weight_norm", workers=2, project=root, executor=executor)
        assert {r.fidelity for r in report.runs} == {"reproduced"}, report.summary()
        assert report.stored == 2 * 4 and all(job.ok for job in report.jobs)
        reports.append(report)
        frame = retrolog.dataframe("lr", "weight_norm", project=root)
        frames.append(frame.loc[frame["weight_norm"].notna(), ["lr", "epoch", "weight_norm"]])
    assert forking.exec_reasons == {} and forking.preload_errors == {}
    local, forked = (f.sort_values(["lr", "epoch"]).reset_index(drop=True) for f in frames)
    pd.testing.assert_frame_equal(local, forked, check_exact=True)
    assert [r.compared for r in reports[0].runs] == [r.compared for r in reports[1].runs]


PROBE = """
import json, os, signal, sys
state = {
    "preloaded": "colorsys" in sys.modules,
    "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path,
    "name": __name__, "file": __file__, "main": sys.modules["__main__"].__file__,
    "stdin": sys.stdin.read(), "hooks": sys.excepthook is sys.__excepthook__,
    "signals": {s.name: str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)},
}
import colorsys
state["seen"] = getattr(colorsys, "_retrolog_mark", None)
colorsys._retrolog_mark = sys.argv[1]
with open(os.environ["PROBE_OUT"], "w") as fh:
    json.dump(state, fh)
left_open = open(os.environ["PROBE_OUT"] + ".open", "w")
left_open.write("buffered, never closed")
print("no newline at the end", end="")
"""


def test_a_child_looks_like_a_fresh_interpreter(tmp_path: Path) -> None:
    """argv, cwd, env, sys.path, __main__, stdin, hooks, signals as ``python script.py`` has
    them, module state not shared between tasks, unflushed output written at exit."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    states = {}
    for name, executor in (
        ("local", LocalProcessExecutor(1, poll_seconds=0.05)),
        ("fork", ForkServerExecutor(1, preload=["colorsys"])),
    ):
        jobs = [
            make_job(
                tmp_path / name,
                i,
                PROBE,
                f"task {i}",
                "--flag=x y",
                cwd=workdir,
                PROBE_OUT=str(tmp_path / name / f"out-{i}.json"),
                RETROLOG_TEST_VALUE=f"value {i}",
                PYTHONWARNINGS="ignore",  # no ResourceWarning at shutdown for the open file
            )
            for i in range(3)
        ]
        results, _ = run(executor, jobs)
        assert all(r.ok for r in results), [r.log_tail for r in results]
        for job in jobs:
            assert job.log_path.read_text() == "no newline at the end"
            assert Path(f"{job.env['PROBE_OUT']}.open").read_text() == "buffered, never closed"
            state = json.loads(Path(job.env["PROBE_OUT"]).read_text())
            assert state["env"] == job.env
            assert state["argv"] == job.argv[1:] and state["cwd"] == str(workdir)
            assert state["seen"] is None  # the previous task's change is gone
            states[name, job.task_id] = state
    for i in range(3):
        fresh, forked = states["local", i], states["fork", i]
        assert (fresh["preloaded"], forked["preloaded"]) == (False, True)
        for key in ("path", "env", "file", "main", "argv"):
            text = json.dumps(fresh[key]).replace(str(tmp_path / "local"), str(tmp_path / "fork"))
            fresh[key] = json.loads(text)
        del fresh["preloaded"], forked["preloaded"]
        assert fresh == forked


EXITS = {
    "ok": "print('fine')",
    "code": "import sys; print('three'); sys.exit(3)",
    "message": "import sys; sys.exit('a message')",
    "exception": "def f():\n    raise ValueError('boom')\nf()",
    "interrupt": "raise KeyboardInterrupt",
    "sigterm": "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
    "atexit": "import atexit; atexit.register(print, 'at exit'); raise SystemExit(None)",
}


def test_exit_status_and_log_match_plain_subprocesses(tmp_path: Path) -> None:
    outcomes = {}
    for name, executor in (
        ("local", LocalProcessExecutor(2, retries=0, poll_seconds=0.05)),
        ("fork", ForkServerExecutor(2, retries=0)),
    ):
        jobs = [make_job(tmp_path / name, i, code) for i, code in enumerate(EXITS.values())]
        results, _ = run(executor, jobs)
        outcomes[name] = [
            (r.returncode, r.log_tail.replace(str(tmp_path / name), "")) for r in results
        ]
    assert outcomes["local"] == outcomes["fork"]
    codes = dict(zip(EXITS, [code for code, _ in outcomes["fork"]]))
    assert codes == {
        "ok": 0,
        "code": 3,
        "message": 1,
        "exception": 1,
        "interrupt": -signal.SIGINT,
        "sigterm": -signal.SIGTERM,
        "atexit": 0,
    }


def test_retry_after_a_kill_and_a_job_that_always_fails(tmp_path: Path) -> None:
    marker = tmp_path / "killed-once"
    killed = make_job(
        tmp_path,
        1,
        f"""
        import os, pathlib, signal
        marker = pathlib.Path({str(marker)!r})
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        print("second attempt")
        """,
    )
    failing = make_job(tmp_path, 2, "raise RuntimeError('always broken')")
    results, events = run(ForkServerExecutor(2), [killed, failing])
    assert [r.task_id for r in results] == [1, 2]
    first, second = results
    assert first.ok and first.attempts == 2 and "second attempt" in first.log_tail
    retries = {task: info for kind, task, info in events if kind == "retry"}
    assert retries[1]["returncode"] == -signal.SIGKILL
    assert second.returncode == 1 and second.attempts == 2
    assert "Traceback" in second.log_tail and "RuntimeError: always broken" in second.log_tail
    assert len(second.history) == 1 and "exited 1" in second.history[0]
    assert [info["attempt"] for kind, task, info in events if kind == "started" and task == 2] == [
        1,
        2,
    ]
    assert [kind for kind, task, _ in events if task == 2][-1] == "finished"


def test_workers_run_concurrently(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, i, "import time; time.sleep(1)") for i in range(4)]
    executor = ForkServerExecutor(2)
    events: Events = []
    running, peak, first = 0, 0, 0.0

    def on_event(kind: str, task: int, info: dict[str, Any]) -> None:
        nonlocal running, peak, first
        first = first or time.perf_counter()
        running += {"started": 1, "finished": -1}.get(kind, 0)
        peak = max(peak, running)
        events.append((kind, task, info))

    results = executor.run(jobs, on_event)
    elapsed = time.perf_counter() - first
    assert all(r.ok for r in results) and peak == 2
    assert 1.9 < elapsed < 3.0, elapsed


def test_jobs_complete_when_the_server_dies(tmp_path: Path) -> None:
    jobs = [
        make_job(tmp_path, i, f"import time; time.sleep(0.5); print('done {i}')") for i in range(4)
    ]
    executor = ForkServerExecutor(2)
    events: Events = []

    def on_event(kind: str, task: int, info: dict[str, Any]) -> None:
        events.append((kind, task, info))
        if kind == "started" and task == 1 and info["attempt"] == 1:
            os.kill(executor.server_pid or 0, signal.SIGKILL)

    with pytest.warns(RuntimeWarning, match="fork server"):
        results = executor.run(jobs, on_event)
    assert executor.fallback_error and "died" in executor.fallback_error
    assert [r.task_id for r in results] == [0, 1, 2, 3]
    for result in results:
        assert result.ok and f"done {result.task_id}" in result.log_tail
    lost = [r for r in results if r.history]
    assert lost and all("lost" in r.history[0] and r.attempts == 2 for r in lost)
    assert {task for kind, task, _ in events if kind == "finished"} == {0, 1, 2, 3}


def test_fresh_exec_when_a_fork_cannot_be_faithful(tmp_path: Path) -> None:
    """A different hash seed than the server's, or a file shadowing a preloaded module: exec."""
    seeded = make_job(tmp_path, 1, "print(hash('retrolog'))", PYTHONHASHSEED="123")
    shadowing = make_job(tmp_path / "other", 2, "import colorsys; print(colorsys.SHADOW)")
    (tmp_path / "other" / "scripts" / "colorsys.py").write_text("SHADOW = 'local module'\n")
    plain = make_job(tmp_path, 3, "print('forked')")
    executor = ForkServerExecutor(2, preload=["colorsys"])
    results, _ = run(executor, [plain, seeded, shadowing])
    assert all(r.ok for r in results), [r.log_tail for r in results]
    reference = run_python(tmp_path, str(tmp_path / "scripts" / "task1.py"), PYTHONHASHSEED="123")
    assert results[1].log_tail == reference.stdout
    assert results[2].log_tail == "local module\n"
    assert set(executor.exec_reasons) == {1, 2}
    assert "colorsys" in executor.exec_reasons[2]


def test_script_imports_are_the_module_level_absolute_imports() -> None:
    source = """
    from __future__ import annotations
    import numpy as np, os.path
    from . import sibling
    try:
        import sklearn.datasets
    except ImportError:
        pass
    def later():
        import pandas
    if __name__ == "__main__":
        from torch import nn
    """
    assert script_imports(textwrap.dedent(source)) == [
        "numpy",
        "os.path",
        "sklearn.datasets",
        "torch",
    ]
    assert script_imports(TRAIN) == ["torch", "retrolog"]
    assert script_imports("def broken(:") == []


def _server_pids(folder: Path) -> list[int]:
    return [int(p.read_text()) for p in folder.glob("*.pid")]


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.05)
    return False


def test_a_persistent_server_serves_successive_runs_then_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "servers"
    monkeypatch.setenv(DIR_ENV, str(folder))
    code = "import sys; print('colorsys' in sys.modules)"
    outcomes = []
    for round_ in range(2):
        executor = ForkServerExecutor(2, preload=["colorsys"], persist=True)
        results, _ = run(executor, [make_job(tmp_path / str(round_), i, code) for i in range(3)])
        assert all(r.ok and r.log_tail == "True\n" for r in results), [r.log_tail for r in results]
        outcomes.append((executor.reused, _server_pids(folder)))
    (first_reused, first_pids), (second_reused, second_pids) = outcomes
    assert (first_reused, second_reused) == (False, True)
    assert len(first_pids) == 1 and first_pids == second_pids  # one server, still running
    assert shutdown_servers() == 1
    assert _gone(first_pids[0], 10)
    assert not list(folder.glob("*.sock")) and not list(folder.glob("*.pid"))


def test_a_persistent_server_exits_when_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "servers"
    monkeypatch.setenv(DIR_ENV, str(folder))
    monkeypatch.setenv(IDLE_ENV, "1")
    results, _ = run(ForkServerExecutor(1, persist=True), [make_job(tmp_path, 1, "print(1)")])
    assert results[0].ok
    (pid,) = _server_pids(folder)
    assert _gone(pid, 15)
    assert not list(folder.glob("*.sock"))


def test_persistence_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "servers"
    monkeypatch.setenv(DIR_ENV, str(folder))
    monkeypatch.setenv(PERSIST_ENV, "0")
    executor = ForkServerExecutor(1)
    results, _ = run(executor, [make_job(tmp_path, 1, "print(1)")])
    assert results[0].ok and not executor.persist
    assert not folder.exists() or not list(folder.glob("*.pid"))
    assert _gone(executor.server_pid or 0, 5)  # the private server ended with the run


def test_only_installed_modules_are_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A persistent server outlives one project: a module of the user's never goes into it."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "mylib.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(project))
    wanted = ["colorsys", "json.decoder", "retrolog.record", "mylib", "no_such_module_here"]
    assert shareable_preload(wanted) == ["colorsys", "json.decoder", "retrolog.record"]
    env = script_env()
    key = server_key(sys.executable, ["colorsys"], env)
    assert key == server_key(sys.executable, ["colorsys"], dict(env))
    assert key != server_key(sys.executable, ["colorsys", "json"], env)
    assert key != server_key(sys.executable, ["colorsys"], {**env, "PYTHONHASHSEED": "7"})


def test_the_estimate_uses_the_server_and_past_replays(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first replay measures what the server's imports take; the next plan subtracts them from
    the prefix, knows the server is running, and scales task estimates by past actual/estimate."""
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "servers"))
    write_script(project, TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    for args in ARG_SETS:
        run_python(project, "train.py", "--kwargs", *args)
    write_script(project, with_statements(TRAIN, "weight_norm"))
    first = replay("weight_norm", workers=2)
    assert {r.fidelity for r in first.runs} == {"reproduced"}
    assert first.plan.planning_seconds > 0 and first.plan.server_seconds == 0  # waited for it
    second = replay("weight_norm", workers=2, force=True)
    assert {r.fidelity for r in second.runs} == {"reproduced"} and second.stored == 0
    plan = second.plan
    factor = plan.corrections["outer"]
    assert 1 / 3 <= factor <= 3.0 and plan.server_seconds == 0
    for task in plan.tasks:
        assert "(imports preloaded)" in task.basis and f"x{factor:.2f}" in task.basis
    prefixes = [float(t.basis.split("prefix ")[1].split("s")[0]) for t in plan.tasks]
    recorded = [first.plan.tasks[0].basis, *(t.basis for t in plan.tasks)]
    assert all(p < 1.0 for p in prefixes), recorded  # torch._dynamo's import is not counted
    assert plan.estimate_seconds > plan.planning_seconds
    declined = replay("weight_norm", workers=2, confirm=lambda plan: False, force=True)
    assert not declined.executed and declined.plan.tasks
    assert shutdown_servers() == 1
