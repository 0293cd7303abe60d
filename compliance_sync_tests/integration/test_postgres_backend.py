"""The direct PostgreSQL backend against a real server: readers, schema check, the SQL diff, writes, lock,
ledger.

Every test gets a fresh database with the full schema (``migrated_db``) and hand-made rows.
"""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from compliance_sync.backends.postgres import LOCK_CLASS, PostgresBackend
from compliance_sync.config.secrets import describe_dsn
from compliance_sync.domain.diff import Action
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.ledger import LedgerRow
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TARGETS, TERRITORY
from compliance_sync.errors import ConnectionFailure, DataError
from compliance_sync_tests.scenario import Scenario, apac_row, appendix_a, bu_row, d, uid, wanted_rows
from compliance_sync_tests.world import execute, insert, load

D = decimal.Decimal
UTC = dt.UTC
RUN1 = dt.datetime(2025, 7, 1, 6, 0, tzinfo=UTC)
RUN2 = dt.datetime(2025, 7, 2, 6, 0, tzinfo=UTC)
FY25 = FiscalYear(2025, 1)
FY26_JUL = FiscalYear(2026, 7)  # 2025-07-01 … 2026-06-30


# --- helpers ---------------------------------------------------------------------------------------------
def table_rows(url: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        return [
            r[0]
            for r in conn.execute(sql.SQL("SELECT to_jsonb(t) FROM {} t ORDER BY id").format(sql.Identifier(table)))
        ]


def snapshot(url: str) -> dict[str, list]:
    return {t.name: table_rows(url, t.name) for t in TARGETS}


def read_facts(url: str, fy: FiscalYear, as_of: dt.date | None = None):
    with PostgresBackend(url).session(fy, as_of or fy.end) as s:
        return s.read_facts(), list(s.warnings)


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
        "linked_event_ids": [],
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
        "segment_breakdown": {
            "Collaboration": {"clients": 1, "total_required": 19, "total_completed": 10, "compliance": D("52.63")}
        },
        "monthly_capacity": {"2025-01": {"required": 1, "completed": 1, "scheduled": 0}},
    }
    row.update(kw)
    return row


def wanted(requirements=(), territory=(), bu=(), apac=()):
    return wanted_rows(2025, requirements, territory, bu, apac)


def ledger(status: str = "succeeded", **over: Any) -> LedgerRow:
    row = LedgerRow(
        run_id=f"test-{status}-{time.monotonic_ns()}",
        fiscal_year=2025,
        as_of=d("2025-06-30"),
        started_at=RUN1,
        finished_at=RUN1 + dt.timedelta(seconds=3),
        backend="postgres",
        mode="live",
        status=status,
        rows_inserted=1,
    )
    for k, v in over.items():
        setattr(row, k, v)
    return row


def sync(url: str, fy: FiscalYear, want, run_ts: dt.datetime, record: LedgerRow | None = None):
    """Open a session, read, plan against ``want``, apply; returns (diff, session)."""
    with PostgresBackend(url).session(fy, fy.end) as s:
        s.read_facts()
        diff = s.plan(want, limit=1000)
        s.apply(diff, run_ts, record or ledger())
    return diff, s


def keys(diff, table: str, action: Action) -> list[tuple]:
    return [line.key for line in diff.targets[table].lines if line.action == action]


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
        backend = PostgresBackend(dsn)
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


def test_describe_dsn_shows_host_port_database_only() -> None:
    assert (
        describe_dsn("postgresql://u:pw@db.example.co:6543/postgres?sslmode=require") == "db.example.co:6543/postgres"
    )
    assert describe_dsn("host=h port=5433 dbname=x user=u password=pw") == "h:5433/x"
    assert "pw" not in describe_dsn("not a dsn ::: password=pw")


# --- readers --------------------------------------------------------------------------------------------
def test_facts_of_an_empty_database(db: str) -> None:
    facts, warnings = read_facts(db, FY25)
    for name in (
        "plans",
        "periods",
        "tiers",
        "event_types",
        "requirements",
        "strategies",
        "event_counts",
        "undated_events",
        "compliance_cache",
        "calendar_completed",
    ):
        assert getattr(facts, name) == [], name
    assert facts.exclusions == []
    assert facts.source_counts()["account_plans"] == 0
    assert facts.event_ids is None  # ids stay in PostgreSQL on this path
    assert warnings == []


