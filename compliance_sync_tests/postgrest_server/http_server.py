"""HTTP and routing: a threading HTTP/1.1 server that reads each request, routes ``/rest/v1`` to the API, ``/__admin``
to the admin endpoints and anything else to the gateway's 404, applies the fault hooks around the API call, logs one
line per request and writes the answer."""

from __future__ import annotations

import contextlib
import http.server
import logging
import re
import socket
import threading
import time
import traceback
import urllib.parse
from typing import TYPE_CHECKING

from .constants import ADMIN_PREFIX, POSTGREST_VERSION, REST_PREFIX, log
from .errors import ApiError, DropConnection, GatewayError, Resp
from .faults import Fault, fault_error, wait_fault

if TYPE_CHECKING:
    from .server import PostgrestServer


class HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    api: PostgrestServer

    def __init__(self, *args, **kwargs):
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self._clients_lock:
            self._clients.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._clients_lock:
            self._clients.discard(request)
        super().shutdown_request(request)

    def close_all_clients(self):
        with self._clients_lock:
            clients = list(self._clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without TCP_NODELAY each request waits ~40 ms for the
    # client's delayed acknowledgement (Nagle), which real PostgREST behind a proxy never does
    disable_nagle_algorithm = True
    server_version = f"postgrest/{POSTGREST_VERSION}"
    sys_version = ""
    server: HTTPServer

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        log.debug("%s - " + format, self.client_address[0], *args)

    def log_request(self, code="-", size="-"):
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, resp: Resp) -> None:
        self.send_response(resp.status)
        for k, v in resp.headers:
            self.send_header(k, v)
        if not resp.no_length:
            self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD" and resp.body and resp.status not in (204, 304):
            self.wfile.write(resp.body)

    def _dispatch(self) -> None:
        api = self.server.api
        started = time.monotonic()
        method = self.command
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        raw_query = split.query
        headers: dict[str, str] = {}
        prefer_values = []
        for k, v in self.headers.items():
            lk = k.lower()
            if lk == "prefer":
                prefer_values.append(v)
            else:
                headers[lk] = v
        if prefer_values:
            headers["prefer"] = ", ".join(prefer_values)
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        record = None
        resp: Resp | None = None
        dropped = False
        fired: list[Fault] = []
        try:
            if api.max_url_length is not None and len(self.path) > api.max_url_length:
                if path == REST_PREFIX or path.startswith(REST_PREFIX + "/"):
                    record = api._record(method, path, None, raw_query, headers)
                resp = Resp(414, [("Content-Type", "text/plain; charset=utf-8")], b"URI too long\n")
            elif path.startswith(ADMIN_PREFIX + "/") or path == ADMIN_PREFIX:
                resp = api.handle_admin(method, path, raw_query, headers, body)
            elif path == REST_PREFIX or path.startswith(REST_PREFIX + "/"):
                resource = path[len(REST_PREFIX) :]
                segments = [s for s in resource.split("/") if s]
                table = segments[0] if len(segments) == 1 else None
                record = api._record(method, path, table, raw_query, headers)
                fired = api.faults.take(method, table)
                if fired:
                    record.faults = [f"{f.kind}#{f.id}" for f in fired]
                for f in fired:
                    if f.kind == "delay" and f.when == "before":
                        wait_fault(f)
                for f in fired:
                    if f.when == "before" and f.kind == "drop":
                        raise DropConnection()
                    if f.when == "before" and f.kind == "fail":
                        raise fault_error(f)
                try:
                    resp = api.handle_rest(method, resource, raw_query, headers, body, record)
                except (ApiError, GatewayError) as exc:
                    resp = exc.to_resp()
                for f in fired:
                    if f.kind == "delay" and f.when == "after":
                        wait_fault(f)
                for f in fired:
                    if f.when == "after" and f.kind == "drop":
                        raise DropConnection()
                    if f.when == "after" and f.kind == "fail":
                        raise fault_error(f)
            else:
                resp = GatewayError(404, "no Route matched with those values").to_resp()
        except DropConnection:
            dropped = True
        except (ApiError, GatewayError) as exc:
            resp = exc.to_resp()
        except Exception as exc:  # a bug here: answer as PostgREST's internal error and log the traceback
            log.error("internal error on %s %s: %s\n%s", method, self.path, exc, traceback.format_exc())
            resp = ApiError(500, "PGRSTX00", f"internal error: {exc}").to_resp()
        elapsed = (time.monotonic() - started) * 1000
        if record is not None:
            record.duration_ms = round(elapsed, 3)
            record.dropped = dropped
            record.status = None if dropped else resp.status
        shown = self.path if "apikey=" not in self.path else re.sub(r"apikey=[^&]*", "apikey=<redacted>", self.path)
        tags = (" faults=" + ",".join(f"{f.kind}#{f.id}" for f in fired)) if fired else ""
        if dropped:
            log.warning('%s "%s %s" connection dropped%s %.1fms', self.client_address[0], method, shown, tags, elapsed)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        level = logging.INFO if resp.status < 500 else logging.WARNING
        log.log(level, '%s "%s %s" %d%s %.1fms', self.client_address[0], method, shown, resp.status, tags, elapsed)
        try:
            self._send(resp)
        except OSError:
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PATCH = do_DELETE = do_PUT = do_OPTIONS = _dispatch
