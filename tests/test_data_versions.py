"""Data versions (``retrolog.data``, issue 15): real files, real runs in subprocesses, real git,
real replays, the hash cache's own counters, DVC's files as DVC writes them, PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import retrolog
from retrolog.record.data import HashCache, dvc_md5, hash_path
from retrolog.relational import describe_run, open_store
from retrolog.replaying import replay
from retrolog.replaying.plan import NothingToReplay

from .conftest import fresh_database, git, run_python, script_env, write_script

# The values depend on the data: the sum of the bytes of every file under data/.
TRAIN = """
import os
import retrolog

retrolog.data("train", "data")
total = 0
for name in sorted(os.listdir("data")):
    with open(os.path.join("data", name), "rb") as fh:
        total += sum(fh.read())
for epoch in retrolog.loop("epoch", range(3)):
    retrolog.log("loss", total / (epoch + 1))
"""
NEW_STATEMENT = TRAIN + '    retrolog.log("half", total / (epoch + 1) / 2)\n'
OLD = time.time() - 3600  # mtimes an hour old: past the cache's "modified just now" window


def cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrolog", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="200"),
        timeout=180,
    )


def write_data(root: Path, train: bytes, labels: bytes = b"abc") -> None:
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "train.bin").write_bytes(train)
    (root / "data" / "labels.txt").write_bytes(labels)


def record_two_runs(project: Path) -> tuple[str, str]:
    """Run TRAIN on one dataset, change data/train.bin, run it again: (older, newer) run ids."""
    write_script(project, TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    write_data(project, bytes(range(10)))
    run_python(project, "train.py")
    write_data(project, bytes(range(20)))
    run_python(project, "train.py")
    runs = retrolog.runs(project=project)
    older, newer = sorted(runs["run_id"])
    return older, newer


def test_a_changed_dataset_gives_two_data_versions_usable_in_where(project: Path) -> None:
    older, newer = record_two_runs(project)
    runs = retrolog.runs(project=project).set_index("run_id")
    first, second = runs.loc[older, "data.train"], runs.loc[newer, "data.train"]
    assert len(first) == 12 and len(second) == 12 and first != second
    # "runs trained on the data of run X" / "runs whose train set differs"
    same = retrolog.runs(project=project, where=f"\"data.train\" = '{first}'")
    assert list(same["run_id"]) == [older]
    other = retrolog.runs(project=project, where=f"\"data.train\" != '{first}'")
    assert list(other["run_id"]) == [newer]
    listed = cli(project, "runs", "--where", f"\"data.train\" = '{second}'", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert newer in listed.stdout and older not in listed.stdout
    shown = cli(project, "show", older, "--format", "json", "--no-diff")
    assert shown.returncode == 0, shown.stderr
    (data,) = json.loads(shown.stdout)["data"]
    assert (data["name"], data["path"], data["kind"], data["files"], data["bytes"]) == (
        "train",
        "data",
        "dir",
        2,
        13,
    )
    assert data["short"] == first
    table = cli(project, "show", newer, "--no-diff")
    assert second in table.stdout


def test_data_versions_are_columns_of_dataframe_and_select_replays(project: Path) -> None:
    """dataframe() carries data.<name> beside the run columns; a WHERE over it filters values
    and picks the runs a replay works on ("replay the runs trained on this data")."""
    older, newer = record_two_runs(project)
    runs = retrolog.runs(project=project).set_index("run_id")
    first, second = runs.loc[older, "data.train"], runs.loc[newer, "data.train"]
    frame = retrolog.dataframe("loss", project=project)
    assert list(frame.columns) == [
        "run_id",
        "start_time",
        "version",
        "script",
        "data.train",
        "epoch",
        "loss",
    ]
    assert frame.groupby("run_id")["data.train"].first().to_dict() == {
        older: first,
        newer: second,
    }
    mine = retrolog.dataframe("loss", where=f"\"data.train\" = '{second}'", project=project)
    assert set(mine["run_id"]) == {newer} and len(mine) == 3
    summary = retrolog.dataframe(project=project)
    assert summary.set_index("run_id").loc[older, "data.train"] == first
    write_script(project, NEW_STATEMENT)
    report = replay("half", project=project, where=f"\"data.train\" = '{second}'")
    assert [p.run_id for p in report.plan.runs if not p.skipped] == [newer]
    assert {r.run_id: r.fidelity for r in report.runs}[newer] == "reproduced"
    halves = retrolog.dataframe("half", project=project)
    assert set(halves.dropna(subset=["half"])["run_id"]) == {newer}


def test_replay_refuses_runs_whose_data_changed_and_attributes_divergence(
    project: Path,
) -> None:
    older, newer = record_two_runs(project)
    write_script(project, NEW_STATEMENT)
    refused = cli(project, "replay", "half", "--yes", "--where", f"run_id = '{older}'")
    assert refused.returncode != 0
    assert "data/train.bin" in refused.stderr and older in refused.stderr, refused.stderr
    # the newer run trained on today's data: replayed, reproduced
    with pytest.raises(NothingToReplay) as caught:
        replay("half", project=project, where=f"run_id = '{older}'", dry_run=True)
    (plan,) = [r for r in caught.value.plan.runs if r.run_id == older]
    assert plan.skipped and "data/train.bin" in plan.skipped
    assert "data/labels.txt" not in plan.skipped  # only the file that changed is named
    report = replay("half", project=project, allow_changed_data=True, accept_divergence=True)
    by_run = {r.run_id: r for r in report.runs}
    assert by_run[older].fidelity == "diverged"
    assert by_run[older].detail.startswith("diverged (data changed: data/train.bin)")
    assert by_run[newer].fidelity == "reproduced"
    assert not by_run[newer].detail
    stored = retrolog.query(
        "SELECT detail FROM replay_runs WHERE run_id = :r", {"r": older}, project=project
    )
    detail = json.loads(stored["detail"][0])["detail"]  # the replay_runs row says it too
    assert detail.startswith("diverged (data changed: data/train.bin)")


def test_replay_refuses_a_run_whose_data_is_gone(project: Path) -> None:
    older, newer = record_two_runs(project)
    write_script(project, NEW_STATEMENT)
    for path in (project / "data").iterdir():
        path.unlink()
    (project / "data").rmdir()
    out = cli(project, "replay", "half", "--yes")
    assert out.returncode != 0
    assert "data (missing)" in out.stderr and older in out.stderr and newer in out.stderr


def tree(root: Path, n: int) -> Path:
    top = root / "ds"
    for i in range(n):
        path = top / f"part{i % 3}" / f"f{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + i))
        os.utime(path, (OLD, OLD))
    return top


def test_the_cache_skips_reading_an_unchanged_tree(tmp_path: Path) -> None:
    top = tree(tmp_path, 30)
    cold = HashCache(tmp_path / "cache.sqlite")
    first = hash_path(top, cold)
    assert cold.files_read == 30 and cold.hits == 0
    cold.close()
    warm = HashCache(tmp_path / "cache.sqlite")  # a new process would open it like this
    assert hash_path(top, warm) == first
    assert warm.files_read == 0 and warm.bytes_read == 0 and warm.hits == 30
    warm.close()
    # one file rewritten (same size, an old mtime again): only it is read, and the digest moves
    changed = top / "part1" / "f004.bin"
    changed.write_bytes(os.urandom(1004))
    os.utime(changed, (OLD + 5, OLD + 5))
    again = HashCache(tmp_path / "cache.sqlite")
    kind, digest, files, size, manifest = hash_path(top, again)
    assert again.files_read == 1 and again.hits == 29
    assert digest != first[1] and manifest is not None and files == 30
    assert manifest["part1/f004.bin"] != first[4]["part1/f004.bin"]  # type: ignore[index]
    assert (kind, digest) == hash_path(top, HashCache(None))[:2]  # the same as no cache at all


def test_a_file_modified_just_now_is_not_trusted_to_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"x" * 100)  # mtime: now (a second write in the same tick could follow)
    cache = HashCache(tmp_path / "cache.sqlite")
    hash_path(path, cache)
    hash_path(path, cache)
    assert cache.files_read == 2


def test_the_stdlib_fallback_hash(tmp_path: Path) -> None:
    top = tree(tmp_path, 4)
    kind, digest, *_ = hash_path(top, HashCache(None), algo="blake2b")
    assert kind == "dir" and len(digest) == 32
    assert digest != hash_path(top, HashCache(None), algo="xxh3_128")[1]
    with pytest.raises(LookupError):
        hash_path(top, HashCache(None), algo="md4")


def test_dvc_hashes_are_read_from_dvc_files_and_dvc_lock(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.bin").write_bytes(b"123")
    # as `dvc add data/train.bin` writes it
    (tmp_path / "data" / "train.bin.dvc").write_text(
        "outs:\n- md5: 202cb962ac59075b964b07152d234b70\n  size: 3\n  hash: md5\n"
        "  path: train.bin\n"
    )
    # as `dvc repro` writes a stage's outputs
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  features:\n    cmd: python featurize.py\n    deps:\n"
        "    - path: featurize.py\n      hash: md5\n      md5: 11111111111111111111111111111111\n"
        "      size: 10\n    outs:\n    - path: data/features\n      hash: md5\n"
        "      md5: 0123456789abcdef0123456789abcdef.dir\n      size: 100\n      nfiles: 2\n"
    )
    (tmp_path / "data" / "features").mkdir()
    assert dvc_md5(tmp_path / "data" / "train.bin") == "202cb962ac59075b964b07152d234b70"
    assert dvc_md5(tmp_path / "data" / "features") == "0123456789abcdef0123456789abcdef.dir"
    assert dvc_md5(tmp_path / "featurize.py") == "11111111111111111111111111111111"
    assert dvc_md5(tmp_path / "data" / "other") is None


def test_a_run_records_the_dvc_hash_of_its_data(project: Path) -> None:
    write_data(project, b"123")
    (project / "data.dvc").write_text(
        "outs:\n- md5: 3b3f2c1e0d4a5b6c7d8e9f0a1b2c3d4e.dir\n  size: 6\n  nfiles: 2\n"
        "  hash: md5\n  path: data\n"
    )
    write_script(project, TRAIN)
    run_python(project, "train.py")
    (run_id,) = retrolog.runs(project=project)["run_id"]
    (data,) = describe_run(run_id, project=project, with_diff=False)["data"]
    assert data["dvc_md5"] == "3b3f2c1e0d4a5b6c7d8e9f0a1b2c3d4e.dir"


AUTO = """
import retrolog
with open("data/labels.txt") as fh:
    labels = fh.read()
