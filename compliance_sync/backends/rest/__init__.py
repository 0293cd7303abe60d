"""The REST backend: Supabase's REST API (PostgREST) through supabase-py, for users who hold a project URL and a
service-role key but no database password. No transactions over REST: upserts first, guarded deletes last, the
ledger row last of all, so every row is old or new at any stop (docs/backends-rest.md).

One module per concern, as dlt splits a destination: :mod:`.client` (connection, key, retries, error
translation), :mod:`.catalog` (schema check), :mod:`.read` (paging, facts, explain's reads), :mod:`.plan`,
:mod:`.write` (upserts, deletes, ledger, what was acknowledged). :class:`RestSession` is assembled from their
mixins rather than from collaborators because every concern works on the same state of one FY's run (the schema
report, the planned changes, the write counters); a mixin reads it from ``self`` where collaborators would pass
it around, and this class alone creates it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from compliance_sync.backends import schema
from compliance_sync.backends.port import BackendKind
from compliance_sync.backends.rest.catalog import SchemaCheck, describe
from compliance_sync.backends.rest.client import RestClient, key_role
from compliance_sync.backends.rest.plan import Planning
from compliance_sync.backends.rest.read import Reading, fy_filters
from compliance_sync.backends.rest.write import Writing
from compliance_sync.config.secrets import redact, register_api_key
from compliance_sync.config.settings import Settings
from compliance_sync.domain.diff import ChangeSet, SyncDiff
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.ledger import NO_LEDGER, LedgerRuns, readable_columns
from compliance_sync.domain.tables import LEDGER_TABLE, SOURCES, TARGETS

log = logging.getLogger(__name__)


class RestBackend:
    name = BackendKind.REST
    atomic = False

    def __init__(self, url: str, key: str, page_size: int = 1000, timeout_s: float = 30.0, retries: int = 4):
        register_api_key(key)
        key_role(key)
        self.url = url.rstrip("/")
        self._key = key
        self.page_size = page_size
        self.timeout_s = timeout_s
        self.retries = retries
        parts = urlsplit(self.url)
        self.where = redact(parts.netloc or self.url)

    @classmethod
    def from_settings(cls, settings: Settings) -> RestBackend:
        return cls(
            settings.supabase_url,
            settings.service_role_key.get_secret_value(),
            settings.rest_page_size,
            settings.rest_timeout_s,
            settings.rest_retries,
        )

    def __repr__(self) -> str:  # never the key
        return f"RestBackend({self.where!r})"

    def describe(self) -> str:
        return self.where

    @contextlib.contextmanager
    def client(self) -> Iterator[RestClient]:
        with RestClient(self) as c:
            yield c

    @contextlib.contextmanager
    def session(self, fy: FiscalYear, as_of: dt.date) -> Iterator[RestSession]:
        with self.client() as c:
            yield RestSession(self, c, fy, as_of)

    @contextlib.contextmanager
    def reader(self, fy: FiscalYear, as_of: dt.date) -> Iterator[RestSession]:
        """A read-only session (``explain``): GET requests only (the schema check's key probes are skipped)."""
        with self.client() as c:
            yield RestSession(self, c, fy, as_of, read_only=True)

    def ledger_runs(self, fy: FiscalYear, limit: int = 5) -> LedgerRuns:
        """The FY's latest succeeded live runs in the ledger, newest first: one GET."""
        with self.client() as c:
            found = describe(c).relations.get(LEDGER_TABLE)
            if found is None:
                return LedgerRuns([], NO_LEDGER)
            columns, warning = readable_columns(found.columns)
            params = {"select": ",".join(columns), "fiscal_year": f"eq.{fy.year}", "status": "eq.succeeded"}
            params |= {"mode": "eq.live", "order": "started_at.desc", "limit": str(limit)}
            return LedgerRuns(c.get(LEDGER_TABLE, params), warning)

    def fingerprint(self, fy: FiscalYear) -> str:
        """What REST sees cheaply: per source, the FY's row count and the latest updated_at / created_at where
        the table has one (a flipped flag without a touched timestamp goes unseen; README)."""
        parts = []
        with self.client() as c:
            spec = describe(c).relations
            for s in SOURCES:
                if s.name not in spec:
                    continue
                filters = fy_filters(s.name, fy)
                parts.append((s.name, c.count(s.name, filters)))
                for stamp in ("updated_at", "created_at"):
                    if stamp in spec[s.name].columns:
                        params = {"select": stamp, "order": f"{stamp}.desc.nullslast", "limit": "1", **filters}
                        rows = c.get(s.name, params)
                        parts.append((s.name, stamp, rows[0][stamp] if rows else None))
                        break
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


class RestSession(SchemaCheck, Reading, Planning, Writing):
    """One FY's run over REST: the state every concern's mixin works on, created here (docs/backends-rest.md
    for the order of writes)."""

    def __init__(
        self, backend: RestBackend, client: RestClient, fy: FiscalYear, as_of: dt.date, read_only: bool = False
    ) -> None:
        self.backend, self.client, self.fy, self.as_of = backend, client, fy, as_of
        self.read_only = read_only  # explain: GETs only
        self.warnings: list[str] = []
        self.committed = False
        self.keys_required = True  # False (a dry run): a target key without a unique index is reported, not an error
        self.acknowledged = {t.name: {"upserted": 0, "deleted": 0} for t in TARGETS}  # rows the server said it wrote
        self.new_rows = {t.name: 0 for t in TARGETS}  # of the upserted rows, those that were inserts
        self.unknown: list[dict[str, Any]] = []  # writes whose outcome is unknown (possibly applied)
        self._on_wire: dict[int, dict[str, Any]] = {}  # writes sent and not yet answered
        self._wire_lock = threading.Lock()
        self._recording_failure = False
        self.report: schema.SchemaReport | None = None
        self._event_ids: dict | None = None
        self._changes: dict[str, ChangeSet] = {}
        self._planned: SyncDiff | None = None

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning(message)


__all__ = ["RestBackend", "RestClient", "RestSession", "key_role"]
