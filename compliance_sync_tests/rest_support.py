"""Helpers shared by the REST backend's tests (test_rest_backend.py, test_rest_faults.py).

Databases are cloned with ``CREATE DATABASE … TEMPLATE`` (so two backends run on byte-identical copies),
the PostgREST look-alike runs in-process (compliance_sync_tests/postgrest_server/), runs go through
:func:`compliance_sync.service.sync.run_fiscal_year` (what the CLI and the Dagster asset call), and target rows are
compared on everything but ``id``, ``created_at`` and ``updated_at``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from compliance_sync.backends.postgres import PostgresBackend
from compliance_sync.backends.rest import RestBackend
from compliance_sync.config.settings import Settings, load_settings
from compliance_sync.domain.bu_map import BuMap
from compliance_sync.domain.diff import normalize
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.tables import LEDGER_TABLE, SECTION3_TABLES, TARGETS
from compliance_sync.service.sync import Mode, Outcome, RunOptions, run_fiscal_year
from compliance_sync_tests.conftest import url_for_database
from compliance_sync_tests.postgrest_server import PostgrestServer
from compliance_sync_tests.scenario import Scenario

FY25 = FiscalYear(2025, 1)
AS_OF = dt.date(2025, 6, 30)
META = ("id", "created_at", "updated_at")
ENV_PREFIXES = ("COMPLIANCE_SYNC_", "SUPABASE_", "NEXT_PUBLIC_")


# --- databases ---------------------------------------------------------------------------------------------
def clone(url: str) -> str:
    """A copy of the database at ``url`` (no session may be connected to it); dropped by :func:`drop`."""
    name = f"cs_test_{uuid.uuid4().hex[:12]}"
    source = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url_for_database(url, "postgres"), autocommit=True) as conn:
        for _ in range(50):  # a just-closed session may linger a moment
            try:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(source))
                )
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{source} stays in use; cannot clone it")
    return url_for_database(url, name)


def drop(url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url_for_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def database(server_url: str, migrated: bool = True) -> Iterator[str]:
    """A new database (with the full schema when ``migrated``), dropped afterwards."""
    name = f"cs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = url_for_database(server_url, name)
    try:
        if migrated:
            from compliance_sync.backends.postgres.migrate import apply_full

            with psycopg.connect(url) as conn:
                apply_full(conn)
        yield url
    finally:
        drop(url)


def reset(url: str, loader: Callable[[str], None]) -> str:
    """Empty every table of SPEC §3 and the ledger, then ``loader(url)``: a database shared by the tests of
    a module that change rows but never the schema (creating and dropping one per test costs ~1.5 s)."""
    tables = [*SECTION3_TABLES, LEDGER_TABLE]
    with psycopg.connect(url) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(sql.Identifier(t) for t in tables))
        )
    loader(url)
    return url


def target_state(url: str, with_stamps: bool = False) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Per target: key -> the row's columns (without id and created_at; updated_at only ``with_stamps``),
    JSON numbers normalised so that 50.0 and 50.00 compare equal."""
    out: dict[str, dict[tuple, dict[str, Any]]] = {}
    drop_cols = ("id", "created_at") if with_stamps else META
    with psycopg.connect(url) as conn:
        for t in TARGETS:
            rows = conn.execute(sql.SQL("SELECT to_jsonb(x)::text FROM {} x").format(sql.Identifier(t.name))).fetchall()
            table: dict[tuple, dict[str, Any]] = {}
            for (text,) in rows:
                row = json.loads(text)
                key = tuple(normalize(t.types[c], row[c]) for c in t.key)
                assert key not in table, f"{t.name}: duplicate key {key}"
                table[key] = {c: _numbers(v) for c, v in row.items() if c not in drop_cols}
            out[t.name] = table
    return out


def _numbers(value: Any) -> Any:
    """JSON numbers as normalised Decimals, inside any structure (50.0 == 50.00 == 50)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return decimal.Decimal(str(value)).normalize()
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return [_numbers(v) for v in value]


def ledger_rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        return [json.loads(r[0]) for r in conn.execute(f"SELECT to_jsonb(x)::text FROM {LEDGER_TABLE} x ORDER BY id")]


def save_targets(url: str, schema_name: str = "keep") -> None:
    """Copy the four targets and the ledger into ``schema_name`` (not exposed over REST)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}").format(s=sql.Identifier(schema_name))
        )
        for name in [t.name for t in TARGETS] + [LEDGER_TABLE]:
            conn.execute(
                sql.SQL("CREATE TABLE {}.{} AS SELECT * FROM public.{}").format(
                    sql.Identifier(schema_name), sql.Identifier(name), sql.Identifier(name)
                )
            )


