"""The relational model (docs/data-model.md), as SQLAlchemy Core tables.

Runs get an integer surrogate key (``runs.id``) that the big tables reference, and a public,
time-sortable ``run_id`` string. Log rows carry the id of their innermost loop iteration
(``ctx_id``, 0 at top level); the ``loops`` table holds every iteration with its parent, so the full
loop coordinates of a row are its iteration and that iteration's ancestors.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_VERSION = 1

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, unique=True),
    Column("script", Text),
    Column("argv", Text),  # JSON list
    Column("cwd", Text),
    Column("start_time", Float),
    Column("end_time", Float),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("host", Text),
    Column("pid", Integer),
    Column("python", Text),
    Column("packages", Text),  # JSON object name -> version
    Column("git_head", String(64)),
    Column("git_branch", Text),
    Column("git_dirty", Integer),
    Column("version", String(64)),  # snapshot commit of the exact code the run executed
    Column("last_seq", Integer, nullable=False, default=0),  # journal high-water mark
)

args = Table(
    "args",
    metadata,
    Column("run", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("vtype", String(1), nullable=False),
    Column("value_num", Float),
    Column("value_text", Text),
    UniqueConstraint("run", "name"),
)

loops = Table(
    "loops",
    metadata,
    Column("run", Integer, nullable=False),
    Column("ctx_id", Integer, nullable=False),
    Column("parent_id", Integer, nullable=False),  # 0: a top-level loop
    Column("depth", Integer, nullable=False),  # 1: the outermost loops
    Column("name", Text, nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("value", Text),  # JSON of the loop item when it is a scalar, else NULL
    Column("start_time", Float),
    UniqueConstraint("run", "ctx_id"),
)

logs = Table(
    "logs",
    metadata,
    Column("run", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("ctx_id", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("vtype", String(1), nullable=False),
    Column("value_num", Float),
    Column("value_text", Text),
    Column("replay_id", String(32)),  # NULL: recorded by the run itself
    Index("ix_logs_name_run", "name", "run"),
)

timings = Table(
    "timings",
    metadata,
    Column("run", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # prefix | iteration | nested | suffix
    Column("loop", Text),
    Column("ctx_id", Integer),
    Column("iteration", Integer),
    Column("seconds", Float, nullable=False),
    Column("count", Integer),  # iterations of a nested loop
    Index("ix_timings_run", "run"),
)

meta = Table(
    "retrolog_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text),
)

# Read-only conveniences for SQL users (documented in docs/data-model.md).
VIEWS = {
    "metrics": """
        SELECT r.run_id AS run_id, l.name AS name,
               COALESCE(l.value_num, l.value_text) AS value, l.vtype AS vtype,
               l.ctx_id AS ctx_id, c.name AS loop, c.iteration AS iteration,
               c.parent_id AS parent_id, l.replay_id AS replay_id, l.seq AS seq
        FROM logs l JOIN runs r ON r.id = l.run
        LEFT JOIN loops c ON c.run = l.run AND c.ctx_id = l.ctx_id
    """,
    "run_args": """
        SELECT r.run_id AS run_id, a.name AS name,
               COALESCE(a.value_num, a.value_text) AS value, a.vtype AS vtype
        FROM args a JOIN runs r ON r.id = a.run
    """,
}