def test_plans_of_the_fy_in_scope(db: str) -> None:
    s = Scenario(2025)
    s.plan("p-approved", "Alpha", status="approved", client_id=uid("client-alpha"))
    s.plan("p-archived", "Beta", status="archived")
    s.plan("p-null", "Gamma", status=None)
    s.plan("p-other-year", "Alpha", year=2024)
    load(db, s)
    facts, _ = read_facts(db, FY25)
    assert sorted(facts.plans) == sorted(
        [(uid("p-approved"), uid("client-alpha"), "Alpha", "approved"), (uid("p-null"), None, "Gamma", None)]
    )  # status IS DISTINCT FROM 'archived': a NULL status stays in scope
    assert all(isinstance(p.id, str) for p in facts.plans)
    assert facts.source_counts()["account_plans"] == 2


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
    execute(
        db,
        "INSERT INTO client_segmentation (id, client_name, tier_id, effective_from, effective_to) VALUES "
        f"('{uid('inf-to')}', 'G', '{uid('tier:Leverage')}', '2025-08-01', 'infinity'), "
        f"('{uid('minus-inf-from')}', 'H', '{uid('tier:Leverage')}', '-infinity', '2025-09-01')",
    )
    facts, _ = read_facts(db, FY26_JUL)
    by_id = {p.id: p for p in facts.periods}
    assert sorted(by_id) == sorted(
        uid(x)
        for x in (
            "ends-on-start",
            "starts-on-last-day",
            "open-since-long",
            "null-tier-inside",
            "inf-to",
            "minus-inf-from",
        )
    )
    row = by_id[uid("ends-on-start")]
    assert row.effective_from == d("2024-01-01") and row.effective_to == d("2025-07-01")
    assert row.tier_id == uid("tier:Leverage") and row.cse_name == "Kim Lee"
    assert by_id[uid("null-tier-inside")].tier_id is None
    assert by_id[uid("inf-to")].effective_to is None  # 'infinity' is open, like null (SPEC §4.2)
    assert by_id[uid("minus-inf-from")].effective_from == dt.date(1, 1, 1)  # before any FY
    assert facts.source_counts()["client_segmentation"] == 6


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
    same_day = sorted([uid("same-1"), uid("same-2"), uid("same-3")])  # same day: ordered by id after the date
    for label in ("same-1", "same-2", "same-3"):
        s.event(label, "Alpha", "SLA", "2025-03-05")
    s.event("earlier", "Alpha", "SLA", "2025-03-04")
    s.event("no-type", "Alpha", None, "2025-02-02")
    s.event("undated", "Alpha", "SLA", None)
    s.event("other-client", "Beta", "SLA", "2025-01-01", completed=False)
    load(db, s)
    sla = uid("type:SLA")
    with PostgresBackend(db).session(FY25, d("2025-06-30")) as session:
        facts = session.read_facts()
        session.plan(
            wanted(requirements=[req_row("p1", "SLA", client_name="Alpha")]), 10
        )  # the ids are ready when planning
        ids = dict(
            ((c, t), v)
            for c, t, v in session.conn.execute(
                "SELECT client_name, event_type_id::text, ids FROM cs_event_ids"
            ).fetchall()
        )
    got = {(e.client_name, e.event_type_id): e for e in facts.event_counts}
    alpha = got[("Alpha", sla)]
    #                 Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec
    assert alpha.completed == (1, 0, 4, 0, 0, 1, 0, 0, 0, 0, 0, 0)
    assert alpha.scheduled == (0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1)
    assert alpha.completed_future == 1
    assert got[("Alpha", None)].completed == (0, 1) + (0,) * 10
    assert got[("Beta", sla)].scheduled == (1,) + (0,) * 11
    assert len(got) == 3  # nothing from 2024-12-31 or 2026-01-01
    assert ids[("Alpha", sla)] == [
        uid("first-day"),
        uid("earlier"),
        *same_day,
        uid("jun-not-done"),
        uid("as-of-day"),
        uid("future-done"),
        uid("null-done"),
        uid("last-day"),
    ]
    assert ("Alpha", None) not in ids  # events of no type never link
    assert facts.undated_events == [(uid("undated"), "Alpha")]
    assert facts.source_counts()["segmentation_events"] == 13  # 12 events in the window + 1 undated


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
        s.cache.append(
            {
                "client_name": "Alpha",
                "event_type_id": uid("type:SLA"),
                "year": year,
                "actual_count": actual,
                "expected_count": 4,
            }
        )
    load(db, s)
    facts, _ = read_facts(db, FY26_JUL)
    sla = uid("type:SLA")
    got = {e.event_type_id: e for e in facts.event_counts}
    #                     Jul Aug Sep Oct Nov Dec Jan Feb Mar Apr May Jun
    assert got[sla].completed == (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)
    assert got[sla].scheduled == (0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0)
    assert got[None].completed == (0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0)
    assert sorted(facts.compliance_cache) == [("Alpha", sla, 2025, 3), ("Alpha", sla, 2026, 4)]
    assert facts.source_counts()["segmentation_event_compliance"] == 2
    # completed events of the calendar years the cache holds (any date in the year), per cache key
    assert sorted(facts.calendar_completed, key=repr) == sorted(
        [("Alpha", sla, 2025, 2), ("Alpha", sla, 2026, 2)], key=repr
    )


