"""The command line (``python -m compliance_sync_tests.postgrest_server``) and helpers that run the server as a
separate process and stop it by PID, as benchmarks and an independent checker do."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select as _select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from .constants import DEFAULT_JWT_SECRET, DEFAULT_MAX_URL_LENGTH, log
from .server import PostgrestServer


def start_server_process(
    database_url: str,
    jwt_secret: str = DEFAULT_JWT_SECRET,
    max_rows: int | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    stderr: Any = subprocess.DEVNULL,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> tuple[str, str, subprocess.Popen]:
    """Start ``python -m compliance_sync_tests.postgrest_server`` (port 0: a free port) and read its two stdout lines.
    Returns ``(url, service_role_key, process)``; stop it with :func:`stop_server_process`. ``stderr`` receives the
    logs (a file object, ``subprocess.DEVNULL`` by default; never an unread pipe, which would block the server)."""
    args = [
        sys.executable,
        "-m",
        "compliance_sync_tests.postgrest_server",
        "--database-url",
        database_url,
        "--port",
        str(port),
        "--jwt-secret",
        jwt_secret,
        "--host",
        host,
    ]
    if max_rows is not None:
        args += ["--max-rows", str(max_rows)]
    run_env = dict(os.environ if env is None else env)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run_env["PYTHONPATH"] = root + (os.pathsep + run_env["PYTHONPATH"] if run_env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, env=run_env)
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    buf = b""
    fd = proc.stdout.fileno()
    while len(lines) < 2:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stop_server_process(proc)
            raise RuntimeError(f"the server did not print its two lines within {timeout}s (got {lines!r})")
        ready, _, _ = _select.select([fd], [], [], min(remaining, 0.5))
        if not ready:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode} before listening (got {lines!r})")
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            proc.wait(timeout=5)
            raise RuntimeError(f"the server exited with status {proc.returncode} before listening (got {lines!r})")
        buf += chunk
        while b"\n" in buf and len(lines) < 2:
            line, buf = buf.split(b"\n", 1)
            lines.append(line.decode("utf-8"))
    url_line, key_line = lines
    if not url_line.startswith("NEXT_PUBLIC_SUPABASE_URL=") or not key_line.startswith("SUPABASE_SERVICE_ROLE_KEY="):
        stop_server_process(proc)
        raise RuntimeError(f"unexpected server output: {lines!r}")
    return url_line.split("=", 1)[1], key_line.split("=", 1)[1], proc


def stop_server_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM by PID, wait, return the exit status (SIGKILL if it does not stop within ``timeout``)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


@contextlib.contextmanager
def server_process(database_url: str, **kwargs):
    """``with server_process(db_url, max_rows=1000) as (url, key, proc): ...`` -- stopped by PID at the end."""
    url, key, proc = start_server_process(database_url, **kwargs)
    try:
        yield url, key, proc
    finally:
        stop_server_process(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compliance_sync_tests.postgrest_server",
        description="A PostgREST look-alike over a real PostgreSQL database, served the way Supabase exposes it.",
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwt-secret", required=True)
    parser.add_argument("--max-rows", type=int, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--max-url-length",
        type=int,
        default=DEFAULT_MAX_URL_LENGTH,
        help="414 past this many bytes of request target (0: no limit)",
    )
    args = parser.parse_args(argv)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = PostgrestServer(
        args.database_url,
        jwt_secret=args.jwt_secret,
        max_rows=args.max_rows,
        host=args.host,
        port=args.port,
        max_url_length=args.max_url_length or None,
    )
    try:
        server.start()
    except Exception as exc:
        log.error("cannot start: %s", exc)
        return 1
    sys.stdout.write(f"NEXT_PUBLIC_SUPABASE_URL={server.url}\nSUPABASE_SERVICE_ROLE_KEY={server.service_role_key}\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
