"""Recording real scripts in real subprocesses, then reading the store back."""

from pathlib import Path

import pandas as pd

import retrolog

from .conftest import SIMPLE_TRAIN, git, run_python, write_script


def test_a_run_lands_with_its_loop_coordinates(project: Path) -> None:
    write_script(project, SIMPLE_TRAIN)
    run_python(project, "train.py", "--kwargs", "lr=0.5")
    frame = retrolog.dataframe("lr", "loss")
    assert list(frame.columns) == [
        "run_id",
        "start_time",
        "version",
        "script",
        "epoch",
        "step",
        "lr",
        "loss",
    ]
    assert len(frame) == 12
    assert list(frame["epoch"]) == [0] * 4 + [1] * 4 + [2] * 4
    assert list(frame["step"]) == [0, 1, 2, 3] * 3
    assert (frame["lr"] == 0.5).all() and frame["script"].eq("train.py").all()
    import random

    random.seed(0)
    expected = [round(random.random() * 0.5, 6) for _ in range(12)]
    assert list(frame["loss"]) == expected


def test_epoch_level_values_and_run_level_values(project: Path) -> None:
    write_script(project, SIMPLE_TRAIN)
    run_python(project, "train.py")
    frame = retrolog.dataframe("acc", "final")
    assert list(frame["epoch"]) == [0, 1, 2]
    assert list(frame["acc"]) == [0.0, 0.1, 0.2]
    assert (frame["final"] == "done").all()
    one_row = retrolog.dataframe()
    assert len(one_row) == 1
    assert (
        one_row.loc[0, "final"] == "done"
        and one_row.loc[0, "lr"] == 0.1
        and one_row.loc[0, "epochs"] == 3
    )


def test_mixed_levels_give_separate_rows(project: Path) -> None:
    write_script(project, SIMPLE_TRAIN)
    run_python(project, "train.py")
    frame = retrolog.dataframe("loss", "acc")
    epoch_rows = frame[frame["step"].isna()]
    assert list(epoch_rows["acc"]) == [0.0, 0.1, 0.2] and epoch_rows["loss"].isna().all()
    assert frame["loss"].notna().sum() == 12


def test_iteration_context_manager_and_three_levels(project: Path) -> None:
    write_script(
        project,
        """
        import retrolog
        docs = ["a.txt", "b.txt"]
        for i, name in enumerate(docs):
            with retrolog.iteration("doc", i, name):
                for page in retrolog.loop("page", range(2)):
                    for line in retrolog.loop("line", range(3)):
                        retrolog.log("chars", i * 100 + page * 10 + line)
        """,
    )
    run_python(project, "train.py")
    frame = retrolog.dataframe("chars")
    assert list(frame.columns[4:]) == ["doc", "page", "line", "chars"]
    assert list(frame["chars"]) == [
        d * 100 + p * 10 + n for d in range(2) for p in range(2) for n in range(3)
    ]
    values = retrolog.query("SELECT DISTINCT value FROM loops WHERE name = 'doc' ORDER BY value")
    assert list(values["value"]) == ['"a.txt"', '"b.txt"']


def test_log_returns_its_value_and_converts_tensors(project: Path) -> None:
    write_script(
        project,
        """
        import numpy as np, torch, retrolog
        x = retrolog.log("t", torch.tensor(1.5))
        assert float(x) == 1.5 and isinstance(x, torch.Tensor)
        retrolog.log("n", np.float32(0.25))
        retrolog.log("i", np.int64(7))
        retrolog.log("b", True)
        retrolog.log("none", None)
        retrolog.log("conf", {"layers": [1, 2], "name": "mlp"})
        retrolog.log("nan", float("nan"))
        retrolog.log("big", 2**64)
        """,
    )
    run_python(project, "train.py")
    row = retrolog.dataframe("t", "n", "i", "b", "none", "conf", "nan", "big").iloc[0]
    assert row["t"] == 1.5 and row["n"] == 0.25 and row["i"] == 7 and row["b"] == True  # noqa: E712
    assert row["conf"] == {"layers": [1, 2], "name": "mlp"}
    assert pd.isna(row["nan"]) and pd.isna(row["none"]) and row["big"] == 2**64


def test_bad_names_and_values_warn_once_and_training_goes_on(project: Path) -> None:
    write_script(
        project,
        """
        import torch, retrolog
        for i in retrolog.loop("i", range(3)):
            retrolog.log("", 1.0)
            retrolog.log(42, 1.0)
            retrolog.log("weights", torch.ones(3))
            retrolog.log("huge", "x" * (2 << 20))
            retrolog.log("ok", i)
        print("finished")
        """,
    )
    proc = run_python(project, "train.py")
    assert "finished" in proc.stdout
    assert proc.stderr.count("ignored: names must not be empty") == 1
    assert proc.stderr.count("names must be strings") == 1
    assert proc.stderr.count("log('weights', ...) at train.py:6 not recorded") == 1
    assert "1 MiB" in proc.stderr
    assert list(retrolog.dataframe("ok")["ok"]) == [0, 1, 2]
    assert retrolog.runs().loc[0, "status"] == "finished"


