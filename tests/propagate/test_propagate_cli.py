"""``python -m retrolog.propagation`` / ``retrolog propagate``: real subprocesses, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retrolog.propagation.cli import main

NEW = textwrap.dedent("""\
    import retrolog

    for epoch in range(3):
        loss = step(model)
        retrolog.log("loss", loss)
        retrolog.log("epoch", epoch)
    for x in val:
        retrolog.log("val", x)
""")
OLD = textwrap.dedent("""\
    import retrolog

    # train
    for epoch in range(3):
        loss = step(net)
""")


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    new, old = tmp_path / "new.py", tmp_path / "old.py"
    new.write_text(NEW)
    old.write_text(OLD)
    return new, old


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrolog.propagation", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prints_the_propagated_file_and_exits_0(files: tuple[Path, Path]) -> None:
    new, old = files
    r = run("--line", "5", str(new), str(old))
    assert r.returncode == 0, r.stderr
    assert r.stdout == OLD + '    retrolog.log("loss", loss)\n'
    assert old.read_text() == OLD  # the old file is never touched


def test_refusal_exits_3_with_the_reason_on_stderr(files: tuple[Path, Path]) -> None:
    new, old = files
    r = run("--line", "8", str(new), str(old))
    assert r.returncode == 3
    assert r.stdout == ""
    assert "refused" in r.stderr and "for x" in r.stderr and "line 8" in r.stderr


def test_json_report(files: tuple[Path, Path]) -> None:
    new, old = files
    r = run("--line", "5", "--json", str(new), str(old))
    assert r.returncode == 0
    report = json.loads(r.stdout)
    assert report["ok"] is True
    p = report["placements"][0]
    assert p["scope"] == ["for epoch"] and p["anchor"] == "loss = step(net)"
    assert p["kind"] == "insert" and p["line"] == 6
    r = run("--line", "8", "--json", str(new), str(old))
    assert r.returncode == 3 and json.loads(r.stdout)["ok"] is False


def test_output_file_and_repeated_line(files: tuple[Path, Path], tmp_path: Path) -> None:
    new, old = files
    out = tmp_path / "out.py"
    r = run("--line", "5", "--line", "6", "-o", str(out), str(new), str(old))
    assert r.returncode == 0 and r.stdout == ""
    assert (
        out.read_text()
        == OLD + '    retrolog.log("loss", loss)\n    retrolog.log("epoch", epoch)\n'
    )


def test_usage_errors_exit_2(files: tuple[Path, Path], tmp_path: Path) -> None:
    new, _old = files
    r = run("--line", "5", str(new), str(tmp_path / "missing.py"))
    assert r.returncode == 2 and "missing.py" in r.stderr
    assert run(str(new)).returncode == 2  # no --line


def test_main_in_process(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    new, old = files
    assert main(["--line", "5", str(new), str(old)]) == 0
    assert capsys.readouterr().out.endswith('    retrolog.log("loss", loss)\n')
    assert main(["-l", "8", str(new), str(old)]) == 3


def test_the_command_imports_nothing_heavy() -> None:
    code = (
        "import sys; import retrolog; before = set(sys.modules); "
        "import retrolog.propagation.cli, retrolog.propagation; "
        "print(sorted(set(sys.modules) - before))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    added = r.stdout
    for heavy in ("pandas", "sqlalchemy", "typer", "rich", "numpy", "libcst", "dataclasses"):
        assert f"'{heavy}" not in added, (heavy, added)
