"""The REST backend (Supabase's REST API through supabase-py) against the PostgREST look-alike over real
PostgreSQL (compliance_sync_tests/postgrest_server/).

Issue 11 items 2-8 and issue 12's REST parts: which backend runs and which keys are refused before any
request; reads that miss nothing whatever the server's row cap; the schema check with the direct path's
messages; SPEC §5's writing order (changed rows only, stale rows deleted last and only while nothing foreign
is in them, the ledger once); SPEC §7's exit codes for every REST failure; concurrent runs; and parity with
the direct path, row by row and dry-run line by line. Faults at every request position: test_rest_faults.py.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import os
import shutil
import subprocess
import threading
import time

import dagster as dg
import httpx
import psycopg
import pytest

from compliance_sync.backends import choose_backend, rest
from compliance_sync.backends.catalog import find_key_index
from compliance_sync.backends.port import BackendKind
from compliance_sync.backends.postgres import PostgresBackend
from compliance_sync.backends.rest import RestBackend, key_role
from compliance_sync.backends.rest import client as rest_client
from compliance_sync.backends.rest import write as rest_write
from compliance_sync.config.settings import EXAMPLE_BU_MAP
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, EVENTS, LEDGER_TABLE, REQUIREMENTS, TARGETS, TERRITORY
from compliance_sync.entrypoints import cli
from compliance_sync.errors import ExitCode, SettingsError
from compliance_sync.service.summary import summary as summary_of
from compliance_sync.service.sync import Mode
from compliance_sync_tests.conftest import dagster_home
from compliance_sync_tests.postgrest_server import make_jwt
from compliance_sync_tests.rest_support import (
    ENV_PREFIXES,
    FY25,
    WIDE_CHANGES,
    clone,
    database,
    direct,
    drop,
    ledger_rows,
    record_bodies,
    reset,
    rest_backend,
    rest_server,
    run,
    settings_for,
    target_state,
    while_held,
    wide_scenario,
    writes,
)
from compliance_sync_tests.scenario import appendix_a, uid
from compliance_sync_tests.world import execute, insert, load, scalar

AS_OF = "2025-06-30"
YEAR = ("--year", "2025", "--as-of", AS_OF)
OTHER_SECRET = "another-secret-that-signed-nothing-here-0123456789"


# --- fixtures and helpers ---------------------------------------------------------------------------------
@pytest.fixture
def env(monkeypatch, tmp_path):
    """No stray configuration: a fresh working directory (no .env), no backend variables, the example BU
    map, short retry waits."""
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if (var.startswith(ENV_PREFIXES) and var != "COMPLIANCE_SYNC_TEST_DATABASE_URL") or var == "DAGSTER_HOME":
            monkeypatch.delenv(var)
    monkeypatch.setenv("COMPLIANCE_SYNC_BU_MAP", str(EXAMPLE_BU_MAP))
    monkeypatch.setattr(rest_client, "BACKOFF_S", 0.01)
    return monkeypatch


@pytest.fixture
def copies():
    """``copies(url)``: a clone of that database, dropped after the test."""
    made: list[str] = []

    def make(url: str) -> str:
        made.append(clone(url))
        return made[-1]

    yield make
    for url in made:
        drop(url)


@pytest.fixture(scope="module")
def shared_db(server_url):
    with database(server_url) as url:
        yield url


@pytest.fixture
def appendix_db(shared_db):
    """Appendix A in the module's shared database (for tests that change rows, never the schema)."""
    return reset(shared_db, lambda url: load(url, appendix_a()))


@pytest.fixture
def own_appendix_db(migrated_db):
    """Appendix A in a database of its own (for tests that change the schema)."""
    load(migrated_db, appendix_a())
    return migrated_db


def use_rest(env, srv, key: str | None = None, **variables: object) -> None:
    env.delenv("SUPABASE_DB_URL", raising=False)
    env.setenv("NEXT_PUBLIC_SUPABASE_URL", srv.url)
    env.setenv("SUPABASE_SERVICE_ROLE_KEY", key or srv.service_role_key)
    for name, value in variables.items():
        env.setenv(name, str(value))


def cli_run(capsys, *args: str) -> tuple[int, dict, str]:
    """Exit code, the --json summary, and everything printed (stdout and stderr)."""
    code = cli.main([*args, "--json"])
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["exit_code"] == code, summary
    return code, summary, out.out + out.err


def counts(outcome) -> dict:
    s = summary_of(outcome)
    keys = (
        "targets",
        "clients_processed",
        "clients_skipped",
        "clients_unassigned",
        "clients_at_risk",
        "clients_critical",
        "requirement_rows",
        "territories",
        "business_units",
        "warnings",
        "guards",
        "source_rows",
    )
    return {k: s[k] for k in keys}


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def no_request_errors(outcome) -> None:
    assert outcome.exit_code == 0, outcome.error


def beta_gamma(s):
    """Appendix A plus two Leverage clients of Kim Lee (plans p2, p3), two requirement rows each."""
    for client, plan in (("Beta Care", "p2"), ("Gamma Labs", "p3")):
        s.period(client, "Leverage", "2024-01-01")
        s.plan(plan, client)
        s.event(f"{plan}-e1", client, "SLA_REVIEW", "2025-03-01")
    return s


# --- 1. backend choice and keys ------------------------------------------------------------------------------
def test_backend_choice(env, tmp_path):
    rest_vars = {
        "NEXT_PUBLIC_SUPABASE_URL": "https://abc.supabase.co",
        "SUPABASE_SERVICE_ROLE_KEY": "sb_secret_0123456789abcdef",
    }
    both = settings_for(tmp_path, SUPABASE_DB_URL="postgresql://u@127.0.0.1:5432/db", **rest_vars)
    assert isinstance(choose_backend(both), PostgresBackend)  # the direct connection wins
    backend = choose_backend(settings_for(tmp_path, **rest_vars))
    assert isinstance(backend, RestBackend) and backend.name == BackendKind.REST and not backend.atomic
    assert backend.describe() == "abc.supabase.co" and "sb_secret" not in repr(backend)
    for partial in (
        {},
        {"NEXT_PUBLIC_SUPABASE_URL": "https://abc.supabase.co"},
        {"SUPABASE_SERVICE_ROLE_KEY": "sb_secret_0123456789abcdef"},
    ):
        with pytest.raises(SettingsError) as err:
            choose_backend(settings_for(tmp_path, **partial))
        assert err.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("partial", [{}, {"NEXT_PUBLIC_SUPABASE_URL": "https://abc.supabase.co"}])
