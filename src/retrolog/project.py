"""Where a project lives: its root, its data directory and its store URLs; and opening its store.

A project is a git repository (or, outside git, the working directory). Everything retrolog writes
goes under ``<root>/.retrolog/`` unless ``RETROLOG_DB`` / ``RETROLOG_OBJECTS`` point elsewhere.
:func:`resolve_project` is how every command, query and replay finds the project it names, and
:func:`open_project_db` how every reader opens its store.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import settings

if TYPE_CHECKING:
    from .store.lite import Database

DATA_DIR_NAME = ".retrolog"


@dataclass(frozen=True)
class Project:
    """A project's locations. Cheap to build: no I/O beyond walking up to find ``.git``."""

    root: Path
    in_git: bool
    data_dir: Path
    db_url: str
    objects_url: str

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journals"

    def ensure_data_dir(self) -> None:
        """Create ``.retrolog/`` with a ``.gitignore`` so git never versions our data."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ignore = self.data_dir / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")


def git_root_of(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding ``.git`` (a dir or a worktree file)."""
    current = start.resolve()
    for candidate in (current, *current.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def script_start_dir() -> Path:
    """The directory of the running script, or the cwd for REPLs and ``-c``; in a Jupyter kernel
    or IPython, the notebook's directory when known (``sys.argv[0]`` is then
    ``ipykernel_launcher`` or the ``ipython`` command, not the user's script)."""
    shell_dir = _shell_start_dir() if "IPython" in sys.modules else None
    if shell_dir is not None:
        return shell_dir
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and argv0 not in ("-c", "-m") and os.path.isfile(argv0):
        return Path(argv0).resolve().parent
    return Path.cwd()


def _shell_start_dir() -> Path | None:
    """The notebook's directory (else the cwd) when the caller is code of an IPython cell; None
    outside IPython and for a script IPython runs (``%run train.py``, ``ipython train.py``)."""
    from .notebook.locate import start_dir

    return start_dir()


def resolve_project(project: Project | str | Path | None) -> Project:
    """The project a command or query names: a Project as is, else the one containing the given
    directory (default: the working directory, where a command is run; in a notebook, the
    notebook's directory, where its runs record)."""
    if isinstance(project, Project):
        return project
    if project is None and "IPython" in sys.modules:  # a notebook queries where its runs record
        project = _shell_start_dir()
    return find_project(project if project is not None else Path.cwd())


def find_project(start: Path | str | None = None) -> Project:
    """Resolve the project containing ``start`` (default: the running script's directory, where
    a run records)."""
    start_dir = Path(start) if start is not None else script_start_dir()
    root = git_root_of(start_dir)
    in_git = root is not None
    if root is None:
        root = start_dir.resolve()
    data_dir = root / DATA_DIR_NAME
    db_url = settings.DB.get() or f"sqlite:///{data_dir / 'retrolog.db'}"
    objects_url = settings.OBJECTS.get() or str(data_dir / "objects")
    return Project(
        root=root, in_git=in_git, data_dir=data_dir, db_url=db_url, objects_url=objects_url
    )


def open_project_db(project: Project, *, full: bool = False, recover: bool = True) -> Database:
    """The store of ``project``: ``store.open.open_db``'s choice (no SQLAlchemy for an existing
    SQLite store), or with ``full`` the shared SQLAlchemy store (reads into pandas, schema
    creation). ``recover``: first ingest the journals of runs whose process died, so nobody sees
    a crashed run as still running."""
    from .store.open import open_db, shared_store

    db: Database = shared_store(project.db_url) if full else open_db(project.db_url)
    if recover:
        from .record.journal import recover_orphans

        recover_orphans(project.journal_dir, db)
    return db
