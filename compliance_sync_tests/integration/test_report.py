"""The per-FY report on the demo data, through the command line, the REST backend and Dagster: its figures are
the rows a sync writes, it writes nothing to the database, it reads the previous APAC figure from the run
ledger (and still works on a ledger without that column), and the ``compliance_report`` asset follows live
syncs (not dry runs) and records its file's path and a summary."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from decimal import Decimal

import dagster as dg
import openpyxl
import psycopg
import pytest

from compliance_sync.definitions import CHECKS_JOB, DRY_RUN_JOB, SYNC_JOB, build_definitions
from compliance_sync.definitions.fy_report import REPORT_ASSET, REPORT_SENSOR
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.tables import TARGETS
from compliance_sync.entrypoints import cli
from compliance_sync_tests.unit.test_fy_report import NETWORK_REFERENCE

FY, AS_OF = "2025", "2025-06-30"
SHEETS = ["Summary", "Business units", "Territories", "Statuses", "Below compliance", "Pace", "Warnings", "Targets"]


def scalar(url: str, query: str, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]


def apac_written(url: str) -> Decimal:
    return scalar(url, "SELECT actual_compliance FROM apac_planning_goals WHERE fiscal_year = %s", int(FY))


def database_state(url: str) -> tuple:
    """Every target's rows and stamps for the FY, and the ledger: what a read-only command must leave alone."""
    with psycopg.connect(url) as conn:
        return tuple(
            conn.execute(
                f"SELECT count(*), max(updated_at) FROM {t.name} WHERE fiscal_year = %s", (int(FY),)
            ).fetchone()
            for t in TARGETS
        ) + (conn.execute("SELECT count(*) FROM compliance_sync_runs").fetchone(),)


def shown_figure(html: str, element: str) -> str:
    match = re.search(rf'id="{element}"[^>]*>([^<]*)<', html)
    assert match, element
    return match.group(1)


def report(*args: str) -> int:
    return cli.main(["report", "--year", FY, *args])


def test_report_files_hold_what_a_sync_writes(demo_db, tmp_path):
    assert cli.main(["--year", FY, "--as-of", AS_OF]) == 0
    before = database_state(demo_db)
    for name in ("r.html", "r.xlsx", "r.csv"):
        assert report("--as-of", AS_OF, "--out", str(tmp_path / name)) == 0
    assert database_state(demo_db) == before, "the report writes nothing: no target row, no ledger row"

    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    actual = apac_written(demo_db)
    assert shown_figure(html, "apac-figure") == f"{actual} %"
    below = scalar(demo_db, "SELECT below_compliance_accounts FROM apac_planning_goals WHERE fiscal_year = %s", int(FY))
    assert shown_figure(html, "below-count") == str(below)
    assert not NETWORK_REFERENCE.search(html) and "<script" not in html
    assert "The planning tables hold these figures." in html

    book = openpyxl.load_workbook(tmp_path / "r.xlsx", read_only=True)
    assert book.sheetnames == SHEETS
    summary = {row[0]: row[1] for row in book["Summary"].iter_rows(min_row=2, values_only=True)}
    assert Decimal(str(summary["APAC compliance %"])) == actual
    bu_sheet = list(book["Business units"].iter_rows(values_only=True))
    with psycopg.connect(demo_db) as conn:
        written = dict(
            conn.execute(
                "SELECT bu_name, overall_compliance_percentage FROM business_unit_planning WHERE fiscal_year = %s",
                (int(FY),),
            ).fetchall()
        )
    assert {r[0]: Decimal(str(r[1])) for r in bu_sheet[1:] if r[0] in written} == written

    with (tmp_path / "r.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with psycopg.connect(demo_db) as conn:
        critical_or_at_risk = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT client_name FROM account_plan_event_requirements "
                "WHERE fiscal_year = %s AND status IN ('critical', 'at_risk')",
                (int(FY),),
            )
        }
    assert {r["Client"] for r in rows} == critical_or_at_risk and len(rows) == below
    shortfalls = [int(r["Shortfall"]) for r in rows]
    assert shortfalls == sorted(shortfalls, reverse=True)
    assert all(r["CSE"] and r["Segment"] and r["Missing events"] for r in rows)


