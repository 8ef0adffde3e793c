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


# -- --kwargs leaves sys.argv at import ------------------------------------------------------------
def test_kwargs_leave_argv_at_import_and_a_malformed_block_fails_at_the_first_call(
    project: Path,
) -> None:
    write_script(
        project,
        """
        import sys
        import retrolog
        print(sys.argv[1:], flush=True)  # before any retrolog call
        retrolog.arg("lr", 0.1)
        """,
    )
    ok = run_python(project, "train.py", "--data", "x", "--kwargs", "lr=0.5")
    assert ok.stdout.splitlines()[0] == "['--data', 'x']"
    assert retrolog.runs().loc[0, "lr"] == 0.5
    bad = run_python(project, "train.py", "--kwargs", "lr", check=False)
    assert bad.returncode != 0
    assert bad.stdout.splitlines()[0] == "[]"  # importing did not fail, the block is gone
    assert "--kwargs expects key=value pairs, got 'lr'" in bad.stderr


# -- argparse capture ------------------------------------------------------------------------------
SUBCOMMANDS = """
import argparse
import retrolog

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, default=0)
sub = parser.add_subparsers(dest="command")
train = sub.add_parser("train")
train.add_argument("--lr", type=float, default=0.1)
train.set_defaults(func=print)  # not storable: left out with a warning
args = parser.parse_args()
for e in retrolog.loop("epoch", range(2)):
    retrolog.log("e", e)
"""


def test_subcommand_values_are_recorded_and_unstorable_ones_warned_once(project: Path) -> None:
    write_script(project, SUBCOMMANDS)
    proc = run_python(project, "train.py", "--seed", "3", "train", "--lr", "0.7")
    frame = retrolog.runs()
    assert frame.loc[0, "seed"] == 3 and frame.loc[0, "lr"] == 0.7
    assert frame.loc[0, "command"] == "train"
    assert "func" not in frame.columns
    assert proc.stderr.count("not recorded as args (not storable): func") == 1
    assert list(retrolog.dataframe("e", where="lr > 0.5")["e"]) == [0, 1]


def test_only_the_scripts_own_parse_of_argv_is_recorded(project: Path) -> None:
    # Another tool in the same process: a package installed in site-packages that parses argv.
    tool = project / "vendor" / "site-packages" / "othertool"
    tool.mkdir(parents=True)
    (tool / "__init__.py").write_text(
        "import argparse\n"
        "def setup():\n"
        "    p = argparse.ArgumentParser()\n"
        "    p.add_argument('--tool-level', type=int, default=7)\n"
        "    return p.parse_known_args()[0]\n"
    )
    write_script(
        project,
        """
        import argparse, sys
        sys.path.insert(0, "vendor/site-packages")
        import retrolog
        import othertool

        parser = argparse.ArgumentParser()
        parser.add_argument("--lr", type=float, default=0.1)
        args, _ = parser.parse_known_args()
        tool = othertool.setup()
        other = argparse.ArgumentParser()
        other.add_argument("--width", type=int, default=4)
        other.parse_args(["--width", "9"])  # an explicit list: not the command line
        print(args.lr, tool.tool_level)
        for e in retrolog.loop("epoch", range(1)):
            retrolog.log("e", e)
        """,
    )
    proc = run_python(project, "train.py", "--lr", "0.3")
    assert proc.stdout.split() == ["0.3", "7"]
    frame = retrolog.runs()
    assert frame.loc[0, "lr"] == 0.3
    assert "tool_level" not in frame.columns and "width" not in frame.columns


def test_a_parse_before_import_retrolog_is_not_captured_one_after_it_is(project: Path) -> None:
    write_script(
        project,
        """
        import argparse
        early = argparse.ArgumentParser()
        early.add_argument("--lr", type=float, default=0.1)
        early.parse_known_args()
        import retrolog  # argparse is imported already: patched at once
        late = argparse.ArgumentParser()
        late.add_argument("--seed", type=int, default=0)
        late.parse_known_args()
        retrolog.log("x", 1)
        """,
    )
    run_python(project, "train.py", "--lr", "0.9", "--seed", "4")
    frame = retrolog.runs()
    assert frame.loc[0, "seed"] == 4  # recorded at the end of a run without a main loop
    assert "lr" not in frame.columns


def test_an_explicit_arg_wins_over_argparse_with_its_override(project: Path) -> None:
    write_script(
        project,
        """
        import argparse
        import retrolog
        parser = argparse.ArgumentParser()
        parser.add_argument("--lr", type=float, default=0.1)
        parser.add_argument("--epochs", type=int, default=2)
        args = parser.parse_args()
        lr = retrolog.arg("lr", args.lr)
        print(lr)
        for e in retrolog.loop("epoch", range(args.epochs)):
            retrolog.log("lr_used", lr)
        """,
    )
    proc = run_python(project, "train.py", "--lr", "0.2", "--kwargs", "lr=0.6")
    assert proc.stdout.split() == ["0.6"]
    frame = retrolog.runs()
    assert frame.loc[0, "lr"] == 0.6 and frame.loc[0, "epochs"] == 2


