"""The direct PostgreSQL backend (psycopg 3): one connection, one lock, one transaction per FY run.

A session (SPEC §5 "No data loss, one consistent picture"):

1. connects (a failure names only ``host/dbname``, never the user or password);
2. takes the session advisory lock ``(LOCK_CLASS, FY)``, waiting at most the lock timeout and saying who
   holds it, so a second run of the same FY waits for the first and then finds nothing to change;
3. begins one ``REPEATABLE READ`` transaction (its snapshot is taken after the lock), with a bounded
   ``lock_timeout`` for every table and row lock;
4. :meth:`~PostgresSession.read_facts` checks the schema and row-level security, aggregates the FY's events
   in SQL (ids stay in PostgreSQL, in a temporary table) and reads the other facts;
5. :meth:`~PostgresSession.plan` stages the wanted rows with COPY into temporary tables and compares them
   with the targets inside PostgreSQL (``IS DISTINCT FROM`` on the owned columns): SELECTs only, so a dry
   run never writes to, locks or fires a trigger on a target;
6. :meth:`~PostgresSession.apply` inserts, updates and deletes from the stage in that same transaction,
   adds the ledger row and commits once; any failure rolls everything back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from compliance_sync.backends import catalog, schema
from compliance_sync.backends.port import BackendKind
from compliance_sync.config.logs import Progress
from compliance_sync.config.secrets import describe_dsn, redact, register_dsn
from compliance_sync.domain.diff import (
    DUPLICATE_EXAMPLES,
    Action,
    DiffLine,
    SyncDiff,
    TargetDiff,
    duplicate_example,
    key_of,
    to_json,
)
from compliance_sync.domain.facts import (
    CacheRow,
    CalendarCount,
    EventCounts,
    EventType,
    Exclusion,
    Facts,
    Frequency,
    Period,
    Plan,
    RawEvent,
    Strategy,
    Tier,
    UndatedEvent,
)
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.ledger import NO_LEDGER, LedgerRow, LedgerRuns, readable_columns
from compliance_sync.domain.tables import (
    BUSINESS_UNIT,
    EXCLUSIONS,
    INT,
    JSONB,
    LEDGER_TABLE,
    REQUIREMENTS,
    SOURCES,
    TARGET_BY_NAME,
    TARGETS,
    UUID,
    NotWanted,
    TargetTable,
)
from compliance_sync.domain.wanted import WantedRows, longest_texts
from compliance_sync.errors import ConcurrentChange, ConnectionFailure, DataError, SyncError

log = logging.getLogger(__name__)

LOCK_CLASS = 0x43535943  # first key of the two-int advisory lock: "CSYC"; the second key is the FY
MONTH_FIELD = 2**29  # the packed month counts of _event_counts
WORK_MEM = "128MB"  # per sort / hash of the run's own transaction: the event aggregation stays in memory
POLL_S = 0.5
REPORT_EVERY_S = 5.0

# SQLSTATEs (psycopg 3.3 puts SerializationFailure under OperationalError: classify by code, not class)
RETRY_STATES = {"40001", "40P01", "23505"}  # serialization failure, deadlock, a concurrent insert of a key
LOCK_STATES = {"55P03"}  # lock_not_available: lock_timeout passed
CANCELLED_STATES = {"57014"}
CONNECTION_STATES = {"57P01", "57P02", "57P03"}  # the server terminated the session or is shutting down


def connect(dsn: str, timeout_s: int = 10, autocommit: bool = True) -> psycopg.Connection:
    """A connection whose failure is a :class:`ConnectionFailure` naming only ``host/dbname``."""
    register_dsn(dsn)
    try:
        conninfo_to_dict(dsn)
    except Exception:  # the parser's message quotes pieces of the string, which may be the password
        raise ConnectionFailure(
            "cannot connect to PostgreSQL: the database URL (SUPABASE_DB_URL) is malformed (not shown: it may contain the password)"
        ) from None
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            connect_timeout=timeout_s,
            application_name="compliance_sync",
            prepare_threshold=None,  # safe behind poolers; every statement runs once anyway
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())
        raise ConnectionFailure(f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {detail}") from None
    except Exception as exc:  # a malformed URL: its parser's message may quote the password
        raise ConnectionFailure(f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {type(exc).__name__} (SUPABASE_DB_URL malformed?)") from None


def translate(exc: BaseException, what: str, where: str, broken: bool = False, blocker: str | None = None) -> SyncError:
    """A psycopg error as the run's error type (SPEC §7's exit codes), by SQLSTATE."""
    state = getattr(exc, "sqlstate", None) or ""
    text = " ".join(str(exc).split())
    if state in RETRY_STATES:
        return ConcurrentChange(f"{what}: a concurrent change ({text}); nothing written")
    if state in LOCK_STATES:
        held = f" held by {blocker}" if blocker else ""
        return DataError(f"{what}: gave up waiting for a lock{held} after the lock timeout (COMPLIANCE_SYNC_LOCK_TIMEOUT); nothing written")
    if state in CANCELLED_STATES:
        held = f" while waiting for a lock held by {blocker}" if blocker else ""
        return DataError(f"{what}: statement cancelled{held} ({text}); nothing written")
    if state == "42501":
        return DataError(
            f"{what}: permission denied ({text}); the job's role needs SELECT on the sources, SELECT, INSERT, "
            "UPDATE, DELETE on the four targets, INSERT on compliance_sync_runs and TEMPORARY on the database"
        )
    if broken or state in CONNECTION_STATES or state.startswith("08") or (isinstance(exc, psycopg.OperationalError) and not state):
        return ConnectionFailure(f"{what}: lost the connection to {where}: {text}")
    return DataError(f"{what}: {text}")


class LockWatch:
    """While a statement runs, a second connection says every few seconds which session blocks it (if any)."""

    def __init__(self, dsn: str, pid: int, what: str, first_check_s: float = 2.0) -> None:
        self.dsn, self.pid, self.what, self.first_check_s = dsn, pid, what, first_check_s
        self.blocker: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="compliance_sync-lockwatch", daemon=True)

    def __enter__(self) -> LockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        if self._stop.wait(self.first_check_s):
            return
        try:
            with connect(self.dsn, timeout_s=5) as conn:
                while not self._stop.is_set():
                    row = conn.execute(
                        "SELECT pid, coalesce(nullif(application_name, ''), usename::text, '?'), state, "
                        "now() - xact_start FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(%s)) LIMIT 1",
                        (self.pid,),
                    ).fetchone()
                    if row:
                        self.blocker = f"pid {row[0]} ({row[1]}, {row[2]}, in its transaction for {str(row[3]).split('.')[0]})"
                        log.warning("%s: waiting for a lock held by %s", self.what, self.blocker)
                    if self._stop.wait(REPORT_EVERY_S):
                        return
        except Exception as exc:  # the watch only informs; the bounded lock_timeout is what ends a wait
            log.debug("lock watch stopped: %s", exc)


class Background:
    """One statement run on the session's connection in a thread, so PostgreSQL works while Python computes
    (the caller must not touch the connection until :meth:`wait`). The GIL is released while libpq waits."""

    def __init__(self, session: PostgresSession, what: str, query: sql.Composable, params: Any = None) -> None:
        self.session, self.what = session, what
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(query, params), name="compliance_sync-background", daemon=True)
        self._thread.start()

    def _run(self, query: sql.Composable, params: Any) -> None:
        try:
            self.session._run(self.what, query, params, watch=True)
        except BaseException as exc:  # re-raised by wait(), in the caller's thread
            self.error = exc

    def wait(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Stop the statement (a run interrupted while PostgreSQL works) and wait for the thread."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.session.conn.cancel_safe()
            self._thread.join(timeout=30)


class PostgresBackend:
    """Direct PostgreSQL (``SUPABASE_DB_URL``): server-side filters and aggregation, one transaction."""

    name = BackendKind.POSTGRES
    atomic = True

    def __init__(self, dsn: str, lock_timeout_s: float = 60.0, schema_name: str = "public"):
        self._dsn = dsn
        register_dsn(dsn)
        self.schema = schema_name
        self.lock_timeout_s = lock_timeout_s
        self.where = describe_dsn(dsn)

    def __repr__(self) -> str:  # never the DSN
        return f"PostgresBackend({self.where!r})"

    def describe(self) -> str:
        return self.where

    @contextlib.contextmanager
    def session(self, fy: FiscalYear, as_of: dt.date) -> Iterator[PostgresSession]:
        conn = connect(self._dsn)
        sess = PostgresSession(self, conn, fy, as_of)
        try:
            sess.lock()
            sess.begin()
            yield sess
        finally:
            sess.close()

    @contextlib.contextmanager
    def reader(self, fy: FiscalYear, as_of: dt.date) -> Iterator[PostgresSession]:
        """A read-only session (``explain``): no advisory lock; one ``REPEATABLE READ READ ONLY`` transaction, so
        PostgreSQL itself refuses any write, temporary table included; rolled back at the end."""
        conn = connect(self._dsn)
        sess = PostgresSession(self, conn, fy, as_of, read_only=True)
        try:
            sess.begin()
            yield sess
        finally:
            sess.close()

    def _ledger(self) -> sql.Identifier:
        return sql.Identifier(self.schema, LEDGER_TABLE)

    def ledger_runs(self, fy: FiscalYear, limit: int = 5) -> LedgerRuns:
        """The FY's latest succeeded live runs in the ledger, newest first: one SELECT, no lock, no write."""
        try:
            with connect(self._dsn) as conn:
                found = catalog.relations(conn, [LEDGER_TABLE], self.schema).get(LEDGER_TABLE)
                if found is None:
                    return LedgerRuns([], NO_LEDGER)
                columns, warning = readable_columns(found.columns)
                query = sql.SQL(
                    "SELECT {cols} FROM {t} WHERE fiscal_year = %s AND status = 'succeeded' AND mode = 'live' "
                    "ORDER BY started_at DESC LIMIT %s"
                ).format(cols=sql.SQL(", ").join(map(sql.Identifier, columns)), t=self._ledger())
                cur = conn.execute(query, (fy.year, limit))
                return LedgerRuns([dict(zip(columns, row)) for row in cur.fetchall()], warning)
        except psycopg.Error as exc:
            raise translate(exc, f"reading {LEDGER_TABLE}", self.where) from None

    def fingerprint(self, fy: FiscalYear) -> str:
        """A hash over the FY's rows of every source (order-independent sums of row hashes, and counts)."""
        with connect(self._dsn) as conn:
            parts = [conn.execute(q, p).fetchone() for q, p in fingerprint_queries(fy, self.schema)]
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def fingerprint_queries(fy: FiscalYear, schema_name: str) -> list[tuple[sql.Composable, dict]]:
    years = fy.calendar_years()
    p = {"fy": fy.year, "start": fy.start, "end": fy.end, "from": dt.date(years[0], 1, 1), "to": dt.date(years[-1], 12, 31)}
    where = {
        "account_plans": "fiscal_year = %(fy)s",
        "territory_strategies": "fiscal_year = %(fy)s",
        "client_segmentation": "(effective_from <= %(end)s OR effective_from IS NULL) AND (effective_to IS NULL OR effective_to >= %(start)s)",
        "segmentation_events": "event_date IS NULL OR event_date BETWEEN least(%(start)s, %(from)s) AND greatest(%(end)s, %(to)s)",
        "segmentation_event_compliance": "year = ANY(ARRAY[%(y0)s, %(y1)s])",
    }
    p |= {"y0": years[0], "y1": years[-1]}
    out = []
    for s in SOURCES:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in s.columns)
        query = sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(row({cols})::text, 0)), 0) FROM {t} WHERE {w}").format(
            cols=cols, t=sql.Identifier(schema_name, s.name), w=sql.SQL(where.get(s.name, "true"))
        )
        out.append((query, p))
    return out


