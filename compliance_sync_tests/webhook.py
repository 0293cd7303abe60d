"""A local HTTP server that records what is POSTed to it: the alert webhook in tests (stdlib only)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append({"path": self.path, "content_type": self.headers.get("Content-Type"), "body": body})  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows stderr of failing tests
        pass


class Webhook:
    """``with Webhook() as hook:`` serves on 127.0.0.1 in a thread; ``hook.url`` is its base URL."""

    def __init__(self) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.received = []  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-webhook", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def received(self) -> list[dict[str, Any]]:
        return list(self.server.received)  # type: ignore[attr-defined]

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.received]

    def wait_for(self, predicate, timeout: float, what: str) -> dict[str, Any]:
        """The first posted JSON message matching ``predicate``, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages():
                if predicate(m):
                    return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no webhook message {what} within {timeout:.0f} s; received: {self.messages()}")
            time.sleep(0.5)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
