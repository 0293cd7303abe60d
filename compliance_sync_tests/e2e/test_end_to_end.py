"""End to end on the demo data, through both entry points: the command line and Dagster.

Every test gets its own database with the full schema and the default demo dataset, and its own working
directory (so no stray ``.env`` is read).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import dagster as dg
import psycopg
import pytest

from compliance_sync.definitions.tags import AS_OF_TAG, MODE_TAG, OP_NAME, PARTITION_TAG, TRIGGER_TAG
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TARGETS, TERRITORY
from compliance_sync.entrypoints import cli
from compliance_sync_tests.conftest import NO_TELEMETRY, dagster_home

AS_OF = "2025-06-30"
TARGET_NAMES = [t.name for t in TARGETS]


def run_cli(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    summary = json.loads(out.out) if "--json" in args and out.out.strip() else None
    return code, summary, out.out + out.err


def snapshot(url: str) -> dict[str, list[tuple]]:
    """Every row of the four targets (all columns, text form), for "nothing changed" assertions."""
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(f"SELECT to_jsonb(x)::text FROM {t} x ORDER BY to_jsonb(x)::text").fetchall()
            for t in TARGET_NAMES
        }


def count(url: str, sql: str, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchone()[0]


# --- the command line -------------------------------------------------------------------------------------
def test_live_run_then_second_run_writes_nothing(demo_db, capsys):
    code, summary, text = run_cli(capsys, "--year", "2025", "--as-of", AS_OF, "--json")
    assert code == 0, text
    assert summary["fiscal_year"] == 2025 and summary["window"] == {"start": "2025-01-01", "end": "2025-12-31"}
    with psycopg.connect(demo_db) as conn:
        ledger = conn.execute("SELECT status, mode, backend, as_of, rows_inserted FROM compliance_sync_runs").fetchall()
    inserted = sum(t["inserted"] for t in summary["targets"].values())
    assert ledger == [("succeeded", "live", "postgres", dt.date(2025, 6, 30), inserted)]
    assert summary["clients_processed"] > 40 and summary["status"] == "written"
    req = summary["targets"][REQUIREMENTS]
    assert (
        req["inserted"]
        == summary["requirement_rows"]
        == count(demo_db, f"SELECT count(*) FROM {REQUIREMENTS} WHERE fiscal_year = 2025")
    )
    assert count(demo_db, f"SELECT count(*) FROM {TERRITORY} WHERE fiscal_year = 2025") == summary["territories"] > 3
    assert (
        count(demo_db, f"SELECT count(*) FROM {BUSINESS_UNIT} WHERE fiscal_year = 2025")
        == summary["business_units"]
        == 3
    )
    assert count(demo_db, f"SELECT actual_compliance FROM {APAC} WHERE fiscal_year = 2025") is not None
    assert (
        summary["clients_at_risk"] + summary["clients_critical"] + summary["clients_compliant"]
        == summary["clients_processed"]
    )
    before = snapshot(demo_db)

    code, summary, text = run_cli(capsys, "--year", "2025", "--as-of", AS_OF, "--json")
    assert code == 0, text
    for name, counts in summary["targets"].items():
        assert counts["inserted"] == counts["updated"] == counts["deleted"] == 0, name
    assert summary["status"] == "unchanged"
    assert snapshot(demo_db) == before  # updated_at included: nothing was rewritten
    with psycopg.connect(demo_db) as conn:  # but "last synced" moves: one ledger row per live run
        assert conn.execute(
            "SELECT count(*), max(rows_inserted) FILTER (WHERE id = (SELECT max(id) FROM compliance_sync_runs)) "
            "FROM compliance_sync_runs"
        ).fetchone() == (2, 0)


def test_summary_block_and_log_lines(demo_db, capsys):
    code, _, text = run_cli(capsys, "--year", "2025", "--as-of", AS_OF)
    assert code == 0, text
    assert "SUMMARY FY2025 (2025-01-01 … 2025-12-31), as_of 2025-06-30" in text
    for label in (
        "Clients processed:",
        "Requirement rows:",
        "Territories:",
        "Business units:",
        "APAC updated:",
        "Clients at risk:",
        "Clients critical:",
        "Clients compliant:",
    ):
        assert label in text
    assert "] [INFO] " in text and text.splitlines()[0].startswith("[")


def test_dry_run_reports_exact_diff_and_writes_nothing(demo_db, capsys):
    assert run_cli(capsys, "--year", "2025", "--as-of", AS_OF)[0] == 0
    # one scheduled event of a required type becomes completed
    with psycopg.connect(demo_db) as conn:
        plan_id, type_id, completed, event_id = conn.execute(
            f"""SELECT r.plan_id, r.event_type_id, r.completed_count, e.id
                  FROM {REQUIREMENTS} r
                  JOIN segmentation_events e ON e.client_name = r.client_name AND e.event_type_id = r.event_type_id
                 WHERE r.fiscal_year = 2025 AND e.event_date BETWEEN '2025-01-01' AND %s AND e.completed IS NOT TRUE
                   AND (SELECT count(*) FROM account_plans p
                         WHERE p.client_name = r.client_name AND p.fiscal_year = 2025
                           AND p.status IS DISTINCT FROM 'archived') = 1
                 ORDER BY e.id LIMIT 1""",
            (AS_OF,),
        ).fetchone()
        conn.execute("UPDATE segmentation_events SET completed = true WHERE id = %s", (event_id,))
    before = snapshot(demo_db)
    code, summary, text = run_cli(capsys, "--dry-run", "--year", "2025", "--as-of", AS_OF, "--json")
    assert code == 0, text
    assert summary["mode"] == "dry_run"
    assert summary["targets"][REQUIREMENTS]["updated"] == 1
    assert summary["targets"][REQUIREMENTS]["inserted"] == summary["targets"][REQUIREMENTS]["deleted"] == 0
    assert summary["targets"][TERRITORY]["updated"] == 1
    assert f"completed_count: {completed} → {completed + 1}" in text
    assert f"plan_id={plan_id}" in text and "[DRY-RUN]" in text
    assert snapshot(demo_db) == before


def test_guard_empty_source_stops_live_run(demo_db, capsys):
    with psycopg.connect(demo_db) as conn:
        conn.execute("DELETE FROM account_plans WHERE fiscal_year = 2025")
    before = snapshot(demo_db)
    code, summary, text = run_cli(capsys, "--year", "2025", "--as-of", AS_OF, "--json")
    assert code == 3
    assert "account_plans returned no rows" in summary["error"]
    assert snapshot(demo_db) == before
    with psycopg.connect(demo_db) as conn:  # the refused live run is in the ledger, with its reason
        status, mode, error = conn.execute(
            "SELECT status, mode, error FROM compliance_sync_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert (status, mode) == ("failed", "live") and "account_plans returned no rows" in error


def test_guard_mass_prune_and_override(demo_db, capsys):
    assert run_cli(capsys, "--year", "2025", "--as-of", AS_OF)[0] == 0
    total = count(demo_db, f"SELECT count(*) FROM {REQUIREMENTS} WHERE fiscal_year = 2025")
    with psycopg.connect(demo_db) as conn:  # archive about three quarters of the plans
        conn.execute(
            "UPDATE account_plans SET status = 'archived' WHERE fiscal_year = 2025 AND get_byte(uuid_send(id), 0) < 192"
        )
    before = snapshot(demo_db)
    code, summary, text = run_cli(capsys, "--year", "2025", "--as-of", AS_OF, "--json")
    assert code == 3, text
    assert f"{REQUIREMENTS}: the run would delete" in summary["error"] and f"of {total} rows" in summary["error"]
    assert snapshot(demo_db) == before
    code, summary, text = run_cli(capsys, "--year", "2025", "--as-of", AS_OF, "--allow-mass-prune", "--json")
    assert code == 0, text
    assert summary["targets"][REQUIREMENTS]["deleted"] > total / 2


def test_invariant_violation_stops_the_write(demo_db, capsys, monkeypatch):
    from compliance_sync.domain import rules

    real = rules.territory_row

    def broken(*args, **kwargs):
        row = real(*args, **kwargs)
        row["total_required_events"] += 1
        return row

    monkeypatch.setattr(rules, "territory_row", broken)
    before = snapshot(demo_db)
    code, summary, text = run_cli(capsys, "--year", "2025", "--as-of", AS_OF, "--json")
    assert code == 3
    assert "territory_totals" in summary["error"] and summary["invariant_violations"]["territory_totals"] > 0
    assert snapshot(demo_db) == before


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--year", "1999"], "outside the fiscal-year partitions"),
        (["--year", "20x5"], "--year"),
        (["--as-of", "2025-13-01"], "--as-of"),
    ],
)
def test_usage_errors_exit_2(demo_db, capsys, args, needle):
    code, _, text = run_cli(capsys, *args)
    assert code == 2 and needle in text


def test_no_backend_configured_names_the_options(demo_db, capsys, monkeypatch):
    monkeypatch.delenv("SUPABASE_DB_URL")
    code, summary, text = run_cli(capsys, "--year", "2025", "--json")
    assert code == 2
    assert "SUPABASE_DB_URL" in text and "NEXT_PUBLIC_SUPABASE_URL" in text
    assert summary["status"] == "failed" and summary["exit_code"] == 2 and "SUPABASE_DB_URL" in summary["error"]


def test_connection_failure_exit_4_without_the_password(demo_db, capsys, monkeypatch):
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://postgres:Sup3rS3cret@127.0.0.1:1/postgres")
    code, summary, text = run_cli(capsys, "--year", "2025", "--as-of", AS_OF, "--json")
    assert code == 4 and summary["exit_code"] == 4
    assert "Sup3rS3cret" not in text and "127.0.0.1" in text


def test_secret_never_in_output_or_run_records(demo_db, capsys, monkeypatch, tmp_path):
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(demo_db)
    params["password"] = "Sup3rS3cret"  # ignored by trust auth, but present in the URL
    monkeypatch.setenv("SUPABASE_DB_URL", make_conninfo(**params))
    home = dagster_home(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    code, summary, text = run_cli(capsys, "--year", "2025", "--as-of", AS_OF, "--json")
    assert code == 0, text
    assert "Sup3rS3cret" not in text and "Sup3rS3cret" not in json.dumps(summary)
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert "Sup3rS3cret" not in json.dumps(run.run_config)
        records = instance.get_records_for_run(run.run_id).records
        assert records and not any("Sup3rS3cret" in repr(r) for r in records)


@pytest.mark.parametrize("extra, mode", [((), None), (("--dry-run",), "dry_run")])
def test_cli_runs_recorded_in_dagster_carry_the_as_of_they_computed_with(
    demo_db, capsys, monkeypatch, tmp_path, extra, mode
):
    """``--as-of`` after the FY's end: the run computes with the FY's last day, and its tag says so; a dry run
    is tagged where the command line launches it."""
    monkeypatch.setenv("SUPABASE_DB_URL", demo_db)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster_home")))
    code, summary, text = run_cli(capsys, "--year", "2024", "--as-of", "2025-03-01", "--json", *extra)
    assert code == 0, text
    assert summary["as_of"] == "2024-12-31"
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert (
            run.tags[AS_OF_TAG] == "2024-12-31" and run.tags[TRIGGER_TAG] == "cli" and run.tags[PARTITION_TAG] == "2024"
        )
        assert run.tags.get(MODE_TAG) == mode
        assert run.run_config["ops"][OP_NAME]["config"]["as_of"] == "2025-03-01"  # the reference date, as given


# --- Dagster -----------------------------------------------------------------------------------------------
def _run_config(**config) -> dg.RunConfig:
    from compliance_sync.definitions.targets import sync_run_config

    return sync_run_config(as_of=dt.date.fromisoformat(AS_OF), **config)


def test_dagster_live_materialises_four_targets_with_metadata(demo_db):
    from compliance_sync.definitions import SYNC_JOB, build_definitions

    job = build_definitions().resolve_job_def(SYNC_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(run_config=_run_config(), instance=instance, partition_key="2025")
        assert result.success
        mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
        assert set(mats) == set(TARGET_NAMES)
        apac = mats[APAC].materialization.metadata
        assert apac["actual_compliance"].value == float(
            count(demo_db, f"SELECT actual_compliance FROM {APAC} WHERE fiscal_year = 2025")
        )
        req = mats[REQUIREMENTS].materialization.metadata
        assert req["changes"].value["inserted"] == req["dagster/row_count"].value == req["rows_written"].value > 0
        assert [c.name for c in req["dagster/column_schema"].value.columns][:3] == [
            "plan_id",
            "event_type_id",
            "fiscal_year",
        ]
        assert len(req["preview"].value.records) == 10
        assert any(k.startswith("compliance_") for k in mats[BUSINESS_UNIT].materialization.metadata)
        assert all(mats[t].materialization.partition == "2025" for t in TARGET_NAMES)
        observed = {o.asset_key.to_user_string(): o for o in result.get_asset_observation_events()}
        obs = observed["account_plans"].asset_observation_data.asset_observation
        assert obs.metadata["fiscal_year"].value == "2025"  # sources are unpartitioned; the FY read is metadata
        assert obs.metadata["rows_read"].value == count(
            demo_db,
            "SELECT count(*) FROM account_plans WHERE fiscal_year = 2025 AND status IS DISTINCT FROM 'archived'",
        )
        checks = result.get_asset_check_evaluations()
        from compliance_sync.definitions.checks import CHECKS_BY_TARGET

        assert len(checks) == sum(len(w) + len(e) for w, e in CHECKS_BY_TARGET.values())
        assert {c.partition for c in checks} == {"2025"} if hasattr(checks[0], "partition") else True
        assert all(c.passed for c in checks if c.severity == dg.AssetCheckSeverity.ERROR)


def test_dagster_dry_run_observes_and_does_not_materialise(demo_db):
    from compliance_sync.definitions import SYNC_JOB, build_definitions

    before = snapshot(demo_db)
    job = build_definitions().resolve_job_def(SYNC_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(run_config=_run_config(dry_run=True), instance=instance, partition_key="2025")
        assert result.success
        assert result.get_asset_materialization_events() == []
        observed = [o.asset_key.to_user_string() for o in result.get_asset_observation_events()]
        assert set(TARGET_NAMES) <= set(observed)
        req = next(o for o in result.get_asset_observation_events() if o.asset_key.to_user_string() == REQUIREMENTS)
        meta = req.asset_observation_data.asset_observation.metadata
        assert meta["changes"].value["inserted"] > 0
        assert meta["diff"].value.records and meta["mode"].value == "dry run: nothing was written"
        assert meta["as_of"].value == AS_OF
        assert result.get_asset_check_evaluations()
        # launched with dry_run: true from the sync job's launchpad: the run keeps the tags it was launched with
        assert MODE_TAG not in instance.get_run_by_id(result.run_id).tags
    assert snapshot(demo_db) == before


def checks_job():
    from compliance_sync.definitions import CHECKS_JOB, build_definitions

    return build_definitions().resolve_job_def(CHECKS_JOB)


def single_check_job():
    from compliance_sync.definitions import SYNC_JOB, build_definitions

    key = dg.AssetCheckKey(dg.AssetKey(TERRITORY), "unused_strategies")
    return build_definitions().resolve_job_def(SYNC_JOB).get_subset(asset_selection=set(), asset_check_selection={key})


def execute_as_launched(fn, tmp_path, run_config=None, partition="2025"):
    """As the daemon runs a launched run: a reconstructable job, the partition as the dagster/partition tag
    (in-process execution of a checks-only selection with a partition key fails on Dagster 1.13)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    instance = dg.DagsterInstance.local_temp(str(home), overrides=NO_TELEMETRY)
    config = run_config.to_config_dict() if run_config is not None else None  # execute_job takes a mapping
    result = dg.execute_job(
        dg.reconstructable(fn), instance=instance, run_config=config, tags={PARTITION_TAG: partition}
    )
    return instance, result


