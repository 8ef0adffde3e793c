"""``retrolog.tag`` and ``retrolog.name``: labels a script gives the run it records.

Both append one journal event (``tag`` / ``name``, docs/data-model.md) that reaches the store
with the run's other events. Names are unique per project: ``name()`` checks the store when it
can (a SQLite file, read-only, once per call) and warns instead of naming when another run has
the name; the store keeps the first holder either way. In a replay task or a torchrun rank other
than 0 both do nothing: labels belong to the recorded run.
"""

from __future__ import annotations

from typing import Any

from .._warn import warn_once
from ..errors import UsageError
from ..store.labels import check_key, check_name, name_holder_in_file, tag_text
from . import api


def tag(key: str, value: Any = "") -> None:
    """Tag the run in progress: ``retrolog.tag("dataset", "v2")`` (values are stored as text;
    the same key again replaces the value). Filter with ``--where "tag_dataset = 'v2'"``."""
    problem = check_key(key)
    if problem:
        raise UsageError(f"tag({key!r}, ...): {problem}")
    s = api._session or api._begin()
    if s._stores_to_project():
        s.events.append(("tag", key, tag_text(value)))


def name(run_name: str) -> None:
    """Name the run in progress (``retrolog.name("baseline")``); commands then accept the name
    wherever they take a run id. Names are unique per project."""
    problem = check_name(run_name)
    if problem:
        raise UsageError(f"name({run_name!r}): {problem}")
    s = api._session or api._begin()
    if not s._stores_to_project():
        return
    holder = _holder(s.project.db_url, run_name)
    if holder is not None and holder != s.run_id:
        warn_once(
            f"name:{run_name}",
            f"retrolog: the name {run_name!r} is taken by run {holder}; this run stays unnamed "
            f"(`retrolog name {s.run_id} NEW_NAME` names it later)",
        )
        return
    s.events.append(("name", run_name))


def _holder(db_url: str, run_name: str) -> str | None:
    """The id of the run called ``run_name`` in a SQLite store, if the store says so."""
    return name_holder_in_file(db_url, run_name)