def test_whole_tables_strategies_of_the_fy_and_exclusions(db: str) -> None:
    s = Scenario(2025)
    s.tier("Leverage")
    s.event_type("SLA", active=None)
    s.require("Leverage", "SLA", 3)
    s.strategy("ts1", "Kim Lee", "VIC + NZ", quarter=" ", updated_at=dt.datetime(2025, 1, 2, 3, 4, tzinfo=UTC))
    s.strategy("ts-archived", "Kim Lee", "VIC + NZ", status="archived")
    s.strategy("ts-2024", "Kim Lee", "VIC + NZ", year=2024)
    s.exclude("Alpha", "SLA", None)
    load(db, s)
    facts, _ = read_facts(db, FY25)
    assert facts.tiers == [(uid("tier:Leverage"), "Leverage")]
    assert facts.event_types == [(uid("type:SLA"), "Sla", "SLA", None)]
    assert facts.requirements == [(uid("tier:Leverage"), uid("type:SLA"), 3)]
    assert facts.strategies == [
        (uid("ts1"), "Kim Lee", "VIC + NZ", " ", "approved", dt.datetime(2025, 1, 2, 3, 4, tzinfo=UTC))
    ]
    assert facts.exclusions == [("Alpha", uid("type:SLA"), None)]
    assert facts.source_counts()["client_event_exclusions"] == 1
    assert facts.source_counts()["territory_strategies"] == 1


def test_facts_match_the_client_side_builder_on_appendix_a(db: str) -> None:
    s = appendix_a()
    s.event("undated", "Alpha Health", "SLA_REVIEW", None)
    s.cache.append(
        {"client_name": "Alpha Health", "event_type_id": uid("type:SLA_REVIEW"), "year": 2025, "actual_count": 1}
    )
    load(db, s)
    facts, _ = read_facts(db, s.fy, s.as_of)
    expected = s.facts()
    for name in (
        "plans",
        "periods",
        "tiers",
        "event_types",
        "requirements",
        "strategies",
        "exclusions",
        "event_counts",
        "undated_events",
        "compliance_cache",
        "calendar_completed",
    ):
        assert sorted(getattr(facts, name), key=repr) == sorted(getattr(expected, name), key=repr), name
    assert facts.source_counts() == expected.source_counts()


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
    facts, warnings = read_facts(db, FY25)
    assert facts.exclusions is None
    assert "client_event_exclusions" not in facts.source_counts()
    assert any(w.startswith("client_event_exclusions does not exist") for w in warnings)


def test_missing_column_is_an_error(db: str) -> None:
    execute(
        db,
        "ALTER TABLE account_plans DROP COLUMN status",
        "ALTER TABLE account_plan_event_requirements DROP COLUMN linked_event_ids",
    )
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
    assert "tier_event_requirements.frequency has type text, expected integer or bigint (no coercion)" in message
    assert "segmentation_events.completed has type text, expected boolean (no coercion)" in message
    assert "account_plans.id has type text, expected uuid (no coercion)" in message
    assert "segmentation_event_compliance.compliance_percentage has type double precision, expected numeric" in message
    assert "apac_planning_goals.bu_contributions has type json, expected jsonb" in message


@pytest.mark.parametrize(
    "statement, fragment",
    [
        (
            "ALTER TABLE account_plan_event_requirements ALTER COLUMN compliance_percentage TYPE numeric(5,1)",
            "compliance_percentage has type numeric(5,1)",
        ),
        (
            "ALTER TABLE territory_compliance_summary ALTER COLUMN overall_compliance_percentage TYPE numeric(4,2)",
            "overall_compliance_percentage has type numeric(4,2)",
        ),
        (
            "ALTER TABLE account_plan_event_requirements ALTER COLUMN status TYPE char(12)",
            "status has type character(12), which pads",
        ),
        (
            "ALTER TABLE territory_compliance_summary ALTER COLUMN total_required_events TYPE smallint",
            "total_required_events has type smallint",
        ),
        (
            "ALTER TABLE apac_planning_goals ALTER COLUMN updated_at TYPE timestamp without time zone",
            "apac_planning_goals.updated_at has type timestamp without time zone",
        ),
    ],
)
def test_a_target_column_that_cannot_hold_the_values_exactly_is_an_error(
    db: str, statement: str, fragment: str
) -> None:
    execute(db, statement)
    assert fragment in open_error(db)