def test_exception_marks_failed_and_keeps_every_row(project: Path) -> None:
    write_script(
        project,
        """
        import retrolog
        for i in retrolog.loop("i", range(10)):
            retrolog.log("x", i)
            if i == 6:
                raise RuntimeError("diverged")
        """,
    )
    proc = run_python(project, "train.py", check=False)
    assert proc.returncode == 1 and "diverged" in proc.stderr
    run = retrolog.runs().iloc[0]
    assert run["status"] == "failed" and "RuntimeError: diverged" in run["error"]
    assert list(retrolog.dataframe("x")["x"]) == list(range(7))


def test_keyboard_interrupt_and_sigterm_mark_interrupted(project: Path) -> None:
    write_script(
        project,
        "import retrolog\nretrolog.log('a', 1)\nraise KeyboardInterrupt\n",
        name="ctrl_c.py",
    )
    write_script(
        project,
        "import os, signal, retrolog\nretrolog.log('a', 1)\nos.kill(os.getpid(), signal.SIGTERM)\n",
        name="term.py",
    )
    run_python(project, "ctrl_c.py", check=False)
    proc = run_python(project, "term.py", check=False)
    assert proc.returncode == -15
    frame = retrolog.runs()
    assert list(frame["status"]) == ["interrupted", "interrupted"]
    assert retrolog.query("SELECT count(*) AS n FROM logs").loc[0, "n"] == 2


def test_commit_ends_a_run_and_the_next_call_starts_another(project: Path) -> None:
    write_script(
        project,
        """
        import retrolog
        retrolog.log("part", 1)
        first = retrolog.commit()
        retrolog.log("part", 2)
        second = retrolog.commit()
        assert first != second and first < second
        print(first, second)
        """,
    )
    proc = run_python(project, "train.py")
    first, second = proc.stdout.split()
    frame = retrolog.dataframe("part")
    assert dict(zip(frame["run_id"], frame["part"])) == {first: 1, second: 2}


def test_timings_cover_prefix_iterations_nested_loops_and_suffix(project: Path) -> None:
    write_script(
        project,
        """
        import time, retrolog
        time.sleep(0.05)
        for e in retrolog.loop("epoch", range(2)):
            for s in retrolog.loop("step", range(2)):
                time.sleep(0.01)
            time.sleep(0.02)
        time.sleep(0.03)
        """,
    )
    run_python(project, "train.py")
    t = retrolog.query(
        "SELECT kind, loop, iteration, seconds, count FROM timings ORDER BY kind, iteration"
    )
    kinds = t.groupby("kind").size().to_dict()
    assert kinds == {"iteration": 2, "main": 1, "nested": 2, "prefix": 1, "startup": 1, "suffix": 1}
    seconds = dict(zip(t["kind"], t["seconds"]))
    assert seconds["prefix"] >= 0.05 and seconds["suffix"] >= 0.03
    iterations = t[t["kind"] == "iteration"]["seconds"]
    assert (iterations >= 0.04).all()
    nested = t[t["kind"] == "nested"]
    assert (nested["seconds"] >= 0.02).all() and (nested["count"] == 2).all()


def test_ipython_cells_form_one_run_until_commit(project: Path) -> None:
    """In IPython (and a Jupyter kernel: tests/integrations/test_notebook.py) a run spans cells
    until commit(); a cell that raises leaves it open and the run ends failed."""
    write_script(
        project,
        """
        from IPython.testing.globalipapp import start_ipython
        shell = start_ipython()
        shell.run_cell("import retrolog")
        shell.run_cell("retrolog.log('cell', 1)")
        shell.run_cell("retrolog.log('cell', 2)")
        shell.run_cell("retrolog.commit()")
        shell.run_cell("print('no retrolog here')")
        shell.run_cell("retrolog.log('cell', 3); 1/0")
        shell.run_cell("retrolog.log('cell', 4)")
        """,
        name="nb.py",
    )
    run_python(project, "nb.py")
    runs = retrolog.runs()
    assert list(runs["status"]) == ["finished", "failed"]
    assert runs["error"].iloc[1] == "a cell: ZeroDivisionError: division by zero"
    assert list(runs["script"]) == ["<interactive>", "<interactive>"]
    values = retrolog.query("SELECT value FROM metrics WHERE name = 'cell' ORDER BY run_id, seq")
    assert list(values["value"]) == [1, 2, 3, 4]
    code = git(project, "show", f"{runs['version'].iloc[1]}:ipython_session.py")
    assert "'cell', 1" not in code and "# retrolog.log('cell', 3); 1/0" in code


