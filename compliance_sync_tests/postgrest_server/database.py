"""The database side of a request: a small connection pool and the one transaction each request runs in (commit on
success, rollback on any error, one retry on a connection found dead before anything was committed)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.adapt import Loader

from .auth import Auth
from .constants import log
from .errors import ApiError, pg_error
from .grammar import Prefs


class _RawJsonLoader(Loader):
    """Keep json results as the bytes PostgreSQL sent (no parse/serialise round trip in Python)."""

    def load(self, data) -> bytes:
        return bytes(data)


class Pool:
    def __init__(self, url: str, max_idle: int = 8):
        self.url = url
        self.max_idle = max_idle
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.url, autocommit=False, prepare_threshold=None, application_name="postgrest_server")
        conn.adapters.register_loader("json", _RawJsonLoader)
        conn.adapters.register_loader("jsonb", _RawJsonLoader)
        return conn

    def get(self) -> tuple[psycopg.Connection, bool]:
        """A connection and whether it was reused from the pool."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn, True
        try:
            return self._connect(), False
        except psycopg.OperationalError as exc:
            raise ApiError(
                503, "PGRST000", "Database connection error. Retrying the connection.", str(exc).strip() or None
            ) from None

    def put(self, conn: psycopg.Connection, broken: bool = False) -> None:
        if broken or conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(Exception):
                conn.close()
            return
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()

    # -- transactions


def run_transaction(
    pool: Pool, auth: Auth, read_only: bool, fn: Callable[[psycopg.Connection], Any], prefs: Prefs
) -> Any:
    """One transaction: commit on success, rollback on any error. A pooled connection found dead before the
    commit (the database restarted, a backend was terminated) is replaced and the request run once more: nothing
    of it can have been committed."""
    for attempt in (1, 2):
        conn, reused = pool.get()
        broken = False
        committing = False
        try:
            conn.read_only = read_only
            try:
                if prefs.timezone:
                    conn.execute("SELECT set_config('timezone', %s, true)", [prefs.timezone])
                result = fn(conn)
                committing = True
                conn.commit()
                return result
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise
        except psycopg.Error as exc:
            broken = conn.closed or conn.broken
            if broken and reused and not committing and attempt == 1:
                log.warning("a pooled database connection was dead (%s); retrying on a new one", exc)
                continue
            raise pg_error(exc, auth.authed) from None
        finally:
            pool.put(conn, broken)
    raise AssertionError("unreachable")
