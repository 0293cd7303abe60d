"""The connection to Supabase's REST API: the key check, one httpx client under supabase-py, retries, and every
failure translated into the run's error types (SPEC §7's exit codes).

Every request of a session goes through :meth:`RestClient.call`, so retries (tenacity, honouring ``Retry-After``)
and the "possibly applied" verdict of a failed write are decided in one place.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import functools
import json
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import tenacity

from compliance_sync.config.secrets import redact
from compliance_sync.errors import ConnectionFailure, DataError, SettingsError, SyncError, TransientFailure

if TYPE_CHECKING:
    from compliance_sync.backends.rest import RestBackend
    from compliance_sync.backends.rest.catalog import ApiDescription

log = logging.getLogger(__name__)

TRANSIENT_STATUS = {429, 500, 502, 503, 504}
BACKOFF_S = 0.5  # first wait before a retry; doubles per attempt, at most BACKOFF_MAX_S
BACKOFF_MAX_S = 8.0
MINIMAL = "minimal"  # Prefer: return=minimal
NOT_POSTGREST = (
    "the reply is not PostgREST's: is NEXT_PUBLIC_SUPABASE_URL your project's API URL (https://<project>.supabase.co)?"
)
RELOAD_HINT = "apply the migration, then run NOTIFY pgrst, 'reload schema' in Supabase's SQL editor"


# --- the key, checked before any request ------------------------------------------------------------------
def key_role(key: str) -> str:
    """``service_role`` for a key the job may use; raises :class:`SettingsError` (exit 2) for any other,
    without a request: an anon or publishable key would read only what row-level security lets it see."""
    if key.startswith("sb_secret_"):
        return "service_role"
    if key.startswith("sb_publishable_"):
        raise SettingsError(
            "SUPABASE_SERVICE_ROLE_KEY is an sb_publishable_ (anon) key; use the sb_secret_ key or the service_role "
            "JWT (Supabase dashboard: Project Settings → API keys)"
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
            raise SettingsError(
                f"SUPABASE_SERVICE_ROLE_KEY is a JWT whose role is {role!r}, not 'service_role' (an anon key reads "
                "only what row-level security lets it see): use the service_role key"
            )
    raise SettingsError("SUPABASE_SERVICE_ROLE_KEY is neither a service_role JWT nor a secret key (sb_secret_…)")


# --- errors ---------------------------------------------------------------------------------------------------
class RestHTTPError(Exception):
    """A non-2xx answer, read before postgrest-py sees it (so the status is known)."""

    def __init__(self, status: int, body: Any, content_type: str) -> None:
        self.status, self.body, self.content_type = status, body, content_type
        self.code = body.get("code") if isinstance(body, dict) else None
        self.retry_after: float | None = None  # seconds, from a 429's or 503's Retry-After
        # PostgREST's error body always carries code and message (with details and hint); nothing else does
        self.postgrest_shaped = (
            isinstance(body, dict) and "code" in body and "message" in body and "json" in content_type
        )
        self.message = (body.get("message") if isinstance(body, dict) else None) or (
            str(body)[:200] if body else f"HTTP {status}"
        )
        super().__init__(f"HTTP {status} {self.code or ''} {self.message}".strip())


class NotPostgrest(Exception):
    """A 2xx answer without what PostgREST always sends (a JSON body, ``Content-Range`` on reads)."""


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        path = response.request.url.path.rstrip("/")
        if (
            response.request.method in ("GET", "HEAD")
            and not path.endswith("/rest/v1")
            and "content-range" not in response.headers
        ):
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
    refused = f"{what}: {where} refused the key (HTTP {status}{detail}): SUPABASE_SERVICE_ROLE_KEY is wrong or expired"
    if status in TRANSIENT_STATUS:
        return TransientFailure(f"{what}: {where} answered HTTP {status}{detail}")
    if not exc.postgrest_shaped:  # a gateway, a proxy, a web server: not PostgREST's {code, message, details, hint}
        if status in (401, 403):  # Supabase's gateway refusing the key ({"message", "hint"})
            return ConnectionFailure(refused)
        return ConnectionFailure(f"{what}: {where} answered HTTP {status}; {NOT_POSTGREST}")
    if code == "42501":
        return DataError(
            f"{what}: permission denied{detail}: row-level security or a missing grant refused the service role; "
            "check the key is the service_role key and the table's grants"
        )
    if status in (401, 403):
        return ConnectionFailure(refused)
    if code in ("PGRST205", "42P01"):
        return DataError(f"{what}: the table is not in the REST API's schema cache{detail}; {RELOAD_HINT}")
    if code in ("42703", "PGRST204"):
        return DataError(f"{what}: a column is missing{detail}; {RELOAD_HINT}")
    if code == "42P10":
        return DataError(
            f"{what}: no unique index matches the upsert's key{detail}: run `compliance-sync migrate --minimal` "
            "(or paste `compliance-sync migrate --minimal --print-sql` into the SQL editor)"
        )
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


def _short(exc: BaseException | None) -> str:
    return redact(str(exc))[:200] if exc else ""


def quote(value: Any) -> str:
    """A value inside PostgREST's ``or=(…)``/``in.(…)`` grammar: double-quoted when it holds reserved characters."""
    text = str(value)
    if any(ch in text for ch in ',.:()"\\ ') or text == "":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process (loading the CA bundle is not free, and a run opens a client per session)."""
    return httpx.create_ssl_context()


# --- the client -------------------------------------------------------------------------------------------------
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
        options = ClientOptions(
            httpx_client=self._http, postgrest_client_retry=False, auto_refresh_token=False, persist_session=False
        )
        self._supabase = create_client(backend.url, backend._key, options=options)
        self.rest = self._supabase.postgrest
        backoff = tenacity.wait_exponential(multiplier=BACKOFF_S, max=BACKOFF_MAX_S)
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda exc: _retryable(exc) and not self._too_long(exc)),
            stop=tenacity.stop_after_attempt(backend.retries + 1),
            wait=lambda rs: (
                _asked_wait(rs.outcome.exception()) if _asked_wait(rs.outcome.exception()) is not None else backoff(rs)
            ),
            before_sleep=lambda rs: log.warning(
                "REST request to %s failed (%s); retrying (attempt %d of %d)",
                backend.where,
                _short(rs.outcome.exception()),
                rs.attempt_number + 1,
                backend.retries + 1,
            ),
            reraise=True,
        )
        self.description: ApiDescription | None = None  # the API description, once read (catalog.describe)
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
                error = type(error)(
                    f"{error} (still failing after {self.backend.retries + 1} attempts, COMPLIANCE_SYNC_REST_RETRIES)"
                )
            error.why_unknown = why
            raise error from None

    # --- requests -------------------------------------------------------------------------------------------
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
        """One GET of ``table`` (``select``, ``order``, ``limit`` and filters as PostgREST query parameters)."""
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
