"""The Dagster UI of ``compliance-sync demo --ui`` in a real browser (headless Chromium), as a newcomer uses it.

Starts the demo as a subprocess in a temporary working folder with a fresh embedded data directory (its own
sync FY2026, so FY2025 is written only by the run launched from the UI), opens the asset graph, launches
FY2025 from ``business_unit_planning``'s "Materialize…" button, waits (bounded) for the run to succeed, opens
that fiscal year's materialisation metadata, then checks the four targets in the demo database, waits (bounded)
for the report run the automation sensor launches after that live sync, and stops the demo with Ctrl-C
(SIGINT): exit 0, within a bound, nothing it started left running.

Slow (about a minute here: the report waits for the sensor's next tick); run with
``pytest -m slow compliance_sync_tests/e2e/test_browser.py``. Skipped
when /usr/bin/chromium, playwright or the embedded PostgreSQL is missing. The pictures land in the test's
temporary folder; ``scripts/screenshots.py`` refreshes the README's copies in ``docs/``.
"""

from __future__ import annotations

import psycopg
import pytest

from compliance_sync.definitions.fy_report import REPORT_SENSOR
from compliance_sync_tests import ui_driver

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(ui_driver.missing_requirements()), reason=ui_driver.missing_requirements() or "ready"),
]

FY = int(ui_driver.FISCAL_YEAR)
REPORT_TIMEOUT_S = 180.0  # the sensor ticks every 30 s; the report run queues behind the FY's sync (one run per FY)
WRITTEN = {  # per target: the FY's rows whose job-owned values are filled in (the demo data seeds BU and APAC rows)
    "account_plan_event_requirements": "SELECT count(*) FROM account_plan_event_requirements WHERE fiscal_year = %s",
    "territory_compliance_summary": "SELECT count(*) FROM territory_compliance_summary WHERE fiscal_year = %s",
    "business_unit_planning": (
        "SELECT count(*) FROM business_unit_planning WHERE fiscal_year = %s AND territory_count IS NOT NULL"
    ),
    "apac_planning_goals": (
        "SELECT count(*) FROM apac_planning_goals WHERE fiscal_year = %s AND actual_compliance IS NOT NULL"
    ),
}


def written_rows(url: str) -> dict[str, int]:
    with psycopg.connect(url, connect_timeout=10) as conn:
        return {table: conn.execute(query, (FY,)).fetchone()[0] for table, query in WRITTEN.items()}


@pytest.fixture
def demo_ui(tmp_path):
    demo = ui_driver.DemoUi(workdir=tmp_path / "work", data_dir=tmp_path / "pgdata", port=ui_driver.free_port())
    try:
        yield demo.start()
    finally:
        demo.cleanup()


def test_materialise_a_fiscal_year_from_the_ui(demo_ui, tmp_path):
    demo_ui.wait_ready()
    url = demo_ui.database_url()
    assert written_rows(url) == dict.fromkeys(WRITTEN, 0), "the demo's own run synced FY2026: FY2025 not written yet"

    from compliance_sync.definitions.tags import TRIGGER_TAG
    from compliance_sync.devtools.demo import UI_SENSOR_NOTE

    assert UI_SENSOR_NOTE in demo_ui.stdout_path.read_text(), "the demo says what the change sensor's first tick does"
    demo_runs = [r for r in ui_driver.runs(demo_ui.base_url) if r["tags"].get(TRIGGER_TAG) == "demo"]
    assert [(r["status"], r["tags"].get("dagster/partition")) for r in demo_runs] == [("SUCCESS", "2026")], (
        "the demo's command-line run is listed in the UI's runs"
    )

    result = ui_driver.tour(demo_ui.base_url, tmp_path / "screenshots")
    assert result.status == "SUCCESS", f"run {result.run_id} launched from the UI: {result.status}\n{demo_ui.tail()}"
    launched = {r["id"]: r for r in ui_driver.runs(demo_ui.base_url)}[result.run_id]
    assert launched["tags"].get("dagster/partition") == "2025" and launched["tags"].get("dagster/from_ui") == "true"
    for name, path in result.screenshots.items():
        assert path.is_file() and path.stat().st_size > 20_000, f"{name}: {path}"

    rows = written_rows(url)
    assert all(n > 0 for n in rows.values()), f"FY2025 rows written by the run launched from the UI: {rows}"

    # the live sync launched from the UI makes the daemon's automation sensor materialise FY2025's report
    def report_run():
        tags = {"dagster/sensor_name": REPORT_SENSOR, "dagster/partition": "2025"}
        found = [r for r in ui_driver.runs(demo_ui.base_url) if tags.items() <= r["tags"].items()]
        return found if found and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in found) else None

    [report] = ui_driver.wait_for(report_run, REPORT_TIMEOUT_S, "the report run the automation sensor launches")
    assert report["status"] == "SUCCESS", demo_ui.tail()
    assert (demo_ui.workdir / ".compliance_sync/dagster_home/reports/compliance_report_FY2025.html").is_file()

    code, took, left = demo_ui.interrupt()
    assert code == 0, f"exit code after Ctrl-C: {code}\n{demo_ui.tail()}"
    assert took < ui_driver.STOP_TIMEOUT_S
    assert not left, f"still running after compliance-sync exited: {sorted(left)}"
    assert demo_ui.postgres_pid, "the embedded server's pid was recorded"
    last = demo_ui.stdout_path.read_text().splitlines()[-1]
    assert "embedded PostgreSQL in" in last and last.endswith("stopped"), last
    assert demo_ui.unstamped_lines() == [], "every line is timestamped with a level (ours or Dagster's)"
