"""The local web UI: ``retrolog ui`` serves pages and JSON over a project's store (read-only).

``create_app(project)`` builds the FastAPI application; ``serve(project, host, port, open_browser)``
runs it with uvicorn on a local port. See docs/ui.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .server import serve

if TYPE_CHECKING:
    from pathlib import Path

    from fastapi import FastAPI

    from ..project import Project


def create_app(project: Project | str | Path | None = None, **kwargs: Any) -> FastAPI:
    """The UI application over ``project``'s store (default: the project around the cwd)."""
    from .app import create_app as _create_app

    return _create_app(project, **kwargs)


__all__ = ["create_app", "serve"]
