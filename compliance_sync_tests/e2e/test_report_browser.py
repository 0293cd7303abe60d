"""The per-FY report opened in a real browser (headless Chromium) with the network cut off: it renders with no
console error, asks for nothing outside the file, draws its charts, and shows the APAC figure the target row
holds after a sync of the demo data.

Slow (a browser start); run with ``pytest -m slow compliance_sync_tests/e2e/test_report_browser.py``. Skipped when
/usr/bin/chromium or playwright is missing.
"""

from __future__ import annotations

import importlib.util
import os

import psycopg
import pytest

from compliance_sync.entrypoints import cli

CHROMIUM = "/usr/bin/chromium"


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (Debian: apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (.venv/bin/pip install playwright; never `playwright install`)"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_missing()), reason=_missing() or "ready")]


def test_the_report_renders_offline_with_the_apac_figure_of_the_target_row(demo_db, tmp_path):
    from playwright.sync_api import sync_playwright

    assert cli.main(["--year", "2025", "--as-of", "2025-06-30"]) == 0
    assert cli.main(["report", "--year", "2025", "--as-of", "2025-06-30", "--out", str(tmp_path / "report.html")]) == 0
    with psycopg.connect(demo_db) as conn:
        actual = conn.execute("SELECT actual_compliance FROM apac_planning_goals WHERE fiscal_year = 2025").fetchone()[
            0
        ]

    errors, outside = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(30_000)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def only_the_file(route):
                if route.request.url.startswith("file://"):
                    return route.continue_()
                outside.append(route.request.url)
                return route.abort()

            page.route("**/*", only_the_file)
            page.goto((tmp_path / "report.html").as_uri(), wait_until="load")
            shown = page.inner_text("#apac-figure")
            charts = page.locator("svg[role=img]").count()
            drawn = page.eval_on_selector("svg[role=img]", "e => e.getBoundingClientRect().height")
            rows = page.locator("#below-compliance tbody tr").count()
        finally:
            browser.close()
    assert errors == [] and outside == []
    assert shown == f"{actual} %"
    assert charts == 3 and drawn > 50
    with psycopg.connect(demo_db) as conn:
        below = conn.execute(
            "SELECT below_compliance_accounts FROM apac_planning_goals WHERE fiscal_year = 2025"
        ).fetchone()[0]
    assert rows == below
