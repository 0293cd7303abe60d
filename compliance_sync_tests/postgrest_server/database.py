"""The database side of a request, as on Supabase: the database prepared with Supabase's roles and default grants,
connections that act as PostgREST's ``authenticator``, and the one transaction each request runs in, switched to the
request's role with its JWT claims set (so grants and row-level security decide what it sees and changes), committed
on success, rolled back on any error, retried once on a connection found dead before anything was committed."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.sql
from psycopg.adapt import Loader

from .auth import Auth
from .constants import API_ROLES, AUTHENTICATOR, EXPOSED_SCHEMA, log
from .errors import ApiError, pg_error
from .grammar import Prefs


class _RawJsonLoader(Loader):
    """Keep json results as the bytes PostgreSQL sent (no parse/serialise round trip in Python)."""

    def load(self, data) -> bytes:
        return bytes(data)


# Supabase's roles (supabase/postgres, migrations/db/init-scripts): cluster-wide, so created only when missing, each in
# a block of its own that tolerates a concurrent creator (tests run side by side on one server), and never dropped.
_ROLE_SQL = {
    "anon": "CREATE ROLE anon NOLOGIN NOINHERIT",
    "authenticated": "CREATE ROLE authenticated NOLOGIN NOINHERIT",
    "service_role": "CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS",
    AUTHENTICATOR: f"CREATE ROLE {AUTHENTICATOR} LOGIN NOINHERIT",
}
_CREATE_ROLE = """DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{role}') THEN {create}; END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$"""
_GRANT_ROLE = """DO $$ BEGIN
  IF NOT pg_catalog.pg_has_role('{member}', '{role}', 'MEMBER') THEN GRANT {role} TO {member}; END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$"""
_ROLES_READY = """SELECT count(*) = 3 FROM pg_catalog.pg_auth_members m
    JOIN pg_catalog.pg_roles r ON r.oid = m.roleid JOIN pg_catalog.pg_roles u ON u.oid = m.member
    WHERE u.rolname = 'authenticator' AND r.rolname IN ('anon', 'authenticated', 'service_role')"""
# Supabase's default grants on the exposed schema (usage; all on tables, sequences and functions, present and future),
# given once per database: a database that already has them (one cloned from a prepared template, say) keeps any
# grant a test revoked since.
_GRANTS_GIVEN = """SELECT EXISTS (SELECT FROM pg_catalog.pg_default_acl d
    JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace
    WHERE n.nspname = %s AND d.defaclrole = current_user::regrole AND d.defaclobjtype = 'r'
      AND EXISTS (SELECT FROM unnest(d.defaclacl) a WHERE a::text LIKE 'anon=%%'))"""
_GRANTS = [
    "GRANT USAGE ON SCHEMA {schema} TO anon, authenticated, service_role",
    "GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO anon, authenticated, service_role",
    "GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO anon, authenticated, service_role",
    "GRANT ALL ON ALL FUNCTIONS IN SCHEMA {schema} TO anon, authenticated, service_role",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT ALL ON TABLES TO anon, authenticated, service_role",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT ALL ON SEQUENCES TO anon, authenticated, service_role",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role",
]


def prepare_supabase_roles(url: str, schema: str = EXPOSED_SCHEMA) -> None:
    """Give the database Supabase's roles (``anon``, ``authenticated``, ``service_role`` with BYPASSRLS, and
    ``authenticator``, a member of the three) and its default grants on ``schema``; idempotent and safe to run from
    several servers at once."""
    with psycopg.connect(url, autocommit=True) as conn:
        for attempt in range(5):
            if conn.execute(_ROLES_READY).fetchone()[0]:
                break
            try:
                for role, create in _ROLE_SQL.items():
                    conn.execute(_CREATE_ROLE.format(role=role, create=create))
                for role in API_ROLES:
                    conn.execute(_GRANT_ROLE.format(member=AUTHENTICATOR, role=role))
            except psycopg.errors.InternalError:  # "tuple concurrently updated": another server did the same
                time.sleep(0.05 * (attempt + 1))
        else:
            raise RuntimeError("cannot create Supabase's roles (anon, authenticated, service_role, authenticator)")
        ident = psycopg.sql.Identifier(schema).as_string(conn)
        with conn.transaction():
            # one preparer per database at a time (advisory locks are per database, as the grants are)
            conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('postgrest_server.grants'))")
            if not conn.execute(_GRANTS_GIVEN, [schema]).fetchone()[0]:
                for grant in _GRANTS:
                    conn.execute(grant.format(schema=ident))


class Pool:
    """Idle connections kept for reuse. Each connection acts as ``authenticator`` (``SET SESSION AUTHORIZATION``), so
    a request's ``SET LOCAL ROLE`` succeeds for the roles granted to it and fails for any other, as PostgREST's
    does; a server whose user may not do that keeps its own user."""

    def __init__(self, url: str, max_idle: int = 8):
        self.url = url
        self.max_idle = max_idle
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._as_authenticator = True

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.url, autocommit=False, prepare_threshold=None, application_name="postgrest_server")
        conn.adapters.register_loader("json", _RawJsonLoader)
        conn.adapters.register_loader("jsonb", _RawJsonLoader)
        if self._as_authenticator:
            try:
                conn.execute(f"SET SESSION AUTHORIZATION {AUTHENTICATOR}")
                conn.commit()
            except psycopg.errors.InsufficientPrivilege:
                conn.rollback()
                self._as_authenticator = False
                log.warning("the database user may not act as %s; requests switch roles from it", AUTHENTICATOR)
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


def run_transaction(
    pool: Pool, auth: Auth, read_only: bool, fn: Callable[[psycopg.Connection], Any], prefs: Prefs
) -> Any:
    """One transaction, run as the request's role: commit on success, rollback on any error. A pooled connection
    found dead before the commit (the database restarted, a backend was terminated) is replaced and the request run
    once more: nothing of it can have been committed."""
    for attempt in (1, 2):
        conn, reused = pool.get()
        broken = False
        committing = False
        try:
            conn.read_only = read_only
            try:
                stmt, params = _settings_statement(auth, prefs)
                conn.execute(stmt, params)
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


def _settings_statement(auth: Auth, prefs: Prefs) -> tuple[str, list[Any]]:
    """PostgREST's transaction settings (``Query/PreQuery.hs`` txVarQuery), one statement: ``search_path``, the role
    (``SET LOCAL ROLE``: an unknown role fails with 22023, one not granted to the authenticator with 42501),
    ``request.jwt.claims``, ``request.method``/``path``/``headers``/``cookies`` and the ``Prefer: timezone``."""
    settings: list[tuple[str, str]] = [
        ("search_path", _SEARCH_PATH),
        ("role", auth.role),
        ("request.jwt.claims", json.dumps(auth.claims, separators=(",", ":"))),
        *auth.request.items(),
    ]
    if prefs.timezone:
        settings.append(("timezone", prefs.timezone))
    sql = "SELECT " + ", ".join("pg_catalog.set_config(%s, %s, true)" for _ in settings)
    return sql, [v for pair in settings for v in pair]


# Supabase's db-schemas and db-extra-search-path
_SEARCH_PATH = f'"{EXPOSED_SCHEMA}", "extensions"'