def restore_targets(url: str, schema_name: str = "keep") -> None:
    with psycopg.connect(url) as conn:
        for name in [t.name for t in TARGETS] + [LEDGER_TABLE]:
            conn.execute(sql.SQL("DELETE FROM public.{}").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("INSERT INTO public.{} SELECT * FROM {}.{}").format(
                    sql.Identifier(name), sql.Identifier(schema_name), sql.Identifier(name)
                )
            )


# --- the REST server and runs ----------------------------------------------------------------------------------
@contextlib.contextmanager
def rest_server(
    url: str, max_rows: int | None = None, listen_for_reload: bool = False, **kwargs: Any
) -> Iterator[PostgrestServer]:
    """The PostgREST look-alike on ``url``; without ``listen_for_reload`` (NOTIFY pgrst) it stops at once
    instead of after its listener's next 0.5 s poll."""
    srv = PostgrestServer(url, max_rows=max_rows, listen_for_reload=listen_for_reload, **kwargs).start()
    # TCP_NODELAY on the server's sockets: headers and body go out as two writes, and Nagle's algorithm
    # against the client's delayed ACK would add ~40 ms to every request (nothing else changes)
    handler = srv._httpd.RequestHandlerClass
    srv._httpd.RequestHandlerClass = type(handler.__name__, (handler,), {"disable_nagle_algorithm": True})
    try:
        yield srv
    finally:
        srv.stop()


def rest_backend(
    srv: PostgrestServer, page_size: int = 1000, timeout_s: float = 10.0, retries: int = 2, key: str | None = None
) -> RestBackend:
    return RestBackend(srv.url, key or srv.service_role_key, page_size=page_size, timeout_s=timeout_s, retries=retries)


def settings_for(tmp_path, **env: str) -> Settings:
    """Settings from ``env`` only (no process environment, no .env)."""
    return load_settings(cwd=tmp_path, environ=env)


def run(
    backend,
    bu_map: BuMap,
    settings: Settings,
    mode: Mode = Mode.LIVE,
    allow_mass_prune: bool = False,
    fy: FiscalYear = FY25,
    as_of: dt.date = AS_OF,
) -> Outcome:
    outcome = Outcome(fy, fy.as_of(as_of), mode, backend.name.value, f"test-{uuid.uuid4()}")
    return run_fiscal_year(backend, settings, bu_map, outcome, RunOptions(mode, allow_mass_prune, 50, outcome.run_id))


def direct(url: str) -> PostgresBackend:
    return PostgresBackend(url)


# --- the request log -------------------------------------------------------------------------------------------
def record_bodies(srv: PostgrestServer) -> list[dict[str, Any]]:
    """Record every API request's method, table, query and JSON body (the server's log has no bodies)."""
    seen: list[dict[str, Any]] = []
    real = srv.handle_rest

    def handle_rest(method, resource, raw_query, headers, body, record):
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = body
        seen.append(
            {
                "seq": record.seq,
                "method": method,
                "table": record.table,
                "params": dict(record.params),
                "body": payload,
                "prefer": headers.get("prefer", ""),
            }
        )
        return real(method, resource, raw_query, headers, body, record)

    srv.handle_rest = handle_rest
    return seen


def writes(srv: PostgrestServer) -> list:
    """Requests that could change a row: PATCH, DELETE, and POSTs with a body other than ``[]`` (the schema
    check's zero-row upsert probes write nothing)."""
    return [
        r
        for r in srv.requests
        if r.method in ("PATCH", "DELETE", "PUT") or (r.method == "POST" and r.headers.get("content-length") != "2")
    ]


@contextlib.contextmanager
def while_held(
    fault, action: Callable[[], None], event: threading.Event, timeout: float = 20.0
) -> Iterator[threading.Thread]:
    """When the delay ``fault`` holds its request, run ``action`` (in a helper thread), then release it."""
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            deadline = time.monotonic() + timeout
            while fault.fired == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("the delayed request never came")
                time.sleep(0.01)
            action()
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            event.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    yield thread
    thread.join(timeout)
    if errors:
        raise errors[0]


# --- a small dataset above any small row cap --------------------------------------------------------------------
TERRITORIES = [
    ("Kim Lee", "VIC + NZ", "ANZ"),
    ("Ana Ruiz", "NSW + ACT", "ANZ"),
    ("Bo Chen", "Hong Kong", "Greater China"),
    ("Dev Patel", "Singapore", "SEA"),
    ("Eli Moss", "QLD + WA", "Pacific"),
    ("Fay Wu", "Taiwan", "Taiwan BU"),
    ("Gus Ito", "Japan", "North Asia"),
    ("Hal Roy", "Korea", "Korea BU"),
    ("Ivy Ng", "Malaysia", "Malaysia BU"),
    ("Jon Ek", "Atlantis", None),  # unmapped territory
]
TIERS = ["Giant", "Collaboration", "Leverage", "Maintain", "Nurture", "Sleeping Giant", "Emerging", "Watch"]
TYPES = ["SLA_REVIEW", "INSIGHT_TP", "HEALTH_CHECK", "EBR", "QBR", "ROADMAP", "TRAINING", "LEGACY_CALL"]