def test_varchar_target_columns_are_checked_against_the_values(db: str) -> None:
    execute(db, "ALTER TABLE business_unit_planning ALTER COLUMN bu_name TYPE varchar(3)")
    read_facts(db, FY25)  # fits the column type family: checked against the values when planning
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        s.read_facts()
        s.plan(wanted(bu=[bu_row("SEA")], apac=[apac_row()]), 10)  # 3 characters: fine
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        s.read_facts()
        with pytest.raises(
            DataError, match=r"business_unit_planning\.bu_name is varchar\(3\) but the run would write 13 characters"
        ):
            s.plan(wanted(bu=[bu_row("Greater China")], apac=[apac_row()]), 10)


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
        "ALTER TABLE account_plan_event_requirements ALTER COLUMN compliance_percentage TYPE numeric(6,2)",
        "ALTER TABLE apac_planning_goals ALTER COLUMN actual_compliance TYPE numeric",
        "ALTER TABLE business_unit_planning ALTER COLUMN territory_count TYPE bigint",
    )
    facts, _ = read_facts(db, FY25)
    assert facts.plans == []


def test_enum_status_accepted_on_sources_not_on_targets(db: str) -> None:
    execute(
        db,
        "CREATE TYPE plan_status AS ENUM "
        "('draft', 'submitted', 'in_review', 'revision_requested', 'approved', 'archived')",
        "ALTER TABLE account_plans ALTER COLUMN status DROP DEFAULT",
        "ALTER TABLE account_plans ALTER COLUMN status TYPE plan_status USING status::plan_status",
        "INSERT INTO account_plans (client_name, fiscal_year, status) "
        "VALUES ('Alpha', 2025, 'archived'), ('Beta', 2025, 'draft')",
    )
    facts, _ = read_facts(db, FY25)
    assert [p.status for p in facts.plans] == ["draft"]  # labels read as text: the archived one filtered out
    execute(
        db,
        "CREATE TYPE req_status AS ENUM ('critical', 'at_risk', 'compliant', 'exceeded')",
        "ALTER TABLE account_plan_event_requirements ALTER COLUMN status TYPE req_status USING status::req_status",
    )
    with pytest.raises(DataError, match=r"account_plan_event_requirements\.status has type req_status, expected text"):
        read_facts(db, FY25)


def test_a_view_as_target_is_an_error_naming_what_to_do(db: str) -> None:
    execute(db, f"ALTER TABLE {APAC} RENAME TO apac_base", f"CREATE VIEW {APAC} AS SELECT * FROM apac_base")
    message = open_error(db)
    assert f"{APAC} is a view, not a table" in message and "migrate --minimal" not in message


def test_missing_unique_key_is_an_error_naming_the_minimal_migration(db: str) -> None:
    execute(db, "DROP INDEX business_unit_planning_compliance_sync_key")
    message = open_error(db)
    assert "business_unit_planning" in message and "(bu_name, fiscal_year)" in message
    assert "compliance-sync migrate --minimal" in message


