"""A small, hand-made world for the direct path's error, fault and concurrency tests (issue 12), and the
fixtures and helpers they share.

The world (FY2025, calendar year, as_of 2025-06-30): two tiers, three event types, eight clients of three
CSEs in three territories mapped to three BUs, events on both sides of ``as_of``. It is loaded once per
session into a template database; each test gets a copy (``CREATE DATABASE ... TEMPLATE``, ~0.1 s), so a
test may alter the schema, the rows or the roles' rights of its own copy.

Snapshots compare targets in two ways: :func:`full_snapshot` (every column, ``updated_at`` and ``id``
included: "nothing was touched") and :func:`owned_snapshot` (key and owned columns only: "the same state as
an undisturbed run", whatever ``updated_at`` the writes got).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import queue
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.types.json import Jsonb

from compliance_sync.domain.diff import to_json
from compliance_sync.domain.tables import TARGETS
from compliance_sync_tests.conftest import url_for_database
from compliance_sync_tests.scenario import Scenario

FY = 2025
AS_OF = "2025-06-30"
YEAR_ARGS = ("--year", str(FY), "--as-of", AS_OF)
TARGET_NAMES = tuple(t.name for t in TARGETS)
BU_MAP = {"territory": {"VIC + NZ": "ANZ", "Singapore": "SEA", "Hong Kong": "Greater China"}}
CLIENTS = {  # client -> (tier, CSE)
    "Alpha Health": ("Collaboration", "Kim Lee"),
    "Beta Bank": ("Leverage", "Kim Lee"),
    "Gamma Gov": ("Leverage", "Kim Lee"),
    "Delta Telco": ("Collaboration", "Raj Patel"),
    "Epsilon Energy": ("Leverage", "Raj Patel"),
    "Zeta Mining": ("Collaboration", "Raj Patel"),
    "Eta Retail": ("Leverage", "Ana Souza"),
    "Theta Uni": ("Collaboration", "Ana Souza"),
}
STRATEGIES = {"Kim Lee": "VIC + NZ", "Raj Patel": "Singapore", "Ana Souza": "Hong Kong"}
SOURCE_TABLES = (
    "segmentation_tiers",
    "segmentation_event_types",
    "tier_event_requirements",
    "client_segmentation",
    "account_plans",
    "territory_strategies",
    "segmentation_events",
    "segmentation_event_compliance",
    "client_event_exclusions",
)


def small_world() -> Scenario:
    s = Scenario(FY, 1, AS_OF)
    s.tier("Leverage")
    s.tier("Collaboration")
    for code in ("SLA_REVIEW", "INSIGHT_TP", "HEALTH_CHECK"):
        s.event_type(code)
    for code, lev, col in (("SLA_REVIEW", 2, 4), ("INSIGHT_TP", 4, 12), ("HEALTH_CHECK", 0, 3)):
        s.require("Leverage", code, lev)
        s.require("Collaboration", code, col)
    for i, (client, (tier, cse)) in enumerate(CLIENTS.items()):
        s.period(client, tier, "2024-01-01", cse=cse)
        s.plan(f"plan:{client}", client)
        if i % 3 == 0:
            s.plan(f"plan2:{client}", client)  # a second plan: the same requirement figures
        for k in range(i % 5):  # 0-4 completed SLA reviews, one per month from January
            s.event(f"sla:{client}:{k}", client, "SLA_REVIEW", f"2025-{k + 1:02d}-10")
        for k in range(i % 7 + 1):
            s.event(f"tp:{client}:{k}", client, "INSIGHT_TP", f"2025-{k + 1:02d}-20")
        s.event(f"hc:{client}", client, "HEALTH_CHECK", "2025-03-03", completed=i % 2 == 0)
        s.event(f"future:{client}", client, "SLA_REVIEW", "2025-09-15", completed=False)
    for cse, territory in STRATEGIES.items():
        s.strategy(f"ts:{cse}", cse, territory)
    return s


# --- loading rows ------------------------------------------------------------------------------------------
def insert(conn: psycopg.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        cols = list(row)
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.Placeholder() * len(cols)),
            ),
            [Jsonb(v, dumps=to_json) if isinstance(v, (list, dict)) else v for v in row.values()],
        )


def load(url: str, s: Scenario) -> None:
    with psycopg.connect(url) as conn:
        insert(conn, "segmentation_tiers", s.tiers)
        insert(conn, "segmentation_event_types", s.types)
        insert(conn, "tier_event_requirements", s.requirements)
        insert(conn, "client_segmentation", s.periods)
        insert(conn, "account_plans", s.plans)
        insert(conn, "territory_strategies", s.strategies)
        insert(conn, "segmentation_events", s.events)
        insert(conn, "segmentation_event_compliance", s.cache)
        insert(conn, "client_event_exclusions", s.exclusions or [])


def execute(url: str, *statements: str, params: Any = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement, params)


def scalar(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params or None).fetchone()[0]


# --- databases ----------------------------------------------------------------------------------------------
def create_database(server_url: str, template: str | None = None) -> str:
    name = f"cs_t12_{uuid.uuid4().hex[:12]}"  # its own prefix: a copy left by a killed run is easy to find
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {}{}").format(
                sql.Identifier(name),
                sql.SQL(" TEMPLATE {}").format(sql.Identifier(template)) if template else sql.SQL(""),
            )
        )
    return name


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class _Dropper:
    """Drops the tests' database copies in the background (a drop waits for a checkpoint: ~0.2-1 s), so the
    next test need not wait; :meth:`drain` waits for them all at the end of the session."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def drop(self, server_url: str, name: str) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="cs-test-dropper", daemon=True)
            self._thread.start()
        self._queue.put((server_url, name))

    def _work(self) -> None:
        while True:
            server_url, name = self._queue.get()
            try:
                drop_database(server_url, name)
            except Exception:  # noqa: BLE001 - retried by drain(), synchronously
                self._failed.append((server_url, name))
            finally:
                self._queue.task_done()

    _failed: list = []

    def drain(self) -> None:
        self._queue.join()
        while self._failed:
            drop_database(*self._failed.pop())