def wide_scenario(seed: int = 11) -> Scenario:
    """FY2025 with at least 8 rows in every paged read (plans, periods, strategies, events, tiers, event types,
    requirements, exclusions, compliance cache) and in three targets (requirements, territories, business
    units): above a row cap of 3 or 7. A plan with a NULL status, an archived plan, another FY's plan, a
    client changing tier, an unmapped territory, a CSE without strategy, losing quarterly strategies."""
    rng = random.Random(seed)
    s = Scenario(2025, 1, "2025-06-30")
    for tier in TIERS:
        s.tier(tier)
    for i, code in enumerate(TYPES):
        s.event_type(code, active=i != len(TYPES) - 1)
    for t_i, tier in enumerate(TIERS):
        for c_i, code in enumerate(TYPES):
            s.require(tier, code, (t_i + 2 * c_i) % 5)  # 0 … 4, some zero
    s.bu_map = BuMap({}, {territory: bu for _, territory, bu in TERRITORIES if bu})
    for i, (cse, territory, _) in enumerate(TERRITORIES):
        s.strategy(f"ts:{cse}", cse, territory)
        if i % 3 == 0:  # a losing quarterly strategy
            s.strategy(f"ts:{cse}:q2", cse, territory + " (Q2)", quarter="Q2")
    s.strategy("ts:archived", "Kim Lee", "Old Territory", status="archived")
    clients = [f"Client {i:02d}" for i in range(24)]
    for i, client in enumerate(clients):
        cse = TERRITORIES[i % len(TERRITORIES)][0] if i != 23 else "Nobody Yet"  # client 23: CSE without strategy
        first, second = TIERS[i % len(TIERS)], TIERS[(i + 3) % len(TIERS)]
        if i % 4 == 0:  # moves tier mid-year
            s.period(client, first, "2024-01-01", "2025-04-30", cse=cse)
            s.period(client, second, "2025-05-01", cse=cse)
        else:
            s.period(client, first, "2023-06-01", cse=cse)
        s.plan(f"plan:{client}", client, status=None if i == 5 else "approved")
        for k in range(5):
            code = TYPES[rng.randrange(len(TYPES))]
            day = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(365))
            s.event(f"ev:{client}:{k}", client, code, day.isoformat(), completed=rng.random() < 0.7)
    s.plan("plan:archived", "Client 01", status="archived")
    s.plan("plan:other-fy", "Client 02", year=2024)
    s.plan("plan:second", "Client 03", status="draft")  # a client with two plans
    s.event("ev:undated", "Client 04", "SLA_REVIEW", None)
    s.event("ev:untyped", "Client 04", None, "2025-03-03")
    s.event("ev:prior-year", "Client 04", "SLA_REVIEW", "2024-12-31")
    for i in range(8):
        s.exclude(clients[i], TYPES[i], "greyed out for now" if i % 2 else None)
        s.cache.append(
            {
                "client_name": clients[i],
                "event_type_id": s.types[i]["id"],
                "year": 2025,
                "expected_count": 4,
                "actual_count": i % 3,
                "compliance_percentage": 25,
                "status": "at_risk",
            }
        )
    return s


WIDE_CHANGES = (
    # completed events become scheduled and back: requirement, territory, BU and APAC updates
    "UPDATE segmentation_events SET completed = NOT completed "
    "WHERE id IN (SELECT id FROM segmentation_events WHERE event_date IS NOT NULL ORDER BY id LIMIT 9)",
    # three plans archived: their requirement rows go stale (deleted, or kept as orphans when noted)
    "UPDATE account_plans SET status = 'archived' "
    "WHERE client_name IN ('Client 07', 'Client 08', 'Client 09') AND fiscal_year = 2025",
    # a planner's note on one stale row: kept, reported as an orphan
    "UPDATE account_plan_event_requirements SET notes = 'keep me' "
    "WHERE client_name = 'Client 08' AND fiscal_year = 2025 "
    "AND event_type_id = "
    "(SELECT min(event_type_id::text)::uuid FROM account_plan_event_requirements WHERE client_name = 'Client 08')",
    # a new plan: inserts
    "INSERT INTO account_plans (id, client_name, fiscal_year, status) "
    "VALUES ('00000000-0000-4000-8000-00000000abcd', 'Client 10', 2025, 'submitted')",
    # a strategy archived: its territory row goes stale, its BU gets no territory (reset)
    "UPDATE territory_strategies SET status = 'archived' WHERE cse_name = 'Hal Roy'",
    # a territory renamed: territory and BU updates
    "UPDATE territory_strategies SET territory = 'Singapore + Brunei' WHERE cse_name = 'Dev Patel' AND quarter IS NULL",
)