def test_no_backend_exits_2_naming_both_options_and_the_demo(env, capsys, partial):
    for name, value in partial.items():
        env.setenv(name, value)
    code, summary, text = cli_run(capsys, *YEAR)
    assert code == 2 and summary["status"] == "failed"
    for needle in ("SUPABASE_DB_URL", "NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "compliance-sync demo"):
        assert needle in summary["error"], needle


def test_key_role_locally():
    assert key_role(make_jwt(OTHER_SECRET, "service_role")) == "service_role"  # the signature is the server's business
    assert key_role("sb_secret_abc123") == "service_role"
    for key, needle in (
        (make_jwt(OTHER_SECRET, "anon"), "'anon'"),
        (make_jwt(OTHER_SECRET, "authenticated"), "'authenticated'"),
        (make_jwt(OTHER_SECRET, None), "None"),
        ("sb_publishable_abc123", "publishable"),
        ("not-a-key", "neither"),
        ("a.b.c", "neither"),
    ):
        with pytest.raises(SettingsError) as err:
            key_role(key)
        assert needle in str(err.value) and key not in str(err.value)


@pytest.mark.parametrize("kind", ["service_role_jwt", "sb_secret"])
def test_accepted_keys_run(appendix_db, env, capsys, kind):
    with rest_server(appendix_db) as srv:
        use_rest(env, srv, srv.service_role_key if kind == "service_role_jwt" else srv.secret_key)
        code, summary, text = cli_run(capsys, *YEAR)
        assert code == 0, text
        assert summary["backend"] == "rest" and summary["targets"][REQUIREMENTS]["inserted"] == 3
        assert {r.role for r in srv.requests} == {"service_role"}
    [ledger] = ledger_rows(appendix_db)
    assert (ledger["backend"], ledger["status"], ledger["run_id"]) == ("rest", "succeeded", summary["run_id"])


@pytest.mark.parametrize("kind", ["anon", "authenticated", "no_role", "other_role", "publishable", "garbage"])
def test_refused_keys_exit_2_without_a_request(appendix_db, env, capsys, kind):
    with rest_server(appendix_db) as srv:
        key = {
            "anon": srv.anon_key,
            "authenticated": srv.make_jwt("authenticated"),
            "no_role": srv.make_jwt(None),
            "other_role": srv.make_jwt("postgres"),
            "publishable": srv.publishable_key,
            "garbage": "this-is-not-a-supabase-key",
        }[kind]
        use_rest(env, srv, key)
        code, summary, text = cli_run(capsys, *YEAR)
        assert code == 2 and "SUPABASE_SERVICE_ROLE_KEY" in summary["error"]
        assert srv.request_count == 0 and srv.requests == []
        assert key not in text


PUBLISHABLE_SAYS = (
    "SUPABASE_SERVICE_ROLE_KEY is an sb_publishable_ (anon) key; use the sb_secret_ key or the service_role JWT"
)


@pytest.mark.parametrize(
    "secret",
    [
        "Xq7Zr2Lm9Pk4Wd8Tn3Vb",
        "publishable0123456789",  # the word the message needs, inside the secret
        "ab_publishable_service_role_KEY99",
        "p%40ss w0rd\"'<>&;$(rm)-publishable",  # percent-encoding, quotes, spaces, shell characters
        "sb_publishable_ünïcødé🔑sb_secret_0",
    ],
)
def test_a_publishable_key_is_named_in_clear_and_its_secret_stays_masked(env, capsys, secret):
    key = "sb_publishable_" + secret
    env.setenv("NEXT_PUBLIC_SUPABASE_URL", "http://127.0.0.1:9")  # never asked: the key is refused first
    env.setenv("SUPABASE_SERVICE_ROLE_KEY", key)
    code, summary, text = cli_run(capsys, *YEAR)
    assert code == 2 and PUBLISHABLE_SAYS in summary["error"], summary["error"]
    shown = text.replace(PUBLISHABLE_SAYS, "")  # the fixed wording says nothing about the key
    leaks = {secret[i : i + 6] for i in range(len(secret) - 5)} & {shown[i : i + 6] for i in range(len(shown) - 5)}
    assert not leaks, leaks


# --- 2. reads complete whatever the cap ----------------------------------------------------------------------
PAGED = {
    "account_plans": (
        "SELECT count(*) FROM account_plans WHERE fiscal_year = 2025 AND status IS DISTINCT FROM 'archived'"
    ),
    "client_segmentation": "SELECT count(*) FROM client_segmentation",
    "territory_strategies": (
        "SELECT count(*) FROM territory_strategies WHERE fiscal_year = 2025 AND status IS DISTINCT FROM 'archived'"
    ),
    "segmentation_events": "SELECT count(*) FROM segmentation_events",
    "segmentation_tiers": "SELECT count(*) FROM segmentation_tiers",
    "segmentation_event_types": "SELECT count(*) FROM segmentation_event_types",
    "tier_event_requirements": "SELECT count(*) FROM tier_event_requirements",
    "client_event_exclusions": "SELECT count(*) FROM client_event_exclusions",
    "segmentation_event_compliance": "SELECT count(*) FROM segmentation_event_compliance",
    REQUIREMENTS: f"SELECT count(*) FROM {REQUIREMENTS} WHERE fiscal_year = 2025",
    TERRITORY: f"SELECT count(*) FROM {TERRITORY} WHERE fiscal_year = 2025",
    BUSINESS_UNIT: f"SELECT count(*) FROM {BUSINESS_UNIT} WHERE fiscal_year = 2025",
}


def assert_reads_were_keyset(srv, cap: int, tables) -> None:
    """No offset, no exact count while reading, no long in.(…) list, short URLs; every paged table took
    several pages and ended on an empty one."""
    gets = [r for r in srv.requests if r.method == "GET" and r.table]
    for r in srv.requests:
        assert r.param("offset") is None and "Range" not in r.headers and "range" not in r.headers, r.query
        assert len(r.path) + len(r.query) < 8000, r.query[:200]
        for _, value in r.params:
            if "in.(" in value:
                assert value.count(",") < 3, value
    for r in gets:
        assert "count=" not in r.prefer and int(r.param("limit")) > cap
    for table in tables:
        assert sum(r.table == table for r in gets) >= 3, table


@pytest.mark.parametrize("cap,page", [(3, 5), (7, 10)])
def test_reads_complete_whatever_the_cap(migrated_db, copies, env, tmp_path, cap, page):
    s = wide_scenario()
    load(migrated_db, s)
    rest_db = copies(migrated_db)
    settings = settings_for(tmp_path)
    with rest_server(rest_db, max_rows=cap) as srv:
        backend = rest_backend(srv, page_size=page)
        for phase in ("first sync", "after changes"):
            if phase == "after changes":  # the same changes on both copies; current targets are now above the cap too
                execute(migrated_db, *WIDE_CHANGES)
                execute(rest_db, *WIDE_CHANGES)
                dry_d, dry_r = (
                    run(direct(migrated_db), s.bu_map, settings, Mode.DRY_RUN),
                    run(backend, s.bu_map, settings, Mode.DRY_RUN),
                )
                no_request_errors(dry_r)
                assert summary_of(dry_r)["diff"] == summary_of(dry_d)["diff"] and counts(dry_r) == counts(dry_d)
                changes = summary_of(dry_r)["targets"]
                assert (
                    changes[REQUIREMENTS]["inserted"]
                    and changes[REQUIREMENTS]["updated"]
                    and changes[REQUIREMENTS]["deleted"]
                )
                assert changes[REQUIREMENTS]["orphans"] == 1 and changes[TERRITORY]["deleted"] == 1
            paged = [t for t in PAGED if phase == "after changes" or t not in (REQUIREMENTS, TERRITORY, BUSINESS_UNIT)]
            for table in paged:
                assert scalar(rest_db, PAGED[table]) > cap, table  # the dataset is above the cap everywhere
            srv.clear_requests()
            d = run(direct(migrated_db), s.bu_map, settings)
            r = run(backend, s.bu_map, settings)
            no_request_errors(d)
            no_request_errors(r)
            assert r.source_counts == d.source_counts  # every source read in full
            assert counts(r) == counts(d)
            assert target_state(rest_db) == target_state(migrated_db)  # row by row, every column but id and stamps
            assert_reads_were_keyset(srv, cap, paged)
    # a plan with a NULL status is in scope (status IS DISTINCT FROM 'archived', not neq.archived)
    assert scalar(rest_db, f"SELECT count(*) FROM {REQUIREMENTS} WHERE plan_id = %s", uid("plan:Client 05")) > 0
    assert scalar(rest_db, "SELECT count(*) FROM account_plans WHERE status IS NULL") == 1


def test_keyset_on_natural_keys_with_nulls(migrated_db, env, tmp_path):
    """A source without a primary key pages on its natural key, NULLs included (nulls sort last)."""
    s = wide_scenario()
    load(migrated_db, s)
    execute(
        migrated_db,
        "ALTER TABLE client_event_exclusions DROP COLUMN id, ALTER COLUMN client_name DROP NOT NULL",
        "ALTER TABLE segmentation_event_compliance DROP COLUMN id",
        "INSERT INTO client_event_exclusions (client_name, event_type_id, reason) "
        "SELECT NULL, id, 'x' FROM segmentation_event_types",
        "INSERT INTO client_event_exclusions (client_name, event_type_id, reason) "
        "SELECT 'Client 00', NULL, 'x' FROM generate_series(1, 1)",
        "INSERT INTO segmentation_event_compliance (client_name, event_type_id, year, actual_count) "
        "SELECT 'Client ' || lpad(g::text, 2, '0'), NULL, 2025, 1 FROM generate_series(0, 9) g",
    )
    with rest_server(migrated_db, max_rows=3) as srv:
        r = run(rest_backend(srv, page_size=5), s.bu_map, settings_for(tmp_path), Mode.DRY_RUN)
    d = run(direct(migrated_db), s.bu_map, settings_for(tmp_path), Mode.DRY_RUN)
    no_request_errors(r)
    assert r.source_counts == d.source_counts
    assert r.source_counts["client_event_exclusions"] == scalar(
        migrated_db, "SELECT count(*) FROM client_event_exclusions"
    )
    assert counts(r) == counts(d)


@pytest.mark.parametrize("backend", ["direct", "rest"])
def test_an_infinite_updated_at_decides_the_strategy_tie_break(migrated_db, env, tmp_path, backend):
    """+infinity is the latest time, -infinity the earliest (null older still): SPEC §4.7 only orders by it."""
    s = appendix_a()
    s.strategy("ts-later", "Kim Lee", "Later")  # infinity: wins over ts1 (a time)
    s.period("Beta Bank", "Leverage", "2024-01-01", cse="Ana Ruiz")
    s.plan("p2", "Beta Bank")
    s.strategy("ts-null", "Ana Ruiz", "Null")  # null: loses to -infinity
    s.strategy("ts-minus", "Ana Ruiz", "Minus")
    load(migrated_db, s)
    execute(
        migrated_db,
        f"UPDATE territory_strategies SET updated_at = '2999-12-31 23:59:59+00' WHERE id = '{uid('ts1')}'",
        f"UPDATE territory_strategies SET updated_at = 'infinity' WHERE id = '{uid('ts-later')}'",
        f"UPDATE territory_strategies SET updated_at = NULL WHERE id = '{uid('ts-null')}'",
        f"UPDATE territory_strategies SET updated_at = '-infinity' WHERE id = '{uid('ts-minus')}'",
    )
    if backend == "direct":
        outcome = run(direct(migrated_db), s.bu_map, settings_for(tmp_path))
    else:
        with rest_server(migrated_db) as srv:
            outcome = run(rest_backend(srv), s.bu_map, settings_for(tmp_path))
    assert outcome.exit_code == 0, outcome.error
    used = {row["cse_name"]: row["territory_strategy_id"] for row in target_state(migrated_db)[TERRITORY].values()}
    assert used == {"Kim Lee": uid("ts-later"), "Ana Ruiz": uid("ts-minus")}
    assert outcome.comp.findings["unused_strategies"].count == 2


@pytest.mark.parametrize("backend", ["direct", "rest"])
def test_a_period_without_effective_from_is_ignored_and_reported(migrated_db, env, tmp_path, backend):
    """The app's schema lets effective_from be null: such a period counts for nothing and is reported."""
    s = appendix_a()
    s.period("Alpha Health", "Collaboration", "2025-01-01", label="no-start")
    s.periods[-1]["effective_from"] = None
    execute(migrated_db, "ALTER TABLE client_segmentation ALTER COLUMN effective_from DROP NOT NULL")
    load(migrated_db, s)
    if backend == "direct":
        outcome = run(direct(migrated_db), s.bu_map, settings_for(tmp_path))
    else:
        with rest_server(migrated_db) as srv:
            outcome = run(rest_backend(srv), s.bu_map, settings_for(tmp_path))
    assert outcome.exit_code == 0, outcome.error
    summary = summary_of(outcome)
    assert summary["warnings"].get("invalid_segment_periods") == 1, summary["warnings"]
    assert outcome.comp.findings["invalid_segment_periods"].examples == [
        f"Alpha Health: period {uid('no-start')} has a null effective_from"
    ]
    assert summary["targets"][REQUIREMENTS]["inserted"] == 3  # Appendix A's rows, unchanged by the ignored period


# --- 3. the schema check -----------------------------------------------------------------------------------------
SCHEMA_BREAKS = {
    "missing_table": ("DROP TABLE territory_strategies", "table territory_strategies does not exist"),
    "missing_column": ("ALTER TABLE account_plans DROP COLUMN client_id", "account_plans.client_id is missing"),
    "wrong_type": (
        "ALTER TABLE tier_event_requirements ALTER COLUMN frequency TYPE text",
        "tier_event_requirements.frequency has type text",
    ),
    "missing_target_column": (
        "ALTER TABLE business_unit_planning DROP COLUMN territory_data",
        "business_unit_planning.territory_data is missing",
    ),
    "missing_key": (
        "DROP INDEX territory_compliance_summary_compliance_sync_key",
        "territory_compliance_summary has no unique index on (territory_strategy_id, fiscal_year): "
        "run `compliance-sync migrate --minimal`",
    ),
    "target_wrong_type": (
        "ALTER TABLE apac_planning_goals ALTER COLUMN bu_contributions TYPE text",
        "apac_planning_goals.bu_contributions has type text",
    ),
}


@pytest.mark.parametrize("case", list(SCHEMA_BREAKS))
def test_schema_check_same_messages_before_any_write(own_appendix_db, env, tmp_path, case):
    statement, needle = SCHEMA_BREAKS[case]
    execute(own_appendix_db, statement)
    s = appendix_a()
    d = run(direct(own_appendix_db), s.bu_map, settings_for(tmp_path))
    with rest_server(own_appendix_db) as srv:
        r = run(rest_backend(srv), s.bu_map, settings_for(tmp_path))
        assert writes(srv) == []  # only GETs and the zero-row upsert probes
        assert {q.method for q in srv.requests} <= {"GET", "POST"}
    assert d.exit_code == r.exit_code == ExitCode.DATA
    assert needle in r.error and needle in d.error

    def problems(text):
        return text.split("does not match what compliance_sync needs: ", 1)[1].split(" (over the REST API", 1)[0]

    assert problems(r.error) == problems(d.error)  # the same words, whatever the backend
    if case in ("missing_table", "missing_column", "missing_target_column"):
        assert "NOTIFY pgrst, 'reload schema'" in r.error  # over REST a stale schema cache looks the same
    assert target_state(own_appendix_db) == {t.name: {} for t in TARGETS}


def test_minimal_migration_sql_creates_the_keys_idempotently(own_appendix_db, env, capsys):
    execute(
        own_appendix_db, *(f"DROP INDEX {t.name}_compliance_sync_key" for t in TARGETS), f"DROP TABLE {LEDGER_TABLE}"
    )
    with psycopg.connect(own_appendix_db) as conn:
        assert all(find_key_index(conn, t.name, t.key) is None for t in TARGETS)
    with rest_server(own_appendix_db, listen_for_reload=True) as srv:
        use_rest(env, srv)
        code, summary, text = cli_run(capsys, *YEAR)
        assert code == 3 and "compliance-sync migrate --minimal" in summary["error"]
        assert all(f"{t.name} has no unique index" in summary["error"] for t in TARGETS)
        assert writes(srv) == []

        assert cli.main(["migrate", "--minimal", "--print-sql"]) == 0
        script = capsys.readouterr().out
        assert "NOTIFY pgrst, 'reload schema'" in script
        if shutil.which("psql"):  # as pasted into an SQL console
            done = subprocess.run(
                ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", own_appendix_db, "-f", "-"],
                input=script,
                text=True,
                capture_output=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
        else:
            execute(own_appendix_db, script)
        execute(own_appendix_db, script)  # idempotent
        with psycopg.connect(own_appendix_db) as conn:
            assert all(find_key_index(conn, t.name, t.key) for t in TARGETS)
            indexes = conn.execute(
                "SELECT count(*) FROM pg_indexes WHERE indexname LIKE '%%compliance_sync_key'"
            ).fetchone()[0]
        assert indexes == len(TARGETS)  # the second run created no second index
        deadline = time.monotonic() + 10  # the script's NOTIFY reloads the server's schema cache
        while LEDGER_TABLE not in srv.schema_cache.tables and time.monotonic() < deadline:
            time.sleep(0.05)
        code, summary, text = cli_run(capsys, *YEAR)
        assert code == 0, text
    assert [r["backend"] for r in ledger_rows(own_appendix_db)] == ["rest"]


# --- 4. writing (SPEC §5) ----------------------------------------------------------------------------------------
def test_only_changed_rows_are_upserted_on_the_key(appendix_db, env, tmp_path):
    s = appendix_a()
    settings = settings_for(tmp_path)
    with rest_server(appendix_db) as srv:
        backend = rest_backend(srv)
        no_request_errors(run(backend, s.bu_map, settings))
        before = target_state(appendix_db, with_stamps=True)
        with psycopg.connect(
            appendix_db
        ) as conn:  # one more HEALTH_CHECK event: that row, the territory, BU, APAC change
            insert(
                conn,
                EVENTS,
                [
                    {
                        "id": uid("c2"),
                        "client_name": "Alpha Health",
                        "event_type_id": uid("type:HEALTH_CHECK"),
                        "event_date": dt.date(2025, 4, 4),
                        "completed": True,
                    }
                ],
            )
        bodies = record_bodies(srv)
        outcome = run(backend, s.bu_map, settings)
        no_request_errors(outcome)
    upserts = {b["table"]: b for b in bodies if b["method"] == "POST" and b["body"]}
    assert set(upserts) == {REQUIREMENTS, TERRITORY, BUSINESS_UNIT, APAC, LEDGER_TABLE}
    [row] = upserts[REQUIREMENTS]["body"]
    assert row["event_type_id"] == uid("type:HEALTH_CHECK") and row["completed_count"] == 2
    for t in TARGETS:
        assert len(upserts[t.name]["body"]) == 1
        assert upserts[t.name]["params"]["on_conflict"] == ",".join(t.key)
        assert "resolution=merge-duplicates" in upserts[t.name]["prefer"]
        assert set(upserts[t.name]["body"][0]) == {*t.columns, "updated_at"}  # owned columns only, never notes / id
    assert upserts[LEDGER_TABLE]["params"]["on_conflict"] == "run_id"
    assert not [b for b in bodies if b["method"] in ("DELETE", "PATCH")]
    after = target_state(appendix_db, with_stamps=True)
    for key, row in after[REQUIREMENTS].items():  # unchanged rows keep their updated_at
        same = key[1] != uid("type:HEALTH_CHECK")
        assert (row["updated_at"] == before[REQUIREMENTS][key]["updated_at"]) == same
    stamps = {r["updated_at"] for t in TARGETS for k, r in after[t.name].items() if r != before[t.name][k]}
    assert len(stamps) == 1  # one updated_at per run


def test_stale_rows_deleted_last_and_only_without_foreign_data(shared_db, env, tmp_path):
    """p2 and p3 are archived: four stale requirement rows. One carries a note from before the run (an
    orphan, never in a DELETE); one gets a note while the run's DELETE is in flight (kept, counted as an
    orphan); two are deleted. Every upsert precedes every delete."""
    s = beta_gamma(appendix_a())
    migrated_db = reset(shared_db, lambda url: load(url, s))
    settings = settings_for(tmp_path)
    with rest_server(migrated_db) as srv:
        backend = rest_backend(srv)
        no_request_errors(run(backend, s.bu_map, settings))
        assert scalar(migrated_db, f"SELECT count(*) FROM {REQUIREMENTS}") == 7
        execute(
            migrated_db,
            "UPDATE account_plans SET status = 'archived' WHERE id IN (%s, %s)",
            params=(uid("p2"), uid("p3")),
        )
        execute(
            migrated_db,
            f"UPDATE {REQUIREMENTS} SET notes = 'before' WHERE plan_id = %s AND event_type_id = %s",
            params=(uid("p2"), uid("type:SLA_REVIEW")),
        )
        execute(
            migrated_db,
            "INSERT INTO segmentation_events (id, client_name, event_type_id, event_date, completed) "
            "VALUES (%s, 'Alpha Health', %s, '2025-04-04', true)",
            params=(uid("c2"), uid("type:HEALTH_CHECK")),
        )
        bodies = record_bodies(srv)
        event = threading.Event()
        fault = srv.faults.delay(20, method="DELETE", table=REQUIREMENTS, event=event)

        def planner_adds_a_note() -> None:
            execute(
                migrated_db,
                f"UPDATE {REQUIREMENTS} SET ai_recommended_dates = '[\"2025-09-01\"]' "
                "WHERE plan_id = %s AND event_type_id = %s",
                params=(uid("p3"), uid("type:SLA_REVIEW")),
            )

        logged = Collect()
        logging.getLogger(rest.__name__).addHandler(logged)
        try:
            with while_held(fault, planner_adds_a_note, event):
                outcome = run(backend, s.bu_map, settings)
        finally:
            logging.getLogger(rest.__name__).removeHandler(logged)
        no_request_errors(outcome)
        deletes = [b for b in bodies if b["method"] == "DELETE"]
        upserts = [b for b in bodies if b["method"] == "POST" and b["body"] and b["table"] != LEDGER_TABLE]
        assert deletes and upserts and max(b["seq"] for b in upserts) < min(b["seq"] for b in deletes)
        [ledger_post] = [b for b in bodies if b["table"] == LEDGER_TABLE]
        assert ledger_post["seq"] > max(b["seq"] for b in deletes)
        [req_delete] = [b for b in deletes if b["table"] == REQUIREMENTS]
        p = req_delete["params"]
        assert p["fiscal_year"] == "eq.2025" and p["notes"] == "is.null" and p["ai_recommended_dates"] == "is.null"
        assert uid("p2") in p["or"] and uid("p3") in p["or"]
        left = target_state(migrated_db)[REQUIREMENTS]
        assert {k[0] for k in left} == {uid("p1"), uid("p2"), uid("p3")} and len(left) == 5
        assert left[(uid("p2"), uid("type:SLA_REVIEW"), 2025)]["notes"] == "before"
        assert left[(uid("p3"), uid("type:SLA_REVIEW"), 2025)]["ai_recommended_dates"] == ["2025-09-01"]
        req = summary_of(outcome)["targets"][REQUIREMENTS]
        assert (req["deleted"], req["orphans"], req["updated"]) == (2, 2, 1)
        assert any(f"{REQUIREMENTS}: 1 stale row(s) gained data the job does not own" in m for m in logged.messages)
        [_, ledger] = ledger_rows(migrated_db)
        assert (ledger["rows_deleted"], ledger["orphans"]) == (2, 2)
        # the next run keeps both orphans, reports them, and deletes nothing
        srv.clear_requests()
        again = run(backend, s.bu_map, settings)
        no_request_errors(again)
        expected = {"inserted": 0, "updated": 0, "deleted": 0, "orphans": 2, "unchanged": 3}
        assert summary_of(again)["targets"][REQUIREMENTS] == expected
        assert summary_of(again)["warnings"]["orphans"] == 2
        assert not [r for r in srv.requests if r.method == "DELETE"]


def test_ledger_row_written_once_when_its_post_is_dropped_after_commit(appendix_db, env, tmp_path):
    s = appendix_a()
    with rest_server(appendix_db) as srv:
        srv.faults.drop(method="POST", table=LEDGER_TABLE, when="after")
        outcome = run(rest_backend(srv), s.bu_map, settings_for(tmp_path))
        no_request_errors(outcome)
        posts = [r for r in srv.requests if r.table == LEDGER_TABLE]
        assert [r.dropped for r in posts] == [True, False]  # committed, connection dropped, retried
    [row] = ledger_rows(appendix_db)
    assert row["run_id"] == outcome.run_id and row["status"] == "succeeded" and row["backend"] == "rest"


def test_ledger_without_a_unique_run_id_is_still_written(own_appendix_db, env, tmp_path):
    execute(own_appendix_db, "DROP INDEX compliance_sync_runs_run_id_key")
    logged = Collect()
    logging.getLogger(rest.__name__).addHandler(logged)
    try:
        with rest_server(own_appendix_db) as srv:
            outcome = run(rest_backend(srv), appendix_a().bu_map, settings_for(tmp_path))
    finally:
        logging.getLogger(rest.__name__).removeHandler(logged)
    no_request_errors(outcome)
    assert any(f"{LEDGER_TABLE}.run_id has no unique index" in m for m in logged.messages)
    [row] = ledger_rows(own_appendix_db)
    assert row["run_id"] == outcome.run_id and row["status"] == "succeeded"
    assert len(target_state(own_appendix_db)[REQUIREMENTS]) == 3


def dry_run_lines(text: str) -> list[str]:
    """The report's DRY-RUN lines without their timestamps, and without the line naming the backend."""
    return [
        line.split("] [DRY-RUN] ", 1)[1]
        for line in text.splitlines()
        if "] [DRY-RUN] " in line and "backend " not in line
    ]


def test_dry_run_line_for_line_as_the_direct_path(migrated_db, copies, env, capsys, tmp_path):
    s = beta_gamma(appendix_a())
    load(migrated_db, s)
    assert run(direct(migrated_db), s.bu_map, settings_for(tmp_path)).exit_code == 0
    changes = (
        f"UPDATE account_plans SET status = 'archived' WHERE id IN ('{uid('p2')}', '{uid('p3')}')",
        f"UPDATE {REQUIREMENTS} SET notes = 'keep' WHERE plan_id = '{uid('p3')}'",
        f"UPDATE segmentation_events SET event_date = '2025-06-01' WHERE id = '{uid('a3')}'",
        f"INSERT INTO account_plans (id, client_name, fiscal_year, status) "
        f"VALUES ('{uid('p4')}', 'Alpha Health', 2025, NULL)",
        "UPDATE territory_strategies SET territory = 'VIC + NZ + TAS'",
    )
    execute(migrated_db, *changes)
    rest_db = copies(migrated_db)
    env.setenv("SUPABASE_DB_URL", migrated_db)
    code, direct_summary, direct_text = cli_run(capsys, "--dry-run", *YEAR)
    assert code == 0, direct_text
    with rest_server(rest_db) as srv:
        use_rest(env, srv)
        code, rest_summary, rest_text = cli_run(capsys, "--dry-run", *YEAR)
        assert code == 0, rest_text
        assert writes(srv) == []
    assert rest_summary["diff"] == direct_summary["diff"] and rest_summary["diff"][REQUIREMENTS]
    for key in ("targets", "guards", "warnings", "clients_processed", "requirement_rows", "apac_updated"):
        assert rest_summary[key] == direct_summary[key], key
    assert dry_run_lines(rest_text) == dry_run_lines(direct_text) and len(dry_run_lines(rest_text)) > 10
    assert target_state(rest_db, with_stamps=True) == target_state(migrated_db, with_stamps=True)  # nothing written


# --- 5. errors, exit codes, secrets ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["other_secret", "expired"])
def test_wrong_or_expired_key_exits_4(appendix_db, env, capsys, kind):
    with rest_server(appendix_db) as srv:
        key = (
            make_jwt(OTHER_SECRET, "service_role")
            if kind == "other_secret"
            else srv.make_jwt("service_role", exp=dt.timedelta(minutes=-5))
        )
        use_rest(env, srv, key)
        code, summary, text = cli_run(capsys, *YEAR)
        assert code == 4, text
        assert "SUPABASE_SERVICE_ROLE_KEY is wrong or expired" in summary["error"] and "HTTP 401" in summary["error"]
        assert srv.request_count == 1  # a refused key is not retried
        assert key not in text and key.split(".")[2] not in text


def test_rls_refusing_writes_exits_3(appendix_db, env, tmp_path):
    with rest_server(appendix_db) as srv:
        srv.faults.rls(REQUIREMENTS, refuse_writes=True)
        outcome = run(rest_backend(srv), appendix_a().bu_map, settings_for(tmp_path))
    assert outcome.exit_code == ExitCode.DATA
    assert "permission denied (42501" in outcome.error and f"writing {REQUIREMENTS}" in outcome.error
    assert target_state(appendix_db) == {t.name: {} for t in TARGETS}  # the requirements go first
    [row] = ledger_rows(appendix_db)
    assert row["status"] == "failed" and "42501" in row["error"]


def test_rls_hiding_events_trips_the_collapse_guard(appendix_db, env, tmp_path):
    s, settings = appendix_a(), settings_for(tmp_path)
    with rest_server(appendix_db) as srv:
        backend = rest_backend(srv)
        no_request_errors(run(backend, s.bu_map, settings))
        before = target_state(appendix_db, with_stamps=True)
        srv.faults.rls(EVENTS)  # the events read empty, as with a key that row-level security filters
        dry = run(backend, s.bu_map, settings, Mode.DRY_RUN)
        stopping = [g["code"] for g in summary_of(dry)["guards"] if g["stops_live_run"]]
        assert dry.exit_code == 0 and stopping == ["events_collapse"]
        srv.clear_requests()
        live = run(backend, s.bu_map, settings)
        assert live.exit_code == ExitCode.DATA
        assert f"{EVENTS} returned no event" in live.error and "records 10 completed events" in live.error
        assert [r.table for r in writes(srv)] == [LEDGER_TABLE]  # only the failed run's ledger row
    assert target_state(appendix_db, with_stamps=True) == before


def _rename_table(url, srv):
    execute(url, "ALTER TABLE territory_strategies RENAME TO territory_strategies_old")
    srv.reload_schema()


def _rename_target_column(url, srv):
    execute(url, f"ALTER TABLE {REQUIREMENTS} RENAME COLUMN segment TO segment_old")
    srv.reload_schema()


def _rename_source_column(url, srv):  # the schema cache is stale: PostgreSQL answers 42703
    execute(url, "ALTER TABLE account_plans RENAME COLUMN client_id TO client_id_old")


def _drop_key(url, srv):
    execute(url, f"DROP INDEX {REQUIREMENTS}_compliance_sync_key")


SCHEMA_CHANGES_MID_RUN = {
    # code: (held request (method, table, nth), change made while it is held, words of the error)
    "PGRST205": (
        ("GET", EVENTS, 1),
        _rename_table,
        ["reading territory_strategies", "PGRST205", "NOTIFY pgrst, 'reload schema'"],
    ),
    "PGRST204": (
        ("POST", REQUIREMENTS, 2),
        _rename_target_column,
        [f"writing {REQUIREMENTS}", "PGRST204", "'segment' column", "NOTIFY pgrst"],
    ),
    "42703": (
        ("GET", "account_plans", 1),
        _rename_source_column,
        ["reading account_plans", "42703", "client_id", "column is missing"],
    ),
    "42P10": (
        ("POST", REQUIREMENTS, 2),
        _drop_key,
        [f"writing {REQUIREMENTS}", "42P10", "compliance-sync migrate --minimal"],
    ),
}


@pytest.mark.parametrize("code", list(SCHEMA_CHANGES_MID_RUN))
def test_schema_changed_under_the_run_exits_3(own_appendix_db, env, tmp_path, code):
    """Errors PostgREST answers when the schema changes after the check (the first upsert is the
    requirements', so nothing is written in any case)."""
    (method, table, nth), change, words = SCHEMA_CHANGES_MID_RUN[code]
    with rest_server(own_appendix_db) as srv:
        event = threading.Event()
        fault = srv.faults.delay(20, nth, method=method, table=table, event=event)
        with while_held(fault, lambda: change(own_appendix_db, srv), event):
            outcome = run(rest_backend(srv), appendix_a().bu_map, settings_for(tmp_path))
    assert outcome.exit_code == ExitCode.DATA, outcome.error
    for word in words:
        assert word in outcome.error, word
    assert target_state(own_appendix_db) == {t.name: {} for t in TARGETS}


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Not PostgREST: ``mode`` html (a web page for everything), html404, json404 / json400 (JSON errors without
    PostgREST's shape), or json / html_reads (PostgREST's API description and write answers proxied from the real
    server, but reads as JSON without Content-Range / as a 404 web page)."""

    mode = "html"
    upstream = ""

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _any(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.mode == "html":
            return self._answer(200, b"<!doctype html><html><body>Welcome</body></html>", "text/html")
        if self.mode == "html404":
            return self._answer(404, b"<html><body>Not Found</body></html>", "text/html")
        if self.mode == "json404":  # a JSON API, not PostgREST: no {code, message, details, hint}
            return self._answer(404, b'{"error":"Not Found"}', "application/json")
        if self.mode == "json400":
            return self._answer(400, b'{"message":"Bad Request","statusCode":400}', "application/json; charset=utf-8")
        if self.mode == "html_reads" and self.path.rstrip("/").split("?")[0] != "/rest/v1" and self.command == "GET":
            return self._answer(404, b"<html><body>Not Found</body></html>", "text/html")
        if self.path.rstrip("/").split("?")[0] == "/rest/v1" or self.command != "GET":
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() in ("apikey", "authorization", "accept", "prefer", "content-type")
            }
            reply = httpx.request(self.command, self.upstream + self.path, headers=headers, content=body)
            return self._answer(reply.status_code, reply.content, reply.headers.get("content-type", "application/json"))
        return self._answer(200, b"[]", "application/json")

    do_GET = do_POST = do_HEAD = do_DELETE = do_PATCH = _any


@pytest.mark.parametrize("mode", ["html", "html404", "json", "json404", "json400", "html_reads"])
def test_a_reply_that_is_not_postgrests_exits_4(appendix_db, env, capsys, mode):
    with rest_server(appendix_db) as srv:
        handler = type("Impostor", (_Impostor,), {"mode": mode, "upstream": srv.url})
        impostor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=impostor.serve_forever, daemon=True)
        thread.start()
        try:
            use_rest(env, srv)
            env.setenv("NEXT_PUBLIC_SUPABASE_URL", f"http://127.0.0.1:{impostor.server_address[1]}")
            code, summary, text = cli_run(capsys, *YEAR)
        finally:
            impostor.shutdown()
            impostor.server_close()
    assert code == 4, text
    assert "the reply is not PostgREST's" in summary["error"] and "NEXT_PUBLIC_SUPABASE_URL" in summary["error"]
    assert f"127.0.0.1:{impostor.server_address[1]}" in summary["error"]  # the host it asked
    assert "schema cache" not in summary["error"] and srv.service_role_key[-12:] not in text
    assert target_state(appendix_db) == {t.name: {} for t in TARGETS}


class _Throttle(http.server.BaseHTTPRequestHandler):
    """A proxy in front of the test server that answers the first read of ``account_plans`` with ``status`` and
    ``Retry-After: <retry_after()>``, and records when each read of that table arrived."""

    upstream = ""
    status = 429
    retry_after = staticmethod(lambda: "2")
    arrivals: list[float] = []

    def log_message(self, *args):  # quiet
        pass

    def _any(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.command == "GET" and self.path.startswith("/rest/v1/account_plans?"):
            self.arrivals.append(time.monotonic())
            if len(self.arrivals) == 1:
                payload = b'{"code":null,"details":null,"hint":null,"message":"slow down"}'
                self.send_response(self.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", self.retry_after())
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        reply = httpx.request(self.command, self.upstream + self.path, headers=headers, content=body)
        self.send_response(reply.status_code)
        for k, v in reply.headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)

    do_GET = do_POST = do_HEAD = do_DELETE = do_PATCH = _any


def _http_date(seconds_from_now: float) -> str:
    import email.utils

    return email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize(
    ("status", "retry_after", "at_least"),
    [(429, lambda: "2", 2.0), (503, lambda: _http_date(3), 2.0)],
    ids=["429-seconds", "503-http-date"],
)
def test_retry_after_is_the_wait_before_the_retry(appendix_db, env, capsys, status, retry_after, at_least):
    with rest_server(appendix_db) as srv:
        handler = type(
            "Throttle",
            (_Throttle,),
            {"upstream": srv.url, "status": status, "retry_after": staticmethod(retry_after), "arrivals": []},
        )
        proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            use_rest(env, srv, COMPLIANCE_SYNC_REST_TIMEOUT=5, COMPLIANCE_SYNC_REST_RETRIES=2)
            env.setenv("NEXT_PUBLIC_SUPABASE_URL", f"http://127.0.0.1:{proxy.server_address[1]}")
            code, summary, text = cli_run(capsys, *YEAR)
        finally:
            proxy.shutdown()
            proxy.server_close()
    assert code == 0, text
    first, second = handler.arrivals[:2]
    assert at_least - 0.1 <= second - first < at_least + 2.5, second - first  # the header's wait, not the backoff's
    assert len(target_state(appendix_db)[REQUIREMENTS]) == 3


def test_a_retry_after_longer_than_the_timeout_stops_with_exit_4_saying_when(appendix_db, env, capsys):
    with rest_server(appendix_db) as srv:
        handler = type(
            "Throttle", (_Throttle,), {"upstream": srv.url, "retry_after": staticmethod(lambda: "120"), "arrivals": []}
        )
        proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            use_rest(env, srv, COMPLIANCE_SYNC_REST_TIMEOUT=5, COMPLIANCE_SYNC_REST_RETRIES=2)
            env.setenv("NEXT_PUBLIC_SUPABASE_URL", f"http://127.0.0.1:{proxy.server_address[1]}")
            started = time.monotonic()
            code, summary, text = cli_run(capsys, *YEAR)
            elapsed = time.monotonic() - started
        finally:
            proxy.shutdown()
            proxy.server_close()
    assert code == 4, text
    assert len(handler.arrivals) == 1 and elapsed < 60  # no retry, no wait
    assert "retry after 120 s" in summary["error"] and "COMPLIANCE_SYNC_REST_TIMEOUT (5 s)" in summary["error"]
    assert "run it again after 20" in summary["error"] and "HTTP 429" in summary["error"]
    assert target_state(appendix_db) == {t.name: {} for t in TARGETS}


def test_retry_after_reads_seconds_and_http_dates():
    now = dt.datetime(2025, 6, 30, 12, 0, 0, tzinfo=dt.UTC)
    assert rest_client.retry_after("7", now) == 7.0
    assert rest_client.retry_after("Mon, 30 Jun 2025 12:00:09 GMT", now) == 9.0
    assert rest_client.retry_after("Mon, 30 Jun 2025 11:00:00 GMT", now) == 0.0  # past: at once
    assert rest_client.retry_after("soon", now) is None and rest_client.retry_after(None, now) is None
    assert rest_client.retry_after("-3", now) is None


TRANSIENT = {
    "503": lambda srv, times: srv.faults.fail(method="GET", table="account_plans", status=503, times=times),
    "dropped": lambda srv, times: srv.faults.drop(method="GET", table="account_plans", times=times),
    "timeout": lambda srv, times: srv.faults.delay(1.5, method="GET", table="account_plans", times=times),
    "503_on_write": lambda srv, times: srv.faults.fail(2, method="POST", table=REQUIREMENTS, status=503, times=times),
}


@pytest.mark.parametrize("persists", [False, True], ids=["retried", "persists"])
@pytest.mark.parametrize("kind", list(TRANSIENT))
def test_transient_failures_are_retried_a_bounded_number_of_times(appendix_db, env, capsys, kind, persists):
    retries = 2
    with rest_server(appendix_db) as srv:
        use_rest(env, srv, COMPLIANCE_SYNC_REST_RETRIES=retries, COMPLIANCE_SYNC_REST_TIMEOUT=0.5)
        TRANSIENT[kind](srv, None if persists else 1)
        code, summary, text = cli_run(capsys, *YEAR)
        method, table = ("POST", REQUIREMENTS) if kind == "503_on_write" else ("GET", "account_plans")
        hit = [
            r
            for r in srv.requests
            if r.method == method and r.table == table and r.headers.get("content-length") != "2"
        ]
    if persists:
        assert code == 4, text
        assert len(hit) == retries + 1  # bounded
        assert f"still failing after {retries + 1} attempts" in summary["error"]
        assert {
            "503": "answered HTTP 503",
            "dropped": "lost the connection",
            "timeout": "within the timeout",
            "503_on_write": "answered HTTP 503",
        }[kind] in summary["error"]
        assert target_state(appendix_db) == {t.name: {} for t in TARGETS}
    else:
        assert code == 0, text
        assert len(hit) >= 2 and "retrying (attempt 2 of 3)" in text
        assert len(target_state(appendix_db)[REQUIREMENTS]) == 3
        assert len(ledger_rows(appendix_db)) == 1


def test_the_key_never_appears_in_output_logs_or_dagster_records(appendix_db, env, capsys, tmp_path):
    """Through Dagster in-process (DAGSTER_HOME set): a run that writes and one that fails on the server's
    refusal; the key is in no printed line, no --json summary, no run config, tag or event-log record."""
    home = dagster_home(tmp_path / "dagster_home")
    env.setenv("DAGSTER_HOME", str(home))
    with rest_server(appendix_db) as srv:
        key = srv.service_role_key
        use_rest(env, srv, key, COMPLIANCE_SYNC_REST_RETRIES=1)
        code, summary, text = cli_run(capsys, *YEAR, "--verbose")
        assert code == 0, text
        srv.faults.rls(REQUIREMENTS, refuse_writes=True)
        code2, summary2, text2 = cli_run(capsys, *YEAR, "--verbose")
        assert code2 == 3 and "42501" in summary2["error"], text2
    everything = text + text2 + json.dumps([summary, summary2])
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 2
        for r in runs:
            everything += json.dumps(r.run_config) + json.dumps(r.tags)
            everything += "".join(str(record) for record in instance.get_records_for_run(r.run_id).records)
    assert (
        "RUN_SUCCESS" in everything and "STEP_FAILURE" in everything and "42501" in everything
    )  # the records were read
    for fragment in (key, *key.split("."), key[10:40]):
        assert fragment not in everything


def test_fingerprint_over_rest_sees_new_rows(appendix_db, env):
    with rest_server(appendix_db) as srv:
        backend = rest_backend(srv)
        first = backend.fingerprint(FY25)
        assert backend.fingerprint(FY25) == first
        with psycopg.connect(appendix_db) as conn:
            insert(
                conn,
                EVENTS,
                [
                    {
                        "id": uid("c9"),
                        "client_name": "Alpha Health",
                        "event_type_id": uid("type:HEALTH_CHECK"),
                        "event_date": dt.date(2025, 5, 5),
                        "completed": True,
                    }
                ],
            )
        assert backend.fingerprint(FY25) != first


# --- 7. concurrency and parity ----------------------------------------------------------------------------------
@pytest.mark.parametrize("held", ["first_upsert", "first_delete"])
def test_concurrent_rest_runs_converge(migrated_db, copies, env, tmp_path, held):
    """Run A reads, then its first upsert (or first delete) is held while run B runs from start to end;
    then A finishes. The result is the state of one run; a third run changes nothing."""
    s = wide_scenario()
    load(migrated_db, s)
    settings = settings_for(tmp_path)
    no_request_errors(run(direct(migrated_db), s.bu_map, settings))
    execute(migrated_db, *WIDE_CHANGES)
    clean = copies(migrated_db)
    no_request_errors(run(direct(clean), s.bu_map, settings))
    with rest_server(migrated_db, max_rows=50) as srv:
        event = threading.Event()
        if held == "first_upsert":
            fault = srv.faults.delay(30, 2, method="POST", table=REQUIREMENTS, event=event)  # 1 is the schema probe
        else:
            fault = srv.faults.delay(30, 1, method="DELETE", table=REQUIREMENTS, event=event)
        second: list = []
        with while_held(fault, lambda: second.append(run(rest_backend(srv, page_size=20), s.bu_map, settings)), event):
            first = run(rest_backend(srv, page_size=20), s.bu_map, settings)
        no_request_errors(first)
        no_request_errors(second[0])
        assert summary_of(first)["targets"][REQUIREMENTS]["deleted"] > 0
        assert summary_of(second[0])["targets"][REQUIREMENTS]["deleted"] > 0
        assert target_state(migrated_db) == target_state(clean)
        srv.clear_requests()
        third = run(rest_backend(srv), s.bu_map, settings)
        no_request_errors(third)
        assert all(t["inserted"] == t["updated"] == t["deleted"] == 0 for t in summary_of(third)["targets"].values())
        assert [r.table for r in writes(srv)] == [LEDGER_TABLE]


def test_rest_run_over_rows_the_direct_path_wrote_writes_nothing(shared_db, env, tmp_path):
    s = wide_scenario()
    migrated_db = reset(shared_db, lambda url: load(url, s))
    settings = settings_for(tmp_path)
    with rest_server(migrated_db) as srv:
        for changes in ((), WIDE_CHANGES):
            execute(migrated_db, *changes)
            no_request_errors(run(direct(migrated_db), s.bu_map, settings))
            before = target_state(migrated_db, with_stamps=True)
            srv.clear_requests()
            outcome = run(rest_backend(srv), s.bu_map, settings)
            no_request_errors(outcome)
            per_target = summary_of(outcome)["targets"].values()
            assert all(t["inserted"] == t["updated"] == t["deleted"] == 0 for t in per_target)
            assert [r.table for r in writes(srv)] == [LEDGER_TABLE]
            assert target_state(migrated_db, with_stamps=True) == before


# --- the end-to-end cases on the demo data, over both backends ------------------------------------------------------
def _load_demo(url: str) -> None:
    from compliance_sync.devtools.demo import load_demo_data

    with psycopg.connect(url) as conn:
        load_demo_data(conn)


@pytest.fixture(params=["direct", "rest"])
def demo(request, shared_db, env):
    """The demo dataset behind the chosen backend, configured through the environment as a user would."""
    migrated_db = reset(shared_db, _load_demo)
    if request.param == "direct":
        env.setenv("SUPABASE_DB_URL", migrated_db)
        yield migrated_db, request.param
        return
    with rest_server(migrated_db) as srv:
        use_rest(env, srv, COMPLIANCE_SYNC_REST_PAGE_SIZE=500)
        yield migrated_db, request.param


def test_e2e_first_live_run_then_nothing_to_write(demo, capsys):
    url, backend = demo
    code, summary, text = cli_run(capsys, *YEAR)
    assert code == 0, text
    assert summary["backend"] == ("postgres" if backend == "direct" else "rest") and summary["status"] == "written"
    assert (
        summary["targets"][REQUIREMENTS]["inserted"]
        == summary["requirement_rows"]
        == scalar(url, f"SELECT count(*) FROM {REQUIREMENTS} WHERE fiscal_year = 2025")
        > 100
    )
    assert summary["business_units"] == 3 and summary["clients_processed"] > 40
    before = target_state(url, with_stamps=True)
    code, summary, text = cli_run(capsys, *YEAR)
    assert code == 0 and summary["status"] == "unchanged"
    assert all(t["inserted"] == t["updated"] == t["deleted"] == 0 for t in summary["targets"].values())
    assert target_state(url, with_stamps=True) == before
    assert [r["status"] for r in ledger_rows(url)] == ["succeeded", "succeeded"]


def test_e2e_dry_run_reports_the_exact_change(demo, capsys):
    url, _ = demo
    assert cli_run(capsys, *YEAR)[0] == 0
    event_id = scalar(
        url,
        f"""SELECT e.id FROM {REQUIREMENTS} r
              JOIN segmentation_events e ON e.client_name = r.client_name AND e.event_type_id = r.event_type_id
             WHERE r.fiscal_year = 2025 AND e.event_date BETWEEN '2025-01-01' AND '2025-06-30'
               AND e.completed IS NOT TRUE
               AND (SELECT count(*) FROM account_plans p
                     WHERE p.client_name = r.client_name AND p.fiscal_year = 2025
                       AND p.status IS DISTINCT FROM 'archived') = 1
             ORDER BY e.id LIMIT 1""",
    )
    execute(url, "UPDATE segmentation_events SET completed = true WHERE id = %s", params=(event_id,))
    before = target_state(url, with_stamps=True)
    code, summary, text = cli_run(capsys, "--dry-run", *YEAR)
    assert code == 0 and summary["mode"] == "dry_run"
    req = summary["targets"][REQUIREMENTS]
    assert (req["updated"], req["inserted"], req["deleted"]) == (1, 0, 0) and summary["targets"][TERRITORY][
        "updated"
    ] == 1
    assert any("completed_count:" in line for line in summary["diff"][REQUIREMENTS])
    assert target_state(url, with_stamps=True) == before


def test_e2e_guard_empty_source(demo, capsys):
    url, _ = demo
    execute(url, "DELETE FROM account_plans WHERE fiscal_year = 2025")
    before = target_state(url, with_stamps=True)
    code, summary, text = cli_run(capsys, *YEAR)
    assert code == 3 and "account_plans returned no rows" in summary["error"]
    assert target_state(url, with_stamps=True) == before
    [row] = ledger_rows(url)
    assert row["status"] == "failed" and "account_plans returned no rows" in row["error"]


def test_e2e_backends_agree_row_by_row_on_the_demo(migrated_db, copies, env, tmp_path):
    from compliance_sync.devtools.demo import load_demo_data

    with psycopg.connect(migrated_db) as conn:
        load_demo_data(conn)
    rest_db = copies(migrated_db)
    settings = settings_for(tmp_path, COMPLIANCE_SYNC_BU_MAP=str(EXAMPLE_BU_MAP))
    bu_map = settings.bu_map()
    d = run(direct(migrated_db), bu_map, settings)
    with rest_server(rest_db, max_rows=1000) as srv:
        r = run(rest_backend(srv, page_size=500), bu_map, settings)
    no_request_errors(d)
    no_request_errors(r)
    assert counts(r) == counts(d)
    assert target_state(rest_db) == target_state(migrated_db)
    assert r.source_counts["segmentation_events"] > 1000  # several pages under the cap


@pytest.mark.parametrize("table", [t.name for t in TARGETS])
def test_upsert_bodies_encode_as_the_generic_row_conversion(table: str) -> None:
    """The typed per-column conversion of the upsert bodies sends the JSON the generic round trip sends."""
    import decimal

    from postgrest.base_request_builder import _encode_json_body

    target = next(t for t in TARGETS if t.name == table)
    samples = {
        "uuid": uid("x"),
        "text": 'Zoë "quoted"',
        "int": 7,
        "bool": True,
        "date": dt.date(2026, 6, 30),
        "numeric": decimal.Decimal("66.67"),
        "timestamptz": dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC),
        "jsonb": {"a": decimal.Decimal("12.50"), "b": [1, decimal.Decimal("0.10"), {"c": None}], "ids": ["x", "y"]},
    }
    row = {c: samples[target.types[c].value] for c in target.columns}
    row_with_nulls = {c: None for c in target.columns}
    stamp = "2026-11-28T00:00:00+00:00"
    for r in (row, row_with_nulls):
        generic = rest_write._json_row(dict(r, updated_at=stamp), [*target.columns, "updated_at"])
        assert _encode_json_body(rest_write._body_rows(target, [r], stamp)) == _encode_json_body([generic])
