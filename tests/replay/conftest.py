"""Persistent fork servers started by these tests live in a private folder and are stopped at the
end of the session, so no process outlives the tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from retrolog.replaying.forkserver import DIR_ENV, shutdown_servers


@pytest.fixture(scope="session", autouse=True)
def private_fork_servers() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="retrolog-test-forkservers-")
    previous = os.environ.get(DIR_ENV)
    os.environ[DIR_ENV] = folder
    try:
        yield folder
    finally:
        shutdown_servers()
        if previous is None:
            os.environ.pop(DIR_ENV, None)
        else:
            os.environ[DIR_ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)
