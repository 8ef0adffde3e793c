"""Containers are stored as strict JSON: NaN and infinities inside them are spelled as strings."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import retrolog
from retrolog.record.values import from_cell, to_cell

from .conftest import run_python, write_script

SCRIPT = """
import math, retrolog
retrolog.log("stats", {"x": math.nan, "y": [math.inf, -math.inf, 1.5], "label": "NaN?"})
retrolog.log("plain", math.nan)
"""


def strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_a_recorded_container_with_nan_is_strict_json_in_the_store(project: Path) -> None:
    write_script(project, SCRIPT)
    run_python(project, "train.py")
    conn = sqlite3.connect(project / ".retrolog" / "retrolog.db")
    rows = dict(conn.execute("SELECT name, value_text FROM logs"))
    conn.close()
    assert strict(rows["stats"]) == {
        "x": "NaN",
        "y": ["Infinity", "-Infinity", 1.5],
        "label": "NaN?",
    }
    assert rows["plain"] == "nan"  # a top-level float keeps its exact value (number NULL)
    frame = retrolog.dataframe("stats", "plain")
    assert frame["stats"].iloc[0]["x"] == "NaN" and math.isnan(frame["plain"].iloc[0])


@pytest.mark.parametrize(
    "value",
    [[math.nan], {"a": {"b": (math.inf,)}}, [1, "x", None, True, 2.5], {"k": [-math.inf, 0.0]}],
)
def test_containers_round_trip_through_strict_json(value: Any) -> None:
    vtype, number, text = to_cell(value)
    assert vtype == "j" and number is None and text is not None
    parsed = strict(text)
    assert from_cell(vtype, number, text) == parsed