def test_partial_or_wrong_unique_index_does_not_count(db: str) -> None:
    execute(
        db,
        "DROP INDEX territory_compliance_summary_compliance_sync_key",
        "CREATE UNIQUE INDEX tcs_partial ON territory_compliance_summary (territory_strategy_id, fiscal_year) "
        "WHERE fiscal_year > 2000",
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
    diff, _ = sync(db, FY25, wanted(bu=[bu_row("ANZ")], apac=[apac_row()]), RUN1)
    assert diff.targets[BUSINESS_UNIT].counts()["inserted"] == 1
    assert len(table_rows(db, BUSINESS_UNIT)) == 1


def test_row_level_security_the_role_cannot_bypass_is_an_error(db: str) -> None:
    role = f"cs_rls_{uid(db)[:8]}"
    execute(
        db,
        f"CREATE ROLE {role} LOGIN",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
        "ALTER TABLE segmentation_events ENABLE ROW LEVEL SECURITY",
    )
    try:
        url = psycopg.conninfo.make_conninfo(db, user=role)
        message = open_error(url)
        assert "row-level security is enabled on segmentation_events" in message and role in message
        execute(db, f"ALTER ROLE {role} BYPASSRLS")
        read_facts(url, FY25)  # bypassing: fine
    finally:
        execute(db, f"REASSIGN OWNED BY {role} TO postgres", f"DROP OWNED BY {role}", f"DROP ROLE {role}")


# --- the diff in SQL ---------------------------------------------------------------------------------------
def test_plan_reports_deletes_orphans_and_typed_old_values(db: str) -> None:
    with psycopg.connect(db) as conn:
        insert(conn, REQUIREMENTS, [req_row("p1", "SLA") | {"updated_at": RUN1}, req_row("p2", "SLA", notes="keep me")])
        insert(
            conn,
            REQUIREMENTS,
            [req_row("p3", "SLA", ai_recommended_dates=["2025-03-01"]), req_row("p9", "SLA", fy=2024)],
        )
        insert(conn, BUSINESS_UNIT, [bu_row("ANZ", revenue_target=D("1000")), bu_row("SEA")])
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        s.read_facts()
        diff = s.plan(wanted(), limit=10)
    req = diff.targets[REQUIREMENTS]
    assert req.counts() == {"inserted": 0, "updated": 0, "deleted": 1, "orphans": 2, "unchanged": 0}
    assert req.current_count == 3 and req.current_completed == 6
    assert keys(diff, REQUIREMENTS, Action.DELETE) == [(uid("p1"), uid("type:SLA"), 2025)]
    assert sorted(keys(diff, REQUIREMENTS, Action.ORPHAN)) == sorted(
        [(uid("p2"), uid("type:SLA"), 2025), (uid("p3"), uid("type:SLA"), 2025)]
    )
    [line] = [line for line in req.lines if line.action == Action.DELETE]
    assert line.old["compliance_percentage"] == D("50.00") and isinstance(line.old["compliance_percentage"], D)
    assert line.old["next_due_date"] == d("2025-09-30") and line.old["linked_event_ids"] == []
    bu = diff.targets[BUSINESS_UNIT]  # not computed: reset (SPEC §4.8), whatever they carry
    assert bu.counts()["updated"] == 2 and bu.current_with_territories == 2


def test_plan_lines_are_capped_in_key_order(db: str) -> None:
    want = wanted(requirements=[req_row(f"p{i}", "SLA") for i in range(30)])
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        s.read_facts()
        diff = s.plan(want, limit=7)
    req = diff.targets[REQUIREMENTS]
    assert req.inserted == 30 and len(req.lines) == 7 and req.hidden() == 23
    assert [line.key[0] for line in req.lines] == sorted(uid(f"p{i}") for i in range(30))[:7]


def test_rows_with_a_null_key_are_counted_and_never_touched(db: str) -> None:
    execute(db, f"ALTER TABLE {REQUIREMENTS} ALTER COLUMN plan_id DROP NOT NULL")
    with psycopg.connect(db) as conn:
        insert(conn, REQUIREMENTS, [req_row("p1", "SLA") | {"plan_id": None}])
    diff, _ = sync(db, FY25, wanted(apac=[apac_row()]), RUN1)
    req = diff.targets[REQUIREMENTS]
    assert req.null_keys == 1 and req.deleted == 0 and req.current_count == 0
    assert [r["plan_id"] for r in table_rows(db, REQUIREMENTS)] == [None]


# --- writes ---------------------------------------------------------------------------------------------
def test_insert_all_four_targets(db: str) -> None:
    s = Scenario(2025)
    s.event_type("SLA")
    s.event("e1", "Alpha Health", "SLA", "2025-02-01")
    s.event("e2", "Alpha Health", "SLA", "2025-03-01")
    load(db, s)
    want = wanted(
        requirements=[req_row("p1", "SLA"), req_row("p1", "QBR", next_due_date=None)],
        territory=[terr_row("ts1")],
        bu=[bu_row("ANZ")],
        apac=[apac_row()],
    )
    diff, session = sync(db, FY25, want, RUN1)
    assert {n: t.counts()["inserted"] for n, t in diff.targets.items()} == {
        REQUIREMENTS: 2,
        TERRITORY: 1,
        BUSINESS_UNIT: 1,
        APAC: 1,
    }
    assert session.committed
    req = {r["event_type_id"]: r for r in table_rows(db, REQUIREMENTS)}
    assert req[uid("type:SLA")]["linked_event_ids"] == [uid("e1"), uid("e2")]  # from the FY's events, in order
    assert req[uid("type:QBR")]["linked_event_ids"] == []
    assert req[uid("type:QBR")]["next_due_date"] is None
    assert {r["updated_at"] for r in req.values()} == {"2025-07-01T06:00:00+00:00"}
    terr = table_rows(db, TERRITORY)[0]
    assert terr["segment_breakdown"]["Collaboration"]["compliance"] == 52.63
    assert terr["overall_compliance_percentage"] == 52.63
    assert table_rows(db, APAC)[0]["bu_contributions"][0]["bu_name"] == "ANZ"
    diff2, _ = sync(db, FY25, want, RUN2)  # the same wanted rows again: nothing to do
    assert diff2.changes == 0
    assert all(r["id"] is not None and r["created_at"] is not None for r in table_rows(db, REQUIREMENTS))


def test_update_keeps_foreign_columns_and_unchanged_rows_keep_updated_at(db: str) -> None:
    sync(
        db,
        FY25,
        wanted(
            requirements=[req_row("p1", "SLA"), req_row("p2", "SLA", client_name="Beta")],
            bu=[bu_row("ANZ")],
            apac=[apac_row()],
        ),
        RUN1,
    )
    execute(
        db,
        f"UPDATE {REQUIREMENTS} SET notes = 'call Kim', ai_recommended_dates = '[\"2025-10-01\"]' "
        f"WHERE plan_id = '{uid('p1')}'",
        f"UPDATE {BUSINESS_UNIT} SET revenue_target = 12345.67, target_compliance = 90",
        f"UPDATE {APAC} SET target_compliance = 85, notes = 'goal'",
    )
    before = {r["plan_id"]: r for r in table_rows(db, REQUIREMENTS)}
    want = wanted(
        requirements=[
            req_row("p1", "SLA", completed_count=3, compliance_percentage=D("75.00")),
            req_row("p2", "SLA", client_name="Beta"),
        ],
        bu=[bu_row("ANZ", overall_compliance_percentage=D("60.00"))],
        apac=[apac_row(actual_compliance=D("60.00"))],
    )
    diff, _ = sync(db, FY25, want, RUN2)
    assert diff.targets[REQUIREMENTS].counts() == {
        "inserted": 0,
        "updated": 1,
        "deleted": 0,
        "orphans": 0,
        "unchanged": 1,
    }
    [line] = diff.targets[REQUIREMENTS].lines
    assert (line.old["completed_count"], line.new["completed_count"]) == (2, 3)
    after = {r["plan_id"]: r for r in table_rows(db, REQUIREMENTS)}
    p1 = after[uid("p1")]
    assert p1["notes"] == "call Kim" and p1["ai_recommended_dates"] == ["2025-10-01"]
    assert p1["completed_count"] == 3 and p1["compliance_percentage"] == 75.0
    assert p1["id"] == before[uid("p1")]["id"] and p1["created_at"] == before[uid("p1")]["created_at"]
    assert p1["updated_at"] != before[uid("p1")]["updated_at"]
    assert after[uid("p2")] == before[uid("p2")]  # unchanged: not written, updated_at kept
    bu = table_rows(db, BUSINESS_UNIT)[0]
    assert (bu["revenue_target"], bu["target_compliance"], bu["overall_compliance_percentage"]) == (12345.67, 90, 60.0)
    apac = table_rows(db, APAC)[0]
    assert (apac["target_compliance"], apac["notes"], apac["actual_compliance"]) == (85, "goal", 60.0)


def test_delete_prunes_plain_rows_and_keeps_orphans(db: str) -> None:
    sync(
        db,
        FY25,
        wanted(
            requirements=[req_row("p1", "SLA"), req_row("p2", "SLA"), req_row("p3", "SLA")],
            territory=[terr_row("ts1"), terr_row("ts2")],
        ),
        RUN1,
    )
    with psycopg.connect(db) as conn:
        insert(conn, REQUIREMENTS, [req_row("p1", "SLA", fy=2024)])  # another FY: never touched
    execute(db, f"UPDATE {REQUIREMENTS} SET notes = 'keep me' WHERE plan_id = '{uid('p2')}' AND fiscal_year = 2025")
    execute(db, f"UPDATE {TERRITORY} SET notes = 'ours' WHERE territory_strategy_id = '{uid('ts2')}'")
    diff, _ = sync(db, FY25, wanted(requirements=[req_row("p3", "SLA")]), RUN2)
    assert keys(diff, REQUIREMENTS, Action.DELETE) == [(uid("p1"), uid("type:SLA"), 2025)]
    assert keys(diff, REQUIREMENTS, Action.ORPHAN) == [(uid("p2"), uid("type:SLA"), 2025)]
    rows = {(r["plan_id"], r["fiscal_year"]): r for r in table_rows(db, REQUIREMENTS)}
    assert set(rows) == {(uid("p2"), 2025), (uid("p3"), 2025), (uid("p1"), 2024)}
    assert rows[(uid("p2"), 2025)]["notes"] == "keep me"
    assert [r["territory_strategy_id"] for r in table_rows(db, TERRITORY)] == [uid("ts2")]


def test_delete_is_guarded_in_sql_against_foreign_data(db: str) -> None:
    """A row that gets foreign data after the plan is never deleted."""
    sync(db, FY25, wanted(requirements=[req_row("p1", "SLA")]), RUN1)
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        s.read_facts()
        diff = s.plan(wanted(), 10)
        assert diff.targets[REQUIREMENTS].deleted == 1
        s.conn.execute(f"UPDATE {REQUIREMENTS} SET notes = 'late note'")  # simulated: the same transaction's view
        s.apply(diff, RUN2, ledger())
    assert [r["notes"] for r in table_rows(db, REQUIREMENTS)] == ["late note"]


def test_bu_reset_rows_are_written(db: str) -> None:
    sync(db, FY25, wanted(bu=[bu_row("ANZ"), bu_row("SEA")], apac=[apac_row()]), RUN1)
    diff, _ = sync(db, FY25, wanted(bu=[bu_row("ANZ")], apac=[apac_row()]), RUN2)
    assert diff.targets[BUSINESS_UNIT].counts()["updated"] == 1
    sea = [r for r in table_rows(db, BUSINESS_UNIT) if r["bu_name"] == "SEA"][0]
    assert (
        sea["overall_compliance_percentage"],
        sea["clients_below_compliance"],
        sea["territory_count"],
        sea["territory_data"],
    ) == (None, 0, 0, [])
    diff, _ = sync(db, FY25, wanted(bu=[bu_row("ANZ")], apac=[apac_row()]), RUN2)
    assert diff.changes == 0  # a reset row stays reset


def test_failure_between_targets_leaves_every_table_as_it_was(db: str) -> None:
    sync(
        db,
        FY25,
        wanted(
            requirements=[req_row("p1", "SLA"), req_row("p2", "SLA")],
            territory=[terr_row("ts1")],
            bu=[bu_row("ANZ")],
            apac=[apac_row()],
        ),
        RUN1,
    )
    execute(
        db,
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
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
        s.read_facts()
        diff = s.plan(want, 10)
        assert [diff.targets[n].changes for n in (REQUIREMENTS, TERRITORY, BUSINESS_UNIT, APAC)] == [3, 2, 1, 1]
        with pytest.raises(DataError) as err:
            s.apply(diff, RUN2, ledger())
        assert f"writing {BUSINESS_UNIT}" in str(err.value) and "injected failure" in str(err.value)
        assert snapshot(db) == before  # nothing visible while the session is still open
        s.record_failure(ledger("failed", error=str(err.value)))
        assert not s.committed
    assert snapshot(db) == before
    assert [
        (r["status"], "injected failure" in (r["error"] or "")) for r in table_rows(db, "compliance_sync_runs")
    ] == [("succeeded", False), ("failed", True)]
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


def test_a_plan_writes_nothing_to_a_target_and_fires_no_trigger(db: str) -> None:
    sync(db, FY25, wanted(requirements=[req_row("p1", "SLA")], apac=[apac_row()]), RUN1)
    execute(
        db,
        "CREATE TABLE fired (tg text)",
        "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO fired VALUES (TG_TABLE_NAME); RETURN NULL; END $$",
        *[
            f"CREATE TRIGGER note AFTER INSERT OR UPDATE OR DELETE ON {t.name} "
            "FOR EACH STATEMENT EXECUTE FUNCTION note()"
            for t in TARGETS
        ],
    )
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        s.read_facts()
        diff = s.plan(wanted(requirements=[req_row("p1", "SLA", completed_count=3), req_row("p2", "SLA")]), 10)
        assert diff.changes == 2  # an update and an insert (the APAC row not computed is kept)
        held = s.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND mode = 'RowExclusiveLock' "
            "AND relation::regclass::text = ANY(%s)",
            ([t.name for t in TARGETS],),
        ).fetchone()[0]
        assert held == 0
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM fired").fetchone()[0] == 0


def test_second_writer_of_the_same_fy_waits_and_sees_the_first_result(db: str) -> None:
    backend = PostgresBackend(db)
    seen: dict[str, Any] = {}

    def second() -> None:
        try:
            with backend.session(FY25, FY25.end) as s2:
                seen["opened"] = time.monotonic()
                s2.read_facts()
                seen["diff"] = s2.plan(wanted(requirements=[req_row("p1", "SLA")], apac=[apac_row()]), 10)
        except Exception as exc:  # pragma: no cover - reported below
            seen["error"] = exc

    with backend.session(FY25, FY25.end) as s1:
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 10
        waiting = False
        while time.monotonic() < deadline and not waiting:
            waiting = thread.is_alive() and "opened" not in seen and advisory_locks(db) == 1
            time.sleep(0.6)
        assert waiting and "opened" not in seen
        with backend.session(FiscalYear(2026, 1), d("2026-01-31")) as other:  # another FY is not blocked
            assert other.read_facts().fy.year == 2026
        s1.read_facts()
        diff = s1.plan(wanted(requirements=[req_row("p1", "SLA")], apac=[apac_row()]), 10)
        applied = time.monotonic()
        s1.apply(diff, RUN1, ledger())
    thread.join(30)
    assert not thread.is_alive() and "error" not in seen
    assert seen["opened"] >= applied
    assert seen["diff"].changes == 0  # the snapshot was taken after the lock: it sees the first run's rows
    assert advisory_locks(db) == 0


def test_the_advisory_lock_wait_is_bounded_and_names_the_holder(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as holder:
        holder.execute("SET application_name = 'someone_else'")
        holder.execute("SELECT pg_advisory_lock(%s, 2025)", (LOCK_CLASS,))
        started = time.monotonic()
        with pytest.raises(DataError) as err:
            with PostgresBackend(db, lock_timeout_s=1.5).session(FY25, FY25.end):
                pass
        assert 1.4 <= time.monotonic() - started < 10
    message = str(err.value)
    assert "another run of FY2025 holds its advisory lock" in message and "someone_else" in message
    assert "COMPLIANCE_SYNC_LOCK_TIMEOUT" in message and err.value.exit_code == 3


def test_a_row_lock_held_by_another_session_ends_the_wait_and_names_the_blocker(db: str) -> None:
    sync(db, FY25, wanted(requirements=[req_row("p1", "SLA")], apac=[apac_row()]), RUN1)
    with psycopg.connect(db) as planner:
        planner.execute("SET application_name = 'planning_app'")
        planner.execute(f"SELECT * FROM {REQUIREMENTS} FOR UPDATE")  # holds the row until the end
        with PostgresBackend(db, lock_timeout_s=3).session(FY25, FY25.end) as s:
            s.read_facts()
            diff = s.plan(wanted(requirements=[req_row("p1", "SLA", completed_count=3)], apac=[apac_row()]), 10)
            with pytest.raises(DataError) as err:
                s.apply(diff, RUN2, ledger())
        planner.rollback()
    assert "gave up waiting for a lock" in str(err.value) and "planning_app" in str(err.value)
    assert table_rows(db, REQUIREMENTS)[0]["completed_count"] == 2


# --- ledger -------------------------------------------------------------------------------------------
def test_ledger_row_is_written_in_the_same_transaction(db: str) -> None:
    record = ledger()
    _, session = sync(db, FY25, wanted(apac=[apac_row()]), RUN1, record)
    assert session.warnings == []
    [row] = table_rows(db, "compliance_sync_runs")
    assert {
        k: row[k] for k in ("run_id", "fiscal_year", "as_of", "backend", "mode", "status", "rows_inserted", "error")
    } == {
        "run_id": record.run_id,
        "fiscal_year": 2025,
        "as_of": "2025-06-30",
        "backend": "postgres",
        "mode": "live",
        "status": "succeeded",
        "rows_inserted": 1,
        "error": None,
    }


def test_ledger_without_the_run_id_column_still_records_the_run(db: str) -> None:
    execute(db, "ALTER TABLE compliance_sync_runs DROP COLUMN run_id")
    _, session = sync(db, FY25, wanted(apac=[apac_row()]), RUN1)
    assert any("run_id" in w for w in session.warnings)
    assert len(table_rows(db, "compliance_sync_runs")) == 1


def test_ledger_table_missing_is_a_warning(db: str) -> None:
    execute(db, "DROP TABLE compliance_sync_runs")
    _, session = sync(db, FY25, wanted(apac=[apac_row()]), RUN1)
    assert [w for w in session.warnings if "compliance_sync_runs" in w] == [
        "compliance_sync_runs does not exist: run not recorded (run `compliance-sync migrate --minimal` to add it)"
    ]
    assert len(table_rows(db, APAC)) == 1


def test_record_failure_writes_a_failed_ledger_row(db: str) -> None:
    with PostgresBackend(db).session(FY25, FY25.end) as s:
        s.read_facts()
        diff = s.plan(wanted(apac=[apac_row()]), 10)
        s.conn.execute(f"INSERT INTO {APAC} (fiscal_year, notes) VALUES (2024, 'the run''s own work: rolled back')")
        s.record_failure(ledger("failed", error="invariant violated"))
        with pytest.raises(RuntimeError):
            s.apply(diff, RUN1, ledger())
    assert [(r["status"], r["error"]) for r in table_rows(db, "compliance_sync_runs")] == [
        ("failed", "invariant violated")
    ]
    assert table_rows(db, APAC) == []


# --- end to end with the rules ----------------------------------------------------------------------------
def test_appendix_a_end_to_end(db: str) -> None:
    from compliance_sync.domain.rules import compute

    s = appendix_a()
    load(db, s)
    backend = PostgresBackend(db)
    with backend.session(s.fy, s.as_of) as session:
        comp = compute(session.read_facts(), s.thresholds, s.bu_map)
        diff = session.plan(comp.wanted, 10)
        session.apply(diff, RUN1, ledger())
    req = {r["event_type_name"]: r for r in table_rows(db, REQUIREMENTS)}
    sla = req["Sla Review"]
    assert (
        sla["required_count"],
        sla["completed_count"],
        sla["scheduled_count"],
        sla["compliance_percentage"],
        sla["status"],
        sla["next_due_date"],
    ) == (
        4,
        2,
        2,
        50.0,
        "at_risk",
        "2025-09-30",
    )
    assert sla["linked_event_ids"] == [uid(x) for x in ("a1", "a2", "a3", "a4")]
    assert table_rows(db, APAC)[0]["actual_compliance"] == 52.63
    assert table_rows(db, BUSINESS_UNIT)[0]["territory_data"] == [
        {"territory": "VIC + NZ", "cse_name": "Kim Lee", "clients": 1, "compliance": 52.63}
    ]
    with backend.session(s.fy, s.as_of) as session:
        comp = compute(session.read_facts(), s.thresholds, s.bu_map)
        diff = session.plan(comp.wanted, 10)
    assert diff.changes == 0
