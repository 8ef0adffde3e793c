"""The relational model (docs/data-model.md), as SQLAlchemy Core tables.

Runs get an integer surrogate key (``runs.id``) that the big tables reference, and a public,
time-sortable ``run_id`` string. Log rows carry the id of their innermost loop iteration
(``ctx_id``, 0 at top level); the ``loops`` table holds every iteration with its parent, so the full
loop coordinates of a row are its iteration and that iteration's ancestors.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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

from .ingest import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "metadata"]

metadata = MetaData()

# 64-bit where a value can pass 2**31 (byte counts, per-run event counters). SQLite's INTEGER is
# 64-bit already, and existing SQLite stores keep their DDL; PostgreSQL's INTEGER is 32-bit.
BigInt = BigInteger().with_variant(Integer(), "sqlite")

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
    Column("last_seq", BigInt, nullable=False, default=0),  # journal high-water mark
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
    Column("seq", BigInt, nullable=False),
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

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("run", Integer, nullable=False),
    Column(
        "ctx_id", Integer, nullable=False
    ),  # the iteration the exited loop ran in (0: top level)
    Column("loop", Text, nullable=False),  # the loop whose exit this checkpoint restores
    Column("iteration", Integer),  # main-loop iteration index it belongs to (NULL: main loop exit)
    Column("manifest", String(80), nullable=False),  # object-store digest of the manifest
    Column("bytes_total", BigInt),
    Column("bytes_new", BigInt),  # after deduplication
    Column("capture_seconds", Float),  # on the training thread
    Column("write_seconds", Float),  # on the background writer
    UniqueConstraint("run", "ctx_id", "loop"),
)

replays = Table(
    "replays",
    metadata,
    Column("replay_id", String(32), primary_key=True),
    Column("created", Float, nullable=False),
    Column("finished", Float),
    Column("status", String(16), nullable=False),  # planned | running | finished | failed
    Column("names", Text),  # JSON list of the new statements' names
    Column("statements", Text),  # the inserted source text
    Column("script", Text),
    Column("where_clause", Text),
    Column("workers", Integer),
    Column("plan", Text),  # JSON: levels, tasks, cost basis
    Column("estimate_seconds", Float),
    Column("actual_seconds", Float),
    Column("error", Text),
)

replay_tasks = Table(
    "replay_tasks",
    metadata,
    Column("replay_id", String(32), nullable=False),
    Column("task_id", Integer, nullable=False),
    Column("run_id", String(32), nullable=False),
    Column("version", String(64)),
    Column("level", String(16)),  # prefix | outer | inner | suffix
    Column("iterations", Text),  # JSON [first, last] main-loop iterations, or null
    Column("status", String(16), nullable=False),  # pending | running | done | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("progress", Float),  # 0..1 while running
    Column("estimate_seconds", Float),
    Column("actual_seconds", Float),
    Column("started", Float),
    Column("finished", Float),
    Column("log", Text),  # tail of the worker's output, kept on failure
    UniqueConstraint("replay_id", "task_id"),
)

replay_runs = Table(
    "replay_runs",
    metadata,
    Column("replay_id", String(32), nullable=False),
    Column("run_id", String(32), nullable=False),
    Column("fidelity", String(16)),  # reproduced | diverged | unchecked | not_replayable
    Column("compared", Integer),  # recorded values compared
    Column("mismatches", Integer),
    Column("max_abs_diff", Float),
    Column("detail", Text),  # JSON: first divergences per name, or the reason it could not replay
    Column("stored", Integer),  # new rows stored for this run
    UniqueConstraint("replay_id", "run_id"),
)

propagations = Table(
    "propagations",
    metadata,
    Column("replay_id", String(32), nullable=False),
    Column("version", String(64), nullable=False),
    Column("script", Text),
    Column("line", Integer),  # where the statement landed in that version (1-based)
    Column("scope", Text),  # JSON list: enclosing function / loop path
    Column("renames", Text),  # JSON object old name -> new name
    Column("confidence", Float),
    Column("refused", Text),  # the reason, when propagation refused
    Column("inserted", Text),  # the statement text as inserted
    UniqueConstraint("replay_id", "version"),
)

digests = Table(
    "digests",
    metadata,
    Column("run", Integer, nullable=False),
    Column("scope", String(32), nullable=False),  # '': the run's own rows; else a replay id
    Column("rows", BigInt, nullable=False),
    Column("digest", String(32), nullable=False),  # store/digest.py
    Column("sealed", Float),  # when the run (or replay) ended; NULL while it runs
    UniqueConstraint("run", "scope"),
)

# Schema 3 (issue 15): names, tags and notes of runs, and the environment a run ran in.
# ``run`` is runs.id, as in the tables above; store/ingest.py and record/tags.py write them.
run_names = Table(
    "run_names",
    metadata,
    Column("run", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False, unique=True),  # unique per store (project)
)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run", Integer, nullable=False),
    Column("key", String(200), nullable=False),
    Column("value", Text),
    UniqueConstraint("run", "key"),
)

run_notes = Table(
    "run_notes",
    metadata,
    Column("run", Integer, nullable=False),
    Column("created", Float, nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_run_notes_run", "run"),
)

environments = Table(  # one row per distinct list of installed distributions
    "environments",
    metadata,
    Column("hash", String(64), primary_key=True),  # sha256 of the sorted name==version lines
    Column("packages", Text, nullable=False),  # JSON list of "name==version", sorted
)

run_environment = Table(
    "run_environment",
    metadata,
    Column("run", Integer, primary_key=True, autoincrement=False),
    Column("env_hash", String(64)),  # environments.hash
    Column("python", Text),  # full version string and implementation
    Column("platform", Text),
    Column("host", Text),
    Column("executable", Text),
    Column("accelerator", Text),  # JSON: torch.cuda devices, or NULL
    Column("stdout", Text),  # RETROLOG_CAPTURE_OUTPUT=1 only, capped (record/environment.py)
    Column("stderr", Text),
)

# Schema 3 (issue 15): the content identity of the data a run trained on (record/data.py).
data_versions = Table(
    "data_versions",
    metadata,
    Column("run", Integer, nullable=False),
    Column("name", Text, nullable=False),  # retrolog.data's name, or the path (automatic mode)
    Column("path", Text, nullable=False),  # relative to the project root when inside it
    Column("kind", String(8), nullable=False),  # file | dir | missing
    Column("digest", String(64), nullable=False),  # hex; '' when missing
    Column("algo", String(16), nullable=False),  # xxh3_128 | blake2b
    Column("files", BigInt),
    Column("bytes", BigInt),
    Column("dvc_md5", String(64)),  # what DVC's .dvc / dvc.lock recorded for the path, if any
    Column("manifest", Text),  # dir: JSON relative path -> [size, digest] (up to 5000 files)
    Column("auto", Integer),  # 1: recorded by RETROLOG_TRACK_DATA
    Column("recorded", Float),
    UniqueConstraint("run", "name"),
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

# PostgreSQL: a column has one type, so ``value`` is the number (double precision; NaN/inf and
# integers beyond 2**53 converted from their text, the latter approximately) and ``value_text``
# the text (strings, JSON, exact big integers, 'nan'/'inf').
_PG_VALUE = (
    "COALESCE({t}.value_num, CASE WHEN {t}.vtype IN ('f', 'i') "
    "THEN CAST({t}.value_text AS DOUBLE PRECISION) END)"
)
POSTGRES_VIEWS = {
    "metrics": f"""
        SELECT r.run_id AS run_id, l.name AS name,
               {_PG_VALUE.format(t="l")} AS value, l.vtype AS vtype,
               l.ctx_id AS ctx_id, c.name AS loop, c.iteration AS iteration,
               c.parent_id AS parent_id, l.replay_id AS replay_id, l.seq AS seq,
               l.value_text AS value_text
        FROM logs l JOIN runs r ON r.id = l.run
        LEFT JOIN loops c ON c.run = l.run AND c.ctx_id = l.ctx_id
    """,
    "run_args": f"""
        SELECT r.run_id AS run_id, a.name AS name,
               {_PG_VALUE.format(t="a")} AS value, a.vtype AS vtype,
               a.value_text AS value_text
        FROM args a JOIN runs r ON r.id = a.run
    """,
}
