"""The direct PostgreSQL backend against a real server: readers, schema check, writes, lock, ledger.

Every test gets a fresh database with the full schema (``migrated_db``) and hand-made rows.
"""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import time
from typing import Any

import pandas as pd
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from compliance_sync.backends.postgres import LOCK_CLASS, PostgresBackend, describe_dsn
from compliance_sync.diff import diff_all, to_json
from compliance_sync.fiscal import FiscalYear
from compliance_sync.model import (
    APAC,
    BUSINESS_UNIT,
    FACT_COLUMNS,
    REQUIREMENTS,
    TARGET_BY_NAME,
    TARGETS,
    TERRITORY,
    ConnectionFailure,
    DataError,
)
from compliance_sync_tests.scenario import Scenario, apac_row, appendix_a, bu_row, d, uid

D = decimal.Decimal
UTC = dt.timezone.utc
RUN1 = dt.datetime(2025, 7, 1, 6, 0, tzinfo=UTC)
RUN2 = dt.datetime(2025, 7, 2, 6, 0, tzinfo=UTC)
FY25 = FiscalYear(2025, 1)
FY26_JUL = FiscalYear(2026, 7)  # 2025-07-01 … 2026-06-30


# --- helpers ---------------------------------------------------------------------------------------------
def insert(conn: psycopg.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        cols = list(row)
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.Placeholder() * len(cols)),
            ),
            [Jsonb(v, dumps=to_json) if isinstance(v, (list, dict)) else v for v in row.values()],
        )


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def load(url: str, s: Scenario) -> None:
    with psycopg.connect(url) as conn:
        insert(conn, "segmentation_tiers", s.tiers)
        insert(conn, "segmentation_event_types", s.types)
        insert(conn, "tier_event_requirements", s.requirements)
        insert(conn, "client_segmentation", s.periods)
        insert(conn, "account_plans", s.plans)
        insert(conn, "territory_strategies", s.strategies)
        insert(conn, "segmentation_events", s.events)
        insert(conn, "segmentation_event_compliance", s.cache)
        insert(conn, "client_event_exclusions", s.exclusions or [])


def table_rows(url: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(sql.SQL("SELECT to_jsonb(t) FROM {} t ORDER BY id").format(sql.Identifier(table)))]


def snapshot(url: str) -> dict[str, list]:
    return {t.name: table_rows(url, t.name) for t in TARGETS}


def records(frame: pd.DataFrame) -> list[tuple]:
    return sorted((tuple(r) for r in frame.itertuples(index=False)), key=repr)


def read_facts(url: str, fy: FiscalYear, as_of: dt.date | None = None):
    with PostgresBackend(url).session(fy, as_of or fy.end) as s:
        return s.facts, s.current, list(s.warnings)


def frame(target: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = list(TARGET_BY_NAME[target].columns)
    if not rows:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns, dtype=object)


