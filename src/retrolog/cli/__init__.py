"""The ``retrolog`` command: a thin shell over the engine (typer + rich), one module per group of
commands (query.py: runs, df, sql, show; replay.py: replay, ui; maintain.py: du, rm, gc, push,
pull, export, import, doctor; labels.py: tag, note, name, checkpoints), registered on the app in
main.py; output.py prints frames, common.py holds the shared options.

``retrolog propagate`` never reaches this package: ``retrolog._entry`` routes it before typer is
imported, so it starts fast.
"""

from .main import app, main

__all__ = ["app", "main"]
