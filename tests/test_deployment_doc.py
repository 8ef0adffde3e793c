"""Every shell block of docs/deployment.md, run in order as the page tells a team to run them.

Real engines stand in for the team's: PostgreSQL (pgserver) for the store, moto's S3 server for
the bucket, a bare repository for the git remote, and two clones for the two teammates. Only the
addresses of the first block change (the database and the S3 endpoint); the commands themselves
run as written, in bash, with this virtual environment's `python`, `retrolog` and `torchrun`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import fresh_database, git, script_env
from .replay.scripts import TRAIN, with_statements
from .test_distributed import DDP
from .test_objects_s3 import endpoint, s3_client  # noqa: F401 - the S3 server fixture

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"
BLOCK = re.compile(r"^```bash (\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOC_DB = "postgresql+psycopg://retrolog:secret@db.internal:5432/retrolog"
DOC_ENDPOINT = "http://minio.internal:9000"
SMALL_TRAIN = TRAIN.replace('retrolog.arg("epochs", 4)', 'retrolog.arg("epochs", 2)')


def wait_for_refs(remote: Path, count: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(git(remote, "for-each-ref", "refs/retrolog").split("\n")) > count:
            return
        time.sleep(0.2)
    raise AssertionError(f"the remote never got {count} run refs")


def blocks() -> list[tuple[str, str]]:
    return [(who, body) for who, body in BLOCK.findall(DOC.read_text())]


def test_every_block_is_found() -> None:
    found = blocks()
    assert [w for w, _ in found][0] == "env" and len(found) >= 9
    assert {w for w, _ in found} == {"env", "alice", "bob"}
    text = "\n".join(b for _, b in found)
    for command in ("retrolog push", "retrolog pull", "RETROLOG_AUTO_PUSH=1", "torchrun"):
        assert command in text


def test_the_deployment_page_runs(
    tmp_path: Path,
    pg_server: Any,  # noqa: F811
    endpoint: str,  # noqa: F811
) -> None:
    s3_client(endpoint).create_bucket(Bucket="ml-team")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    alice = tmp_path / "alice"
    git(tmp_path, "clone", "-q", str(remote), str(alice))
    (alice / ".gitignore").write_text(".retrolog/\n")
    (alice / "train.py").write_text(SMALL_TRAIN)
    (alice / "train_ddp.py").write_text(DDP)
    git(alice, "add", ".gitignore", "train.py", "train_ddp.py")
    git(alice, "commit", "-q", "-m", "training scripts")
    git(alice, "push", "-q", "origin", "main")
    bob = tmp_path / "bob"
    git(tmp_path, "clone", "-q", str(remote), str(bob))
    (alice / "train.py").write_text(SMALL_TRAIN.replace("Dropout(0.3)", "Dropout(0.2)"))  # dirty

    found = blocks()
    settings = (
        found[0][1].replace(DOC_DB, fresh_database(pg_server)).replace(DOC_ENDPOINT, endpoint)
    )
    assert DOC_DB not in settings and DOC_ENDPOINT not in settings
    venv_bin = str(Path(sys.executable).parent)
    env = script_env(
        PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
        OMP_NUM_THREADS="1",
        **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
        AWS_DEFAULT_REGION="us-east-1",
    )
    env.pop("AWS_ENDPOINT_URL", None)  # the page's settings block sets it
    outputs: list[str] = []
    for who, body in found[1:]:
        cwd = {"alice": alice, "bob": bob}[who]
        if "retrolog pull" in body:  # the auto-push of the third run runs in the background
            wait_for_refs(remote, 3)
        if "retrolog replay weight_norm" in body:  # the page: "Bob adds retrolog.log(...)"
            (bob / "train.py").write_text(with_statements(SMALL_TRAIN, "weight_norm"))
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", settings + "\n" + body],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, f"{who}:\n{body}\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout + proc.stderr)

    said = "\n".join(outputs)
    assert "pushed to origin: 2 new" in said and "pulled from origin: 3 new" in said
    assert "would remove 0 blob(s)" in said
    # What the page promises, checked in the shared engines themselves.
    runs = subprocess.run(
        ["bash", "-c", settings + "\nretrolog runs -f json"],
        cwd=bob,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    recorded = json.loads(runs.stdout)
    assert len(recorded) == 3 + 1 + 2  # three runs, one torchrun launch, one per rank
    keys = s3_client(endpoint).list_objects_v2(Bucket="ml-team", Prefix="retrolog/objects/")
    assert keys.get("KeyCount", 0) > 0
    auto = sorted(r["run_id"] for r in recorded)[2]
    assert f"refs/retrolog/runs/{auto}" in git(remote, "for-each-ref", "--format=%(refname)")