def wanted(**by_target: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    names = {"requirements": REQUIREMENTS, "territory": TERRITORY, "bu": BUSINESS_UNIT, "apac": APAC}
    rows = {names[k]: v for k, v in by_target.items()}
    return {t.name: frame(t.name, rows.get(t.name, [])) for t in TARGETS}


def req_row(plan: str, code: str, fy: int = 2025, **kw: Any) -> dict[str, Any]:
    row = {
        "plan_id": uid(plan),
        "event_type_id": uid("type:" + code),
        "fiscal_year": fy,
        "client_id": None,
        "client_name": "Alpha Health",
        "segment": "Leverage",
        "event_type_name": code.title(),
        "required_count": 4,
        "completed_count": 2,
        "scheduled_count": 1,
        "compliance_percentage": D("50.00"),
        "status": "at_risk",
        "next_due_date": d("2025-09-30"),
        "linked_event_ids": [uid("e1"), uid("e2")],
    }
    row.update(kw)
    return row


def terr_row(strategy: str, fy: int = 2025, **kw: Any) -> dict[str, Any]:
    row = {
        "territory_strategy_id": uid(strategy),
        "fiscal_year": fy,
        "territory": "VIC + NZ",
        "cse_name": "Kim Lee",
        "total_clients": 1,
        "total_required_events": 19,
        "total_completed_events": 10,
        "overall_compliance_percentage": D("52.63"),
        "clients_at_risk": 0,
        "clients_critical": 1,
        "segment_breakdown": {"Collaboration": {"clients": 1, "total_required": 19, "total_completed": 10, "compliance": D("52.63")}},
        "monthly_capacity": {"2025-01": {"required": 1, "completed": 1, "scheduled": 0}},
    }
    row.update(kw)
    return row


def sync(url: str, fy: FiscalYear, want: dict[str, pd.DataFrame], run_ts: dt.datetime, ledger: dict | None = None):
    """Open a session, diff against ``want``, apply; returns (diff, session)."""
    with PostgresBackend(url).session(fy, fy.end) as s:
        diff = diff_all(fy.year, s.current, want, s.facts.source_counts)
        s.apply(diff, run_ts, ledger)
    return diff, s


def advisory_locks(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
            (LOCK_CLASS,),
        ).fetchone()[0]


@pytest.fixture
def db(migrated_db: str) -> str:
    return migrated_db


# --- connection -------------------------------------------------------------------------------------------
def test_connection_failure_never_shows_the_password(server_url: str) -> None:
    host = psycopg.conninfo.conninfo_to_dict(server_url).get("host", "127.0.0.1")
    for dsn, shown in (
        (f"postgresql://cs_no_such_role:S3cretPw-xyz@{host}:5432/postgres", f"{host}:5432/postgres"),
        ("postgresql://someone:S3cretPw-xyz@127.0.0.1:1/plans", "127.0.0.1:1/plans"),
    ):
        backend = PostgresBackend(dsn, connect_timeout=3)
        assert "S3cretPw" not in repr(backend)
        with pytest.raises(ConnectionFailure) as err:
            with backend.session(FY25, d("2025-06-30")):
                pass
        assert "S3cretPw" not in str(err.value)
        assert shown in str(err.value)
        assert err.value.exit_code == 4


def test_malformed_dsn_is_not_echoed() -> None:
    for dsn in ("host=127.0.0.1 password=se cret", "postgresql://u:p%ZZw@127.0.0.1:5432/db"):
        with pytest.raises(ConnectionFailure) as err:
            with PostgresBackend(dsn).session(FY25, d("2025-06-30")):
                pass
        assert "cret" not in str(err.value) and "ZZ" not in str(err.value)
        assert "malformed" in str(err.value)


def test_describe_dsn_shows_host_port_database_only() -> None:
    assert describe_dsn("postgresql://u:pw@db.example.co:6543/postgres?sslmode=require") == "db.example.co:6543/postgres"
    assert describe_dsn("host=h port=5433 dbname=x user=u password=pw") == "h:5433/x"
    assert "pw" not in describe_dsn("not a dsn ::: password=pw")


# --- readers --------------------------------------------------------------------------------------------
def test_facts_frames_have_the_fact_columns_and_object_dtype_even_when_empty(db: str) -> None:
    facts, current, warnings = read_facts(db, FY25)
    for name, columns in FACT_COLUMNS.items():
        df = getattr(facts, name)
        assert tuple(df.columns) == columns, name
        assert len(df) == 0
    for target in TARGETS:
        assert tuple(current[target.name].columns) == target.key + target.owned + ("updated_at", "has_foreign")
    assert facts.exclusions is not None
    assert facts.source_counts["account_plans"] == 0
    assert warnings == []


def test_plans_of_the_fy_are_read_unfiltered_by_status(db: str) -> None:
    s = Scenario(2025)
    s.plan("p-approved", "Alpha", status="approved", client_id=uid("client-alpha"))
    s.plan("p-archived", "Beta", status="archived")
    s.plan("p-null", "Gamma", status=None)
    s.plan("p-other-year", "Alpha", year=2024)
    load(db, s)
    facts, _, _ = read_facts(db, FY25)
    assert records(facts.plans) == records(
        pd.DataFrame(
            [
                (uid("p-approved"), uid("client-alpha"), "Alpha", "approved"),
                (uid("p-archived"), None, "Beta", "archived"),
                (uid("p-null"), None, "Gamma", None),
            ],
            columns=FACT_COLUMNS["plans"],
        )
    )
    assert all(isinstance(v, str) for v in facts.plans["id"])
    assert facts.source_counts["account_plans"] == 3


def test_segment_periods_overlapping_the_fy_boundaries(db: str) -> None:
    s = Scenario(2026, 7)  # 2025-07-01 … 2026-06-30
    s.tier("Leverage")
    s.period("A", "Leverage", "2024-01-01", "2025-06-30", label="ends-day-before-start")
    s.period("B", "Leverage", "2024-01-01", "2025-07-01", label="ends-on-start")
    s.period("C", "Leverage", "2026-06-30", None, label="starts-on-last-day")
    s.period("D", "Leverage", "2026-07-01", None, label="starts-day-after-end")
    s.period("E", "Leverage", "2020-01-01", None, label="open-since-long")
    s.period("F", None, "2025-10-01", "2025-11-30", label="null-tier-inside", cse=None)
    load(db, s)
    facts, _, _ = read_facts(db, FY26_JUL)
    assert sorted(facts.periods["id"]) == sorted(uid(x) for x in ("ends-on-start", "starts-on-last-day", "open-since-long", "null-tier-inside"))
    row = facts.periods.set_index("id").loc[uid("ends-on-start")]
    assert row["effective_from"] == d("2024-01-01") and row["effective_to"] == d("2025-07-01")
    assert row["tier_id"] == uid("tier:Leverage") and row["cse_name"] == "Kim Lee"
    assert facts.periods.set_index("id").loc[uid("null-tier-inside")]["tier_id"] is None
    assert facts.source_counts["client_segmentation"] == 4


def test_event_aggregation(db: str) -> None:
    s = Scenario(2025, 1, as_of="2025-06-30")
    s.event_type("SLA")
    s.event("first-day", "Alpha", "SLA", "2025-01-01")
    s.event("day-before", "Alpha", "SLA", "2024-12-31")
    s.event("day-after", "Alpha", "SLA", "2026-01-01")
    s.event("last-day", "Alpha", "SLA", "2025-12-31", completed=False)
    s.event("future-done", "Alpha", "SLA", "2025-07-10", completed=True)
    s.event("null-done", "Alpha", "SLA", "2025-07-20", completed=None)
    s.event("as-of-day", "Alpha", "SLA", "2025-06-30", completed=True)
    s.event("jun-not-done", "Alpha", "SLA", "2025-06-01", completed=False)
    # same day: ordered by id (uuid order) after the date
    same_day = sorted([uid("same-1"), uid("same-2"), uid("same-3")])
    for label in ("same-1", "same-2", "same-3"):
        s.event(label, "Alpha", "SLA", "2025-03-05")
    s.event("earlier", "Alpha", "SLA", "2025-03-04")
    s.event("no-type", "Alpha", None, "2025-02-02")
    s.event("undated", "Alpha", "SLA", None)
    s.event("other-client", "Beta", "SLA", "2025-01-01", completed=False)
    load(db, s)
    facts, _, _ = read_facts(db, FY25, d("2025-06-30"))
    ef = facts.event_facts
    assert tuple(ef.columns) == FACT_COLUMNS["event_facts"]
    assert all(ef[c].dtype == object for c in ef.columns)
    got = {(r.client_name, r.event_type_id, r.fy_month): r for r in ef.itertuples(index=False)}
    sla = uid("type:SLA")

    def check(key, completed, scheduled, future, ids):
        r = got[key]
        assert (r.completed, r.scheduled, r.completed_future, r.event_ids) == (completed, scheduled, future, ids), key

    check(("Alpha", sla, 1), 1, 0, 0, [uid("first-day")])
    check(("Alpha", sla, 12), 0, 1, 0, [uid("last-day")])
    check(("Alpha", sla, 7), 0, 2, 1, [uid("future-done"), uid("null-done")])
    check(("Alpha", sla, 6), 1, 1, 0, [uid("jun-not-done"), uid("as-of-day")])
    check(("Alpha", sla, 3), 4, 0, 0, [uid("earlier")] + same_day)
    check(("Alpha", None, 2), 1, 0, 0, [uid("no-type")])
    check(("Beta", sla, 1), 0, 1, 0, [uid("other-client")])
    assert len(got) == 7  # nothing from 2024-12-31 or 2026-01-01
    assert all(isinstance(v, int) for v in ef["completed"])
    assert records(facts.undated_events) == [(uid("undated"), "Alpha")]
    # 12 events in the window + 1 undated
    assert facts.source_counts["segmentation_events"] == 13


def test_event_fy_months_compliance_cache_and_calendar_counts_across_two_calendar_years(db: str) -> None:
    s = Scenario(2026, 7, as_of="2026-06-30")  # 2025-07-01 … 2026-06-30
    s.event_type("SLA")
    s.event("jul-1", "Alpha", "SLA", "2025-07-01")
    s.event("jun-30", "Alpha", "SLA", "2026-06-30")
    s.event("jun-30-prev", "Alpha", "SLA", "2025-06-30")  # calendar 2025, outside the FY
    s.event("dec-2026", "Alpha", "SLA", "2026-12-01")  # calendar 2026, outside the FY
    s.event("dec-2024", "Alpha", "SLA", "2024-12-31")  # neither
    s.event("jan-2027", "Alpha", "SLA", "2027-01-01")  # neither
    s.event("not-done-2025", "Alpha", "SLA", "2025-09-01", completed=False)
    s.event("null-done-2026", "Alpha", "SLA", "2026-02-01", completed=None)
    s.event("no-type-2026", "Alpha", None, "2026-03-01")
    for year, actual in ((2024, 9), (2025, 3), (2026, 4), (2027, 8)):
        s.cache.append({"client_name": "Alpha", "event_type_id": uid("type:SLA"), "year": year, "actual_count": actual, "expected_count": 4})
    load(db, s)
    facts, _, _ = read_facts(db, FY26_JUL)
    sla = uid("type:SLA")
    months = {(r.event_type_id, r.fy_month): (r.completed, r.scheduled) for r in facts.event_facts.itertuples(index=False)}
    assert months == {(sla, 1): (1, 0), (sla, 12): (1, 0), (sla, 3): (0, 1), (sla, 8): (0, 1), (None, 9): (1, 0)}
    assert records(facts.compliance_cache) == [("Alpha", sla, 2025, 3), ("Alpha", sla, 2026, 4)]
    assert facts.source_counts["segmentation_event_compliance"] == 2
    assert records(facts.calendar_completed) == sorted(
        [("Alpha", sla, 2025, 2), ("Alpha", sla, 2026, 2), ("Alpha", None, 2026, 1)], key=repr
    )


def test_whole_tables_strategies_of_the_fy_and_exclusions(db: str) -> None:
    s = Scenario(2025)
    s.tier("Leverage")
    s.event_type("SLA", active=None)
    s.require("Leverage", "SLA", 3)
    s.strategy("ts1", "Kim Lee", "VIC + NZ", quarter=" ", updated_at=dt.datetime(2025, 1, 2, 3, 4, tzinfo=UTC))
    s.strategy("ts-2024", "Kim Lee", "VIC + NZ", year=2024)
    s.exclude("Alpha", "SLA", None)
    load(db, s)
    facts, _, _ = read_facts(db, FY25)
    assert records(facts.tiers) == [(uid("tier:Leverage"), "Leverage")]
    assert records(facts.event_types) == [(uid("type:SLA"), "Sla", "SLA", None)]
    assert records(facts.requirements) == [(uid("tier:Leverage"), uid("type:SLA"), 3)]
    assert records(facts.strategies) == [
        (uid("ts1"), "Kim Lee", "VIC + NZ", " ", "approved", dt.datetime(2025, 1, 2, 3, 4, tzinfo=UTC))
    ]
    assert isinstance(facts.strategies["updated_at"][0], dt.datetime)
    assert records(facts.exclusions) == [("Alpha", uid("type:SLA"), None)]
    assert facts.source_counts["client_event_exclusions"] == 1
    assert facts.source_counts["territory_strategies"] == 1


def test_facts_match_the_client_side_builder_on_appendix_a(db: str) -> None:
    s = appendix_a()
    s.event("undated", "Alpha Health", "SLA_REVIEW", None)
    s.cache.append({"client_name": "Alpha Health", "event_type_id": uid("type:SLA_REVIEW"), "year": 2025, "actual_count": 1})
    load(db, s)
    facts, _, _ = read_facts(db, s.fy, s.as_of)
    expected = s.facts()
    for name in FACT_COLUMNS:
        assert records(getattr(facts, name)) == records(getattr(expected, name)), name
    assert facts.source_counts == expected.source_counts


# --- schema check -----------------------------------------------------------------------------------------
def open_error(url: str) -> str:
    with pytest.raises(DataError) as err:
        read_facts(url, FY25)
    assert err.value.exit_code == 3
    return str(err.value)


def test_missing_table_is_an_error(db: str) -> None:
    execute(db, "DROP TABLE segmentation_tiers", "DROP TABLE apac_planning_goals")
    message = open_error(db)
    assert "segmentation_tiers does not exist" in message
    assert "apac_planning_goals does not exist" in message
    assert advisory_locks(db) == 0


def test_missing_exclusions_table_is_only_a_warning(db: str) -> None:
    execute(db, "DROP TABLE client_event_exclusions")
    facts, _, warnings = read_facts(db, FY25)
    assert facts.exclusions is None
    assert "client_event_exclusions" not in facts.source_counts
    assert any(w.startswith("client_event_exclusions does not exist") for w in warnings)


def test_missing_column_is_an_error(db: str) -> None:
    execute(db, "ALTER TABLE account_plans DROP COLUMN status", "ALTER TABLE account_plan_event_requirements DROP COLUMN linked_event_ids")
    message = open_error(db)
    assert "account_plans.status is missing" in message
    assert "account_plan_event_requirements.linked_event_ids is missing" in message


def test_wrong_type_is_an_error_without_coercion(db: str) -> None:
    execute(
        db,
        "ALTER TABLE tier_event_requirements ALTER COLUMN frequency TYPE text",
        "ALTER TABLE segmentation_events ALTER COLUMN completed TYPE text",
        "ALTER TABLE account_plans ALTER COLUMN id TYPE text",
        "ALTER TABLE segmentation_event_compliance ALTER COLUMN compliance_percentage TYPE double precision",
        "ALTER TABLE apac_planning_goals ALTER COLUMN bu_contributions TYPE json",
    )
    message = open_error(db)
    assert "tier_event_requirements.frequency has type text, expected integer (no coercion)" in message
    assert "segmentation_events.completed has type text, expected boolean (no coercion)" in message
    assert "account_plans.id has type text, expected uuid (no coercion)" in message
    assert "segmentation_event_compliance.compliance_percentage has type double precision, expected numeric" in message
    assert "apac_planning_goals.bu_contributions has type json, expected jsonb" in message


def test_accepted_type_variants(db: str) -> None:
    execute(
        db,
        "ALTER TABLE account_plans ALTER COLUMN client_name TYPE varchar(200)",
        "ALTER TABLE territory_strategies ALTER COLUMN quarter TYPE char(2)",
        "ALTER TABLE territory_strategies ALTER COLUMN updated_at TYPE timestamp without time zone",
        "ALTER TABLE account_plans ALTER COLUMN fiscal_year TYPE bigint",
        "ALTER TABLE tier_event_requirements ALTER COLUMN frequency TYPE smallint",
        "CREATE DOMAIN short_text AS text",
        "ALTER TABLE segmentation_tiers ALTER COLUMN tier_name TYPE short_text",
    )
    facts, _, _ = read_facts(db, FY25)
    assert tuple(facts.plans.columns) == FACT_COLUMNS["plans"]


def test_enum_status_accepted_on_sources_not_on_targets(db: str) -> None:
    execute(
        db,
        "CREATE TYPE plan_status AS ENUM ('draft', 'submitted', 'in_review', 'revision_requested', 'approved', 'archived')",
        "ALTER TABLE account_plans ALTER COLUMN status DROP DEFAULT",
        "ALTER TABLE account_plans ALTER COLUMN status TYPE plan_status USING status::plan_status",
        "INSERT INTO account_plans (client_name, fiscal_year, status) VALUES ('Alpha', 2025, 'archived')",
    )
    facts, _, _ = read_facts(db, FY25)
    assert facts.plans["status"].tolist() == ["archived"]  # labels read as text: the rules can compare them
    execute(
        db,
        "CREATE TYPE req_status AS ENUM ('critical', 'at_risk', 'compliant', 'exceeded')",
        "ALTER TABLE account_plan_event_requirements ALTER COLUMN status TYPE req_status USING status::req_status",
    )
    with pytest.raises(DataError, match=r"account_plan_event_requirements\.status has type req_status, expected text"):
        read_facts(db, FY25)


def test_missing_unique_key_is_an_error_naming_the_minimal_migration(db: str) -> None:
    execute(db, "DROP INDEX business_unit_planning_compliance_sync_key")
    message = open_error(db)
    assert "business_unit_planning" in message and "(bu_name, fiscal_year)" in message
    assert "compliance-sync migrate --minimal" in message


def test_partial_or_wrong_unique_index_does_not_count(db: str) -> None:
    execute(
        db,
        "DROP INDEX territory_compliance_summary_compliance_sync_key",
        "CREATE UNIQUE INDEX tcs_partial ON territory_compliance_summary (territory_strategy_id, fiscal_year) WHERE fiscal_year > 2000",
        "DROP INDEX apac_planning_goals_compliance_sync_key",
        "CREATE UNIQUE INDEX apg_wider ON apac_planning_goals (fiscal_year, id)",
    )
    message = open_error(db)
    assert "territory_compliance_summary has no unique index on (territory_strategy_id, fiscal_year)" in message
    assert "apac_planning_goals has no unique index on (fiscal_year)" in message


def test_unique_key_under_another_name_or_as_constraint_is_accepted(db: str) -> None:
    execute(
        db,
        "DROP INDEX business_unit_planning_compliance_sync_key",
        "ALTER TABLE business_unit_planning ADD CONSTRAINT bup_fy_bu UNIQUE (fiscal_year, bu_name)",
        "DROP INDEX apac_planning_goals_compliance_sync_key",
        "CREATE UNIQUE INDEX whatever_name ON apac_planning_goals (fiscal_year)",
    )
    read_facts(db, FY25)
    diff, _ = sync(db, FY25, wanted(bu=[bu_row("ANZ")], apac=[apac_row()]), RUN1)
    assert diff.targets[BUSINESS_UNIT].counts()["inserted"] == 1
    assert len(table_rows(db, BUSINESS_UNIT)) == 1


# --- current rows -----------------------------------------------------------------------------------------
def test_current_rows_typed_and_has_foreign(db: str) -> None:
    with psycopg.connect(db) as conn:
        insert(conn, REQUIREMENTS, [req_row("p1", "SLA") | {"updated_at": RUN1}, req_row("p2", "SLA", notes="keep me")])
        insert(conn, REQUIREMENTS, [req_row("p3", "SLA", ai_recommended_dates=["2025-03-01"]), req_row("p9", "SLA", fy=2024)])
        insert(conn, BUSINESS_UNIT, [bu_row("ANZ", revenue_target=D("1000")), bu_row("SEA")])
    _, current, _ = read_facts(db, FY25)
    req = current[REQUIREMENTS].set_index("plan_id")
    assert sorted(req.index) == sorted([uid("p1"), uid("p2"), uid("p3")])
    p1 = req.loc[uid("p1")]
    assert p1["compliance_percentage"] == D("50.00") and isinstance(p1["compliance_percentage"], D)
    assert p1["linked_event_ids"] == [uid("e1"), uid("e2")]
    assert p1["next_due_date"] == d("2025-09-30")
    assert p1["updated_at"] == RUN1
    assert p1["event_type_id"] == uid("type:SLA") and p1["fiscal_year"] == 2025
    assert dict(zip(req.index, req["has_foreign"])) == {uid("p1"): False, uid("p2"): True, uid("p3"): True}
    bu = current[BUSINESS_UNIT].set_index("bu_name")
    assert dict(zip(bu.index, bu["has_foreign"])) == {"ANZ": True, "SEA": False}
    assert bu.loc["ANZ"]["territory_data"][0]["compliance"] == 52.63


# --- writes ---------------------------------------------------------------------------------------------
def test_insert_all_four_targets(db: str) -> None:
    want = wanted(
        requirements=[req_row("p1", "SLA"), req_row("p1", "QBR", linked_event_ids=[], next_due_date=None)],
        territory=[terr_row("ts1")],
        bu=[bu_row("ANZ")],
        apac=[apac_row()],
    )
    diff, session = sync(db, FY25, want, RUN1)
    assert {n: t.counts()["inserted"] for n, t in diff.targets.items()} == {REQUIREMENTS: 2, TERRITORY: 1, BUSINESS_UNIT: 1, APAC: 1}
    assert session.written[REQUIREMENTS] == {"upserted": 2, "deleted": 0}
    _, current, _ = read_facts(db, FY25)
    req = current[REQUIREMENTS].set_index("event_type_id")
    assert req.loc[uid("type:SLA")]["linked_event_ids"] == [uid("e1"), uid("e2")]
    assert req.loc[uid("type:QBR")]["linked_event_ids"] == []
    assert req.loc[uid("type:QBR")]["next_due_date"] is None
    assert set(req["updated_at"]) == {RUN1}
    terr = current[TERRITORY].iloc[0]
    assert terr["segment_breakdown"]["Collaboration"]["compliance"] == 52.63
    assert terr["overall_compliance_percentage"] == D("52.63")
    assert current[APAC].iloc[0]["bu_contributions"][0]["bu_name"] == "ANZ"
    # the same wanted rows again: nothing to do
    diff2, _ = sync(db, FY25, want, RUN2)
    assert diff2.changes == 0
    with psycopg.connect(db) as conn:
        rows = conn.execute(f"SELECT id, created_at FROM {REQUIREMENTS}").fetchall()
    assert all(r[0] is not None and r[1] is not None for r in rows)


def test_update_keeps_foreign_columns_and_unchanged_rows_keep_updated_at(db: str) -> None:
    sync(db, FY25, wanted(requirements=[req_row("p1", "SLA"), req_row("p2", "SLA")], bu=[bu_row("ANZ")], apac=[apac_row()]), RUN1)
    execute(
        db,
        f"UPDATE {REQUIREMENTS} SET notes = 'call Kim', ai_recommended_dates = '[\"2025-10-01\"]' WHERE plan_id = '{uid('p1')}'",
        f"UPDATE {BUSINESS_UNIT} SET revenue_target = 12345.67, target_compliance = 90",
        f"UPDATE {APAC} SET target_compliance = 85, notes = 'goal'",
    )
    before = {r["plan_id"]: r for r in table_rows(db, REQUIREMENTS)}
    want = wanted(
        requirements=[req_row("p1", "SLA", completed_count=3, compliance_percentage=D("75.00"), linked_event_ids=[uid("e1"), uid("e2"), uid("e3")]), req_row("p2", "SLA")],
        bu=[bu_row("ANZ", overall_compliance_percentage=D("60.00"))],
        apac=[apac_row(actual_compliance=D("60.00"))],
    )
    diff, _ = sync(db, FY25, want, RUN2)
    assert diff.targets[REQUIREMENTS].counts() == {"inserted": 0, "updated": 1, "deleted": 0, "orphans": 0, "unchanged": 1}
    after = {r["plan_id"]: r for r in table_rows(db, REQUIREMENTS)}
    p1 = after[uid("p1")]
    assert p1["notes"] == "call Kim" and p1["ai_recommended_dates"] == ["2025-10-01"]
    assert p1["completed_count"] == 3 and p1["compliance_percentage"] == 75.0
    assert p1["linked_event_ids"] == [uid("e1"), uid("e2"), uid("e3")]
    assert p1["id"] == before[uid("p1")]["id"] and p1["created_at"] == before[uid("p1")]["created_at"]
    assert p1["updated_at"] != before[uid("p1")]["updated_at"]
    assert after[uid("p2")] == before[uid("p2")]  # unchanged: not written, updated_at kept
    bu = table_rows(db, BUSINESS_UNIT)[0]
    assert (bu["revenue_target"], bu["target_compliance"], bu["overall_compliance_percentage"]) == (12345.67, 90, 60.0)
    apac = table_rows(db, APAC)[0]
    assert (apac["target_compliance"], apac["notes"], apac["actual_compliance"]) == (85, "goal", 60.0)


def test_delete_prunes_plain_rows_and_keeps_orphans(db: str) -> None:
    sync(db, FY25, wanted(requirements=[req_row("p1", "SLA"), req_row("p2", "SLA"), req_row("p3", "SLA")], territory=[terr_row("ts1"), terr_row("ts2")]), RUN1)
    with psycopg.connect(db) as conn:
        insert(conn, REQUIREMENTS, [req_row("p1", "SLA", fy=2024)])  # another FY: never touched
    execute(db, f"UPDATE {REQUIREMENTS} SET notes = 'keep me' WHERE plan_id = '{uid('p2')}' AND fiscal_year = 2025")
    execute(db, f"UPDATE {TERRITORY} SET notes = 'ours' WHERE territory_strategy_id = '{uid('ts2')}'")
    diff, session = sync(db, FY25, wanted(requirements=[req_row("p3", "SLA")], territory=[]), RUN2)
    req = diff.targets[REQUIREMENTS]
    assert req.deletes == [(uid("p1"), uid("type:SLA"), 2025)]
    assert req.orphans == [(uid("p2"), uid("type:SLA"), 2025)]
    assert session.written[REQUIREMENTS] == {"upserted": 0, "deleted": 1}
    rows = {(r["plan_id"], r["fiscal_year"]): r for r in table_rows(db, REQUIREMENTS)}
    assert set(rows) == {(uid("p2"), 2025), (uid("p3"), 2025), (uid("p1"), 2024)}
    assert rows[(uid("p2"), 2025)]["notes"] == "keep me"
    assert [r["territory_strategy_id"] for r in table_rows(db, TERRITORY)] == [uid("ts2")]


def test_delete_is_guarded_in_sql_against_foreign_data(db: str) -> None:
    """A diff computed from a stale picture never deletes a row that carries foreign data."""
    sync(db, FY25, wanted(requirements=[req_row("p1", "SLA")]), RUN1)
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        diff = diff_all(2025, s.current, wanted(), s.facts.source_counts)
        assert len(diff.targets[REQUIREMENTS].deletes) == 1
        # someone adds a note in the same transaction's view (simulated: same connection)
        s.conn.execute(f"UPDATE {REQUIREMENTS} SET notes = 'late note'")
        s.apply(diff, RUN2)
    assert s.written[REQUIREMENTS]["deleted"] == 0
    assert [r["notes"] for r in table_rows(db, REQUIREMENTS)] == ["late note"]


def test_bu_reset_rows_are_written(db: str) -> None:
    sync(db, FY25, wanted(bu=[bu_row("ANZ"), bu_row("SEA")], apac=[apac_row()]), RUN1)
    diff, _ = sync(db, FY25, wanted(bu=[bu_row("ANZ")], apac=[apac_row()]), RUN2)
    assert diff.targets[BUSINESS_UNIT].counts()["updated"] == 1
    sea = [r for r in table_rows(db, BUSINESS_UNIT) if r["bu_name"] == "SEA"][0]
    assert (sea["overall_compliance_percentage"], sea["clients_below_compliance"], sea["territory_count"], sea["territory_data"]) == (None, 0, 0, [])


def test_failure_between_targets_leaves_every_table_as_it_was(db: str) -> None:
    sync(
        db,
        FY25,
        wanted(requirements=[req_row("p1", "SLA"), req_row("p2", "SLA")], territory=[terr_row("ts1")], bu=[bu_row("ANZ")], apac=[apac_row()]),
        RUN1,
    )
    execute(
        db,
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
        f"CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON {BUSINESS_UNIT} FOR EACH ROW EXECUTE FUNCTION boom()",
    )
    before = snapshot(db)
    want = wanted(
        requirements=[req_row("p2", "SLA", completed_count=4), req_row("p3", "SLA")],  # update, insert, delete p1
        territory=[terr_row("ts1", total_clients=2), terr_row("ts2")],
        bu=[bu_row("ANZ", territory_count=2)],
        apac=[apac_row(below_compliance_accounts=2)],
    )
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        diff = diff_all(2025, s.current, want, s.facts.source_counts)
        assert [diff.targets[n].changes for n in (REQUIREMENTS, TERRITORY, BUSINESS_UNIT, APAC)] == [3, 2, 1, 1]
        with pytest.raises(DataError) as err:
            s.apply(diff, RUN2, ledger={"fiscal_year": 2025, "started_at": RUN2, "status": "succeeded"})
        assert f"writing {BUSINESS_UNIT} failed" in str(err.value) and "injected failure" in str(err.value)
        assert s.written[REQUIREMENTS] == {"upserted": 2, "deleted": 1}  # done, then rolled back
        assert snapshot(db) == before  # nothing visible while the session is still open
        assert s.record_failure({"fiscal_year": 2025, "started_at": RUN2, "status": "failed", "error": str(err.value)}) is True
    assert snapshot(db) == before
    assert [(r["status"], "injected failure" in r["error"]) for r in table_rows(db, "compliance_sync_runs")] == [("failed", True)]
    assert advisory_locks(db) == 0


def test_dry_run_and_errors_roll_back_and_release_the_lock(db: str) -> None:
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        s.conn.execute(f"INSERT INTO {APAC} (fiscal_year) VALUES (2025)")  # never committed
        assert advisory_locks(db) == 1
    assert table_rows(db, APAC) == [] and advisory_locks(db) == 0
    with pytest.raises(RuntimeError):
        with PostgresBackend(db).session(FY25, FY25.end) as s:
            s.conn.execute(f"INSERT INTO {APAC} (fiscal_year) VALUES (2025)")
            raise RuntimeError("boom")
    assert table_rows(db, APAC) == [] and advisory_locks(db) == 0


def test_second_writer_of_the_same_fy_waits_and_sees_the_first_result(db: str) -> None:
    backend = PostgresBackend(db)
    seen: dict[str, Any] = {}

    def second() -> None:
        try:
            with backend.session(FY25, FY25.end) as s2:
                seen["opened"] = time.monotonic()
                seen["current"] = s2.current[REQUIREMENTS].copy()
        except Exception as exc:  # pragma: no cover - reported below
            seen["error"] = exc

    with backend.session(FY25, FY25.end) as s1:
        thread = threading.Thread(target=second)
        thread.start()
        # wait until the second session is blocked on the advisory lock
        deadline = time.monotonic() + 10
        waiting = 0
        with psycopg.connect(db, autocommit=True) as watch:
            while time.monotonic() < deadline and not waiting:
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
                ).fetchone()[0]
                time.sleep(0.05)
        assert waiting == 1 and thread.is_alive() and "opened" not in seen
        # another FY is not blocked
        with backend.session(FiscalYear(2026, 1), d("2026-01-31")) as other:
            assert other.facts.fiscal_year == 2026
        diff = diff_all(2025, s1.current, wanted(requirements=[req_row("p1", "SLA")], apac=[apac_row()]), s1.facts.source_counts)
        applied = time.monotonic()
        s1.apply(diff, RUN1)
    thread.join(30)
    assert not thread.is_alive() and "error" not in seen
    assert seen["opened"] >= applied
    assert list(seen["current"]["plan_id"]) == [uid("p1")]  # the snapshot was taken after the lock
    assert advisory_locks(db) == 0


