"""The REST backend: Supabase's REST API (PostgREST) through supabase-py, for users who hold a project URL and
a service-role key but no database password.

No transactions and no locks over REST, so the writing order is what keeps every row old or new (SPEC §5):
new and changed rows are upserted first (idempotent, on the target's unique key), stale rows are deleted last,
each delete filtered so that it removes a row only while every column the job does not own is still null,
and the ledger row is written last under the run's id (a retried POST adds no second row). A failure at any
point leaves every row old or new, none missing, and a rerun converges. A delete that removes fewer rows than
planned looks again: a row still there gained data the job does not own after the read, and is counted (and
reported) as an orphan, not as deleted.

Reads page by keyset on the primary key (``pk=gt.<last>&order=pk.asc&limit=n``) until an empty page, so a
server row cap below the page size truncates nothing. Each page is its own transaction on the server: the
REST path reads no single consistent picture (the targets are read last; a change made while it reads is
picked up by the next run). Requests go through one ``httpx.Client`` (timeouts, keep-alive); transient
failures (5xx, 429, timeouts, dropped connections) are retried with backoff by tenacity, writes included; a 429
or 503 with ``Retry-After`` is retried after the wait it asks for, or, when that is longer than
COMPLIANCE_SYNC_REST_TIMEOUT, stops the run (exit 4) saying when to run it again.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import decimal
import email.utils
import functools
import hashlib
import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import tenacity

from compliance_sync.backends import schema
from compliance_sync.backends.catalog import Column, Relation
from compliance_sync.backends.port import BackendKind
from compliance_sync.config.logs import Progress
from compliance_sync.config.secrets import redact, register_api_key
from compliance_sync.config.settings import Settings
from compliance_sync.domain.diff import ChangeSet, SyncDiff, diff_rows, to_json
from compliance_sync.domain.facts import EventAggregator, Facts, RawEvent, as_date, facts_from_rows, uid
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.ledger import NO_LEDGER, LedgerRow, LedgerRuns, readable_columns
from compliance_sync.domain.tables import (
    EVENTS,
    EXCLUSIONS,
    JSONB,
    LEDGER_TABLE,
    NUMERIC,
    SOURCE_BY_NAME,
    SOURCES,
    TARGET_BY_NAME,
    TARGETS,
    Kind,
    NotWanted,
    TargetTable,
)
from compliance_sync.domain.wanted import WantedRows, longest_texts
from compliance_sync.errors import ConnectionFailure, DataError, SettingsError, SyncError, TransientFailure

log = logging.getLogger(__name__)

TRANSIENT_STATUS = {429, 500, 502, 503, 504}
UPSERT_CHUNK = 1000
UPSERT_IN_FLIGHT = 2  # requests on the wire at once while the next chunk is converted
BACKOFF_S = 0.5  # first wait before a retry; doubles per attempt, at most BACKOFF_MAX_S
BACKOFF_MAX_S = 8.0
MINIMAL = "minimal"  # Prefer: return=minimal
URL_BUDGET = 6000  # characters of filters per DELETE (Supabase's edge refuses URLs over ~16 KiB)
NOT_POSTGREST = "the reply is not PostgREST's: is NEXT_PUBLIC_SUPABASE_URL your project's API URL (https://<project>.supabase.co)?"
RELOAD_HINT = "apply the migration, then run NOTIFY pgrst, 'reload schema' in Supabase's SQL editor"

# PostgREST's OpenAPI `format` (no typmods) -> the pg_type names the schema check knows
FORMATS = {
    "uuid": "uuid",
    "text": "text",
    "character varying": "varchar",
    "character": "bpchar",
    "integer": "int4",
    "int32": "int4",
    "smallint": "int2",
    "bigint": "int8",
    "int64": "int8",
    "boolean": "bool",
    "date": "date",
    "numeric": "numeric",
    "jsonb": "jsonb",
    "json": "json",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "double precision": "float8",
    "real": "float4",
}


# --- the key, checked before any request ------------------------------------------------------------------
def key_role(key: str) -> str:
    """``service_role`` for a key the job may use; raises :class:`SettingsError` (exit 2) for any other,
    without a request: an anon or publishable key would read only what row-level security lets it see."""
    if key.startswith("sb_secret_"):
        return "service_role"
    if key.startswith("sb_publishable_"):
        raise SettingsError(
            "SUPABASE_SERVICE_ROLE_KEY is an sb_publishable_ (anon) key; use the sb_secret_ key or the service_role JWT "
            "(Supabase dashboard: Project Settings → API keys)"
        )
    parts = key.split(".")
    if len(parts) == 3:
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except Exception:
            claims = None
        if isinstance(claims, dict):
            role = claims.get("role")
            if role == "service_role":
                return "service_role"
            raise SettingsError(f"SUPABASE_SERVICE_ROLE_KEY is a JWT whose role is {role!r}, not 'service_role' (an anon key reads only what row-level security lets it see): use the service_role key")
    raise SettingsError("SUPABASE_SERVICE_ROLE_KEY is neither a service_role JWT nor a secret key (sb_secret_…)")


# --- errors ---------------------------------------------------------------------------------------------------
class RestHTTPError(Exception):
    """A non-2xx answer, read before postgrest-py sees it (so the status is known)."""

    def __init__(self, status: int, body: Any, content_type: str) -> None:
        self.status, self.body, self.content_type = status, body, content_type
        self.code = body.get("code") if isinstance(body, dict) else None
        self.retry_after: float | None = None  # seconds, from a 429's or 503's Retry-After
        # PostgREST's error body always carries code and message (with details and hint); nothing else does
        self.postgrest_shaped = isinstance(body, dict) and "code" in body and "message" in body and "json" in content_type
        self.message = (body.get("message") if isinstance(body, dict) else None) or (str(body)[:200] if body else f"HTTP {status}")
        super().__init__(f"HTTP {status} {self.code or ''} {self.message}".strip())


class NotPostgrest(Exception):
    """A 2xx answer without what PostgREST always sends (a JSON body, ``Content-Range`` on reads)."""


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        path = response.request.url.path.rstrip("/")
        if response.request.method in ("GET", "HEAD") and not path.endswith("/rest/v1") and "content-range" not in response.headers:
            raise NotPostgrest(path)
        return
    response.read()
    content_type = response.headers.get("content-type", "")
    try:
        body = response.json()
    except ValueError:
        body = response.text[:500]
    error = RestHTTPError(response.status_code, body, content_type)
    if response.status_code in (429, 503):
        error.retry_after = retry_after(response.headers.get("retry-after"))
    raise error


def retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """``Retry-After`` in seconds from now: delay-seconds or an HTTP-date (RFC 9110 §10.2.3); None when absent
    or unreadable."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def translate(exc: BaseException, what: str, where: str) -> SyncError:
    """A REST failure as the run's error type (SPEC §7's exit codes)."""
    if isinstance(exc, SyncError):
        return exc
    if isinstance(exc, NotPostgrest):
        return ConnectionFailure(f"{what}: {where} answered without PostgREST's headers; {NOT_POSTGREST}")
    if isinstance(exc, httpx.TimeoutException):
        return TransientFailure(f"{what}: no answer from {where} within the timeout (COMPLIANCE_SYNC_REST_TIMEOUT)")
    if isinstance(exc, httpx.TransportError):
        return TransientFailure(f"{what}: lost the connection to {where} ({type(exc).__name__})")
    if not isinstance(exc, RestHTTPError):
        return DataError(f"{what}: {type(exc).__name__}: {exc}")
    code, status, message = exc.code, exc.status, redact(" ".join(str(exc.message).split()))
    detail = f" ({code}: {message})" if code else f" ({message})"
    if status in TRANSIENT_STATUS:
        return TransientFailure(f"{what}: {where} answered HTTP {status}{detail}")
    if not exc.postgrest_shaped:  # a gateway, a proxy, a web server: not PostgREST's {code, message, details, hint}
        if status in (401, 403):  # Supabase's gateway refusing the key ({"message", "hint"})
            return ConnectionFailure(f"{what}: {where} refused the key (HTTP {status}{detail}): SUPABASE_SERVICE_ROLE_KEY is wrong or expired")
        return ConnectionFailure(f"{what}: {where} answered HTTP {status}; {NOT_POSTGREST}")
    if code == "42501":
        return DataError(f"{what}: permission denied{detail}: row-level security or a missing grant refused the service role; check the key is the service_role key and the table's grants")
    if status in (401, 403):
        return ConnectionFailure(f"{what}: {where} refused the key (HTTP {status}{detail}): SUPABASE_SERVICE_ROLE_KEY is wrong or expired")
    if code in ("PGRST205", "42P01"):
        return DataError(f"{what}: the table is not in the REST API's schema cache{detail}; {RELOAD_HINT}")
    if code in ("42703", "PGRST204"):
        return DataError(f"{what}: a column is missing{detail}; {RELOAD_HINT}")
    if code == "42P10":
        return DataError(f"{what}: no unique index matches the upsert's key{detail}: run `compliance-sync migrate --minimal` (or paste `compliance-sync migrate --minimal --print-sql` into the SQL editor)")
    return DataError(f"{what}: HTTP {status}{detail}")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError) or (isinstance(exc, RestHTTPError) and exc.status in TRANSIENT_STATUS)