_dropper = _Dropper()


@pytest.fixture(scope="session")
def world_template(server_url: str) -> Iterator[str]:
    """A database with the full schema and the small world, used only as a template."""
    from compliance_sync.backends.postgres.migrate import apply_full

    name = create_database(server_url)
    url = url_for_database(server_url, name)
    try:
        with psycopg.connect(url) as conn:
            apply_full(conn)
        load(url, small_world())
        yield name
    finally:
        _dropper.drain()
        drop_database(server_url, name)


@pytest.fixture
def world_db(server_url: str, world_template: str) -> Iterator[str]:
    """A fresh copy of the small world (schema + sources, empty targets); dropped after the test."""
    name = create_database(server_url, world_template)
    try:
        yield url_for_database(server_url, name)
    finally:
        _dropper.drop(server_url, name)


@contextlib.contextmanager
def temporary_role(url: str, *options: str) -> Iterator[str]:
    """A login role (cluster-wide, so dropped afterwards) with every right on the database's tables."""
    role = f"cs_role_{uuid.uuid4().hex[:10]}"
    execute(
        url,
        f'CREATE ROLE "{role}" LOGIN {" ".join(options)}',
        f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"',
        f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"',
        f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
    )
    try:
        yield role
    finally:
        execute(url, f'DROP OWNED BY "{role}"', f'DROP ROLE IF EXISTS "{role}"')


def url_as(url: str, role: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["user"] = role
    params.pop("password", None)
    return make_conninfo(**params)


# --- the command line ----------------------------------------------------------------------------------------
@pytest.fixture
def cli_env(monkeypatch, tmp_path) -> pathlib.Path:
    """A clean working directory and environment (no stray .env, no DAGSTER_HOME) with the world's BU map."""
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if (var.startswith("COMPLIANCE_SYNC_") and var != "COMPLIANCE_SYNC_TEST_DATABASE_URL") or var in (
            "NEXT_PUBLIC_SUPABASE_URL",
            "SUPABASE_SERVICE_ROLE_KEY",
            "SUPABASE_DB_URL",
            "DAGSTER_HOME",
        ):
            monkeypatch.delenv(var)
    path = tmp_path / "bu_map.yaml"
    path.write_text(yaml.safe_dump(BU_MAP), encoding="utf-8")
    monkeypatch.setenv("COMPLIANCE_SYNC_BU_MAP", str(path))
    return tmp_path


@pytest.fixture
def world(world_db: str, cli_env, monkeypatch) -> str:
    """The world's database as SUPABASE_DB_URL, in a clean environment."""
    monkeypatch.setenv("SUPABASE_DB_URL", world_db)
    return world_db


class CliResult:
    def __init__(self, code: int, out: str, err: str, as_json: bool):
        self.code, self.out, self.err = code, out, err
        self.text = out + err
        self.summary: dict | None = None
        if as_json:
            # exactly one JSON object on stdout, whose exit_code is the process's
            self.summary = json.loads(out)
            assert isinstance(self.summary, dict), out
            assert self.summary["exit_code"] == code, (code, self.summary)

    @property
    def message(self) -> str:
        return (self.summary or {}).get("error") or self.text

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, text={self.text[-3000:]!r})"


