"""The relational view: dataframe pivot, read-only SQL, run listing."""

from pathlib import Path
from typing import Any

import pandas as pd

from ..project import Project
from .access import QueryError, open_store, run_sql
from .describe import describe_run, find_run
from .frames import dataframe, runs
from .where import filter_frame

__all__ = [
    "QueryError",
    "describe_run",
    "find_run",
    "dataframe",
    "filter_frame",
    "open_store",
    "query",
    "run_sql",
    "runs",
]


def query(
    sql: str,
    params: dict[str, Any] | list[Any] | None = None,
    project: Project | str | Path | None = None,
) -> pd.DataFrame:
    """Run one read-only SQL SELECT over the documented tables and views; returns a DataFrame."""
    return run_sql(open_store(project), sql, params)