# --- ledger -------------------------------------------------------------------------------------------
LEDGER = {
    "fiscal_year": 2025,
    "as_of": d("2025-06-30"),
    "started_at": RUN1,
    "finished_at": RUN1 + dt.timedelta(seconds=3),
    "backend": "postgres",
    "mode": "live",
    "status": "succeeded",
    "clients_processed": 1,
    "clients_skipped": 0,
    "rows_inserted": 1,
    "rows_updated": 0,
    "rows_deleted": 0,
    "rows_unchanged": 0,
    "orphans": 0,
    "territories": 0,
    "business_units": 0,
    "error": None,
}


def test_ledger_row_is_written_in_the_same_transaction(db: str) -> None:
    _, session = sync(db, FY25, wanted(apac=[apac_row()]), RUN1, ledger=LEDGER)
    assert session.warnings == []
    rows = table_rows(db, "compliance_sync_runs")
    assert len(rows) == 1
    row = rows[0]
    assert {k: row[k] for k in ("fiscal_year", "as_of", "backend", "mode", "status", "rows_inserted", "error")} == {
        "fiscal_year": 2025, "as_of": "2025-06-30", "backend": "postgres", "mode": "live", "status": "succeeded", "rows_inserted": 1, "error": None,
    }
    # only the keys present are inserted
    sync(db, FY25, wanted(apac=[apac_row()]), RUN2, ledger={"fiscal_year": 2025, "started_at": RUN2, "status": "succeeded"})
    rows = table_rows(db, "compliance_sync_runs")
    assert len(rows) == 2 and rows[1]["mode"] is None


