"""The direct PostgreSQL backend (psycopg 3): one connection, one advisory lock, one transaction per FY run.

Split by concern, as dlt splits a destination: :mod:`.connection` (connecting, errors by SQLSTATE, lock watching,
the session's opening and closing), :mod:`.catalog` (the schema check), :mod:`.read` (facts, explain's reads),
:mod:`.plan` (COPY staging and the diff in SQL), :mod:`.write` (apply, ledger), :mod:`.fingerprint` (the
sensor's hash), :mod:`.migrate` (the migrations runner). :class:`PostgresSession` is assembled from one mixin
per concern: the parts share one connection, one transaction and the state the check and the plan leave behind
(the schema report, the staged tables), so mixins over a common base say that plainly, where collaborators would
pass the session around to each other. The steps of a session: ``docs/backends.md``, "The direct path".
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import psycopg
from psycopg import sql

from compliance_sync.backends import catalog as relations_catalog  # not .catalog, the session's schema check
from compliance_sync.backends.port import BackendKind
from compliance_sync.backends.postgres.connection import LOCK_CLASS, connect, translate
from compliance_sync.backends.postgres.fingerprint import fingerprint_queries, sources_fingerprint
from compliance_sync.backends.postgres.plan import PlanPart
from compliance_sync.backends.postgres.read import ReadPart
from compliance_sync.backends.postgres.write import WritePart
from compliance_sync.config.secrets import describe_dsn, register_dsn
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.ledger import NO_LEDGER, LedgerRuns, readable_columns
from compliance_sync.domain.tables import LEDGER_TABLE


class PostgresSession(ReadPart, PlanPart, WritePart):
    """One FY run over one connection: check and read (:class:`ReadPart`), plan (:class:`PlanPart`), write
    (:class:`WritePart`), over the shared state and statement helpers of ``connection.SessionBase``."""


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

    def ledger_runs(self, fy: FiscalYear, limit: int = 5) -> LedgerRuns:
        """The FY's latest succeeded live runs in the ledger, newest first: one SELECT, no lock, no write."""
        try:
            with connect(self._dsn) as conn:
                found = relations_catalog.relations(conn, [LEDGER_TABLE], self.schema).get(LEDGER_TABLE)
                if found is None:
                    return LedgerRuns([], NO_LEDGER)
                columns, warning = readable_columns(found.columns)
                query = sql.SQL(
                    "SELECT {cols} FROM {t} WHERE fiscal_year = %s AND status = 'succeeded' AND mode = 'live' "
                    "ORDER BY started_at DESC LIMIT %s"
                ).format(
                    cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
                    t=sql.Identifier(self.schema, LEDGER_TABLE),
                )
                cur = conn.execute(query, (fy.year, limit))
                return LedgerRuns([dict(zip(columns, row)) for row in cur.fetchall()], warning)
        except psycopg.Error as exc:
            raise translate(exc, f"reading {LEDGER_TABLE}", self.where) from None

    def fingerprint(self, fy: FiscalYear) -> str:
        """A hash over the FY's rows of every source (order-independent sums of row hashes, and counts)."""
        return sources_fingerprint(self._dsn, fy, self.schema)


__all__ = [
    "LOCK_CLASS",
    "PostgresBackend",
    "PostgresSession",
    "connect",
    "fingerprint_queries",
    "translate",
]