@pytest.mark.parametrize("dry_run", [None, False])
def test_dagster_checks_job_runs_checks_alone(demo_db, tmp_path, dry_run):
    """The checks job never writes, whatever its run config says (dry_run: false edited in the launchpad)."""
    before = snapshot(demo_db)
    config = None if dry_run is None else _run_config(dry_run=dry_run)
    instance, result = execute_as_launched(checks_job, tmp_path, config)
    with instance, result:
        assert result.success
        assert result.get_asset_materialization_events() == []
        checks = result.get_asset_check_evaluations()
        assert len(checks) > 5
        assert instance.get_run_by_id(result.run_id).tags[MODE_TAG] == "dry_run"
        assert {c.description.split(":")[0] for c in checks} == {"FY2025"}
    assert snapshot(demo_db) == before
    assert count(demo_db, "SELECT count(*) FROM compliance_sync_runs") == 0


def reconstructable_multiprocess_job():
    from compliance_sync.definitions import SYNC_JOB, build_definitions

    return build_definitions().resolve_job_def(SYNC_JOB).with_executor_def(dg.multiprocess_executor)


def test_multiprocess_executor(demo_db, tmp_path):
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "home"), overrides=NO_TELEMETRY) as instance:
        with dg.execute_job(
            dg.reconstructable(reconstructable_multiprocess_job),
            instance=instance,
            run_config=_run_config().to_config_dict(),
            tags={PARTITION_TAG: "2025"},
        ) as result:
            assert result.success
            assert {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()} == set(
                TARGET_NAMES
            )
    assert count(demo_db, f"SELECT count(*) FROM {APAC} WHERE fiscal_year = 2025") == 1