def test_kwargs_for_an_argparse_value_is_an_error_naming_its_flag(project: Path) -> None:
    write_script(
        project,
        """
        import argparse
        import retrolog
        parser = argparse.ArgumentParser()
        parser.add_argument("--batch-size", type=int, default=32)
        args = parser.parse_args()
        for e in retrolog.loop("epoch", range(2)):
            retrolog.log("e", e)
        """,
    )
    proc = run_python(project, "train.py", "--kwargs", "batch_size=8", check=False)
    assert proc.returncode != 0
    assert "'batch_size' is an argparse option of this script" in proc.stderr
    assert "--batch-size" in proc.stderr
    assert retrolog.query("SELECT count(*) AS n FROM logs").loc[0, "n"] == 0


# -- args(config) --------------------------------------------------------------------------------
def test_flatten_config_walks_dicts_dataclasses_and_namespaces() -> None:
    import argparse
    import dataclasses

    from retrolog.record.args import flatten_config

    @dataclasses.dataclass
    class Opt:
        beta: float = 0.9

    ns = argparse.Namespace(lr=0.1, opt=Opt(), extra={"a": {"b": 1}}, _private=3)
    fields = flatten_config(ns)
    assert {name: value for name, (_, _, value) in fields.items()} == {
        "lr": 0.1,
        "opt.beta": 0.9,
        "extra.a.b": 1,
    }
    container, key, _ = fields["extra.a.b"]
    assert container is ns.extra["a"] and key == "b"
    with pytest.raises(TypeError, match="dict, a namespace"):
        flatten_config(3)


def test_args_records_a_namespace_and_casts_dict_overrides(project: Path) -> None:
    write_script(
        project,
        """
        import argparse
        import retrolog
        ns = argparse.Namespace(model="mlp", layers=[64, 64])
        assert retrolog.args(ns) is ns
        config = {"lr": 0.1, "amp": False, "sched": {"warmup": 2}, "device": object()}
        retrolog.args(config)
        print(config["lr"], config["amp"], config["sched"]["warmup"])
        for e in retrolog.loop("epoch", range(1)):
            retrolog.log("e", e)
        """,
    )
    proc = run_python(
        project,
        "train.py",
        "--kwargs",
        "lr=0.01",
        "amp=yes",
        "sched.warmup=5",
        RETROLOG_ARGPARSE="0",
    )
    assert proc.stdout.split() == ["0.01", "True", "5"]
    assert proc.stderr.count("left out device") == 1
    frame = retrolog.runs()
    assert frame.loc[0, "model"] == "mlp" and frame.loc[0, "layers"] == [64, 64]
    assert frame.loc[0, "lr"] == 0.01 and bool(frame.loc[0, "amp"]) is True
    assert frame.loc[0, "sched.warmup"] == 5
    bad = run_python(project, "train.py", "--kwargs", "sched.warmup=soon", check=False)
    assert bad.returncode != 0 and "sched.warmup='soon'" in bad.stderr


def test_kwargs_for_an_arg_recorded_from_an_object_says_it_cannot_change_it(
    project: Path,
) -> None:
    """A namespace (or a Lightning module's hparams) is recorded, not rebuilt: an override of one
    of its fields is refused before training, saying why rather than calling it unknown."""
    write_script(
        project,
        """
        import argparse
        import retrolog
        retrolog.args(argparse.Namespace(lr=0.1, hidden=32))
        for e in retrolog.loop("epoch", range(1)):
            retrolog.log("e", e)
        """,
    )
    proc = run_python(project, "train.py", "--kwargs", "lr=0.5", check=False)
    assert proc.returncode != 0
    assert "--kwargs cannot change lr: this script records it from an object" in proc.stderr
    assert "unknown" not in proc.stderr
    assert retrolog.query("SELECT count(*) AS n FROM logs").loc[0, "n"] == 0


def test_argparse_imported_after_retrolog_is_patched_when_it_loads(project: Path) -> None:
    write_script(
        project,
        """
        import sys
        import retrolog
        assert "argparse" not in sys.modules
        import argparse
        assert type(argparse.__spec__.loader).__name__ != "_PatchingLoader"  # the real one is back
        assert not [f for f in sys.meta_path if type(f).__name__ == "_ArgparseFinder"]
        parser = argparse.ArgumentParser()
        parser.add_argument("--lr", type=float, default=0.1)
        args = parser.parse_args()
        for e in retrolog.loop("epoch", range(1)):
            retrolog.log("e", e)
        """,
    )
    run_python(project, "train.py", "--lr", "0.4")
    assert retrolog.runs().loc[0, "lr"] == 0.4
