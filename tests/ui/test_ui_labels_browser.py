"""The run page's name, tags, notes and environment diff, in headless Chromium (issue 15)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import git, run_python, script_env, write_script
from ui_support import LiveServer

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
TRAIN = """
import sys
import retrolog

retrolog.tag("team", sys.argv[2])
retrolog.name(sys.argv[1])
for epoch in retrolog.loop("epoch", range(2)):
    retrolog.log("loss", 1.0 / (epoch + 1))
"""


def test_run_page_shows_labels_and_the_environment_diff(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium")
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_script(repo, TRAIN)
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "train")
    run_python(repo, "train.py", "baseline", "vision")
    run_python(repo, "train.py", "candidate", "nlp")
    note = subprocess.run(
        [sys.executable, "-m", "retrolog", "note", "baseline", "the reference run"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=script_env(),
    )
    assert note.returncode == 0, note.stderr
    from playwright.sync_api import sync_playwright

    server = LiveServer(repo)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page: Any = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/runs/baseline")
            assert page.locator("#run-name").inner_text() == "baseline"
            assert "team=vision" in page.locator("#run-tags").inner_text()
            assert "the reference run" in page.locator("#run-notes").inner_text()
            assert page.locator("#environment").is_visible()
            options = page.locator("#env-against option")
            assert options.count() == 2  # "(choose a run)" and the other run
            page.select_option("#env-against", index=1)
            page.locator("#environment button[type=submit]").click()
            page.wait_for_selector("#env-diff")
            assert "Same environment" in page.locator("#env-diff").inner_text()
            shot = Path(tempfile.mkdtemp()) / "run-labels.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            page.goto(f"{server.url}/runs?where=" + "tag_team%20%3D%20%27nlp%27")
            body = page.locator("#runs-table").inner_text()
            assert "candidate" in body and "baseline" not in body
            browser.close()
    finally:
        server.stop()