class PostgresSession:
    """One FY run over one connection (see the module docstring for the steps)."""

    def __init__(self, backend: PostgresBackend, conn: psycopg.Connection, fy: FiscalYear, as_of: dt.date, read_only: bool = False):
        self.backend = backend
        self.read_only = read_only  # explain: SELECTs only (no id aggregation into a temporary table)
        self.conn = conn
        self.fy = fy
        self.as_of = as_of
        self.schema = backend.schema
        self.warnings: list[str] = []
        self.report: schema.SchemaReport | None = None
        self.relations: dict[str, catalog.Relation] = {}
        self.planned: SyncDiff | None = None
        self.committed = False
        self.partly_written = False  # a single transaction: never
        self.keys_required = True  # False (a dry run): a target key without a unique index is reported, not an error
        self._event_ids: Background | None = None
        self._locked = False
        self._finished = False

    def written_so_far(self) -> dict | None:
        """Nothing to report: one transaction writes all of the FY or none of it."""
        return None

    # --- helpers ---------------------------------------------------------------------------------------
    def _t(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning(message)

    def _fail(self, exc: BaseException, what: str, blocker: str | None = None) -> SyncError:
        return translate(exc, what, self.backend.where, broken=self.conn.broken, blocker=blocker)

    def _watch(self, what: str) -> LockWatch:
        # the first look comes well before the lock timeout ends the wait, so the error can name the blocker
        return LockWatch(self.backend._dsn, self.conn.info.backend_pid, what, min(2.0, self.backend.lock_timeout_s / 4))

    def _run(self, what: str, query: sql.Composable | str, params: Any = None, watch: bool = False) -> psycopg.Cursor:
        """Execute one statement; with ``watch``, say who blocks it while it waits for a lock."""
        watcher = self._watch(what) if watch else contextlib.nullcontext()
        try:
            with watcher:
                return self.conn.execute(query, params)
        except psycopg.Error as exc:
            raise self._fail(exc, what, getattr(watcher, "blocker", None)) from None

    # --- opening and closing ---------------------------------------------------------------------------
    def lock(self) -> None:
        """The FY's advisory lock, waiting at most the lock timeout and saying who holds it meanwhile."""
        deadline = time.monotonic() + self.backend.lock_timeout_s
        next_report = time.monotonic()
        key = (LOCK_CLASS, self.fy.year)
        while True:
            got = self._run(f"taking the advisory lock of FY{self.fy.year}", "SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()[0]
            if got:
                self._locked = True
                return
            holder = self._run(
                "looking up the advisory lock's holder",
                "SELECT a.pid, coalesce(nullif(a.application_name, ''), '?'), a.backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = %s "
                "AND l.objid = %s AND l.granted LIMIT 1",
                (key[0] & 0xFFFFFFFF, key[1]),
            ).fetchone()
            who = f"pid {holder[0]} ({holder[1]}, connected {holder[2]:%Y-%m-%d %H:%M:%S})" if holder else "another session"
            now = time.monotonic()
            if now >= deadline:
                raise DataError(
                    f"another run of FY{self.fy.year} holds its advisory lock ({who}); gave up after "
                    f"{self.backend.lock_timeout_s:g} s (COMPLIANCE_SYNC_LOCK_TIMEOUT); nothing written"
                )
            if now >= next_report:
                log.info("waiting for the advisory lock of FY%s, held by %s (at most %.0f s more)", self.fy.year, who, deadline - now)
                next_report = now + REPORT_EVERY_S
            time.sleep(POLL_S)

    def begin(self) -> None:
        """One REPEATABLE READ transaction; its snapshot is taken by its first statement, after the lock."""
        self.conn.autocommit = False
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.conn.read_only = self.read_only
        timeout_ms = int(self.backend.lock_timeout_s * 1000)
        self._run("starting the transaction", (
            # jit: compiling costs more than it saves on these statements; a small statistics target keeps the
            # ANALYZE of each temporary stage cheap (its joins need row counts, not fine histograms)
            "SELECT set_config('lock_timeout', %s, true), set_config('work_mem', %s, true), set_config('jit', 'off', true), "
            "set_config('default_statistics_target', '10', true)"
        ), (f"{timeout_ms}ms", WORK_MEM))

    def close(self) -> None:
        conn = self.conn
        if self._event_ids is not None:
            self._event_ids.cancel()
        try:
            if conn.closed or conn.broken:
                return  # the server releases a dead session's advisory lock itself
            if conn.info.transaction_status != TransactionStatus.IDLE:
                conn.rollback()
            if self._locked:
                conn.autocommit = True
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, self.fy.year))
        except Exception as exc:  # closing the connection below releases the lock anyway
            log.warning("closing the PostgreSQL session: %s", redact(str(exc)))
        finally:
            conn.close()

    # --- schema check (SPEC §3, §3.3, §6) and row-level security --------------------------------------------
    def check_schema(self) -> schema.SchemaReport:
        names = [s.name for s in SOURCES] + [t.name for t in TARGETS] + [LEDGER_TABLE]
        try:
            relations = catalog.relations(self.conn, names, self.schema)
            keys = {
                t.name: catalog.find_key_index(self.conn, t.name, t.key, self.schema) is not None
                for t in TARGETS
                if t.name in relations and all(c in relations[t.name].columns for c in t.key)
            }
            hidden = catalog.rls_hidden(self.conn, [n for n in names if n in relations and n != LEDGER_TABLE], self.schema)
            user = self.conn.execute("SELECT current_user").fetchone()[0]
        except psycopg.Error as exc:
            raise self._fail(exc, "checking the schema") from None
        if self.read_only:  # nothing is written: a missing unique key does not stop a read
            keys = dict.fromkeys(keys, True)
        report = schema.check(relations, keys, f"{self.backend.where} (schema {self.schema})", self.keys_required)
        self.relations = relations
        if hidden:
            raise DataError(
                f"row-level security is enabled on {', '.join(hidden)} and role {user!r} neither owns "
                f"{'it' if len(hidden) == 1 else 'them'} nor has BYPASSRLS, so a read would return only the rows a "
                "policy lets it see; connect as the tables' owner or a role with BYPASSRLS (on Supabase: the "
                "postgres role), or use the REST API with the service-role key"
            )
        for w in report.warnings:
            self._warn(w)
        return report

    # --- reading ---------------------------------------------------------------------------------------------
    def _rows(self, what: str, query: sql.Composable, params: Any = None, binary: bool = False) -> list[tuple]:
        """Read rows; a read waits for a table lock another session holds (bounded by lock_timeout), so
        it is watched like a write."""
        watcher = self._watch(f"reading {what}")
        try:
            with watcher, self.conn.cursor(binary=binary) as cur:
                cur.execute(query, params)
                return cur.fetchall()
        except psycopg.Error as exc:
            raise self._fail(exc, f"reading {what}", watcher.blocker) from None

    def read_facts(self) -> Facts:
        self.report = self.check_schema()
        fy, t = self.fy, self._t
        p = {"fy": fy.year, "start": fy.start, "end": fy.end, "as_of": self.as_of, "sy": fy.start.year, "sm": fy.start.month}
        q = sql.SQL

        plans = self._rows("account_plans", q(
            "SELECT id::text, client_id::text, client_name, status::text FROM {} "
            "WHERE fiscal_year = %(fy)s AND status::text IS DISTINCT FROM 'archived'"
        ).format(t("account_plans")), p)
        periods = self._rows("client_segmentation", q(
            # infinite dates: -infinity starts before any FY, infinity is open like null (SPEC §4.2)
            "SELECT id::text, client_name, tier_id::text, cse_name, client_uuid::text, "
            "CASE WHEN effective_from = '-infinity' THEN date '0001-01-01' ELSE effective_from END, "
            "CASE WHEN effective_to = 'infinity' THEN NULL WHEN effective_to = '-infinity' THEN date '0001-01-01' ELSE effective_to END "
            "FROM {} WHERE (effective_from <= %(end)s OR effective_from IS NULL) AND (effective_to IS NULL OR effective_to >= %(start)s)"
        ).format(t("client_segmentation")), p)
        tiers = self._rows("segmentation_tiers", q("SELECT id::text, tier_name FROM {}").format(t("segmentation_tiers")))
        types = self._rows("segmentation_event_types", q("SELECT id::text, event_name, event_code, is_active FROM {}").format(t("segmentation_event_types")))
        freqs = self._rows("tier_event_requirements", q("SELECT tier_id::text, event_type_id::text, frequency FROM {}").format(t("tier_event_requirements")))
        strategies = self._rows("territory_strategies", q(
            "SELECT id::text, cse_name, territory, quarter, status::text, "
            "CASE WHEN isfinite(updated_at) IS NOT FALSE THEN updated_at END, CASE WHEN NOT isfinite(updated_at) THEN updated_at::text END FROM {} "
            "WHERE fiscal_year = %(fy)s AND status::text IS DISTINCT FROM 'archived'"
        ).format(t("territory_strategies")), p)
        exclusions = None
        if self.report.exclusions_exist:
            exclusions = [Exclusion(*r) for r in self._rows(EXCLUSIONS, q("SELECT client_name, event_type_id::text, reason FROM {}").format(t(EXCLUSIONS)))]
        undated = self._rows("segmentation_events", q("SELECT id::text, client_name FROM {} WHERE event_date IS NULL").format(t("segmentation_events")))
        years = fy.calendar_years()
        cache = self._rows("segmentation_event_compliance", q(
            "SELECT client_name, event_type_id::text, year, actual_count FROM {} WHERE year = ANY(%(years)s)"
        ).format(t("segmentation_event_compliance")), {"years": years})
        # completed events per calendar year, for the (client, type, year) of the cache's rows (the drift check)
        calendar = self._rows("segmentation_events", q(
            "SELECT e.client_name, e.event_type_id::text, extract(year FROM e.event_date)::int, count(*)::int FROM {events} e "
            "JOIN (SELECT DISTINCT client_name, event_type_id, year FROM {cache} WHERE year = ANY(%(years)s)) k "
            "ON k.client_name = e.client_name AND k.event_type_id = e.event_type_id "
            "AND e.event_date >= make_date(k.year, 1, 1) AND e.event_date < make_date(k.year + 1, 1, 1) "
            "WHERE e.completed IS TRUE GROUP BY 1, 2, 3"
        ).format(events=t("segmentation_events"), cache=t("segmentation_event_compliance")), {"years": years}) if cache else []
        counts = self._event_counts(p)  # last: it starts the ids' aggregation, which holds the connection
        return Facts(
            fy=fy,
            as_of=self.as_of,
            plans=[Plan(*r) for r in plans],
            periods=[Period(*r) for r in periods],
            tiers=[Tier(*r) for r in tiers],
            event_types=[EventType(*r) for r in types],
            requirements=[Frequency(*r) for r in freqs],
            strategies=[Strategy(*r[:5], r[5] if r[6] is None else r[6]) for r in strategies],  # ±infinity as text
            exclusions=exclusions,
            event_counts=counts,
            undated_events=[UndatedEvent(*r) for r in undated],
            compliance_cache=[CacheRow(*r) for r in cache],
            calendar_completed=[CalendarCount(*r) for r in calendar],
        )

    def _event_counts(self, p: dict[str, Any]) -> list[EventCounts]:
        """The FY's events counted in SQL per (client, type) and FY month, one row per (client, type) with its
        non-empty months packed one bigint each, ``month | completed << 4 | scheduled << 34``: one int8 array
        per row parses faster than text or three arrays (measured when it was chosen). The row's largest count comes along, so
        a month too full for its field (2**29 events) stops the run instead of being read wrong."""
        month = sql.SQL("(extract(year FROM event_date)::int - %(sy)s) * 12 + extract(month FROM event_date)::int - %(sm)s")
        # sorted aggregation for this statement: the inner groups arrive in the outer ones' order, parallel
        # workers sort the FY's events; two hash aggregations over every month are the slower plan here
        hashagg = self._rows("segmentation_events", "SELECT current_setting('enable_hashagg')")[0][0]
        self._run("counting events", "SELECT set_config('enable_hashagg', 'off', true)")
        rows = self._rows("segmentation_events", sql.SQL(
            "SELECT client_name, event_type_id::text, array_agg(m::int8 | (c << 4) | (s << 34)), sum(f)::int, max(greatest(c, s)) FROM ("
            "  SELECT client_name, event_type_id, {month} AS m,"
            "    count(*) FILTER (WHERE completed IS TRUE AND event_date <= %(as_of)s) AS c,"
            "    count(*) FILTER (WHERE NOT (completed IS TRUE AND event_date <= %(as_of)s)) AS s,"
            "    count(*) FILTER (WHERE completed IS TRUE AND event_date > %(as_of)s) AS f"
            "  FROM {events} WHERE event_date BETWEEN %(start)s AND %(end)s GROUP BY 1, 2, 3) AS per_month "
            "GROUP BY client_name, event_type_id"
        ).format(month=month, events=self._t("segmentation_events")), p)
        self._run("counting events", "SELECT set_config('enable_hashagg', %s, true)", (hashagg,))
        if self.read_only:
            return self._unpack(rows)
        # SPEC §4.4's ordered ids of each (client, type), aggregated by PostgreSQL while Python parses and computes
        self._event_ids = Background(self, "aggregating event ids", sql.SQL(
            "CREATE TEMP TABLE cs_event_ids ON COMMIT DROP AS "
            "SELECT client_name, event_type_id, to_jsonb(array_agg(id ORDER BY event_date, id)) AS ids "
            "FROM {events} WHERE event_date BETWEEN %(start)s AND %(end)s AND event_type_id IS NOT NULL GROUP BY 1, 2"
        ).format(events=self._t("segmentation_events")), p)
        return self._unpack(rows)

    @staticmethod
    def _unpack(rows: list[tuple]) -> list[EventCounts]:
        out = []
        for client, type_id, months, future, largest in rows:
            if largest >= MONTH_FIELD:
                raise DataError(f"segmentation_events: {largest} events of client {client!r} and event type {type_id} in one month; "
                                f"this tool counts at most {MONTH_FIELD - 1} per month")
            c, s = [0] * 12, [0] * 12
            for v in months:
                m = v & 15
                c[m] = (v >> 4) & 0x3FFFFFFF
                s[m] = v >> 34
            out.append(EventCounts(client, type_id, tuple(c), tuple(s), future))
        return out

    # --- reading for explain (read-only sessions) ---------------------------------------------------------------
    def read_events(self, client_names: Sequence[str]) -> list[RawEvent]:
        rows = self._rows("segmentation_events", sql.SQL(
            "SELECT id::text, client_name, event_type_id::text, event_date, completed FROM {} WHERE client_name = ANY(%s)"
        ).format(self._t("segmentation_events")), (list(client_names),))
        return [RawEvent(*r) for r in rows]

    def read_rows(self, table: str, column: str | None, values: Sequence[Any]) -> list[dict[str, Any]]:
        t = TARGET_BY_NAME[table]
        match = sql.SQL("true")
        if column is not None:
            cast = sql.SQL("::uuid[]" if t.types[column] == UUID else "")
            match = sql.SQL("t.{} = ANY(%(values)s{})").format(sql.Identifier(column), cast)
        columns = list(t.columns)
        rows = self._rows(table, sql.SQL("SELECT {}, {} FROM {} t WHERE t.fiscal_year = %(fy)s AND {}").format(
            self._select(t, "t", columns), self._has_foreign(t, "t"), self._t(table), match
        ), {"fy": self.fy.year, "values": list(values)})
        return [dict(zip(columns, r[:-1])) | {"has_foreign": r[-1]} for r in rows]

    # --- planning: stage the wanted rows, compare inside PostgreSQL ------------------------------------------
    def _stage_columns(self, target: TargetTable, columns: Sequence[str]) -> sql.Composable:
        """Stage columns typed as the target's (base types: a domain's checks apply when writing)."""
        shown = self.relations[target.name].columns
        return sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(shown[c].shown)) for c in columns)

    def _copy(self, what: str, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        progress = Progress(f"staging {what}")
        n = 0
        try:
            with self.conn.cursor() as cur:
                stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
                with cur.copy(stmt) as copy:
                    for row in rows:
                        copy.write_row(row)
                        n += 1
                        if n % 50_000 == 0:
                            progress.add(50_000)
        except psycopg.Error as exc:
            raise self._fail(exc, f"staging {what}") from None
        progress.finish()
        return n

    def _stage(self, wanted: WantedRows) -> None:
        req = wanted.requirements
        target = TARGET_BY_NAME[REQUIREMENTS]
        client_cols = ("client_name", "event_type_id", "segment", "event_type_name", "required_count", "completed_count",
                       "scheduled_count", "compliance_percentage", "status", "next_due_date")
        self._run("staging", sql.SQL("CREATE TEMP TABLE cs_plans (plan_id uuid, client_id uuid, client_name text) ON COMMIT DROP"))
        self._run("staging", sql.SQL("CREATE TEMP TABLE cs_client_reqs ({}) ON COMMIT DROP").format(self._stage_columns(target, client_cols)))
        self._copy("plans", "cs_plans", ("plan_id", "client_id", "client_name"), ((p.plan_id, p.client_id, p.client_name) for p in req.plans))
        self._copy(
            "client requirements",
            "cs_client_reqs",
            client_cols,
            (
                (name, r.event_type_id, req.segments[name], r.event_type_name, r.required, r.completed, r.scheduled, r.percent, r.status, r.next_due)
                for name, reqs in req.by_client.items()
                for r in reqs
            ),
        )
        self._run("staging", "ANALYZE cs_plans")
        self._run("staging", "ANALYZE cs_client_reqs")
        self._event_ids.wait()
        self._run("staging", "ANALYZE cs_event_ids")  # the view's joins are planned from these statistics
        # one row per plan x client requirement (SPEC §4.5), ids from the FY's events (SPEC §4.4): a view, so
        # the rows are never stored twice; the comparison and the insert each join what they need
        self._run("staging", sql.SQL(
            "CREATE TEMP VIEW cs_want_{n} AS "
            "SELECT p.plan_id, r.event_type_id, {fy}::int AS fiscal_year, p.client_id, p.client_name, r.segment, "
            "r.event_type_name, r.required_count, r.completed_count, r.scheduled_count, r.compliance_percentage, "
            "r.status, r.next_due_date, coalesce(e.ids, '[]'::jsonb) AS linked_event_ids "
            "FROM cs_plans p JOIN cs_client_reqs r ON r.client_name = p.client_name "
            "LEFT JOIN cs_event_ids e ON e.client_name = p.client_name AND e.event_type_id = r.event_type_id"
        ).format(n=sql.SQL(str(TARGETS.index(target))), fy=sql.Literal(self.fy.year)))
        for i, t in enumerate(TARGETS):
            if t.name == REQUIREMENTS:
                continue
            stage = f"cs_want_{i}"
            self._run("staging", sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(sql.Identifier(stage), self._stage_columns(t, t.columns)))
            self._copy(t.name, stage, t.columns, ([to_json(row[c]) if t.types[c] == JSONB else row[c] for c in t.columns] for row in wanted.rows(t.name)))
            if t.not_wanted == NotWanted.RESET:  # SPEC §4.8: a BU row of the FY without territory is reset
                cols = sql.SQL(", ").join(map(sql.Identifier, t.columns))
                values = sql.SQL(", ").join([sql.Identifier("t", c) for c in t.key] + [sql.Literal(to_json(v) if t.types[c] == JSONB else v) for c, v in t.reset_values.items()])
                self._run("staging", sql.SQL(
                    "INSERT INTO {stage} ({cols}) SELECT {values} FROM {target} t WHERE t.fiscal_year = %(fy)s AND {full} "
                    "AND NOT EXISTS (SELECT 1 FROM {stage} w WHERE {match})"
                ).format(stage=sql.Identifier(stage), cols=cols, values=values, target=self._current(t),
                         full=self._full_key(t, "t"), match=self._match(t, "w", "t")), {"fy": self.fy.year})
        for i, t in enumerate(TARGETS):
            if t.name != REQUIREMENTS:
                self._run("staging", sql.SQL("ANALYZE {}").format(sql.Identifier(f"cs_want_{i}")))

    @staticmethod
    def _match(t: TargetTable, a: str, b: str) -> sql.Composable:
        return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(a, c), sql.Identifier(b, c)) for c in t.key)

    @staticmethod
    def _full_key(t: TargetTable, alias: str) -> sql.Composable:
        return sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(alias, c)) for c in t.key)

    def _has_foreign(self, t: TargetTable, alias: str) -> sql.Composable:
        """True when the row carries a non-null column the job does not own (SPEC §5); ``num_nonnulls``
        takes at most 100 arguments, so long column lists are split."""
        columns = self.report.foreign_columns[t.name]
        if not columns:
            return sql.SQL("false")
        chunks = [columns[i : i + 90] for i in range(0, len(columns), 90)]
        return sql.SQL("({})").format(sql.SQL(" OR ").join(
            sql.SQL("num_nonnulls({}) > 0").format(sql.SQL(", ").join(sql.Identifier(alias, c) for c in chunk)) for chunk in chunks
        ))

    def _classify(self, i: int, t: TargetTable) -> None:
        """``cs_diff_i``: every wanted or current row of the FY with its action, key and wanted values."""
        owned_w = sql.SQL(", ").join(sql.Identifier("w", c) for c in t.owned)
        owned_t = sql.SQL(", ").join(sql.Identifier("t", c) for c in t.owned)
        stale = sql.SQL("CASE WHEN {} THEN 'orphan' ELSE 'delete' END").format(self._has_foreign(t, "t")) if t.not_wanted == NotWanted.PRUNE else sql.SQL("'unchanged'")
        keys = sql.SQL(", ").join(sql.SQL("coalesce({}, {}) AS {}").format(sql.Identifier("w", c), sql.Identifier("t", c), sql.Identifier(c)) for c in t.key)
        self._run(f"comparing {t.name}", sql.SQL(
            "CREATE TEMP TABLE {diff} ON COMMIT DROP AS SELECT "
            "CASE WHEN t.{k0} IS NULL THEN 'insert' WHEN w.{k0} IS NULL THEN {stale} "
            "WHEN ROW({owned_w}) IS DISTINCT FROM ROW({owned_t}) THEN 'update' ELSE 'unchanged' END AS action, {keys} "
            "FROM {want} w FULL JOIN (SELECT * FROM {target} t WHERE t.fiscal_year = %(fy)s AND {full}) t ON {match}"
        ).format(diff=sql.Identifier(f"cs_diff_{i}"), k0=sql.Identifier(t.key[0]), stale=stale, owned_w=owned_w, owned_t=owned_t,
                 keys=keys, want=sql.Identifier(f"cs_want_{i}"), target=self._current(t), full=self._full_key(t, "t"), match=self._match(t, "w", "t")),
            {"fy": self.fy.year}, watch=True)
        # the writes join the stage through this table: without statistics PostgreSQL guesses a handful of rows
        self._run(f"comparing {t.name}", sql.SQL("ANALYZE {}").format(sql.Identifier(f"cs_diff_{i}")))

    def _order(self, t: TargetTable, alias: str) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL('{}::text COLLATE "C"').format(sql.Identifier(alias, c)) if t.types[c] != INT else sql.Identifier(alias, c) for c in t.key
        )

    def _select(self, t: TargetTable, alias: str, columns: Sequence[str]) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(alias, c)) if t.types[c] == UUID else sql.Identifier(alias, c) for c in columns
        )

    def _target_diff(self, i: int, t: TargetTable, limit: int) -> TargetDiff:
        diff = TargetDiff(t)
        fy = {"fy": self.fy.year}
        for action, n in self._rows(t.name, sql.SQL("SELECT action, count(*) FROM {} GROUP BY 1").format(sql.Identifier(f"cs_diff_{i}"))):
            setattr(diff, {"insert": "inserted", "update": "updated", "delete": "deleted", "orphan": "orphans", "unchanged": "unchanged"}[action], n)
        current = sql.SQL("SELECT count(*) FILTER (WHERE {full}), count(*) FILTER (WHERE NOT ({full})), {completed}, {territories} FROM {target} t WHERE t.fiscal_year = %(fy)s").format(
            full=self._full_key(t, "t"),
            completed=sql.SQL("coalesce(sum(t.completed_count) FILTER (WHERE {}), 0)").format(self._full_key(t, "t")) if t.name == REQUIREMENTS else sql.SQL("0"),
            territories=sql.SQL("count(*) FILTER (WHERE t.territory_count > 0)") if t.name == BUSINESS_UNIT else sql.SQL("0"),
            target=self._current(t),
        )
        diff.current_count, diff.null_keys, diff.current_completed, diff.current_with_territories = self._rows(t.name, current, fy)[0]
        columns = list(t.columns)
        counted = {Action.INSERT: diff.inserted, Action.UPDATE: diff.updated, Action.DELETE: diff.deleted, Action.ORPHAN: diff.orphans}
        for action in (a for a in Action if counted[a]):
            # the first rows in key order from the narrow diff table, then their values: never a sort of every row
            rows = self._rows(t.name, sql.SQL(
                "WITH d AS (SELECT {keys} FROM {diff} d WHERE d.action = %(action)s ORDER BY {order} LIMIT %(limit)s) "
                "SELECT {w}, {c} FROM d LEFT JOIN (SELECT * FROM {want} WHERE {k0} IN (SELECT {k0} FROM d)) w ON {mw} "
                "LEFT JOIN (SELECT * FROM {target} WHERE fiscal_year = %(fy)s) c ON {mc} ORDER BY {order}"
            ).format(keys=sql.SQL(", ").join(sql.Identifier("d", k) for k in t.key), w=self._select(t, "w", columns), c=self._select(t, "c", columns),
                     diff=sql.Identifier(f"cs_diff_{i}"), want=sql.Identifier(f"cs_want_{i}"), mw=self._match(t, "w", "d"), target=self._current(t),
                     mc=self._match(t, "c", "d"), order=self._order(t, "d"), k0=sql.Identifier(t.key[0])), fy | {"action": action.value, "limit": limit})
            for row in rows:
                new = dict(zip(columns, row[: len(columns)]))
                old = dict(zip(columns, row[len(columns) :]))
                has_new, has_old = action in (Action.INSERT, Action.UPDATE), action != Action.INSERT
                diff.lines.append(DiffLine(action, key_of(t, new if has_new else old), old if has_old else None, new if has_new else None))
        if t.name in self.report.missing_keys:
            self._count_duplicates(t, diff)
        return diff

    # --- a dry run before `migrate --minimal`: targets whose key no unique index backs (SPEC §5) -------------
    def _current(self, t: TargetTable) -> sql.Composable:
        """Where the plan reads a target's current rows: the table itself, or, when no unique index backs its
        key, ``cs_current_<i>`` with one row per key (see :meth:`_keep_one_per_key`)."""
        if t.name in self.report.missing_keys:
            return sql.Identifier(f"cs_current_{TARGETS.index(t)}")
        return self._t(t.name)

    def _keep_one_per_key(self, t: TargetTable) -> None:
        """``cs_current_<i>``: the FY's rows of a target without a unique key, one per key: the row
        ``migrate --minimal --dedupe`` keeps (latest ``updated_at``, NULL oldest; then greatest ``id``; then
        greatest ``ctid``), so the dry run shows the diff a live run makes after that migration; rows with a NULL
        key column stay as they are. A temporary view, gone with the dry run's transaction."""
        columns = self.relations[t.name].columns
        order = [
            sql.SQL("{} DESC NULLS LAST").format(sql.Identifier(c))
            for c in ("updated_at", "id")
            if c in columns and c not in t.key
        ]
        keys = sql.SQL(", ").join(map(sql.Identifier, t.key))
        full = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in t.key)
        view = sql.SQL(
            "CREATE TEMP VIEW {view} AS SELECT * FROM (SELECT DISTINCT ON ({keys}) * FROM {target} "
            "WHERE fiscal_year = {fy} AND {full} ORDER BY {keys}, {order}) kept "
            "UNION ALL SELECT * FROM {target} WHERE fiscal_year = {fy} AND NOT ({full})"
        ).format(
            view=sql.Identifier(f"cs_current_{TARGETS.index(t)}"),
            keys=keys,
            target=self._t(t.name),
            fy=sql.Literal(self.fy.year),
            full=full,
            order=sql.SQL(", ").join([*order, sql.SQL("ctid DESC")]),
        )
        self._run(f"comparing {t.name}", view)

    def _count_duplicates(self, t: TargetTable, diff: TargetDiff) -> None:
        """The FY's keys that several rows of ``t`` hold: how many, the surplus rows, the first examples."""
        grouped = sql.SQL(
            "SELECT {select}, count(*) AS n FROM {target} t WHERE t.fiscal_year = %(fy)s AND {full} "
            "GROUP BY {keys} HAVING count(*) > 1"
        ).format(
            select=self._select(t, "t", t.key),
            target=self._t(t.name),
            full=self._full_key(t, "t"),
            keys=sql.SQL(", ").join(sql.Identifier("t", c) for c in t.key),
        )
        fy = {"fy": self.fy.year}
        totals = sql.SQL("SELECT count(*), coalesce(sum(n - 1), 0)::int FROM ({}) d").format(grouped)
        diff.duplicate_keys, diff.duplicate_rows = self._rows(t.name, totals, fy)[0]
        if diff.duplicate_keys:
            first = sql.SQL("SELECT * FROM ({}) d ORDER BY n DESC, {} LIMIT {}").format(
                grouped, self._order(t, "d"), sql.Literal(DUPLICATE_EXAMPLES)
            )
            diff.duplicate_examples = [duplicate_example(t, r[:-1], r[-1]) for r in self._rows(t.name, first, fy)]

    def plan(self, wanted: WantedRows, limit: int) -> SyncDiff:
        if self.report is None or self.read_only:
            raise RuntimeError("read_facts() first, in a session that may write: the plan stages the wanted rows")
        schema.check_lengths(self.report.varchar_limits, longest_texts(wanted))
        for t in TARGETS:
            if t.name in self.report.missing_keys:
                self._keep_one_per_key(t)
        self._stage(wanted)
        targets = {}
        for i, t in enumerate(TARGETS):
            self._classify(i, t)
            targets[t.name] = self._target_diff(i, t, limit)
            targets[t.name].key_backed = t.name not in self.report.missing_keys
        self.planned = SyncDiff(self.fy.year, targets)
        return self.planned

    # --- writing ---------------------------------------------------------------------------------------------
    def _write_target(self, i: int, t: TargetTable, run_ts: dt.datetime) -> None:
        diff, want, target = sql.Identifier(f"cs_diff_{i}"), sql.Identifier(f"cs_want_{i}"), self._t(t.name)
        cols = sql.SQL(", ").join(map(sql.Identifier, t.columns))
        ts = {"ts": run_ts}
        if self.planned.targets[t.name].inserted:
            self._run(f"writing {t.name}", sql.SQL(
                "INSERT INTO {target} ({cols}, updated_at) SELECT {wcols}, %(ts)s FROM {want} w JOIN {diff} d ON {match} WHERE d.action = 'insert'"
            ).format(target=target, cols=cols, wcols=sql.SQL(", ").join(sql.Identifier("w", c) for c in t.columns), want=want, diff=diff,
                     match=self._match(t, "w", "d")), ts, watch=True)
        if self.planned.targets[t.name].updated:
            self._run(f"writing {t.name}", sql.SQL(
                "UPDATE {target} t SET {sets}, updated_at = %(ts)s FROM {want} w JOIN {diff} d ON {mwd} "
                "WHERE d.action = 'update' AND {mtw} AND t.fiscal_year = %(fy)s"
            ).format(target=target, sets=sql.SQL(", ").join(sql.SQL("{c} = w.{c}").format(c=sql.Identifier(c)) for c in t.owned),
                     want=want, diff=diff, mwd=self._match(t, "w", "d"), mtw=self._match(t, "t", "w")), ts | {"fy": self.fy.year}, watch=True)
        if self.planned.targets[t.name].deleted:
            self._run(f"writing {t.name}", sql.SQL(
                "DELETE FROM {target} t USING {diff} d WHERE d.action = 'delete' AND {match} AND NOT {foreign}"
            ).format(target=target, diff=diff, match=self._match(t, "t", "d"), foreign=self._has_foreign(t, "t")), watch=True)

    def _insert_ledger(self, ledger: LedgerRow) -> None:
        columns = self.report.ledger_columns if self.report else None
        if columns is None:
            return
        values = ledger.values(columns)
        self._run(f"writing {LEDGER_TABLE}", sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            self._t(LEDGER_TABLE), sql.SQL(", ").join(map(sql.Identifier, values)), sql.SQL(", ").join(sql.Placeholder() * len(values))
        ), list(values.values()))

    def apply(self, diff: SyncDiff, run_ts: dt.datetime, ledger: LedgerRow) -> None:
        """Write all four targets and the ledger row in the session's transaction; commit once. Any failure
        rolls the whole transaction back: every target keeps its rows as they were."""
        if self._finished or diff is not self.planned:
            raise RuntimeError("apply() takes the diff this session planned, once")
        self._finished = True
        try:
            for i, t in enumerate(TARGETS):
                self._write_target(i, t, run_ts)
            self._insert_ledger(ledger)
            self._run("committing", "DROP VIEW cs_want_0")  # the temporary tables under it drop at commit
            try:
                self.conn.commit()
            except psycopg.Error as exc:
                raise self._fail(exc, "committing") from None
        except BaseException:
            with contextlib.suppress(Exception):
                self.conn.rollback()
            raise
        self.committed = True

    def record_failure(self, ledger: LedgerRow) -> None:
        self._finished = True
        try:
            if self.conn.closed or self.conn.broken:
                return
            if self.conn.info.transaction_status != TransactionStatus.IDLE:
                self.conn.rollback()
            self._insert_ledger(ledger)
            self.conn.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.conn.rollback()
            self._warn(f"could not record the failed run in {LEDGER_TABLE}: {redact(str(exc))}")
