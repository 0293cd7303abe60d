"""Shared fixtures: a throwaway PostgreSQL database per test that needs one.

The server comes from ``COMPLIANCE_SYNC_TEST_DATABASE_URL`` (any database on it; ``.ci/run`` exports it),
else ``postgresql://postgres@127.0.0.1:5432/postgres``, else an embedded PostgreSQL started for the session. Each
database is created fresh and dropped after, so no test depends on what an earlier run left behind.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# Dagster instances the tests create: with telemetry on, Dagster writes ~/.dagster/.telemetry whatever DAGSTER_HOME
# says, and the tests write nothing outside their own folders (test_embedded checks it as a fresh user)
NO_TELEMETRY = {"telemetry": {"enabled": False}}


def dagster_home(path: pathlib.Path) -> pathlib.Path:
    """A new DAGSTER_HOME folder for a test: Dagster's defaults (SQLite storage beside it), telemetry off."""
    path.mkdir(parents=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path


# helper modules with asserts of their own: rewritten like the tests (registered before any test imports them)
pytest.register_assert_rewrite("compliance_sync_tests.world", "compliance_sync_tests.rest_support")

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(autouse=True)
def _each_test_its_own_secrets():
    """The secrets to mask are registered process-wide: each test forgets those it registered, so a key one test
    made up (say, one containing "supabase") cannot mask words in a later test's messages."""
    from compliance_sync.config import secrets

    with secrets.isolated():
        yield


def _server_url() -> str:
    return os.environ.get("COMPLIANCE_SYNC_TEST_DATABASE_URL") or DEFAULT_URL


def url_for_database(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def server_url(tmp_path_factory) -> str:
    url = _server_url()
    if not os.environ.get("COMPLIANCE_SYNC_TEST_DATABASE_URL") and not _reachable(url):
        # a laptop without a server: the embedded PostgreSQL from PyPI (stopped when the session ends)
        from compliance_sync.devtools import embedded

        url = embedded.start(tmp_path_factory.mktemp("embedded-pg") / "data")
    try:
        with psycopg.connect(url, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:  # pragma: no cover - depends on the machine
        pytest.fail(
            "no PostgreSQL server reachable for the tests; set COMPLIANCE_SYNC_TEST_DATABASE_URL "
            f"(tried {conninfo_to_dict(url).get('host')}:{conninfo_to_dict(url).get('port')}): {exc}"
        )
    return url


@contextlib.contextmanager
def throwaway_database(server_url: str, prefix: str = "cs_test") -> Iterator[str]:
    """A new, empty database on the server; dropped (sessions and all) when the block ends."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_for_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(server_url: str) -> Iterator[str]:
    """A new, empty database; dropped after the test."""
    with throwaway_database(server_url) as url:
        yield url


@pytest.fixture
def migrated_db(db_url: str) -> str:
    """A new database with the full schema of SPEC §3 (no rows)."""
    from compliance_sync.backends.postgres.migrate import apply_full

    with psycopg.connect(db_url) as conn:
        apply_full(conn)
    return db_url


@pytest.fixture
def demo_db(migrated_db: str, tmp_path, monkeypatch) -> str:
    """The demo dataset, the environment of a deployment pointing at it (every other setting of this tool,
    Supabase and Dagster cleared) and a clean working directory."""
    from compliance_sync.config.settings import EXAMPLE_BU_MAP
    from compliance_sync.devtools.demo import load_demo_data

    with psycopg.connect(migrated_db) as conn:
        load_demo_data(conn)
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if (
            var.startswith(("COMPLIANCE_SYNC_", "NEXT_PUBLIC_", "SUPABASE_", "DAGSTER_"))
            and var != "COMPLIANCE_SYNC_TEST_DATABASE_URL"
        ):
            monkeypatch.delenv(var)
    monkeypatch.setenv("SUPABASE_DB_URL", migrated_db)
    monkeypatch.setenv("COMPLIANCE_SYNC_BU_MAP", str(EXAMPLE_BU_MAP))
    return migrated_db
