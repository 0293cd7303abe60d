"""Change-driven runs (issue 7): the direct backend's fingerprint follows every row of the FY's sources, and the
sensor requests one run per (FY, fingerprint, date) when they change, never twice for the same state."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import psycopg
import pytest

from compliance_sync.backends.postgres import PostgresBackend
from compliance_sync.config.settings import load_settings
from compliance_sync.definitions import build_definitions
from compliance_sync.definitions.resources import RESOURCE_KEY, ComplianceSyncResource, FixedSync
from compliance_sync.definitions.sensors import CHANGE_SENSOR, FIRST_LOOK
from compliance_sync.definitions.tags import AS_OF_TAG, OP_NAME, TRIGGER_TAG
from compliance_sync.domain.fiscal import FiscalYear, fiscal_year_of


@pytest.fixture
def demo(demo_db, monkeypatch):
    monkeypatch.setenv("COMPLIANCE_SYNC_FIRST_FY", "2024")
    return demo_db


def execute(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE segmentation_events SET completed = NOT coalesce(completed, false) "
        "WHERE id = (SELECT id FROM segmentation_events WHERE event_date BETWEEN '{start}' AND '{end}' "
        "ORDER BY id LIMIT 1)",
        "UPDATE tier_event_requirements SET frequency = frequency + 1 "
        "WHERE id = (SELECT id FROM tier_event_requirements ORDER BY id LIMIT 1)",
        "UPDATE client_segmentation c SET tier_id = "
        "(SELECT t.id FROM segmentation_tiers t WHERE t.id IS DISTINCT FROM c.tier_id ORDER BY t.id LIMIT 1) "
        "WHERE id = (SELECT id FROM client_segmentation WHERE effective_to IS NULL ORDER BY id LIMIT 1)",
        "UPDATE account_plans SET status = 'archived' "
        "WHERE id = (SELECT id FROM account_plans WHERE fiscal_year = {year} ORDER BY id LIMIT 1)",
        "UPDATE territory_strategies SET territory = territory || ' (renamed)' "
        "WHERE id = (SELECT id FROM territory_strategies WHERE fiscal_year = {year} ORDER BY id LIMIT 1)",
    ],
    ids=["flipped completed flag", "frequency edit", "tier move", "plan archived", "territory renamed"],
)
def test_the_fingerprint_follows_each_kind_of_edit(demo, edit):
    fy = FiscalYear(2026)
    backend = PostgresBackend(demo)
    before = backend.fingerprint(fy)
    assert backend.fingerprint(fy) == before  # stable while nothing changes
    execute(demo, edit.format(start=fy.start, end=fy.end, year=fy.year))
    assert backend.fingerprint(fy) != before


def test_an_edit_outside_the_fy_leaves_its_fingerprint_alone(demo):
    fy = FiscalYear(2026)
    backend = PostgresBackend(demo)
    before = backend.fingerprint(fy)
    execute(demo, "UPDATE account_plans SET status = 'draft' WHERE fiscal_year = 2024")
    assert backend.fingerprint(fy) == before


def tick_context(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorEvaluationContext:
    """A tick as the daemon evaluates it: the code location's resource (settings read at the tick)."""
    return dg.build_sensor_context(
        cursor=cursor,
        instance=instance,
        repository_def=defs.get_repository_def(),
        resources={RESOURCE_KEY: ComplianceSyncResource()},
    )


def test_the_sensor_requests_one_run_per_changed_state(demo):
    settings = load_settings()
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def(CHANGE_SENSOR)
    today = settings.today()
    key = str(fiscal_year_of(today).year)
    with dg.instance_for_test() as instance:
        first = sensor.evaluate_tick(tick_context(defs, instance))
        assert first.run_requests == [] and first.cursor  # first look: fingerprints recorded, nothing requested
        assert first.skip_message == FIRST_LOOK and "baseline" in FIRST_LOOK
        again = sensor.evaluate_tick(tick_context(defs, instance, first.cursor))
        assert again.run_requests == []  # unchanged: nothing
        fy = FiscalYear(int(key))
        execute(
            demo,
            "UPDATE segmentation_events SET completed = NOT coalesce(completed, false) "
            f"WHERE id = (SELECT id FROM segmentation_events WHERE event_date BETWEEN '{fy.start}' AND '{fy.end}' "
            "ORDER BY id LIMIT 1)",
        )
        changed = sensor.evaluate_tick(tick_context(defs, instance, again.cursor))
        [request] = changed.run_requests
        assert request.partition_key == key
        assert request.run_config["ops"][OP_NAME]["config"]["as_of"] == today.isoformat()
        assert request.run_key.startswith(f"fy{key}-") and request.run_key.endswith(today.isoformat())
        assert request.tags[TRIGGER_TAG] == "change" and request.tags[AS_OF_TAG] == fy.as_of(today).isoformat()
        after = sensor.evaluate_tick(tick_context(defs, instance, changed.cursor))
        assert after.run_requests == []  # the same state never triggers twice


def test_the_sensor_reads_its_backend_from_the_resource(demo, tmp_path):
    """The backend the sensor fingerprints is the resource's, at each tick, not one chosen when the location
    loaded: a resource pointing at another database gives that database's fingerprints."""
    settings = load_settings()
    sensor = build_definitions(settings).resolve_sensor_def(CHANGE_SENSOR)
    fy = fiscal_year_of(settings.today())

    class Counting(PostgresBackend):
        calls: list[str] = []

        def fingerprint(self, fy):
            self.calls.append(fy.key)
            return "fixed"

    resource = FixedSync(settings, Counting(demo))
    result = sensor.evaluate_tick(dg.build_sensor_context(resources={RESOURCE_KEY: resource}))
    assert Counting.calls and Counting.calls[0] == fy.key
    assert json.loads(result.cursor)[fy.key] == "fixed"


def test_the_sensor_is_off_by_default_and_on_by_setting(demo, monkeypatch):
    assert (
        build_definitions(load_settings()).resolve_sensor_def(CHANGE_SENSOR).default_status
        == dg.DefaultSensorStatus.STOPPED
    )
    monkeypatch.setenv("COMPLIANCE_SYNC_CHANGE_SENSOR", "true")
    monkeypatch.setenv("COMPLIANCE_SYNC_CHANGE_SENSOR_INTERVAL", "120")
    sensor = build_definitions(load_settings()).resolve_sensor_def(CHANGE_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 120


def test_today_is_a_date():
    assert isinstance(load_settings(environ={}).today(), dt.date)
