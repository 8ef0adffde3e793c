"""The settings object: every RETROLOG_* variable's default, override and bad value, the generated
docs table, and that no other module reads these variables itself."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from retrolog import settings
from retrolog._warn import RetrologWarning, reset_warnings
from retrolog.project import find_project
from retrolog.store import limits

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "retrolog"

# setting -> (raw value, what it reads as) pairs that are valid, and raw values that are not
GOOD: dict[str, list[tuple[str, Any]]] = {
    "RETROLOG_DB": [("sqlite:////tmp/x.db", "sqlite:////tmp/x.db")],
    "RETROLOG_OBJECTS": [("s3://bucket/prefix", "s3://bucket/prefix")],
    "RETROLOG_ARGPARSE": [("0", False), ("Off", False), ("yes", True)],
    "RETROLOG_CHECKPOINT_BUDGET": [("1.5", 1.5), ("0", 0.0)],
    "RETROLOG_PROGRESS": [("false", False), ("1", True)],
    "RETROLOG_RANKS": [("ALL", "all"), ("0", "0")],
    "RETROLOG_AUTO_PUSH": [("yes", "origin"), ("upstream", "upstream"), ("off", None)],
    "RETROLOG_TRACK_DATA": [("1", True), ("no", False)],
    "RETROLOG_CAPTURE_OUTPUT": [("on", True), ("0", False)],
    "RETROLOG_FOLLOWER_EVENTS": [("500", 500), ("0", 0)],
    "RETROLOG_FOLLOWER_DUTY": [("0.5", 0.5), ("5", 1.0), ("0", 0.05)],
    "RETROLOG_QUERY_TIMEOUT": [("7", 7.0), ("0", 0.0)],
    "RETROLOG_FORKSERVER_PERSIST": [("no", False), ("true", True)],
    "RETROLOG_FORKSERVER_IDLE": [("30", 30.0), ("0.1", 1.0)],
    "RETROLOG_FORKSERVER_DIR": [("/tmp/servers", "/tmp/servers")],
    "RETROLOG_REPLAY": [("/tmp/spec.json", "/tmp/spec.json")],
    "RETROLOG_SANDBOX": [("/tmp/sandbox.json", "/tmp/sandbox.json")],
}
BAD: dict[str, list[str]] = {
    "RETROLOG_ARGPARSE": ["maybe"],
    "RETROLOG_CHECKPOINT_BUDGET": ["-1", "lots", "nan", "inf"],
    "RETROLOG_PROGRESS": ["sometimes"],
    "RETROLOG_RANKS": ["2"],
    "RETROLOG_TRACK_DATA": ["every"],
    "RETROLOG_CAPTURE_OUTPUT": ["all"],
    "RETROLOG_FOLLOWER_EVENTS": ["many", "-3", "1.5"],
    "RETROLOG_FOLLOWER_DUTY": ["half"],
    "RETROLOG_QUERY_TIMEOUT": ["soon", "-1"],
    "RETROLOG_FORKSERVER_PERSIST": ["perhaps"],
    "RETROLOG_FORKSERVER_IDLE": ["forever", "inf"],
}
BY_NAME = {s.name: s for s in settings.ALL}


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    reset_warnings()


def test_every_setting_has_cases_here() -> None:
    assert set(GOOD) == set(BY_NAME)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_unset_or_empty_gives_the_default(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    setting = BY_NAME[name]
    monkeypatch.delenv(name, raising=False)
    assert setting.get() == setting.default
    monkeypatch.setenv(name, "")
    assert setting.get() == setting.default


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_a_valid_value_overrides_and_is_read_at_each_use(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting = BY_NAME[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid value never warns
        for raw, expected in GOOD[name]:
            monkeypatch.setenv(name, raw)
            assert setting.get() == expected, raw


@pytest.mark.parametrize(
    ("name", "raw"), [(name, raw) for name, raws in sorted(BAD.items()) for raw in raws]
)
def test_a_bad_value_warns_once_and_gives_the_default(
    name: str, raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting = BY_NAME[name]
    monkeypatch.setenv(name, raw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert setting.get() == setting.default
        assert setting.get() == setting.default
    said = [w for w in caught if issubclass(w.category, RetrologWarning)]
    assert len(said) == 1
    assert f"{name}={raw!r}" in str(said[0].message)
    assert setting.default_text in str(said[0].message)


def test_the_readers_use_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETROLOG_DB", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    monkeypatch.setenv("RETROLOG_OBJECTS", str(tmp_path / "blobs"))
    project = find_project(tmp_path)
    assert project.db_url == f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert project.objects_url == str(tmp_path / "blobs")
    monkeypatch.delenv("RETROLOG_DB")
    assert find_project(tmp_path).db_url.endswith(".retrolog/retrolog.db")

    monkeypatch.setenv("RETROLOG_QUERY_TIMEOUT", "soon")
    with pytest.warns(RetrologWarning, match="RETROLOG_QUERY_TIMEOUT='soon'"):
        assert limits.configured_seconds("cli")[0] == limits.DEFAULTS["cli"]


def test_a_bad_flag_at_import_warns_and_keeps_the_default(tmp_path: Path) -> None:
    """RETROLOG_ARGPARSE is read by `import retrolog` itself: a bad value must not break it."""
    code = "import retrolog, sys; print('argparse' in sys.modules)"
    env = {"PATH": "/usr/bin:/bin", "RETROLOG_ARGPARSE": "maybe", "PYTHONWARNINGS": "default"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert proc.stderr.count("RETROLOG_ARGPARSE='maybe'") == 1


def test_the_docs_table_is_the_settings() -> None:
    """docs/settings.md is generated from settings.ALL; regenerate it when this fails (the
    command is at the end of the page)."""
    assert (ROOT / "docs" / "settings.md").read_text() == settings.page()


def test_every_variable_the_code_names_is_a_setting() -> None:
    named: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for name in re.findall(r"\bRETROLOG_[A-Z_]+\b", path.read_text()):
            named.setdefault(name, set()).add(str(path.relative_to(SRC)))
    assert set(named) <= set(BY_NAME), {n: f for n, f in named.items() if n not in BY_NAME}


def test_no_module_reads_a_retrolog_variable_itself() -> None:
    """Only settings.py reads RETROLOG_* from the environment (writing them for child processes
    is fine)."""
    read = re.compile(r"(environ\.get|getenv|environ\[)\(?\s*['\"]RETROLOG_|environ\.get\(\w*ENV\b")
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        if path.name != "settings.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if read.search(line)
    ]
    assert offenders == []
