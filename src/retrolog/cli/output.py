"""How commands print a frame: a table (rich for short ones, aligned text for long ones, head and
tail on a terminal), CSV or JSON records. Cost is linear in the rows."""

from __future__ import annotations

import sys
from typing import Any

import typer

from .common import Format

HEAD_ROWS = 20  # rows shown at each end of a long table on a terminal
RICH_ROWS = 200  # above this, tables are printed as plain aligned text (rich is not linear)


def emit(frame: Any, fmt: Format, title: str | None = None, all_rows: bool = False) -> None:
    """Print a DataFrame as a table, CSV or JSON records.

    A table on a terminal shows the first and last ``HEAD_ROWS`` rows and the count unless
    ``all_rows``; piped, or in a file format, every row is written. Cost is linear in the rows.
    """
    if fmt is Format.csv:
        sys.stdout.write(frame.to_csv(index=False))
        return
    if fmt is Format.json:
        sys.stdout.write(
            frame.to_json(orient="records", date_format="iso", default_handler=str) + "\n"
        )
        return
    total = len(frame)
    clipped = not all_rows and sys.stdout.isatty() and total > 2 * HEAD_ROWS + 1
    columns = [column_text(frame[c]) for c in frame.columns] if len(frame.columns) else []
    if clipped:
        columns = [[*col[:HEAD_ROWS], "…", *col[-HEAD_ROWS:]] for col in columns]
    rows = len(columns[0]) if columns else 0
    if rows <= RICH_ROWS:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_lines=False)
        for column in frame.columns:
            table.add_column(str(column), overflow="fold")
        for row in zip(*columns, strict=True):
            table.add_row(*row)
        Console().print(table)
    else:
        plain_table(frame, columns)
    if frame.empty:
        typer.echo("(no rows)", err=True)
    elif clipped:
        typer.echo(
            f"({total:,} rows; showing the first and last {HEAD_ROWS}: --all for every row, "
            "-f csv or -f json for a file)",
            err=True,
        )


def plain_table(frame: Any, columns: list[list[str]]) -> None:
    """Every row as aligned text: numbers right-aligned, one pass per column."""
    import pandas as pd

    out = []
    for name, texts in zip(frame.columns, columns, strict=True):
        width = max(len(str(name)), max(map(len, texts), default=0))
        right = pd.api.types.is_numeric_dtype(frame[name])
        pad = str.rjust if right else str.ljust
        out.append([pad(str(name), width), "-" * width, *(pad(t, width) for t in texts)])
    write = sys.stdout.write
    lines = map("  ".join, zip(*out, strict=True))
    while True:
        chunk = [line.rstrip() for _, line in zip(range(10_000), lines, strict=False)]
        if not chunk:
            break
        write("\n".join(chunk) + "\n")


def column_text(series: Any) -> list[str]:
    """One column's cells as text, vectorised per dtype (``_cell`` for the odd ones)."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series):
        return series.dt.strftime("%Y-%m-%d %H:%M:%S").fillna("").tolist()
    if pd.api.types.is_float_dtype(series) and series.dtype != object:
        values = series.to_numpy(dtype="float64", na_value=np.nan).tolist()
        return ["" if v != v else f"{v:.6g}" for v in values]
    if pd.api.types.is_integer_dtype(series) and not series.isna().any():
        return series.astype("int64").astype(str).tolist()
    return [cell(v) for v in series.tolist()]


def cell(value: Any) -> str:
    import pandas as pd

    if type(value) is str:
        return value
    if value is None or (not isinstance(value, (list, dict, str)) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)
