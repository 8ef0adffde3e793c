"""Fixtures for the UI tests: one recorded scratch project shared by the whole UI suite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ui_support import LiveServer, record_project


@pytest.fixture(scope="session")
def ui_project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Facts about the shared recorded project (``repo`` is its path); treat it as read-only."""
    return record_project(tmp_path_factory.mktemp("ui"))


@pytest.fixture(scope="session")
def live_server(ui_project: dict[str, Any]) -> Iterator[LiveServer]:
    server = LiveServer(ui_project["repo"])
    yield server
    server.stop()
