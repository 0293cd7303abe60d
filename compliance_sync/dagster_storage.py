"""Dagster's own storage for ``dagster.yaml``: PostgreSQL (dagster-postgres) from ``DAGSTER_PG_URL`` or its parts.

``DAGSTER_PG_URL`` wins; else ``DAGSTER_PG_HOST`` (+ ``DAGSTER_PG_PORT``, ``DAGSTER_PG_USER``,
``DAGSTER_PG_PASSWORD``, ``DAGSTER_PG_DB``). The URL is given the psycopg2 driver, because SQLAlchemy 2.1
with psycopg 3 installed breaks dagster-postgres' ``NOTIFY``. With neither set, Dagster's records go to
SQLite under ``$DAGSTER_HOME`` (or a temporary folder) and a warning says so, so that ``dagster definitions
validate`` and a first ``dagster dev`` work on a bare checkout.
"""

from __future__ import annotations

import logging
import os
import tempfile
from urllib.parse import quote

from dagster._core.storage.base_storage import DagsterStorage
from dagster._serdes import ConfigurableClass

log = logging.getLogger("compliance_sync")


def dagster_pg_url(environ=os.environ) -> str | None:
    url = (environ.get("DAGSTER_PG_URL") or "").strip()
    if not url and (environ.get("DAGSTER_PG_HOST") or "").strip():
        user = quote(environ.get("DAGSTER_PG_USER") or "postgres", safe="")
        password = environ.get("DAGSTER_PG_PASSWORD") or ""
        auth = f"{user}:{quote(password, safe='')}" if password else user
        host = environ["DAGSTER_PG_HOST"].strip()
        port = (environ.get("DAGSTER_PG_PORT") or "5432").strip()
        db = quote(environ.get("DAGSTER_PG_DB") or "dagster", safe="")
        url = f"postgresql+psycopg2://{auth}@{host}:{port}/{db}"
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            url = "postgresql+psycopg2://" + url[len(plain):]
    return url or None


class EnvPostgresStorage(DagsterStorage, ConfigurableClass):
    """A factory: ``from_config_value`` returns dagster-postgres' storage (or SQLite, with a warning);
    this class itself is never instantiated."""

    inst_data = None
    event_log_storage = run_storage = schedule_storage = None  # never used: see from_config_value

    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        url = dagster_pg_url()
        if url:
            from dagster_postgres import DagsterPostgresStorage

            return DagsterPostgresStorage(postgres_url=url)
        from dagster._core.storage.sqlite_storage import DagsterSqliteStorage

        base = os.environ.get("DAGSTER_HOME") or tempfile.mkdtemp(prefix="compliance_sync_dagster_")
        log.warning(
            "DAGSTER_PG_URL (or DAGSTER_PG_HOST) is not set: Dagster keeps its runs in SQLite under %s; "
            "set it to keep them in PostgreSQL",
            base,
        )
        return DagsterSqliteStorage.from_local(os.path.join(base, "storage"))