def _asked_wait(exc: BaseException | None) -> float | None:
    """The wait a 429 or 503 asked for (Retry-After), in seconds, else None."""
    return exc.retry_after if isinstance(exc, RestHTTPError) else None


NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol, httpx.ProxyError)


def _outcome_unknown(exc: BaseException) -> bool:
    """Whether a failed request may still have been applied: it left (not a refused connection) and no answer
    says it was not (a timeout, a connection dropped after sending, a 5xx: PostgREST may have committed)."""
    if isinstance(exc, NEVER_SENT):
        return False
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, RestHTTPError) and exc.status >= 500


def _why_unknown(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "no answer within the timeout"
    if isinstance(exc, httpx.TransportError):
        return f"the connection was lost after the request was sent ({type(exc).__name__})"
    if isinstance(exc, RestHTTPError):
        return f"HTTP {exc.status} after the request was sent"
    return type(exc).__name__


# --- values over JSON -------------------------------------------------------------------------------------------
def _json_row(row: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """A row as PostgREST takes it: numbers as JSON numbers, dates as ISO text, jsonb as JSON."""
    return json.loads(to_json({c: row.get(c) for c in columns}))


def _plain(value: Any) -> Any:
    """A jsonb value with its Decimals as JSON numbers (what :func:`to_json` writes), containers copied."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return value if all(type(v) is str for v in value) else [_plain(v) for v in value]
    return value


_TO_BODY: dict[Kind, Callable[[Any], Any]] = {NUMERIC: float, JSONB: _plain}


def _body_rows(target: TargetTable, rows: Sequence[dict[str, Any]], stamp: str) -> list[dict[str, Any]]:
    """Upsert bodies: the target's columns and ``updated_at``, converted by column type only where JSON needs it
    (numeric and jsonb; dates and uuids are encoded by supabase-py). The same values as :func:`_json_row`,
    without a round trip through JSON text per row."""
    convert = [(c, _TO_BODY.get(target.types[c])) for c in target.columns]
    out = []
    for r in rows:
        body = {c: v if (v := r.get(c)) is None or f is None else f(v) for c, f in convert}
        body["updated_at"] = stamp
        out.append(body)
    return out


def _quote(value: Any) -> str:
    """A value inside PostgREST's ``or=(…)``/``in.(…)`` grammar: double-quoted when it holds reserved characters."""
    text = str(value)
    if any(ch in text for ch in ',.:()"\\ ') or text == "":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _period(row: dict[str, Any]) -> dict[str, Any]:
    """Infinite dates as PostgREST returns them: -infinity starts before any FY, infinity is open like null."""
    row = dict(row)
    if row.get("effective_from") == "-infinity":
        row["effective_from"] = "0001-01-01"
    if row.get("effective_to") == "infinity":
        row["effective_to"] = None
    elif row.get("effective_to") == "-infinity":
        row["effective_to"] = "0001-01-01"
    return row


# --- the backend -------------------------------------------------------------------------------------------------
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
        return cls(settings.supabase_url, settings.service_role_key.get_secret_value(), settings.rest_page_size, settings.rest_timeout_s, settings.rest_retries)

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
            found = c.openapi().get(LEDGER_TABLE)
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
            spec = c.openapi()
            for s in SOURCES:
                if s.name not in spec:
                    continue
                filters = _fy_filters(s.name, fy)
                parts.append((s.name, c.count(s.name, filters)))
                for stamp in ("updated_at", "created_at"):
                    if stamp in spec[s.name].columns:
                        rows = c.get(s.name, {"select": stamp, "order": f"{stamp}.desc.nullslast", "limit": "1", **filters})
                        parts.append((s.name, stamp, rows[0][stamp] if rows else None))
                        break
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process (loading the CA bundle is not free, and a run opens a client per session)."""
    return httpx.create_ssl_context()


def _fy_filters(table: str, fy: FiscalYear) -> dict[str, str]:
    """Server-side filters of a source for the FY, as query parameters."""
    years = fy.calendar_years()
    lo, hi = min(fy.start, dt.date(years[0], 1, 1)), max(fy.end, dt.date(years[-1], 12, 31))
    return {
        "account_plans": {"fiscal_year": f"eq.{fy.year}", "or": "(status.is.null,status.neq.archived)"},
        "territory_strategies": {"fiscal_year": f"eq.{fy.year}", "or": "(status.is.null,status.neq.archived)"},
        # a null effective_from is read too: the rules report it (SPEC §4.2)
        "client_segmentation": {"or": f"(and(or(effective_from.is.null,effective_from.lte.{fy.end}),or(effective_to.is.null,effective_to.gte.{fy.start})))"},
        "segmentation_events": {"or": f"(event_date.is.null,and(event_date.gte.{lo},event_date.lte.{hi}))"},
        "segmentation_event_compliance": {"year": f"in.({','.join(map(str, years))})"},
    }.get(table, {})


class RestClient:
    """One session's HTTP side: supabase-py's PostgREST client over our own httpx.Client, every call retried."""

    def __init__(self, backend: RestBackend) -> None:
        from supabase import ClientOptions, create_client  # supabase-py, imported when REST is used

        self.backend = backend
        self._http = httpx.Client(
            timeout=httpx.Timeout(backend.timeout_s),
            verify=_ssl_context(),
            event_hooks={"response": [_raise_for_status]},
            follow_redirects=False,
        )
        options = ClientOptions(httpx_client=self._http, postgrest_client_retry=False, auto_refresh_token=False, persist_session=False)
        self._supabase = create_client(backend.url, backend._key, options=options)
        self.rest = self._supabase.postgrest
        backoff = tenacity.wait_exponential(multiplier=BACKOFF_S, max=BACKOFF_MAX_S)
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda exc: _retryable(exc) and not self._too_long(exc)),
            stop=tenacity.stop_after_attempt(backend.retries + 1),
            wait=lambda rs: _asked_wait(rs.outcome.exception()) if _asked_wait(rs.outcome.exception()) is not None else backoff(rs),
            before_sleep=lambda rs: log.warning("REST request to %s failed (%s); retrying (attempt %d of %d)", backend.where, _short(rs.outcome.exception()), rs.attempt_number + 1, backend.retries + 1),
            reraise=True,
        )
        self._openapi: dict[str, Relation] | None = None
        self.pks: dict[str, list[str]] = {}
        self.unreachable = False  # the last failed request could not reach the API or was refused

    def _too_long(self, exc: BaseException) -> bool:
        """The server asked for a wait (Retry-After) longer than COMPLIANCE_SYNC_REST_TIMEOUT: not retried."""
        wait = _asked_wait(exc)
        return wait is not None and wait > self.backend.timeout_s

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def call(self, what: str, fn: Callable[[], Any], retry: bool = True) -> Any:
        """``fn()`` (one request), retried on transient failures unless ``retry`` is False; any failure
        raised as the run's error type, with ``why_unknown`` set when an attempt may have been applied
        (a timeout or a dropped connection after sending, a 5xx): a write the server may have committed."""
        why: str | None = None  # the last attempt that may have been applied, and why its outcome is unknown

        def attempt() -> Any:
            nonlocal why
            try:
                return fn()
            except Exception as exc:
                if _outcome_unknown(exc):
                    why = _why_unknown(exc)
                raise

        try:
            return self._retrying(attempt) if retry else attempt()
        except Exception as exc:
            error = translate(exc, what, self.backend.where)
            self.unreachable = isinstance(error, ConnectionFailure)
            if self._too_long(exc):
                wait = _asked_wait(exc)
                at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)).strftime("%Y-%m-%d %H:%M:%S UTC")
                error = TransientFailure(
                    f"{error}; it asks to retry after {wait:.0f} s, longer than COMPLIANCE_SYNC_REST_TIMEOUT "
                    f"({self.backend.timeout_s:g} s): run it again after {at}"
                )
            elif retry and _retryable(exc) and self.backend.retries:
                error = type(error)(f"{error} (still failing after {self.backend.retries + 1} attempts, COMPLIANCE_SYNC_REST_RETRIES)")
            error.why_unknown = why
            raise error from None

    # --- reading ------------------------------------------------------------------------------------------
    def openapi(self) -> dict[str, Relation]:
        """The tables the API exposes, from PostgREST's OpenAPI description at the API root."""
        if self._openapi is None:
            response = self.call("reading the API description", lambda: self.rest.session.get(f"{self.rest.base_url}/", headers={**self.rest.headers, "Accept": "application/openapi+json"}))
            try:
                doc = response.json()
            except ValueError:
                raise ConnectionFailure(f"reading the API description of {self.backend.where}: {NOT_POSTGREST}") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("definitions"), dict) or not ("swagger" in doc or "openapi" in doc):
                raise ConnectionFailure(f"reading the API description of {self.backend.where}: {NOT_POSTGREST}")
            self._openapi = {}
            for table, definition in doc["definitions"].items():
                props = definition.get("properties") or {}
                required = set(definition.get("required") or ())
                columns = {}
                for name, p in props.items():
                    fmt = str(p.get("format", ""))
                    base = "enum" if p.get("enum") else FORMATS.get(fmt, fmt)
                    shown = f"{fmt}({p['maxLength']})" if "maxLength" in p else fmt
                    columns[name] = Column(base, shown, name in required)
                self._openapi[table] = Relation(table, "r", columns)
                self.pks[table] = [n for n, p in props.items() if "<pk/>" in str(p.get("description", ""))]
        return self._openapi

    def query(self, table: str, select: str, filters: dict[str, str], count: bool = False) -> Any:
        """A select through supabase-py's query builder, with filters given as PostgREST query parameters
        (``column: "op.value"``, ``or: "(…)"``)."""
        from postgrest.types import CountMethod

        builder = self.rest.from_(table).select(select, count=CountMethod.exact if count else None, head=count or None)
        for name, value in filters.items():
            if name == "or":
                builder = builder.or_(value[1:-1])
            else:
                op, _, criteria = value.partition(".")
                builder = builder.filter(name, op, criteria)
        return builder

    def get(self, table: str, params: dict[str, str]) -> list[dict[str, Any]]:
        filters = {k: v for k, v in params.items() if k not in ("select", "order", "limit")}

        def fetch() -> list[dict[str, Any]]:
            builder = self.query(table, params.get("select", "*"), filters)
            for term in filter(None, params.get("order", "").split(",")):
                col, _, rest = term.partition(".")
                builder = builder.order(col, desc=rest.startswith("desc"), nullsfirst="nullsfirst" in rest)
            if "limit" in params:
                builder = builder.limit(int(params["limit"]))
            data = builder.execute().data
            if not isinstance(data, list):
                raise NotPostgrest(table)
            return data

        return self.call(f"reading {table}", fetch)

    def count(self, table: str, filters: dict[str, str]) -> int:
        return self.call(f"counting {table}", lambda: self.query(table, "*", filters, count=True).execute().count or 0)

    def pages(self, table: str, columns: Sequence[str], filters: dict[str, str], keyset: Sequence[str]) -> Iterator[list[dict[str, Any]]]:
        """Every row, page by page, by keyset on ``keyset`` (a primary key), until an empty page: a server cap
        below the page size truncates nothing. No offsets, no exact counts, no long ``in.(…)`` lists."""
        select = ",".join(dict.fromkeys([*columns, *keyset]))
        order = ",".join(f"{c}.asc" for c in keyset)  # nulls last (postgrest-py adds .nullslast)
        nullable = self.nullable(table, keyset)
        last: list[Any] | None = None
        progress = Progress(f"reading {table}")
        while True:
            params = {"select": select, "order": order, "limit": str(self.backend.page_size), **filters}
            if last is not None and len(keyset) == 1 and keyset[0] not in nullable and keyset[0] not in filters:
                params[keyset[0]] = f"gt.{last[0]}"  # the usual case: a primary key
            elif last is not None:
                after = _after(keyset, last, nullable)
                if after is None:  # the last row had the greatest possible key
                    break
                params = _with_condition(params, after)
            rows = self.get(table, params)
            if not rows:
                break
            progress.add(len(rows))
            last = [rows[-1].get(c) for c in keyset]
            yield rows
        progress.finish()

    def nullable(self, table: str, columns: Sequence[str]) -> set[str]:
        """The columns of ``columns`` that may hold NULL (NOT NULL columns are in the API description's
        ``required``; a primary key never holds NULL)."""
        relation = (self._openapi or {}).get(table)
        if relation is None:
            return set(columns)
        return {c for c in columns if not (c in relation.columns and relation.columns[c].not_null) and c not in self.pks.get(table, ())}


def _with_condition(params: dict[str, str], condition: str) -> dict[str, str]:
    """``params`` with a logic-tree condition added beside the other filters (never replacing one of them)."""
    if "or" in params:
        return params | {"or": f"(and(or({params['or'][1:-1]}),{condition}))"}
    return params | {"or": f"({condition})"}


def _after(keyset: Sequence[str], last: Sequence[Any], nullable: set[str] = frozenset()) -> str | None:
    """The keyset condition ``(k1, k2, …) > (v1, v2, …)`` in PostgREST's grammar, in the order of
    ``order=k1.asc.nullslast,…`` (a NULL sorts after every value); None when no key can follow."""

    def eq(col: str, value: Any) -> str:
        return f"{col}.is.null" if value is None else f"{col}.eq.{_quote(value)}"

    def gt(col: str, value: Any) -> str | None:
        if value is None:
            return None  # nothing sorts after NULL
        return f"or({col}.gt.{_quote(value)},{col}.is.null)" if col in nullable else f"{col}.gt.{_quote(value)}"

    terms = []
    for i, col in enumerate(keyset):
        after = gt(col, last[i])
        if after is None:
            continue
        eqs = [eq(keyset[j], last[j]) for j in range(i)]
        terms.append(f"and({','.join(eqs + [after])})" if eqs else after)
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else f"or({','.join(terms)})"


def _short(exc: BaseException | None) -> str:
    return redact(str(exc))[:200] if exc else ""


# --- the session ---------------------------------------------------------------------------------------------------
class RestSession:
    """One FY's run over REST (see the module docstring for the order of writes)."""

    def __init__(self, backend: RestBackend, client: RestClient, fy: FiscalYear, as_of: dt.date, read_only: bool = False) -> None:
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

    @property
    def partly_written(self) -> bool:
        """A write reached the server: a row acknowledged, or a request whose outcome is unknown."""
        return any(n for counts in self.acknowledged.values() for n in counts.values()) or bool(self.unknown or self._on_wire)

    def written_so_far(self) -> dict[str, Any]:
        """What the server acknowledged per target, and the writes whose outcome is unknown (a request still on
        the wire at an interrupt is possibly applied)."""
        with self._wire_lock:
            on_wire = [dict(w, why="on the wire when the run was interrupted: possibly applied") for w in self._on_wire.values()]
        return {
            "acknowledged": {name: dict(counts) for name, counts in self.acknowledged.items()},
            "inserted": dict(self.new_rows),  # of the rows upserted, the inserts (the ledger row's counts)
            "unknown": [dict(w) for w in self.unknown] + on_wire,
        }

    def _write(self, what: str, table: str, request: str, rows: int, fn: Callable[[], Any]) -> Any:
        """One write request, remembered while it is on the wire; a failure that leaves its outcome unknown
        (or an interrupt while it is out) is recorded as possibly applied."""
        entry = {"table": table, "request": request, "rows": rows}
        token = object()
        with self._wire_lock:
            self._on_wire[id(token)] = entry
        try:
            return self.client.call(what, fn)
        except SyncError as exc:
            if exc.why_unknown:
                self.unknown.append(entry | {"why": f"{exc.why_unknown}: possibly applied"})
            raise
        except BaseException:  # Ctrl-C, SIGTERM (call() turns every Exception into a SyncError): the request is out
            self.unknown.append(entry | {"why": "on the wire when the run was interrupted: possibly applied"})
            raise
        finally:
            with self._wire_lock:
                self._on_wire.pop(id(token), None)

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning(message)

    def _keyset(self, table: str) -> list[str]:
        """The primary key from the API description, else the table's natural key (SPEC lists no id for some)."""
        pk = self.client.pks.get(table) or []
        if pk:
            return pk
        if table in SOURCE_BY_NAME:
            return list(SOURCE_BY_NAME[table].keyset)
        target = next(t for t in TARGETS if t.name == table)
        return list(target.key)

    # --- schema check ---------------------------------------------------------------------------------------
    def _probe_key(self, target: TargetTable) -> bool:
        """A zero-row upsert on the key: PostgreSQL answers 42P10 when no unique index backs it."""
        try:
            self.client.call(f"checking the unique key of {target.name}", lambda: self.client.rest.from_(target.name).upsert([], on_conflict=",".join(target.key), returning=MINIMAL).execute())
        except DataError as exc:
            if "42P10" in str(exc):
                return False
            raise
        return True

    def check_schema(self) -> schema.SchemaReport:
        relations = self.client.openapi()
        probe = (lambda t: True) if self.read_only else self._probe_key  # nothing is written: keys do not matter
        keys = {t.name: probe(t) for t in TARGETS if t.name in relations and all(c in relations[t.name].columns for c in t.key)}
        try:
            report = schema.check(relations, keys, f"{self.backend.where} (REST API)", self.keys_required)
        except DataError as exc:
            text = str(exc)
            if " does not exist" in text or " is missing" in text:  # or PostgREST's schema cache is stale
                text += f" (over the REST API a table or column created recently also looks missing until PostgREST reloads its schema cache: {RELOAD_HINT})"
            raise DataError(text) from None
        for w in report.warnings:
            self._warn(w)
        return report

    # --- reading ----------------------------------------------------------------------------------------------
    def _read(self, table: str, filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
        source = SOURCE_BY_NAME[table]
        return [row for page in self.client.pages(table, list(source.columns), filters or {}, self._keyset(table)) for row in page]

    def read_facts(self) -> Facts:
        self.report = self.check_schema()
        fy = self.fy
        aggregator = EventAggregator(fy, self.as_of)
        for page in self.client.pages(EVENTS, list(SOURCE_BY_NAME[EVENTS].columns), _fy_filters(EVENTS, fy), self._keyset(EVENTS)):
            aggregator.add(page)
        facts = facts_from_rows(
            fy,
            self.as_of,
            plans=self._read("account_plans", _fy_filters("account_plans", fy)),
            periods=[_period(p) for p in self._read("client_segmentation", _fy_filters("client_segmentation", fy))],
            tiers=self._read("segmentation_tiers"),
            event_types=self._read("segmentation_event_types"),
            requirements=self._read("tier_event_requirements"),
            strategies=self._read("territory_strategies", _fy_filters("territory_strategies", fy)),
            exclusions=self._read(EXCLUSIONS) if self.report.exclusions_exist else None,
            events=aggregator,
            compliance_cache=self._read("segmentation_event_compliance", _fy_filters("segmentation_event_compliance", fy)),
            prefiltered=True,
        )
        self._event_ids = facts.event_ids
        facts.event_ids = None  # the session attaches them when it plans, as the direct backend does in SQL
        return facts

    def _current(self, target: TargetTable) -> list[dict[str, Any]]:
        """The FY's rows of a target (read last), with ``has_foreign``; without a unique key (a dry run), with
        ``updated_at`` and ``id`` too, which tell which of a duplicated key's rows the deduplication keeps."""
        foreign = self.report.foreign_columns[target.name]
        columns = list(target.columns) + foreign
        if target.name in self.report.missing_keys:
            described = self.client.openapi()[target.name].columns
            columns += [c for c in ("updated_at", "id") if c in described and c not in columns]
        rows = [r for page in self.client.pages(target.name, columns, {"fiscal_year": f"eq.{self.fy.year}"}, self._keyset(target.name)) for r in page]
        for r in rows:
            r["has_foreign"] = any(r.get(c) is not None for c in foreign)
        return rows

    # --- reading for explain ---------------------------------------------------------------------------------------
    def read_events(self, client_names: Sequence[str]) -> list[RawEvent]:
        if not client_names:
            return []
        filters = {"client_name": f"in.({','.join(_quote(n) for n in client_names)})"}
        rows = [r for page in self.client.pages(EVENTS, list(SOURCE_BY_NAME[EVENTS].columns), filters, self._keyset(EVENTS)) for r in page]
        return [RawEvent(uid(r["id"]), r.get("client_name"), uid(r.get("event_type_id")), as_date(r.get("event_date")), r.get("completed")) for r in rows]

    def read_rows(self, table: str, column: str | None, values: Sequence[Any]) -> list[dict[str, Any]]:
        target = TARGET_BY_NAME[table]
        filters = {"fiscal_year": f"eq.{self.fy.year}"}
        if column is not None:
            if not values:
                return []
            filters[column] = f"in.({','.join(_quote(v) for v in values)})"
        foreign = self.report.foreign_columns[table]
        rows = [r for page in self.client.pages(table, list(target.columns) + foreign, filters, self._keyset(table)) for r in page]
        for r in rows:
            r["has_foreign"] = any(r.get(c) is not None for c in foreign)
        return rows

    # --- planning ------------------------------------------------------------------------------------------------
    def plan(self, wanted: WantedRows, limit: int) -> SyncDiff:
        if self.report is None or self.read_only:
            raise RuntimeError("read_facts() first: the plan compares against the schema it checked")
        schema.check_lengths(self.report.varchar_limits, longest_texts(wanted))
        wanted.requirements = dataclasses.replace(wanted.requirements, event_ids=self._event_ids or {})
        targets = {}
        for t in TARGETS:
            backed = t.name not in self.report.missing_keys
            targets[t.name], self._changes[t.name] = diff_rows(t, self._current(t), wanted.rows(t.name), limit, backed)
        self._planned = SyncDiff(self.fy.year, targets)
        return self._planned

    # --- writing ----------------------------------------------------------------------------------------------------
    def _upsert(self, target: TargetTable, rows: list[dict[str, Any]], is_new: list[bool], stamp: str) -> None:
        """Idempotent chunks on the unique key (a retried chunk writes the same values again), pipelined: while
        PostgreSQL upserts one chunk (disjoint keys: the requests never wait for each other), the next is converted
        and sent; at most ``UPSERT_IN_FLIGHT`` requests at a time. A failed chunk stops the run: nothing is sent
        after the failure is seen (the one other request already on the wire may land; a rerun converges)."""
        table, on_conflict = target.name, ",".join(target.key)
        progress = Progress(f"writing {table}")

        def send(chunk: list[dict[str, Any]], new: int) -> int:
            upsert = self.client.rest.from_(table).upsert
            self._write(f"writing {table}", table, "upsert", len(chunk), lambda: upsert(chunk, on_conflict=on_conflict, returning=MINIMAL).execute())
            with self._wire_lock:
                self.acknowledged[table]["upserted"] += len(chunk)
                self.new_rows[table] += new
            return len(chunk)

        with concurrent.futures.ThreadPoolExecutor(UPSERT_IN_FLIGHT, thread_name_prefix="compliance_sync-upsert") as wire:
            in_flight: collections.deque[concurrent.futures.Future[int]] = collections.deque()
            try:
                for i in range(0, len(rows), UPSERT_CHUNK):
                    chunk = _body_rows(target, rows[i : i + UPSERT_CHUNK], stamp)
                    while len(in_flight) >= UPSERT_IN_FLIGHT:
                        progress.add(in_flight.popleft().result())
                    in_flight.append(wire.submit(send, chunk, sum(is_new[i : i + UPSERT_CHUNK])))
                while in_flight:
                    progress.add(in_flight.popleft().result())
            finally:
                for queued in in_flight:
                    queued.cancel()  # not yet sent: never sent
        progress.finish()

    def _key_terms(self, target: TargetTable, rows: list[dict[str, Any]]) -> Iterator[str]:
        """``or=(…)`` terms matching the rows' keys (within the FY), in batches that keep URLs short (Supabase's
        edge refuses URLs over ~16 KiB; a key is a few uuids, never a long ``in.(…)`` list)."""
        batch: list[str] = []
        size = 0
        for row in rows:
            term = f"and({','.join(f'{c}.eq.{_quote(row[c])}' for c in target.key if c != 'fiscal_year')})"
            if batch and size + len(term) > URL_BUDGET:
                yield ",".join(batch)
                batch, size = [], 0
            batch.append(term)
            size += len(term) + 1
        if batch:
            yield ",".join(batch)

    def _delete(self, target: TargetTable, rows: list[dict[str, Any]]) -> int:
        """Delete stale rows, each only while every column the job does not own is still null (a note a planner
        adds after the read is never deleted). Returns how many of ``rows`` are still there afterwards: rows
        that gained such data after the read, now orphans."""
        from postgrest.types import CountMethod

        foreign = self.report.foreign_columns[target.name]
        deleted = 0
        for terms in self._key_terms(target, rows):

            def send(terms: str = terms) -> Any:
                builder = self.client.rest.from_(target.name).delete(count=CountMethod.exact, returning=MINIMAL).eq("fiscal_year", str(self.fy.year))
                for c in foreign:
                    builder = builder.is_(c, "null")
                return builder.or_(terms).execute()

            planned = terms.count("and(")
            response = self._write(f"deleting from {target.name}", target.name, "delete", planned, send)
            done = response.count if response.count is not None else planned
            self.acknowledged[target.name]["deleted"] += done
            deleted += done
        if deleted >= len(rows):
            return 0
        # fewer deleted than planned: a row gained data the job does not own since the read (kept, an orphan
        # now), or another run deleted it first; only the rows still there count as orphans
        kept = 0
        for terms in self._key_terms(target, rows):
            filters = {"fiscal_year": f"eq.{self.fy.year}", "or": f"({terms})"}
            kept += sum(len(page) for page in self.client.pages(target.name, list(target.key), filters, self._keyset(target.name)))
        return kept

    def _kept_as_orphans(self, target: TargetTable, kept: int, ledger: LedgerRow) -> None:
        """Count rows the delete kept (they gained data the job does not own after the read) as orphans."""
        diff = self._planned.targets[target.name]
        diff.deleted -= kept
        diff.orphans += kept
        ledger.rows_deleted -= kept
        ledger.orphans += kept
        self._warn(
            f"{target.name}: {kept} stale row(s) gained data the job does not own after they were read "
            "(a planner's note?); kept as orphans, not deleted"
        )

    def _write_ledger(self, ledger: LedgerRow, retry: bool = True) -> None:
        """Last, and idempotent: upserted on the run's id (a retried POST adds no second row)."""
        columns = self.report.ledger_columns if self.report else None
        if not columns:
            return
        values = ledger.values(columns)
        row = _json_row(values, list(values))
        table = self.client.rest.from_
        if "run_id" in row:
            try:
                self._ledger_call(lambda: table(LEDGER_TABLE).upsert([row], on_conflict="run_id", returning=MINIMAL).execute(), retry)
                return
            except DataError as exc:
                if "42P10" not in str(exc):
                    raise
                self._warn(f"{LEDGER_TABLE}.run_id has no unique index: a retried ledger write may add a second row (run `compliance-sync migrate --minimal`)")
        self._ledger_call(lambda: table(LEDGER_TABLE).insert([row], returning=MINIMAL).execute(), retry)

    def _ledger_call(self, fn: Callable[[], Any], retry: bool) -> None:
        """The ledger row of a run that is writing is reported like a target's write (its outcome may be
        unknown); a failed run's ledger row, written after the stop, is best effort."""
        if self._recording_failure:
            self.client.call(f"writing {LEDGER_TABLE}", fn, retry)
        else:
            self._write(f"writing {LEDGER_TABLE}", LEDGER_TABLE, "insert", 1, fn)

    def apply(self, diff: SyncDiff, run_ts: dt.datetime, ledger: LedgerRow) -> None:
        if diff is not self._planned or self.committed:
            raise RuntimeError("apply() takes the diff this session planned, once")
        stamp = run_ts.isoformat()
        for t in TARGETS:  # upserts first, every target
            if self._changes[t.name].upserts:
                self._upsert(t, self._changes[t.name].upserts, self._changes[t.name].new, stamp)
        for t in TARGETS:  # stale rows last
            if t.not_wanted == NotWanted.PRUNE and self._changes[t.name].deletes:
                kept = self._delete(t, self._changes[t.name].deletes)
                if kept:
                    self._kept_as_orphans(t, kept, ledger)
        self._write_ledger(ledger)
        self.committed = True

    def record_failure(self, ledger: LedgerRow) -> None:
        """Best effort: one attempt when the run stopped because the API was unreachable (no second round
        of retries before the error is shown)."""
        self._recording_failure = True
        try:
            self._write_ledger(ledger, retry=not self.client.unreachable)
        except SyncError as exc:
            self._warn(f"could not record the failed run in {LEDGER_TABLE}: {exc}")