def test_progress_bar_on_a_terminal_only(project: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    from .conftest import script_env

    write_script(
        project,
        "import retrolog\nfor e in retrolog.loop('epoch', range(3)):\n    retrolog.log('e', e)\n",
    )

    def stderr_of(tty: bool, **env: str) -> str:
        if not tty:
            return run_python(project, "train.py", **env).stderr
        import fcntl
        import struct
        import termios

        main, child = pty.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real size
        proc = subprocess.Popen(
            [sys.executable, "train.py"],
            cwd=project,
            env=script_env(**env),
            stdin=child,
            stdout=child,
            stderr=child,
        )
        os.close(child)
        chunks = []
        while True:
            try:
                data = os.read(main, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait()
        os.close(main)
        return b"".join(chunks).decode(errors="replace")

    assert "3/3" in stderr_of(True, RETROLOG_PROGRESS="1")
    assert "3/3" not in stderr_of(True, RETROLOG_PROGRESS="0")
    assert "3/3" not in stderr_of(False, RETROLOG_PROGRESS="1")


def test_recording_into_an_existing_store_never_imports_sqlalchemy(project: Path) -> None:
    write_script(
        project,
        """
        import atexit, sys
        atexit.register(lambda: print("sqlalchemy imported:", "sqlalchemy" in sys.modules))
        import retrolog
        for e in retrolog.loop("epoch", range(3)):
            retrolog.log("x", e)
        """,
    )
    first = run_python(project, "train.py")  # creates the store: needs the schema code once
    second = run_python(project, "train.py")
    assert "sqlalchemy imported: True" in first.stdout
    assert "sqlalchemy imported: False" in second.stdout
    assert list(retrolog.dataframe("x")["x"]) == [0, 1, 2, 0, 1, 2]
    assert list(retrolog.runs()["status"]) == ["finished", "finished"]


def test_journal_records_round_trip_and_a_torn_tail_is_dropped(tmp_path: Path) -> None:
    from retrolog.record.journal import Journal, JournalReader, read_events

    path = tmp_path / "run.journal"
    journal = Journal(path)
    instance = ("ctx", 0, 1, "step")
    journal.append(1, [("arg", "lr", "f", 0.1, None), (instance, 1, 0, 0, 1.5)], [("x", 2.0, 1)])
    reader = JournalReader(path)
    first = reader.read_new()
    assert first == [
        [1, "arg", "lr", "f", 0.1, None],
        [2, "ctx", 1, 0, 1, "step", 0, "0", 1.5],
        [3, "log", 1, "x", "f", 2.0, None],
    ]
    journal.append(4, [], [("y", float("nan"), 1), ("z", ("s", None, "text"), 0)])
    assert reader.read_new() == [
        [4, "log", 1, "y", "f", None, "nan"],
        [5, "log", 0, "z", "s", None, "text"],
    ]
    journal.close(delete=False)
    with open(path, "ab") as fh:  # a record cut short by a kill
        fh.write(b"\x40\x00\x00\x00\x01\x02\x03\x04partial")
    assert len(read_events(path)) == 5


def test_a_run_records_the_versions_of_the_packages_it_imported(project: Path) -> None:
    import json
    import sqlite3

    import numpy

    write_script(project, "import numpy, retrolog\nretrolog.log('x', 1)\n")
    run_python(project, "train.py")
    with sqlite3.connect(project / ".retrolog" / "retrolog.db") as conn:
        (packages,) = conn.execute("SELECT packages FROM runs").fetchone()
    assert json.loads(packages) == {"numpy": numpy.__version__, "retrolog": retrolog.__version__}


def test_journals_are_read_by_content_whatever_their_name(tmp_path: Path) -> None:
    from retrolog.record.journal import Journal, read_events

    binary = tmp_path / "task.out.jsonl"  # a binary journal under a JSON-lines name
    journal = Journal(binary)
    journal.append(1, [], [("x", 1.5, 0)])
    journal.close(delete=False)
    assert read_events(binary) == [[1, "log", 0, "x", "f", 1.5, None]]
    text = tmp_path / "rescued.journal"  # JSON lines under a binary name
    text.write_text('[1, "log", 0, "x", "f", 2.5, null]\n[2, "log", 0, "x"')  # torn last line
    assert read_events(text) == [[1, "log", 0, "x", "f", 2.5, None]]
