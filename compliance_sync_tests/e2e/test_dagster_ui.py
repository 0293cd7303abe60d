"""What a user gets from each Dagster entry point, in-process (the real services: test_dagster_services.py).

- any selection of targets (one target's "Materialize…", the lineage view, a backfill subset) writes the four
  targets of the FY in one step and records all four as materialised, with the metadata the UI shows;
- a dry run, however launched, never writes, never fails on a guard and says so in its metadata; the
  dry-run and checks jobs carry ``compliance_sync/mode: dry_run``, say ``dry_run: true`` in every
  partition's config and describe themselves as read-only; neither can be turned into a live run;
- a run without a fiscal-year partition (the Checks tab's "Execute all") or over a range of them fails
  with a clear message (a ``dg.Failure`` with no chained cause);
- the run-failure alert posts a short JSON message to the webhook, with secrets masked;
- freshness comes from ``COMPLIANCE_SYNC_FRESHNESS_HOURS``; loading the code location prints no
  untimestamped warning.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys

import dagster as dg
import psycopg
import pytest

import compliance_sync.definitions as location
from compliance_sync.backends.port import BackendKind
from compliance_sync.config.settings import EXAMPLE_BU_MAP, load_settings
from compliance_sync.definitions import CHECKS_JOB, DRY_RUN_JOB, SYNC_JOB, build_definitions
from compliance_sync.definitions.resources import RESOURCE_KEY, FixedSync
from compliance_sync.definitions.sensors import ALERT_SENSOR
from compliance_sync.definitions.tags import MODE_TAG, OP_NAME, PARTITION_TAG, SUMMARY
from compliance_sync.definitions.targets import SyncConfig, sync_run_config
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TARGETS, TERRITORY
from compliance_sync_tests.conftest import NO_TELEMETRY
from compliance_sync_tests.webhook import Webhook

AS_OF = dt.date(2025, 6, 30)
TARGET_NAMES = [t.name for t in TARGETS]
# the numeric metadata of a materialisation, i.e. what the UI's Plots tab draws
PLOTTED = re.compile(
    r"^(dagster/row_count|rows_written|actual_compliance|below_compliance_accounts|compliance_.+|clients_below_.+)$"
)


def run_config(**config) -> dg.RunConfig:
    return sync_run_config(as_of=AS_OF, **config)


def rows_of_fy(url: str, fy: int) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t} WHERE fiscal_year = %s", (fy,)).fetchone()[0]
            for t in TARGET_NAMES
        }


def snapshot(url: str) -> dict[str, list]:
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(f"SELECT to_jsonb(x)::text FROM {t} x ORDER BY 1").fetchall()
            for t in [*TARGET_NAMES, "compliance_sync_runs"]
        }


def ledger(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT run_id, fiscal_year, mode, status FROM compliance_sync_runs ORDER BY id").fetchall()


# --- 1. any selection writes and records the four targets ------------------------------------------------------
@pytest.mark.parametrize("selected", [REQUIREMENTS, BUSINESS_UNIT, APAC, f"{TERRITORY},{APAC}"])
def test_any_selection_writes_and_records_all_four_targets(demo_db, selected):
    """One target's "Materialize…" (or the lineage view, or a backfill of a subset) runs the step with a
    subset selected: the four targets of the FY are written in one step, and all four are recorded as
    materialised for the FY, with row count, column schema, preview, and only figures worth plotting."""
    job = build_definitions().resolve_job_def(SYNC_JOB)
    keys = [dg.AssetKey(k) for k in selected.split(",")]
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            run_config=run_config(), instance=instance, partition_key="2025", asset_selection=keys
        )
        assert result.success
        mats = {m.asset_key.to_user_string(): m.materialization for m in result.get_asset_materialization_events()}
        assert set(mats) == set(TARGET_NAMES)
        assert all(m.partition == "2025" for m in mats.values())
        for name in TARGET_NAMES:
            assert instance.get_materialized_partitions(dg.AssetKey(name)) == {"2025"}, name
        counts = rows_of_fy(demo_db, 2025)
        assert counts[APAC] == 1 and counts[BUSINESS_UNIT] == 3 and counts[TERRITORY] > 3 and counts[REQUIREMENTS] > 100
        for name, m in mats.items():
            meta = m.metadata
            assert meta["dagster/row_count"].value == counts[name], name
            assert isinstance(meta["dagster/column_schema"].value, dg.TableSchema)
            assert isinstance(meta["preview"], dg.TableMetadataValue) and meta["preview"].value.records
            plotted = {k for k, v in meta.items() if isinstance(v, (dg.IntMetadataValue, dg.FloatMetadataValue))}
            assert plotted and all(PLOTTED.match(k) for k in plotted), (name, plotted)
        # the checks that ran are those of the selected targets, each for the FY
        checks = result.get_asset_check_evaluations()
        assert checks and {c.asset_key for c in checks} == set(keys)
        assert {c.partition for c in checks} == {"2025"}
    assert ledger(demo_db) == [(result.run_id, 2025, "live", "succeeded")]  # the ledger carries the Dagster run id


# --- 3. dry runs --------------------------------------------------------------------------------------------------
def test_dry_run_job_cannot_be_edited_into_a_live_run(demo_db):
    """``dry_run: false`` typed into the dry-run job's launchpad: the job's tag keeps the run dry."""
    before = snapshot(demo_db)
    job = build_definitions().resolve_job_def(DRY_RUN_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(run_config=run_config(dry_run=False), instance=instance, partition_key="2025")
        assert result.success
        assert result.get_asset_materialization_events() == []
        assert {o.asset_key.to_user_string() for o in result.get_asset_observation_events()} >= set(TARGET_NAMES)
        assert instance.get_run_by_id(result.run_id).tags[MODE_TAG] == "dry_run"
    assert snapshot(demo_db) == before


def test_dry_run_and_checks_jobs_say_they_are_read_only():
    """Their config says dry_run: true for every fiscal year, their description says read-only, and what runs
    in them is not described as writing; no job's launchpad starts with dry_run: false (the op's default is
    unset: the job decides)."""
    defs = build_definitions()
    assert SyncConfig().dry_run is None
    for name in (DRY_RUN_JOB, CHECKS_JOB):
        job = defs.resolve_job_def(name)
        assert job.tags[MODE_TAG] == "dry_run"
        assert job.description.endswith(
            "Read-only: writes no row, whatever its run config says (tagged compliance_sync/mode: dry_run)."
        )
        for key in ("2024", "2025"):
            config = job.partitioned_config.get_run_config_for_partition_key(key)
            assert config["ops"][OP_NAME]["config"]["dry_run"] is True, (name, key)
    step = defs.resolve_job_def(CHECKS_JOB).graph.node_defs[0].description
    assert "into the four planning tables" not in step and "writes nothing" in step
    assert "Sync one fiscal year" in defs.resolve_job_def(SYNC_JOB).description


@pytest.mark.parametrize("how", ["launchpad", "dry_run_job", "checks_job"])
def test_dry_run_with_a_guard_succeeds_and_warns(demo_db, tmp_path, how):
    """A guard that would stop a live run (no plans for the FY) is a WARN check result in a dry run, which
    succeeds, is tagged dry_run, and writes nothing; the live run stops on the same guard."""
    with psycopg.connect(demo_db) as conn:
        conn.execute("DELETE FROM account_plans WHERE fiscal_year = 2025")
    before = snapshot(demo_db)
    defs = build_definitions()
    if how == "checks_job":  # as the daemon runs it: the partition as a tag (see test_end_to_end.execute_as_launched)
        (tmp_path / "home").mkdir()
        instance = dg.DagsterInstance.local_temp(str(tmp_path / "home"), overrides=NO_TELEMETRY)
        result = dg.execute_job(
            dg.reconstructable(_checks_job),
            instance=instance,
            run_config=run_config().to_config_dict(),
            tags={PARTITION_TAG: "2025"},
        )
    else:
        instance = dg.DagsterInstance.ephemeral()
        job = defs.resolve_job_def(SYNC_JOB if how == "launchpad" else DRY_RUN_JOB)
        result = job.execute_in_process(
            run_config=run_config(dry_run=True) if how == "launchpad" else run_config(),
            instance=instance,
            partition_key="2025",
        )
    with instance:
        assert result.success
        [guard] = [c for c in result.get_asset_check_evaluations() if c.check_name == "write_guards"]
        assert guard.severity == dg.AssetCheckSeverity.WARN and not guard.passed
        assert "account_plans" in guard.metadata["examples"].value
        assert guard.description.startswith(
            "FY2025: "
        )  # the list of checks mixes fiscal years: each result names its own
        # the jobs are tagged where they are defined; the sync job launched with dry_run: true carries the tags it
        # was launched with, and its observations say it was a dry run
        assert instance.get_run_by_id(result.run_id).tags.get(MODE_TAG) == (None if how == "launchpad" else "dry_run")
        if how != "checks_job":
            [apac] = [o for o in result.get_asset_observation_events() if o.asset_key == dg.AssetKey(APAC)]
            meta = apac.asset_observation_data.asset_observation.metadata
            assert meta["mode"].value == "dry run: nothing was written" and meta[SUMMARY].value["mode"] == "dry_run"
        assert result.get_asset_materialization_events() == []
    assert snapshot(demo_db) == before

    live = defs.resolve_job_def(SYNC_JOB).execute_in_process(
        run_config=run_config(), partition_key="2025", raise_on_error=False
    )
    assert not live.success
    [guard] = [c for c in live.get_asset_check_evaluations() if c.check_name == "write_guards"]
    assert guard.severity == dg.AssetCheckSeverity.ERROR and not guard.passed
    [failure] = [e for e in live.all_events if e.is_step_failure]
    assert "account_plans returned no rows" in failure.step_failure_data.user_failure_data.description


def _checks_job():
    return build_definitions().resolve_job_def(CHECKS_JOB)


def _territory_checks_only():
    """What "Execute all" on an asset's Checks tab launches: no asset, the asset's checks, no partition."""
    job = build_definitions().resolve_job_def(SYNC_JOB)
    checks = {k for k in job.asset_layer.asset_graph.asset_check_keys if k.asset_key == dg.AssetKey(TERRITORY)}
    return job.get_subset(asset_selection=set(), asset_check_selection=checks)


def _sync_job():
    return build_definitions().resolve_job_def(SYNC_JOB)


# --- 2. a run needs one fiscal year ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fn,tags,needle",
    [
        (_territory_checks_only, {}, "this run has no fiscal-year partition"),
        (_checks_job, {}, "this run has no fiscal-year partition"),
        (
            _sync_job,
            {"dagster/asset_partition_range_start": "2024", "dagster/asset_partition_range_end": "2025"},
            "Launch a backfill",
        ),
    ],
)
def test_run_without_one_fiscal_year_fails_clearly(demo_db, tmp_path, fn, tags, needle):
    before = snapshot(demo_db)
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "home"), overrides=NO_TELEMETRY) as instance:
        with dg.execute_job(
            dg.reconstructable(fn), instance=instance, run_config=run_config().to_config_dict(), tags=tags
        ) as result:
            assert not result.success
            [failure] = result.get_step_failure_events()
            description = failure.step_failure_data.user_failure_data.description
            assert needle in description and "Traceback" not in description
            # a dg.Failure raised with no chained cause: the UI shows the message, then Dagster's own frames
            error = failure.step_failure_data.error
            assert error.cls_name == "Failure" and error.cause is None and error.context is None
            assert error.message.strip().endswith(description)
            assert result.get_asset_materialization_events() == []
    assert snapshot(demo_db) == before


# --- 5. the run-failure alert ------------------------------------------------------------------------------------
class _ExplodingBackend:
    """A backend whose connection fails with an error that quotes a secret (as a careless driver might)."""

    name = BackendKind.POSTGRES
    atomic = True

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def describe(self) -> str:
        return "nowhere"

    def session(self, fy, as_of):
        raise RuntimeError(f"could not reach the database: bad credentials {self.secret}")

    def fingerprint(self, fy) -> str:
        return "-"


@pytest.fixture
def scoped_secrets(monkeypatch):
    """Secrets registered during the test are forgotten after it: the webhook URL of this test contains
    ``127.0.0.1:``, which would otherwise be masked in every later test of the session."""
    from compliance_sync.config import secrets as redact

    monkeypatch.setattr(redact, "_grams", set(redact._grams))
    monkeypatch.setattr(redact, "_short", set(redact._short))


def test_failure_alert_posts_short_json_without_secrets(tmp_path, scoped_secrets):
    token = "xoxb-T0K3N-s3cr3t-path"
    with Webhook() as hook:
        webhook_url = f"{hook.url}/services/{token}"
        settings = load_settings(
            tmp_path,
            {
                "COMPLIANCE_SYNC_ALERT_WEBHOOK": webhook_url,
                "COMPLIANCE_SYNC_DAGSTER_URL": "https://dagster.example.org/",
                "COMPLIANCE_SYNC_BU_MAP": str(EXAMPLE_BU_MAP),
            },
        )
        sync = FixedSync(settings, _ExplodingBackend(token))
        defs = build_definitions(settings, sync=sync)
        sensor = defs.resolve_sensor_def(ALERT_SENSOR)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING  # on by default once the webhook is set
        with dg.DagsterInstance.ephemeral() as instance:
            result = defs.resolve_job_def(SYNC_JOB).execute_in_process(
                run_config=run_config(), instance=instance, partition_key="2025", raise_on_error=False
            )
            assert not result.success
            run = instance.get_run_by_id(result.run_id)
            [failure_event] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
            context = dg.build_run_status_sensor_context(
                sensor_name=ALERT_SENSOR,
                dagster_event=failure_event,
                dagster_instance=instance,
                dagster_run=run,
                resources={RESOURCE_KEY: sync},
            ).for_run_failure()
            sensor(context)
        [posted] = hook.received
    assert posted["path"] == f"/services/{token}" and posted["content_type"] == "application/json"
    assert token not in posted["body"].decode() and "s3cr3t" not in posted["body"].decode()
    message = json.loads(posted["body"])
    assert set(message) == {"text", "job", "fiscal_year", "error", "run_id", "run_url"}
    assert message["job"] == SYNC_JOB and message["fiscal_year"] == "2025" and message["run_id"] == result.run_id
    assert message["run_url"] == f"https://dagster.example.org/runs/{result.run_id}"
    assert message["error"].startswith("RuntimeError: could not reach the database: bad credentials ***")
    assert (
        message["text"].startswith(f"compliance_sync: {SYNC_JOB} failed for FY2025: RuntimeError")
        and len(message["text"]) <= 1000
    )


def test_failure_alert_is_stopped_without_a_webhook(tmp_path):
    settings = load_settings(tmp_path, {"COMPLIANCE_SYNC_BU_MAP": str(EXAMPLE_BU_MAP)})
    sensor = build_definitions(settings).resolve_sensor_def(ALERT_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


# --- 5. freshness -----------------------------------------------------------------------------------------------
def test_freshness_policy_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMPLIANCE_SYNC_FRESHNESS_HOURS", "12")
    graph = build_definitions().resolve_asset_graph()
    for name in TARGET_NAMES:
        policy = graph.get(dg.AssetKey(name)).freshness_policy
        assert policy is not None and policy.fail_window.to_timedelta() == dt.timedelta(hours=12), name
    assert graph.get(dg.AssetKey("account_plans")).freshness_policy is None


# --- 2. no untimestamped warning ------------------------------------------------------------------------------
def test_loading_the_code_location_prints_no_untimestamped_warning(tmp_path):
    """The code location as the webserver, daemon and run workers load it, with every warning shown: the
    partitioned checks' PreviewWarning is filtered, and whatever else warns goes through the timestamped log."""
    code = (
        "import dagster as dg\n"
        "import compliance_sync.definitions as d\n"
        "defs = d.defs()\n"
        "dg.Definitions.validate_loadable(defs)\n"
        "for job in defs.resolve_all_job_defs(): "
        "job.get_subset(asset_selection=set(job.asset_layer.executable_asset_keys))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPLIANCE_SYNC_", "PYTHONWARNINGS"))}
    env["COMPLIANCE_SYNC_BU_MAP"] = str(EXAMPLE_BU_MAP)
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PreviewWarning" not in proc.stderr
    untimestamped = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[")]
    assert untimestamped == [], "\n".join(untimestamped)


def test_unchanged_live_run_still_materialises_all_four(demo_db):
    """ "Last synced" moves even when nothing changed: every live run records the four targets."""
    job = build_definitions().resolve_job_def(SYNC_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        first = job.execute_in_process(
            run_config=run_config(), instance=instance, partition_key="2025", asset_selection=[dg.AssetKey(APAC)]
        )
        second = job.execute_in_process(
            run_config=run_config(), instance=instance, partition_key="2025", asset_selection=[dg.AssetKey(APAC)]
        )
        assert first.success and second.success
        mats = {m.asset_key.to_user_string(): m.materialization for m in second.get_asset_materialization_events()}
        assert set(mats) == set(TARGET_NAMES)
        assert all(m.metadata["rows_written"].value == 0 for m in mats.values())
        assert mats[APAC].metadata[SUMMARY].value["status"] == "unchanged"
    assert [r[0] for r in ledger(demo_db)] == [first.run_id, second.run_id]


# --- the code location as Dagster loads it ------------------------------------------------------------------------
def test_the_code_location_is_built_when_dagster_loads_it(monkeypatch, tmp_path):
    """``defs`` is a ``@dg.definitions`` function: importing the package builds nothing; calling it (as
    ``dagster dev`` and ``dg`` do) gives the jobs, schedule and sensors; a bad setting stops it with one line."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMPLIANCE_SYNC_BU_MAP", str(EXAMPLE_BU_MAP))
    assert not isinstance(location.defs, dg.Definitions)
    defs = location.defs()
    assert {j.name for j in defs.resolve_all_job_defs()} >= {SYNC_JOB, DRY_RUN_JOB, CHECKS_JOB}
    assert defs.resolve_schedule_def("compliance_sync_daily").cron_schedule == "0 6 * * *"
    monkeypatch.setenv("COMPLIANCE_SYNC_SCHEDULE_CRON", "0 6 * *")
    with pytest.raises(location.SettingsLoadError) as err:
        location.defs()
    assert (
        str(err.value)
        == "COMPLIANCE_SYNC_SCHEDULE_CRON: '0 6 * *' is not a valid cron schedule (five fields, e.g. '0 6 * * *')"
    )
    assert err.value.__cause__ is None
