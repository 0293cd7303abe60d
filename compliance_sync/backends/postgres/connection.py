"""The direct path's connection: connecting, SQLSTATEs translated into the run's errors, lock waits watched.

:class:`SessionBase` is what every part of a session shares: its state, the two statement helpers every
statement goes through (so every failure is translated alike), and opening and closing (the FY's advisory lock,
one ``REPEATABLE READ`` transaction, rollback and unlock). See ``docs/backends.md``, "The direct path".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from compliance_sync.backends import catalog, schema
from compliance_sync.backends.postgres import fragments
from compliance_sync.config.secrets import describe_dsn, redact, register_dsn
from compliance_sync.domain.diff import SyncDiff
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.tables import TargetTable
from compliance_sync.errors import ConcurrentChange, ConnectionFailure, DataError, SyncError

if TYPE_CHECKING:
    from compliance_sync.backends.postgres import PostgresBackend

log = logging.getLogger(__name__)

LOCK_CLASS = 0x43535943  # first key of the two-int advisory lock: "CSYC"; the second key is the FY
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
            "cannot connect to PostgreSQL: the database URL (SUPABASE_DB_URL) is malformed "
            "(not shown: it may contain the password)"
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
        raise ConnectionFailure(
            f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {type(exc).__name__} (SUPABASE_DB_URL malformed?)"
        ) from None


def translate(exc: BaseException, what: str, where: str, broken: bool = False, blocker: str | None = None) -> SyncError:
    """A psycopg error as the run's error type (SPEC §7's exit codes), by SQLSTATE."""
    state = getattr(exc, "sqlstate", None) or ""
    text = " ".join(str(exc).split())
    if state in RETRY_STATES:
        return ConcurrentChange(f"{what}: a concurrent change ({text}); nothing written")
    if state in LOCK_STATES:
        held = f" held by {blocker}" if blocker else ""
        return DataError(
            f"{what}: gave up waiting for a lock{held} after the lock timeout (COMPLIANCE_SYNC_LOCK_TIMEOUT); "
            "nothing written"
        )
    if state in CANCELLED_STATES:
        held = f" while waiting for a lock held by {blocker}" if blocker else ""
        return DataError(f"{what}: statement cancelled{held} ({text}); nothing written")
    if state == "42501":
        return DataError(
            f"{what}: permission denied ({text}); the job's role needs SELECT on the sources, SELECT, INSERT, "
            "UPDATE, DELETE on the four targets, INSERT on compliance_sync_runs and TEMPORARY on the database"
        )
    lost = state in CONNECTION_STATES or state.startswith("08")
    if broken or lost or (isinstance(exc, psycopg.OperationalError) and not state):
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
                        since = str(row[3]).split(".")[0]
                        self.blocker = f"pid {row[0]} ({row[1]}, {row[2]}, in its transaction for {since})"
                        log.warning("%s: waiting for a lock held by %s", self.what, self.blocker)
                    if self._stop.wait(REPORT_EVERY_S):
                        return
        except Exception as exc:  # the watch only informs; the bounded lock_timeout is what ends a wait
            log.debug("lock watch stopped: %s", exc)


class Background:
    """One statement run on the session's connection in a thread, so PostgreSQL works while Python computes
    (the caller must not touch the connection until :meth:`wait`). The GIL is released while libpq waits."""

    def __init__(self, session: SessionBase, what: str, query: sql.Composable, params: Any = None) -> None:
        self.session, self.what = session, what
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(query, params), name="compliance_sync-background", daemon=True
        )
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


class SessionBase:
    """One FY run over one connection: its state, its statement helpers, opening and closing."""

    def __init__(
        self,
        backend: PostgresBackend,
        conn: psycopg.Connection,
        fy: FiscalYear,
        as_of: dt.date,
        read_only: bool = False,
    ):
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

    def _rows(self, what: str, query: sql.Composable | str, params: Any = None, binary: bool = False) -> list[tuple]:
        """Read rows; a read waits for a table lock another session holds (bounded by lock_timeout), so
        it is watched like a write."""
        watcher = self._watch(f"reading {what}")
        try:
            with watcher, self.conn.cursor(binary=binary) as cur:
                cur.execute(query, params)
                return cur.fetchall()
        except psycopg.Error as exc:
            raise self._fail(exc, f"reading {what}", watcher.blocker) from None

    def _has_foreign(self, t: TargetTable, alias: str) -> sql.Composable:
        """True when the row carries a non-null column the job does not own (SPEC §5)."""
        return fragments.has_foreign(self.report.foreign_columns[t.name], alias)

    # --- opening and closing ---------------------------------------------------------------------------
    def lock(self) -> None:
        """The FY's advisory lock, waiting at most the lock timeout and saying who holds it meanwhile."""
        deadline = time.monotonic() + self.backend.lock_timeout_s
        next_report = time.monotonic()
        key = (LOCK_CLASS, self.fy.year)
        while True:
            what = f"taking the advisory lock of FY{self.fy.year}"
            got = self._run(what, "SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()[0]
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
            if holder:
                who = f"pid {holder[0]} ({holder[1]}, connected {holder[2]:%Y-%m-%d %H:%M:%S})"
            else:
                who = "another session"
            now = time.monotonic()
            if now >= deadline:
                raise DataError(
                    f"another run of FY{self.fy.year} holds its advisory lock ({who}); gave up after "
                    f"{self.backend.lock_timeout_s:g} s (COMPLIANCE_SYNC_LOCK_TIMEOUT); nothing written"
                )
            if now >= next_report:
                log.info(
                    "waiting for the advisory lock of FY%s, held by %s (at most %.0f s more)",
                    self.fy.year,
                    who,
                    deadline - now,
                )
                next_report = now + REPORT_EVERY_S
            time.sleep(POLL_S)

    def begin(self) -> None:
        """One REPEATABLE READ transaction; its snapshot is taken by its first statement, after the lock."""
        self.conn.autocommit = False
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.conn.read_only = self.read_only
        timeout_ms = int(self.backend.lock_timeout_s * 1000)
        self._run(
            "starting the transaction",
            (
                # jit: compiling costs more than it saves on these statements; a small statistics target keeps
                # the ANALYZE of each temporary stage cheap (its joins need row counts, not fine histograms)
                "SELECT set_config('lock_timeout', %s, true), set_config('work_mem', %s, true), "
                "set_config('jit', 'off', true), set_config('default_statistics_target', '10', true)"
            ),
            (f"{timeout_ms}ms", WORK_MEM),
        )

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
