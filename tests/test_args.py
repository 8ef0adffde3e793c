"""--kwargs parsing and typed args, in real script runs."""

import json
from pathlib import Path

import pytest

import retrolog
from retrolog.record.args import ArgumentError, cast_like, extract_kwargs

from .conftest import run_python, write_script


def test_extract_kwargs_removes_the_block() -> None:
    argv, overrides = extract_kwargs(
        ["train.py", "--data", "x", "--kwargs", "lr=5e-4", "epochs=3", "--verbose"]
    )
    assert argv == ["train.py", "--data", "x", "--verbose"]
    assert overrides == {"lr": "5e-4", "epochs": "3"}


@pytest.mark.parametrize(
    "bad", [["--kwargs", "lr"], ["--kwargs", "=3"], ["--kwargs", "a=1", "a=2"]]
)
def test_malformed_kwargs_are_rejected(bad: list[str]) -> None:
    with pytest.raises(ArgumentError):
        extract_kwargs(["t.py", *bad])


def test_casts_follow_the_default_type() -> None:
    assert cast_like("lr", "5e-4", 1e-3) == 5e-4
    assert cast_like("n", "7", 3) == 7
    assert cast_like("flag", "no", True) is False
    assert cast_like("name", "resnet", "mlp") == "resnet"
    assert cast_like("sizes", "[1, 2]", [4]) == [1, 2]
    with pytest.raises(ArgumentError, match="int"):
        cast_like("n", "seven", 3)
    with pytest.raises(ArgumentError, match="bool"):
        cast_like("flag", "maybe", False)


SCRIPT = """
import argparse, json, sys
import retrolog
lr = retrolog.arg("lr", 1e-3)
epochs = retrolog.arg("epochs", 2)
amp = retrolog.arg("amp", False)
parser = argparse.ArgumentParser()
parser.add_argument("--name", default="x")
ns = parser.parse_args()
print(json.dumps({"lr": lr, "epochs": epochs, "amp": amp, "name": ns.name, "argv": sys.argv[1:]}))
for e in retrolog.loop("epoch", range(epochs)):
    retrolog.log("e", e)
"""


def test_overrides_reach_the_script_and_argparse_never_sees_them(project: Path) -> None:
    write_script(project, SCRIPT)
    proc = run_python(
        project, "train.py", "--name", "y", "--kwargs", "lr=5e-4", "epochs=3", "amp=true"
    )
    seen = json.loads(proc.stdout.splitlines()[0])
    assert seen == {"lr": 5e-4, "epochs": 3, "amp": True, "name": "y", "argv": ["--name", "y"]}
    frame = retrolog.runs()
    assert (
        frame.loc[0, "lr"] == 5e-4
        and frame.loc[0, "epochs"] == 3
        and bool(frame.loc[0, "amp"]) is True
    )  # noqa: E712
    assert list(retrolog.dataframe("e")["e"]) == [0, 1, 2]


def test_unknown_key_fails_before_training(project: Path) -> None:
    write_script(project, SCRIPT)
    proc = run_python(project, "train.py", "--kwargs", "lrr=0.1", check=False)
    assert proc.returncode != 0
    assert "unknown argument(s) lrr" in proc.stderr and "lr" in proc.stderr
    assert retrolog.query("SELECT count(*) AS n FROM logs").loc[0, "n"] == 0  # no training happened
    assert retrolog.runs().loc[0, "status"] == "failed"


def test_bad_cast_is_a_clear_error(project: Path) -> None:
    write_script(project, SCRIPT)
    proc = run_python(project, "train.py", "--kwargs", "epochs=many", check=False)
    assert proc.returncode != 0
    assert "epochs='many'" in proc.stderr and "int" in proc.stderr
