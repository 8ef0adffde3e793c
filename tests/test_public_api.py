"""The public surface is pinned: adding or removing a name must be a deliberate change."""

import retrolog


def test_all_is_pinned() -> None:
    assert sorted(retrolog.__all__) == [
        "ArgumentError",
        "MissingVersionError",
        "NotFoundError",
        "ReplayRefused",
        "RetrologError",
        "RetrologWarning",
        "StoreError",
        "UsageError",
        "arg",
        "args",
        "checkpointing",
        "commit",
        "data",
        "dataframe",
        "iteration",
        "load",
        "log",
        "loop",
        "name",
        "propagate",
        "query",
        "replay",
        "runs",
        "tag",
    ]


def test_every_exported_name_resolves_to_a_callable_or_class() -> None:
    for name in retrolog.__all__:
        assert callable(getattr(retrolog, name)), name


def test_query_functions_are_not_shadowed_by_subpackages() -> None:
    import retrolog.propagation
    import retrolog.relational
    import retrolog.replaying  # noqa: F401  (importing the engines must not replace the functions)

    assert retrolog.query.__module__ == "retrolog.relational"
    assert retrolog.dataframe.__module__ == "retrolog.relational.frames"
    assert retrolog.replay.__module__ == "retrolog.replaying.api"
    assert retrolog.propagate.__module__.startswith("retrolog.propagation")


def test_import_is_light() -> None:
    import subprocess
    import sys

    # argparse included: its capture is installed without importing it (retrolog._early)
    code = "import sys, retrolog; print(sorted(m for m in ('pandas','sqlalchemy','torch','typer','argparse') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_every_error_retrolog_raises_on_purpose_is_a_retrolog_error() -> None:
    from retrolog.checkpoint.errors import CheckpointError
    from retrolog.maintenance import MaintenanceError
    from retrolog.objects.store import ObjectNotFoundError, ObjectStoreError
    from retrolog.propagation import PropagationError
    from retrolog.relational import QueryError
    from retrolog.replaying import ReplayError
    from retrolog.versions import GitError

    usage = (retrolog.ArgumentError, QueryError, ReplayError, MaintenanceError)
    for cls in usage:
        assert issubclass(cls, retrolog.UsageError) and cls.exit_code == 2, cls
    assert issubclass(ReplayError, ValueError) and issubclass(MaintenanceError, RuntimeError)
    assert issubclass(retrolog.NotFoundError, LookupError) and retrolog.NotFoundError.exit_code == 2
    assert PropagationError.exit_code == 3
    assert ObjectNotFoundError.exit_code == retrolog.MissingVersionError.exit_code == 4
    assert issubclass(ObjectNotFoundError, KeyError)
    assert ObjectStoreError.exit_code == retrolog.StoreError.exit_code == 5
    assert retrolog.ReplayRefused.exit_code == 6
    for cls in (CheckpointError, GitError, ObjectStoreError, PropagationError, *usage):
        assert issubclass(cls, retrolog.RetrologError), cls
