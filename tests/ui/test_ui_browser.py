"""End to end in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Each page of the real server, over the shared recorded project: filter runs, select and compare,
plot metrics (the canvas must have drawn coloured pixels), open diffs, watch a replay's progress
update live, and make sure a hostile metric name never runs as script. Screenshots of each page
are taken every time (a page that cannot render fails); they replace the README's images in
docs/img/ only with RETROLOG_SCREENSHOTS=1, so a test run leaves the working tree clean.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import insert, update
from ui_support import XSS_NAME, LiveServer, store_of

from retrolog.store import schema

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
IMG = DOCS_IMG if os.environ.get("RETROLOG_SCREENSHOTS") == "1" else Path(tempfile.mkdtemp())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            "browser tests need Debian's Chromium at /usr/bin/chromium: "
            "install it with `apt-get update && apt-get install -y chromium`"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=live_server.url)
    tab = context.new_page()
    tab.dialogs = []  # type: ignore[attr-defined]
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    assert not tab.dialogs, f"a dialog fired: {tab.dialogs}"  # type: ignore[attr-defined]
    assert not errors, f"script errors on the page: {errors}"
    context.close()


def coloured_pixels(page: Any, selector: str) -> int:
    """Saturated pixels on the first canvas under ``selector`` (grid and axes are grey)."""
    return int(
        page.evaluate(
            """(sel) => {
              const c = document.querySelector(sel + ' canvas');
              if (!c) return -1;
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let n = 0;
              for (let i = 0; i < d.length; i += 4) {
                const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
                if (d[i + 3] > 0 && hi - lo > 60) n++;
              }
              return n;
            }""",
            selector,
        )
    )


def shot(page: Any, name: str, full_page: bool = False) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMG / name), full_page=full_page)


def test_runs_page_filter_sort_and_compare(page: Any) -> None:
    page.goto("/runs")
    rows = page.locator("#runs-table tbody tr")
    assert rows.count() == 6
    page.goto("/runs?where=" + quote("script != 'hostile.py'"))
    assert rows.count() == 5
    assert "<script>" not in page.locator("#runs-table thead").inner_text()  # empty: hidden
    shot(page, "ui-runs.png")
    page.fill("input[name=where]", "lr > 0.2 AND status = 'finished'")
    page.click("form.filter button[type=submit]")
    page.wait_for_url("**where=lr*")
    assert rows.count() == 3
    index = page.evaluate(
        "() => [...document.querySelectorAll('#runs-table thead tr:last-child th')]"
        ".findIndex(th => th.textContent.trim() === 'lr')"
    )

    def lr_column() -> list[float]:
        return page.eval_on_selector_all(
            "#runs-table tbody tr", f"rs => rs.map(r => Number(r.cells[{index}].textContent))"
        )

    page.click("#runs-table thead th >> text=lr")  # sorted on the server, filter kept
    page.wait_for_url("**sort=lr*")
    assert lr_column() == [0.3, 0.5, 1.0]
    page.click("#runs-table thead th >> text=lr")
    page.wait_for_url("**desc=1*")
    assert lr_column() == [1.0, 0.5, 0.3]
    assert "sorted-desc" in (
        page.locator("#runs-table thead th", has_text="lr").get_attribute("class") or ""
    )
    page.fill("input[name=where]", "lr > ; DROP TABLE runs")
    page.click("form.filter button[type=submit]")
    assert "bad filter" in page.locator(".alert.error").inner_text()
    page.goto("/runs")
    assert page.locator("#compare").is_disabled()
    page.locator("input.pick").nth(0).check()
    page.locator("input.pick").nth(1).check()
    assert page.locator("#selected-count").inner_text() == "2 selected"
    page.click("#compare")
    page.wait_for_url("**/metrics?runs=*")
    assert page.locator("#charts").get_attribute("data-runs").count(",") == 1


def test_metric_explorer_draws_charts_and_marks_hindsight(page: Any, ui_project: dict) -> None:
    where = quote("script = 'train.py'")
    page.goto(f"/metrics?names=loss&names=grad_norm&group=arg:lr&x=step&where={where}")
    page.wait_for_selector("section.chart-card[data-name=loss][data-drawn='1']")
    page.wait_for_selector("section.chart-card[data-name=grad_norm][data-drawn='1']")
    assert coloured_pixels(page, "section.chart-card[data-name=loss]") > 500
    assert coloured_pixels(page, "section.chart-card[data-name=grad_norm]") > 100
    status = page.locator("section.chart-card[data-name=grad_norm] .chart-status").inner_text()
    assert "25 hindsight points (dashed)" in status
    legend = page.locator("#group-legend").inner_text()
    assert "lr:" in legend and "0.1" in legend and "0.05" not in legend
    before = coloured_pixels(page, "section.chart-card[data-name=loss]")
    page.locator("#smooth").fill("0.9")
    page.locator("#smooth").dispatch_event("input")
    assert page.locator("#smooth-out").inner_text() == "0.90"
    assert "smooth=0.90" in page.url
    assert coloured_pixels(page, "section.chart-card[data-name=loss]") != before
    page.locator("#smooth").fill("0.6")
    page.locator("#smooth").dispatch_event("input")
    page.locator("#smooth").blur()
    shot(page, "ui-metrics.png")
    page.goto("/metrics?names=loss&x=wall&group=version")
    page.wait_for_selector("section.chart-card[data-name=loss][data-drawn='1']")
    assert coloured_pixels(page, "section.chart-card[data-name=loss]") > 500
    page.goto("/metrics?names=acc&x=epoch")
    page.wait_for_selector("section.chart-card[data-name=acc][data-drawn='1']")
    assert coloured_pixels(page, "section.chart-card[data-name=acc]") > 100


def test_run_page_charts_and_diff(page: Any, ui_project: dict, live_server: LiveServer) -> None:
    runs = page.request.get(live_server.url + "/api/runs").json()["runs"]
    edited = next(r for r in runs if r["args"].get("lr") == 0.5)
    page.goto(f"/runs/{edited['run_id']}")
    page.wait_for_selector("figure.mini[data-name=loss][data-drawn='1']")
    assert coloured_pixels(page, "figure.mini[data-name=loss]") > 100
    assert "val_loss" in page.locator("#diff .d-add").first.inner_text()  # HEAD lacks the edit
    latest = next(r for r in runs if r["script"] == "hostile.py")["version"]
    page.select_option("#diff-against", latest)
    page.wait_for_function(
        "(v) => document.querySelector('#diff .diff-head').textContent.includes(v)",
        arg=latest[:10],
    )
    head = page.locator("#diff .diff-head").inner_text()
    assert "failing.py" in head and "hostile.py" in head
    assert page.locator("#diff .d-del").count() > 5
    page.select_option("#diff-against", "HEAD")
    page.wait_for_function(
        "() => document.querySelector('#diff .diff-head').textContent.includes('HEAD')"
    )
    assert "val_loss" in page.locator("#diff .d-add").first.inner_text()
    shot(page, "ui-run.png", full_page=True)


def test_versions_page_diff_on_demand(page: Any) -> None:
    page.goto("/versions")
    assert page.locator("li.version").count() == 4
    assert page.locator("table.propagations").count() == 2
    assert "refused" in page.locator("li.version").nth(1).inner_text()
    page.locator("li.version").nth(1).locator("details.vdiff summary").click()
    page.wait_for_selector("li.version >> nth=1 >> .diff-slot .d-add")
    assert "val_loss" in page.locator("li.version").nth(1).locator(".diff-slot").inner_text()
    shot(page, "ui-versions.png")


def test_replay_page_updates_live(page: Any, ui_project: dict) -> None:
    store = store_of(ui_project["repo"])
    now = time.time()
    with store.writer.begin() as conn:
        conn.execute(
            insert(schema.replays).values(
                replay_id="rp-live",
                created=now,
                status="running",
                names=json.dumps(["grad_norm"]),
                plan=json.dumps({"levels": {"outer": 2}, "tasks": 2}),
                estimate_seconds=30.0,
            )
        )
        conn.execute(
            insert(schema.replay_tasks),
            [
                {
                    "replay_id": "rp-live",
                    "task_id": i,
                    "run_id": ui_project["run_id"],
                    "status": "running",
                    "attempts": 1,
                    "progress": 0.3,
                    "level": "outer",
                }
                for i in range(2)
            ],
        )
    try:
        page.goto("/replays/rp-live")
        assert page.locator("#replay-progress").inner_text() == "30%"
        with store.writer.begin() as conn:
            conn.execute(
                update(schema.replay_tasks)
                .where(schema.replay_tasks.c.replay_id == "rp-live")
                .values(status="done", progress=1.0, actual_seconds=12.0)
            )
            conn.execute(
                update(schema.replays)
                .where(schema.replays.c.replay_id == "rp-live")
                .values(status="finished", finished=now + 25, actual_seconds=25.0)
            )
        page.wait_for_function(
            "() => document.querySelector('#replay-status').textContent === 'finished'",
            timeout=10_000,
        )
        assert page.locator("#replay-progress").inner_text() == "100%"
        assert page.locator("#replay-live").get_attribute("hx-trigger") is None  # polling stopped
        page.goto("/replays")
        assert page.locator("#replays-table tbody tr").count() == 3
        page.goto("/replays/rp0001")
        assert page.locator("#fidelity-table").inner_text().count("reproduced") == 1
        shot(page, "ui-replays.png")
    finally:
        with store.writer.begin() as conn:
            conn.execute(schema.replays.delete().where(schema.replays.c.replay_id == "rp-live"))
            conn.execute(
                schema.replay_tasks.delete().where(schema.replay_tasks.c.replay_id == "rp-live")
            )
        store.dispose()


def test_hostile_names_never_run_as_script(page: Any, live_server: LiveServer) -> None:
    page.goto("/runs")
    assert XSS_NAME in page.locator("#runs-table thead").inner_text()
    page.goto("/metrics?" + "names=" + XSS_NAME.replace("<", "%3C").replace(">", "%3E"))
    card = page.locator("section.chart-card").first
    page.wait_for_selector("section.chart-card[data-drawn='1']")
    assert card.locator("h3").inner_text() == XSS_NAME
    runs = page.request.get(live_server.url + "/api/runs").json()["runs"]
    hostile = next(r for r in runs if r["script"] == "hostile.py")
    page.goto(f"/runs/{hostile['run_id']}")
    page.wait_for_selector("figure.mini[data-drawn='1']")
    assert "<img src=x onerror=alert(2)>" in page.locator("#args-table").inner_text()
    page.goto("/replays/rp0002")
    assert XSS_NAME in page.inner_text("main")
    time.sleep(0.3)  # give any injected handler a chance to fire (the fixture checks dialogs)
