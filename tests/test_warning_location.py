"""A warning raised on a background thread names the user's line, not threading.py."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import git, run_python, write_script


def test_large_file_warning_names_the_scripts_first_retrolog_line(project: Path) -> None:
    write_script(
        project,
        """\
        import retrolog

        retrolog.log("x", 1)
        """,
    )
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    (project / "weights.bin").write_bytes(os.urandom(2 << 20))  # untracked, over the 1 MiB limit
    proc = run_python(project, "train.py")
    line = next(ln for ln in proc.stderr.splitlines() if "left large changed files" in ln)
    assert "train.py:3:" in line and "weights.bin" in line
    assert "threading.py" not in proc.stderr