def test_ledger_table_missing_is_a_warning(db: str) -> None:
    execute(db, "DROP TABLE compliance_sync_runs")
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        assert s.warnings == ["compliance_sync_runs does not exist: run not recorded"]
        diff = diff_all(2025, s.current, wanted(apac=[apac_row()]), s.facts.source_counts)
        s.apply(diff, RUN1, ledger=LEDGER)
    assert s.warnings == ["compliance_sync_runs does not exist: run not recorded"]  # once
    assert len(table_rows(db, APAC)) == 1


def test_record_failure_writes_a_failed_ledger_row(db: str) -> None:
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        s.conn.execute(f"INSERT INTO {APAC} (fiscal_year) VALUES (2025)")  # the run's own work: rolled back
        assert s.record_failure(LEDGER | {"status": "failed", "error": "invariant violated"}) is True
        with pytest.raises(RuntimeError):
            s.apply(diff_all(2025, s.current, wanted(), s.facts.source_counts), RUN1)
    rows = table_rows(db, "compliance_sync_runs")
    assert [(r["status"], r["error"]) for r in rows] == [("failed", "invariant violated")]
    assert table_rows(db, APAC) == []


# --- end to end with the rules ----------------------------------------------------------------------------
def test_appendix_a_end_to_end(db: str) -> None:
    from compliance_sync.rules import compute

    s = appendix_a()
    load(db, s)
    backend = PostgresBackend(db)
    with backend.session(s.fy, s.as_of) as session:
        comp = compute(session.facts, s.fy, s.thresholds, s.bu_map)
        diff = diff_all(2025, session.current, comp.wanted, session.facts.source_counts)
        assert diff.guards == []
        session.apply(diff, RUN1)
    req = {r["event_type_name"]: r for r in table_rows(db, REQUIREMENTS)}
    sla = req["Sla Review"]
    assert (sla["required_count"], sla["completed_count"], sla["scheduled_count"], sla["compliance_percentage"], sla["status"], sla["next_due_date"]) == (
        4, 2, 2, 50.0, "at_risk", "2025-09-30",
    )
    assert sla["linked_event_ids"] == [uid(x) for x in ("a1", "a2", "a3", "a4")]
    assert table_rows(db, APAC)[0]["actual_compliance"] == 52.63
    assert table_rows(db, BUSINESS_UNIT)[0]["territory_data"] == [{"territory": "VIC + NZ", "cse_name": "Kim Lee", "clients": 1, "compliance": 52.63}]
    with backend.session(s.fy, s.as_of) as session:
        comp = compute(session.facts, s.fy, s.thresholds, s.bu_map)
        diff = diff_all(2025, session.current, comp.wanted, session.facts.source_counts)
    assert diff.changes == 0