def test_default_file_name_and_json(demo_db, tmp_path, capsys):
    assert cli.main(["report", "--year", FY, "--as-of", AS_OF, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (
        out["path"] == str(tmp_path / f"compliance_report_FY{FY}.html")
        and (tmp_path / f"compliance_report_FY{FY}.html").is_file()
    )
    assert out["exit_code"] == 0 and out["fiscal_year"] == 2025 and out["as_of"] == AS_OF


def test_change_since_the_previous_run_comes_from_the_ledger(demo_db, tmp_path):
    assert cli.main(["--year", FY, "--as-of", AS_OF]) == 0
    first = apac_written(demo_db)
    assert report("--as-of", AS_OF, "--out", str(tmp_path / "one.html")) == 0
    html = (tmp_path / "one.html").read_text()
    assert shown_figure(html, "apac-change") == "–"  # the only run is the one that wrote these figures

    assert cli.main(["--year", FY, "--as-of", "2025-09-30"]) == 0
    second = apac_written(demo_db)
    assert second != first
    assert report("--as-of", "2025-09-30", "--out", str(tmp_path / "two.html")) == 0
    change = second - first
    assert (
        shown_figure((tmp_path / "two.html").read_text(), "apac-change") == f"{'+' if change > 0 else ''}{change} pts"
    )

    # ahead of the next sync: compared with the latest run, whose figures the targets hold now
    assert report("--as-of", "2025-12-31", "--out", str(tmp_path / "three.html")) == 0
    html = (tmp_path / "three.html").read_text()
    ahead = Decimal(shown_figure(html, "apac-figure").removesuffix(" %"))
    step = ahead - second
    assert shown_figure(html, "apac-change") == f"{'+' if step > 0 else ''}{step} pts"
    assert f"from {second} %" in html and "until the next sync" in html


def test_a_ledger_without_the_apac_column_still_works_with_a_warning(demo_db, tmp_path, capsys):
    with psycopg.connect(demo_db) as conn:
        conn.execute("ALTER TABLE compliance_sync_runs DROP COLUMN apac_compliance")
    assert cli.main(["--year", FY, "--as-of", AS_OF]) == 0
    assert scalar(demo_db, "SELECT count(*) FROM compliance_sync_runs WHERE status = 'succeeded'") == 1
    capsys.readouterr()
    assert report("--as-of", AS_OF, "--out", str(tmp_path / "r.html"), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert any("apac_compliance" in w and "migrate --minimal" in w for w in out["warnings"]), out["warnings"]
    html = (tmp_path / "r.html").read_text()
    assert (
        shown_figure(html, "apac-figure") == f"{apac_written(demo_db)} %" and shown_figure(html, "apac-change") == "–"
    )
    assert "compliance_sync_runs has no column apac_compliance" in html


def test_migrate_minimal_adds_the_apac_column_to_an_older_ledger(demo_db):
    with psycopg.connect(demo_db) as conn:
        conn.execute("ALTER TABLE compliance_sync_runs DROP COLUMN apac_compliance")
    assert cli.main(["migrate", "--minimal"]) == 0
    assert cli.main(["--year", FY, "--as-of", AS_OF]) == 0
    assert scalar(demo_db, "SELECT apac_compliance FROM compliance_sync_runs") == apac_written(demo_db)


def test_no_ledger_at_all_still_reports(demo_db, tmp_path):
    with psycopg.connect(demo_db) as conn:
        conn.execute("DROP TABLE compliance_sync_runs")
    assert report("--as-of", AS_OF, "--out", str(tmp_path / "r.html")) == 0
    assert "compliance_sync_runs does not exist" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("out", ["report.pdf", "report", "report.HTML.bak"])
def test_unknown_extension_exits_2_naming_out(demo_db, tmp_path, capsys, out):
    assert report("--out", out) == 2
    assert "--out must end in .html, .xlsx or .csv" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_over_rest_the_report_reads_only(demo_db, tmp_path):
    from compliance_sync.config.settings import EXAMPLE_BU_MAP, load_settings
    from compliance_sync.service.fy_report import output, service
    from compliance_sync_tests.rest_support import rest_backend, rest_server, writes

    assert cli.main(["--year", FY, "--as-of", AS_OF]) == 0
    written = apac_written(demo_db)
    before = database_state(demo_db)
    with rest_server(demo_db) as srv:
        settings = load_settings(cwd=tmp_path, environ={"COMPLIANCE_SYNC_BU_MAP": str(EXAMPLE_BU_MAP)})
        made = service.produce(settings, rest_backend(srv), FiscalYear(2025), FiscalYear(2025).end)  # ahead of the sync
        assert writes(srv) == []
        assert any(r.table == "compliance_sync_runs" for r in srv.requests)
    assert database_state(demo_db) == before
    assert made.tables.previous is not None and made.tables.previous.figure == written  # the ledger, read over REST
    path = output.write_report(made.tables, tmp_path / "rest.html")
    assert shown_figure(path.read_text(), "apac-figure") == f"{made.tables.apac} %"


# --- Dagster -------------------------------------------------------------------------------------------------------
def sync_config(dry_run: bool = False) -> dict:
    return {"ops": {"compliance_sync": {"config": {"as_of": AS_OF, "dry_run": dry_run}}}}


def test_the_jobs_do_not_include_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    defs = build_definitions()
    for name in (SYNC_JOB, DRY_RUN_JOB, CHECKS_JOB):
        keys = {k.to_user_string() for k in defs.resolve_job_def(name).asset_layer.selected_asset_keys}
        assert REPORT_ASSET not in keys, name
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey(REPORT_ASSET))
    assert {k.to_user_string() for k in node.parent_keys} == {t.name for t in TARGETS}
    assert node.partitions_def == graph.get(dg.AssetKey(TARGETS[0].name)).partitions_def
    assert defs.resolve_sensor_def(REPORT_SENSOR).default_status == dg.DefaultSensorStatus.RUNNING


def test_the_asset_follows_live_syncs_not_dry_runs(demo_db, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPLIANCE_SYNC_REPORT_DIR", str(tmp_path / "reports"))
    defs = build_definitions()
    report_key = dg.AssetKey(REPORT_ASSET)
    with dg.DagsterInstance.ephemeral() as instance:

        def evaluate(cursor):
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            return result.get_requested_partitions(report_key), result.cursor

        requested, cursor = evaluate(None)
        assert requested == set()
        dry = defs.resolve_job_def(DRY_RUN_JOB).execute_in_process(
            run_config=sync_config(dry_run=True), instance=instance, partition_key=FY
        )
        assert dry.success
        requested, cursor = evaluate(cursor)
        assert requested == set(), "a dry run materialises nothing, so it triggers no report"

        live = defs.resolve_job_def(SYNC_JOB).execute_in_process(
            run_config=sync_config(), instance=instance, partition_key=FY
        )
        assert live.success
        requested, cursor = evaluate(cursor)
        assert requested == {FY}

        result = dg.materialize(
            [defs.resolve_assets_def(report_key)], instance=instance, partition_key=FY
        )  # the location's resource
        assert result.success
        [mat] = [m.materialization for m in result.get_asset_materialization_events()]
        path = mat.metadata["path"]
        assert isinstance(path, dg.PathMetadataValue) and path.value == str(
            (tmp_path / "reports" / f"compliance_report_FY{FY}.html").resolve()
        )
        html = (tmp_path / "reports" / f"compliance_report_FY{FY}.html").read_text()
        actual = apac_written(demo_db)
        assert shown_figure(html, "apac-figure") == f"{actual} %"  # the sync's as_of, read from its materialisation
        summary = mat.metadata["summary"]
        assert isinstance(summary, dg.MarkdownMetadataValue) and f"APAC compliance: **{actual} %**" in summary.value
        assert mat.metadata["as_of"].value == AS_OF

        requested, cursor = evaluate(cursor)
        assert requested == set(), "handled: one report per live sync"
        assert (
            defs.resolve_job_def(DRY_RUN_JOB)
            .execute_in_process(run_config=sync_config(dry_run=True), instance=instance, partition_key=FY)
            .success
        )
        requested, cursor = evaluate(cursor)
        assert requested == set()
        assert (
            defs.resolve_job_def(SYNC_JOB)
            .execute_in_process(run_config=sync_config(), instance=instance, partition_key=FY)
            .success
        )
        requested, cursor = evaluate(cursor)
        assert requested == {FY}


def test_the_asset_fails_clearly_without_a_backend(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("SUPABASE_DB_URL", "NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    defs = build_definitions()
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [defs.resolve_assets_def(dg.AssetKey(REPORT_ASSET))],
            instance=instance,
            partition_key=FY,
            raise_on_error=False,
        )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "no backend configured" in failure.step_failure_data.user_failure_data.description


def test_the_sync_path_imports_no_report_library(tmp_path):
    """pandas, matplotlib and openpyxl load only when a report is made: not with the command line, the sync or
    the code location."""
    code = (
        "import sys, compliance_sync.entrypoints.cli, compliance_sync.service.sync, compliance_sync.definitions as d\n"
        "d.build_definitions()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'matplotlib', 'openpyxl'}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPLIANCE_SYNC_", "SUPABASE_", "DAGSTER_"))}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
