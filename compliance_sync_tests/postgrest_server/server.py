"""The server object: settings, lifecycle (start/stop, the HTTP thread), the schema cache and its reload on
``NOTIFY pgrst``, the request log and the keys it hands out; the request handling itself is in :mod:`.api`."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.parse
from typing import Any

import psycopg

from .api import RestHandlers
from .auth import Auth, authenticate, b64url, make_jwt
from .constants import DEFAULT_JWT_SECRET, DEFAULT_MAX_URL_LENGTH, EXPOSED_SCHEMA, REST_PREFIX, log
from .database import Pool, prepare_supabase_roles
from .errors import ApiError, GatewayError
from .faults import FaultInjector, RequestRecord
from .http_server import Handler, HTTPServer
from .schema_cache import SchemaCache, load_schema_cache


class PostgrestServer(RestHandlers):
    """The server: ``start()`` serves in a background thread; also a context manager."""

    def __init__(
        self,
        database_url: str,
        jwt_secret: str = DEFAULT_JWT_SECRET,
        max_rows: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        schema: str = EXPOSED_SCHEMA,
        pool_size: int = 8,
        listen_for_reload: bool = True,
        max_url_length: int | None = DEFAULT_MAX_URL_LENGTH,
        safeupdate: bool = True,
    ):
        self.database_url = database_url
        self.max_url_length = max_url_length
        self.safeupdate = safeupdate
        self.jwt_secret = jwt_secret
        self.max_rows = max_rows
        self.host = host
        self.port = port
        self.schema = schema
        self.faults = FaultInjector(self)
        self._pool = Pool(database_url, pool_size)
        self._cache: SchemaCache | None = None
        self._cache_lock = threading.Lock()
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._listen_for_reload = listen_for_reload
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._log_lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._seq = 0
        self.service_role_key = make_jwt(jwt_secret, "service_role")
        self.anon_key = make_jwt(jwt_secret, "anon")
        self.secret_key = "sb_secret_" + b64url(os.urandom(18))
        self.publishable_key = "sb_publishable_" + b64url(os.urandom(18))

    # -- lifecycle
    def start(self) -> PostgrestServer:
        """Give the database Supabase's roles and grants, listen for schema reloads, load the schema cache, then
        serve in a background thread."""
        self._stopping.clear()
        prepare_supabase_roles(self.database_url, self.schema)
        if self._listen_for_reload:
            self._listener = threading.Thread(target=self._listen, name="postgrest-listener", daemon=True)
            self._listener.start()
            self._listening.wait(5)  # LISTEN before loading: a schema change in between is not missed
        try:
            self.reload_schema()
            self._httpd = HTTPServer((self.host, self.port), Handler)
        except BaseException:
            self._stopping.set()
            raise
        self._httpd.api = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="postgrest-server", daemon=True
        )
        self._thread.start()
        log.info("listening on %s (schema %s, max-rows %s)", self.url, self.schema, self.max_rows)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_all_clients()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._listener is not None:
            self._listener.join(timeout=5)
            self._listener = None
        self._pool.close()

    def __enter__(self) -> PostgrestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return self.url + REST_PREFIX

    def make_jwt(self, role: str | None, exp: Any = None, **claims: Any) -> str:
        """A token signed with this server's secret: ``{"role": role, "iss": "supabase", **claims}`` (+ ``exp``: epoch
        seconds, datetime, or timedelta from now; a negative timedelta gives an expired token)."""
        return make_jwt(self.jwt_secret, role, exp, **claims)

    # -- schema cache
    def reload_schema(self) -> SchemaCache:
        with psycopg.connect(self.database_url, autocommit=False) as conn:
            cache = load_schema_cache(conn, self.schema)
        with self._cache_lock:
            self._cache = cache
        log.info("schema cache loaded: %d relations", len(cache.tables))
        return cache

    @property
    def schema_cache(self) -> SchemaCache:
        with self._cache_lock:
            assert self._cache is not None
            return self._cache

    def _listen(self) -> None:
        """NOTIFY pgrst, 'reload schema' (or an empty payload) reloads the schema cache, as PostgREST's listener."""
        conn = None
        while not self._stopping.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.database_url, autocommit=True)
                    conn.execute("LISTEN pgrst")
                    self._listening.set()
                for note in conn.notifies(timeout=0.5):
                    if note.payload in ("", "reload schema"):
                        self.reload_schema()
                    if self._stopping.is_set():
                        break
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    break
                log.warning("schema listener: %s", exc)
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                self._stopping.wait(1.0)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # -- request log
    @property
    def requests(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._log_lock:
            return self._seq

    def clear_requests(self) -> None:
        with self._log_lock:
            self._requests.clear()

    def _record(self, method: str, path: str, table: str | None, query: str, headers: dict[str, str]) -> RequestRecord:
        redacted = {k: ("<redacted>" if k in ("apikey", "authorization") else v) for k, v in headers.items()}
        params = [(k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k != "apikey"]
        with self._log_lock:
            self._seq += 1
            rec = RequestRecord(self._seq, time.time(), method, path, table, query, params, redacted)
            self._requests.append(rec)
        return rec

    # -- authentication (Supabase's gateway, then PostgREST)
    def authenticate(self, headers: dict[str, str], query_apikey: str | None) -> Auth:
        return authenticate(headers, query_apikey, self.jwt_secret)

    def _auth_or_none(self, headers: dict[str, str]) -> Auth | None:
        try:
            return self.authenticate(headers, None)
        except (ApiError, GatewayError):
            return None