with open("out.txt", "w") as fh:
    fh.write(labels)
for epoch in retrolog.loop("epoch", range(2)):
    retrolog.log("n", len(labels))
"""


def test_automatic_mode_records_files_read_inside_the_project(project: Path) -> None:
    write_data(project, b"123", labels=b"cat\ndog\n")
    write_script(project, AUTO)
    run_python(project, "train.py", RETROLOG_TRACK_DATA="1")
    rows = retrolog.query(
        "SELECT name, path, kind, auto FROM data_versions ORDER BY name", project=project
    )
    assert list(rows["path"]) == ["data/labels.txt"]  # not out.txt (written), not train.py
    assert rows["auto"][0] == 1
    run_python(project, "train.py")  # off by default
    assert len(retrolog.query("SELECT * FROM data_versions", project=project)) == 1


def test_data_versions_in_the_ui_and_their_diff(project: Path) -> None:
    from fastapi.testclient import TestClient

    from retrolog.ui.app import create_app

    older, newer = record_two_runs(project)
    client = TestClient(create_app(project), base_url="http://127.0.0.1")
    page = client.get(f"/runs/{older}")
    assert page.status_code == 200 and 'id="data-table"' in page.text
    runs = retrolog.runs(project=project).set_index("run_id")
    assert runs.loc[older, "data.train"] in page.text
    diff = client.get(f"/runs/{older}/data-diff", params={"data_against": newer})
    assert diff.status_code == 200
    assert "changed" in diff.text and "train.bin" in diff.text and "labels.txt" not in diff.text
    full = client.get(f"/runs/{older}", params={"data_against": newer})
    assert 'id="data-diff-table"' in full.text


@pytest.mark.slow
def test_data_versions_on_postgres(
    project: Path,
    pg_server: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = fresh_database(pg_server)
    monkeypatch.setenv("RETROLOG_DB", url)
    write_script(project, TRAIN)
    write_data(project, bytes(range(10)))
    run_python(project, "train.py", RETROLOG_DB=url)
    write_data(project, bytes(range(30)))
    run_python(project, "train.py", RETROLOG_DB=url)
    runs = retrolog.runs(project=project)
    assert runs["data.train"].nunique() == 2
    first = runs["data.train"].iloc[0]
    assert len(retrolog.runs(project=project, where=f"\"data.train\" = '{first}'")) == 1
    open_store(project, recover=False).dispose()


@pytest.mark.browser
def test_the_run_page_diffs_data_in_chromium(project: Path) -> None:
    """Headless Chromium (Debian's, as tests/ui/test_ui_browser.py): choosing another run in the
    Data card swaps in the diff through htmx, naming the file that changed."""
    from playwright.sync_api import sync_playwright

    from .ui.ui_support import LiveServer

    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.fail("browser tests need Debian's Chromium at /usr/bin/chromium")

    older, newer = record_two_runs(project)
    server = LiveServer(project)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(chromium), args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(base_url=server.url)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"/runs/{older}")
            assert page.locator("#data-table").inner_text().count("train") == 1
            page.select_option("#data-against", newer)
            page.wait_for_selector("#data-diff-table")
            text = page.locator("#data-diff-table").inner_text()
            assert "changed" in text and newer in text
            page.locator("#data-diff-table summary").click()
            assert "train.bin" in page.locator("#data-diff-table").inner_text()
            assert not errors
            browser.close()
    finally:
        server.stop()