def run_cli(capsys, *args: str, as_json: bool = True) -> CliResult:
    from compliance_sync.entrypoints import cli

    argv = list(args) + (["--json"] if as_json and "--json" not in args else [])
    code = cli.main(argv)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err, as_json)


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text[-3000:]


# --- snapshots ------------------------------------------------------------------------------------------------
def full_snapshot(url: str) -> dict[str, list[str]]:
    """Every row of the four targets, every column (text form), in a stable order."""
    with psycopg.connect(url) as conn:
        return {
            t: [
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT to_jsonb(x)::text FROM {} x ORDER BY 1").format(sql.Identifier(t))
                )
            ]
            for t in TARGET_NAMES
        }


def owned_snapshot(url: str, fy: int = FY) -> dict[str, list[str]]:
    """The FY's rows of the four targets: key and owned columns only (what a run decides)."""
    out = {}
    with psycopg.connect(url) as conn:
        for t in TARGETS:
            cols = sql.SQL(", ").join(sql.Identifier(c) for c in t.columns)
            q = sql.SQL("SELECT to_jsonb(x)::text FROM (SELECT {} FROM {} WHERE fiscal_year = %s) x ORDER BY 1").format(
                cols, sql.Identifier(t.name)
            )
            out[t.name] = [r[0] for r in conn.execute(q, (fy,))]
    return out


def snapshot_after_runs(
    server_url: str, template: str, folder: pathlib.Path, *, changed_between: bool = False
) -> dict[str, list[str]]:
    """The targets (key and owned columns) after an undisturbed run of the world in a database of its own,
    or after two runs with :func:`change_the_world` between them; the database is dropped afterwards."""
    from compliance_sync.entrypoints import cli

    name = create_database(server_url, template)
    url = url_for_database(server_url, name)
    (folder / "bu.yaml").write_text(yaml.safe_dump(BU_MAP))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(folder)
            mp.delenv("DAGSTER_HOME", raising=False)
            mp.setenv("SUPABASE_DB_URL", url)
            mp.setenv("COMPLIANCE_SYNC_BU_MAP", str(folder / "bu.yaml"))
            assert cli.main(list(YEAR_ARGS)) == 0
            if changed_between:
                change_the_world(url)
                assert cli.main(list(YEAR_ARGS)) == 0
        return owned_snapshot(url)
    finally:
        drop_database(server_url, name)


def target_counts(url: str, fy: int = FY) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE fiscal_year = %s").format(sql.Identifier(t)), (fy,)
            ).fetchone()[0]
            for t in TARGET_NAMES
        }


def change_the_world(url: str) -> None:
    """A day later: so that the next run inserts, updates and deletes in every target."""
    from compliance_sync_tests.scenario import uid

    execute(
        url,
        # a completed event for Beta Bank: its rows, its territory, ANZ and APAC change
        f"INSERT INTO segmentation_events (id, client_name, event_type_id, event_date, completed) "
        f"VALUES ('{uid('change:event')}', 'Beta Bank', '{uid('type:SLA_REVIEW')}', '2025-05-05', true)",
        # one plan archived: its rows are deleted
        "UPDATE account_plans SET status = 'archived' WHERE client_name = 'Gamma Gov'",
        # a new plan: new rows
        f"INSERT INTO account_plans (id, client_name, fiscal_year, status) "
        f"VALUES ('{uid('change:plan')}', 'Eta Retail', 2025, 'draft')",
    )


# --- a server that refuses the password -------------------------------------------------------------------------
class FakeServer:
    """Speaks just enough of PostgreSQL's protocol to ask for a password and refuse it (SQLSTATE 28P01),
    as a server with password authentication does; optionally quoting what it received."""

    def __init__(self, echo: bool = False):
        self.echo = echo
        self.passwords: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                with contextlib.suppress(OSError, struct.error):
                    self._one(conn)

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _one(self, conn: socket.socket) -> None:
        while True:  # SSLRequest / GSSENCRequest: refuse, then the startup message
            length, code = struct.unpack("!ii", self._read(conn, 8))
            if code in (80877103, 80877104):
                conn.sendall(b"N")
                continue
            self._read(conn, length - 8)
            break
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind = self._read(conn, 1)
        length = struct.unpack("!i", self._read(conn, 4))[0]
        password = self._read(conn, length - 4).rstrip(b"\0").decode("utf-8", "replace")
        assert kind == b"p"
        self.passwords.append(password)
        text = 'password authentication failed for user "postgres"' + (f" (received {password!r})" if self.echo else "")
        fields = b"SFATAL\0VFATAL\0C28P01\0M" + text.encode() + b"\0\0"
        conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)

    def close(self) -> None:
        self.sock.close()