def test_dagster_asset_materialize_command(demo_db, tmp_path):
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home(tmp_path / "home"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "compliance_sync.definitions",
            "--select",
            ",".join(TARGET_NAMES),
            "--partition",
            "2025",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert count(demo_db, f"SELECT count(*) FROM {APAC} WHERE fiscal_year = 2025") == 1
    assert count(demo_db, f"SELECT count(*) FROM {REQUIREMENTS} WHERE fiscal_year = 2025") > 0


def test_dagster_postgres_storage_from_dagster_yaml(demo_db, tmp_path, server_url):
    """dagster.yaml as shipped, with DAGSTER_PG_URL pointing at a throwaway database."""
    import pathlib
    import shutil

    from psycopg.conninfo import conninfo_to_dict

    from compliance_sync.definitions import SYNC_JOB, build_definitions

    params = conninfo_to_dict(demo_db)
    host = params.get("host", "127.0.0.1")
    user = params.get("user", "postgres")
    if host.startswith("/"):
        pg_url = f"postgresql+psycopg2://{user}@/{params['dbname']}?host={host}"
    else:
        pg_url = f"postgresql+psycopg2://{user}@{host}:{params.get('port', 5432)}/{params['dbname']}"
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(pathlib.Path(__file__).parents[2] / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_PG_URL"] = pg_url
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            job = build_definitions().resolve_job_def(SYNC_JOB)
            result = job.execute_in_process(run_config=_run_config(), instance=instance, partition_key="2025")
            assert result.success
            assert instance.get_runs_count() == 1
    finally:
        del os.environ["DAGSTER_PG_URL"]
    assert count(demo_db, "SELECT count(*) FROM runs") == 1  # dagster-postgres' own table, in PostgreSQL


# --- schedule ------------------------------------------------------------------------------------------------
def test_schedule_current_fy_and_previous_in_grace(monkeypatch):
    from compliance_sync.definitions import build_definitions
    from compliance_sync.definitions.schedules import SCHEDULE_NAME

    monkeypatch.setenv("COMPLIANCE_SYNC_FIRST_FY", "2020")
    monkeypatch.setenv("COMPLIANCE_SYNC_FY_START_MONTH", "7")
    defs = build_definitions()
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    sydney = dt.timezone(dt.timedelta(hours=10))
    repo = defs.get_repository_def()
    ctx = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2025, 7, 3, 6, 0, tzinfo=sydney), repository_def=repo
    )
    requests = list(schedule.evaluate_tick(ctx).run_requests)
    assert [r.partition_key for r in requests] == ["2026", "2025"]
    assert [r.run_config["ops"][OP_NAME]["config"]["as_of"] for r in requests] == ["2025-07-03", "2025-07-03"]
    # the tag is the as_of each run computes with: FY2025 ended on 2025-06-30
    assert [r.tags[AS_OF_TAG] for r in requests] == ["2025-07-03", "2025-06-30"]
    assert {r.tags[TRIGGER_TAG] for r in requests} == {"schedule"}
    ctx = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2025, 9, 1, 6, 0, tzinfo=sydney), repository_def=repo
    )
    assert [r.partition_key for r in schedule.evaluate_tick(ctx).run_requests] == ["2026"]


def test_dagster_single_check_selected_runs_alone(demo_db, tmp_path):
    """What the UI's "Execute check" launches: no asset selected, one check; nothing is written."""
    before = snapshot(demo_db)
    instance, result = execute_as_launched(single_check_job, tmp_path, _run_config())
    with instance, result:
        assert result.success
        [check] = result.get_asset_check_evaluations()
        assert check.check_name == "unused_strategies" and not check.passed  # the demo has losing strategies
        assert check.metadata["total"].value > 0
        assert check.partition == "2025"
        assert result.get_asset_materialization_events() == []
    assert snapshot(demo_db) == before
