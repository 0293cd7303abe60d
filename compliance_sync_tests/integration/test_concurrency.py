"""Concurrency on the direct path (issue 12): two runs of one FY serialise on the advisory lock (a CLI run
and a Dagster run started together); runs of different FYs proceed in parallel; a planner's edit between a
run's read and its write makes the run retry (SQLSTATE 40001 / 23505) and converge, or stop with exit 3
after bounded attempts; and REPEATABLE READ keeps a change committed during the run from being half-seen.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import psycopg
import pytest

from compliance_sync.backends.postgres import PostgresBackend, PostgresSession, translate
from compliance_sync.domain.tables import REQUIREMENTS
from compliance_sync.errors import ConcurrentChange, ConnectionFailure, ExitCode
from compliance_sync_tests.scenario import uid

pytest.register_assert_rewrite("compliance_sync_tests.world")
from compliance_sync_tests.world import (  # noqa: E402
    AS_OF,
    YEAR_ARGS,
    change_the_world,
    execute,
    full_snapshot,
    owned_snapshot,
    run_cli,
    scalar,
    snapshot_after_runs,
)

pytest_plugins = ["compliance_sync_tests.world"]  # its fixtures: world, world_db, cli_env


@pytest.fixture(scope="module")
def first_run(server_url: str, world_template: str, tmp_path_factory) -> dict[str, list[str]]:
    """The targets (key and owned columns) after one undisturbed run of the small world."""
    return snapshot_after_runs(server_url, world_template, tmp_path_factory.mktemp("first_run"))


@pytest.fixture
def hooks() -> Iterator[pytest.MonkeyPatch]:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def no_changes(summary: dict) -> bool:
    return all(c["inserted"] == c["updated"] == c["deleted"] == 0 for c in summary["targets"].values())


# --- two runs of one FY serialise; different FYs do not -----------------------------------------------------------
def test_a_cli_run_and_a_dagster_run_of_one_fy_serialise(world, capsys, hooks):
    from compliance_sync.definitions import SYNC_JOB, build_definitions
    from compliance_sync.definitions.tags import SUMMARY
    from compliance_sync.definitions.targets import sync_run_config
    from compliance_sync.entrypoints import cli

    held: list[tuple[str, float, float]] = []  # (thread, lock taken, lock released)
    real_lock, real_close, real_read = PostgresSession.lock, PostgresSession.close, PostgresSession.read_facts

    def lock(self):
        real_lock(self)
        self._taken = time.monotonic()

    def close(self):
        taken = getattr(self, "_taken", None)
        real_close(self)
        if taken is not None:
            held.append((threading.current_thread().name, taken, time.monotonic()))

    def read_facts(self):
        time.sleep(0.4)  # linger inside the lock: the other run surely tries meanwhile
        return real_read(self)

    hooks.setattr(PostgresSession, "lock", lock)
    hooks.setattr(PostgresSession, "close", close)
    hooks.setattr(PostgresSession, "read_facts", read_facts)
    job = build_definitions().resolve_job_def(SYNC_JOB)
    results: dict[str, Any] = {}
    start = threading.Barrier(2)

    def via_cli() -> None:
        start.wait()
        results["cli"] = cli.main(["--year", "2025", "--as-of", "2025-03-31", "--json"])

    def via_dagster() -> None:
        start.wait()
        with dg.DagsterInstance.ephemeral() as instance:
            run_config = sync_run_config(as_of=dt.date.fromisoformat(AS_OF))
            run = job.execute_in_process(run_config=run_config, instance=instance, partition_key="2025")
            results["dagster"] = run.success
            [apac] = [
                m
                for m in run.get_asset_materialization_events()
                if m.asset_key.to_user_string() == "apac_planning_goals"
            ]
            results["dagster_summary"] = apac.materialization.metadata[SUMMARY].value

    threads = [threading.Thread(target=via_cli, name="cli"), threading.Thread(target=via_dagster, name="dagster")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    cli_summary = json.loads(capsys.readouterr().out)
    assert results["cli"] == 0 and results["dagster"] is True, (results, cli_summary)
    # serialised: the lock was held by one run at a time
    assert len(held) == 2
    (_, a0, a1), (_, b0, b1) = sorted(held, key=lambda h: h[1])
    assert a1 <= b0
    # the second saw the first's rows: exactly one of them inserted the requirement rows
    summaries = {"cli": cli_summary, "dagster": results["dagster_summary"]}
    inserted = {k: s["targets"][REQUIREMENTS]["inserted"] for k, s in summaries.items()}
    assert sorted(inserted.values())[0] == 0 and sorted(inserted.values())[1] == 28, inserted
    later = "cli" if inserted["cli"] == 0 else "dagster"
    # the state of one run: the later one's (a rerun with its as_of changes nothing)
    hooks.undo()
    again = run_cli(capsys, "--year", "2025", "--as-of", summaries[later]["as_of"])
    assert again.code == 0 and no_changes(again.summary), again.summary["targets"]
    assert scalar(world, "SELECT count(*) FROM compliance_sync_runs WHERE status = 'succeeded'") == 3


def test_runs_of_different_fys_proceed_in_parallel(world, hooks):
    from compliance_sync.config.settings import load_settings
    from compliance_sync.domain.fiscal import FiscalYear
    from compliance_sync.entrypoints.runner import RunRequest, run_directly

    execute(
        world,
        "INSERT INTO account_plans (id, client_name, fiscal_year, status) "
        "SELECT gen_random_uuid(), client_name, 2024, status FROM account_plans",
        "INSERT INTO territory_strategies (id, cse_name, territory, fiscal_year, status) "
        "SELECT gen_random_uuid(), cse_name, territory, 2024, status FROM territory_strategies",
    )
    both_inside = threading.Barrier(2, timeout=15)
    real_read = PostgresSession.read_facts

    def read_facts(self):
        both_inside.wait()  # each run holds its own FY's lock here: a second lock of the same key would deadlock
        return real_read(self)

    hooks.setattr(PostgresSession, "read_facts", read_facts)
    settings = load_settings()
    out: dict[int, Any] = {}

    def run(year: int) -> None:
        fy = FiscalYear(year, 1)
        out[year] = run_directly(settings, PostgresBackend(world), RunRequest(fy, fy.end, diff_limit=5))

    threads = [threading.Thread(target=run, args=(y,)) for y in (2024, 2025)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {y: code for y, (_, code) in out.items()} == {2024: 0, 2025: 0}, out
    assert scalar(world, f"SELECT count(DISTINCT fiscal_year) FROM {REQUIREMENTS}") == 2


# --- a concurrent edit between the run's read and its write -----------------------------------------------------------
def planner_edit(url: str, statement: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SET application_name = 'planning_app'")
        conn.execute(statement)


@pytest.fixture
def counted(hooks) -> list[int]:
    opened: list[int] = []
    real = PostgresBackend.session

    @contextlib.contextmanager
    def session(self, fy, as_of):
        opened.append(fy.year)
        with real(self, fy, as_of) as s:
            yield s

    hooks.setattr(PostgresBackend, "session", session)
    return opened


def edit_before_apply(hooks, url: str, statement: str, times: int) -> list[int]:
    """Between the run's plan and its writes (``times`` attempts in a row), a planner commits ``statement``."""
    real = PostgresSession.apply
    done: list[int] = []

    def apply(self, diff, run_ts, ledger):
        if len(done) < times:
            done.append(1)
            planner_edit(url, statement)
        return real(self, diff, run_ts, ledger)

    hooks.setattr(PostgresSession, "apply", apply)
    return done


BETA_SLA = f"plan_id = '{uid('plan:Beta Bank')}' AND event_type_id = '{uid('type:SLA_REVIEW')}'"


@pytest.mark.parametrize(
    "edit",
    [
        f"UPDATE {REQUIREMENTS} SET notes = 'planner was here' WHERE {BETA_SLA}",  # a row the run updates: 40001
        # a key the run inserts: 23505
        f"INSERT INTO {REQUIREMENTS} (plan_id, event_type_id, fiscal_year, notes) "
        f"VALUES ('{uid('change:plan')}', '{uid('type:SLA_REVIEW')}', 2025, 'planner was here')",
    ],
    ids=["update", "insert"],
)
def test_a_concurrent_edit_makes_the_run_retry_and_converge(world, capsys, hooks, counted, edit):
    assert run_cli(capsys, *YEAR_ARGS).code == 0
    change_the_world(world)
    counted.clear()
    edited = edit_before_apply(hooks, world, edit, times=1)
    result = run_cli(capsys, *YEAR_ARGS)
    assert edited and result.code == 0, result
    assert counted == [2025, 2025]  # the whole run again, once
    assert "a concurrent change" in result.err and "retrying the run (attempt 2 of 3)" in result.err
    assert (
        scalar(
            world,
            f"SELECT count(*) FROM {REQUIREMENTS} WHERE notes = 'planner was here' AND completed_count IS NOT NULL",
        )
        == 1
    )
    hooks.undo()
    again = run_cli(capsys, *YEAR_ARGS)
    assert again.code == 0 and no_changes(again.summary)


def test_a_concurrent_edit_on_every_attempt_exits_3_after_bounded_retries(world, capsys, hooks, counted):
    assert run_cli(capsys, *YEAR_ARGS).code == 0
    change_the_world(world)
    before = owned_snapshot(world)
    counted.clear()
    edits = edit_before_apply(
        hooks, world, f"UPDATE {REQUIREMENTS} SET notes = clock_timestamp()::text WHERE {BETA_SLA}", times=99
    )
    result = run_cli(capsys, *YEAR_ARGS)
    assert result.code == 3, result
    message = result.summary["error"]
    assert "a concurrent change" in message and "still failing after 3 attempts" in message
    assert "lost the connection" not in message
    assert counted == [2025] * 3 and len(edits) == 3
    assert owned_snapshot(world) == before  # nothing written by any attempt


@pytest.mark.parametrize(
    "error, kind",
    [
        (psycopg.errors.SerializationFailure("could not serialize access due to concurrent update"), ConcurrentChange),
        (psycopg.errors.DeadlockDetected("deadlock detected"), ConcurrentChange),
        (psycopg.errors.UniqueViolation("duplicate key value"), ConcurrentChange),
        (psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"), None),
        (psycopg.errors.AdminShutdown("terminating connection"), ConnectionFailure),
        (psycopg.OperationalError("server closed the connection unexpectedly"), ConnectionFailure),
    ],
)
def test_errors_are_classified_by_sqlstate_not_class(error, kind):
    assert isinstance(psycopg.errors.SerializationFailure("x"), psycopg.OperationalError)  # psycopg 3.3
    got = translate(error, "writing x", "db:5432/x")
    if kind is None:
        assert got.exit_code == ExitCode.DATA and "lock" in str(got)
    else:
        assert isinstance(got, kind)
    assert got.exit_code == (ExitCode.CONNECTION if kind is ConnectionFailure else ExitCode.DATA)


# --- REPEATABLE READ matters ------------------------------------------------------------------------------------------
RENAME = [
    "UPDATE account_plans SET client_name = 'Alpha Pty' WHERE client_name = 'Alpha Health'",
    "UPDATE client_segmentation SET client_name = 'Alpha Pty' WHERE client_name = 'Alpha Health'",
    "UPDATE segmentation_events SET client_name = 'Alpha Pty' WHERE client_name = 'Alpha Health'",
]


def rename_after_reading_plans(hooks, url: str) -> list[int]:
    """Right after the run read account_plans, the segmentation system renames a client in one transaction."""
    real = PostgresSession._rows
    done: list[int] = []

    def rows(self, what, *args, **kwargs):
        out = real(self, what, *args, **kwargs)
        if what == "account_plans" and not done:
            done.append(1)
            with psycopg.connect(url) as conn:
                for statement in RENAME:
                    conn.execute(statement)
        return out

    hooks.setattr(PostgresSession, "_rows", rows)
    return done


def read_committed(hooks) -> None:
    def begin(self):
        self.conn.autocommit = False
        self.conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        self._run("starting the transaction", "SELECT set_config('lock_timeout', '60s', true)")

    hooks.setattr(PostgresSession, "begin", begin)


@pytest.mark.parametrize("isolation", ["repeatable read", "read committed"])
def test_a_change_committed_during_the_run_is_not_half_seen(world, capsys, hooks, first_run, isolation):
    """Under the run's REPEATABLE READ the rename is not seen at all: the targets are those of the data
    before it. Under READ COMMITTED (the second case, which shows the test has teeth) the plans are read
    before the rename and the segment periods after it: 'Alpha Health' loses its requirement rows."""
    if isolation == "read committed":
        read_committed(hooks)
    renamed = rename_after_reading_plans(hooks, world)
    result = run_cli(capsys, *YEAR_ARGS)
    assert renamed and result.code == 0, result
    alpha_rows = scalar(world, f"SELECT count(*) FROM {REQUIREMENTS} WHERE client_name = 'Alpha Health'")
    if isolation == "repeatable read":
        assert owned_snapshot(world) == first_run
        assert alpha_rows == 6 and result.summary["warnings"].get("clients_without_segmentation", 0) == 0
    else:
        assert owned_snapshot(world) != first_run
        assert alpha_rows == 0 and result.summary["warnings"]["clients_without_segmentation"] == 1


def test_the_snapshot_is_taken_after_the_lock(world, capsys, hooks):
    """A change committed while the run waits for the advisory lock is seen (the snapshot starts after it)."""
    real_lock = PostgresSession.lock

    def lock(self):
        planner_edit(world, "UPDATE account_plans SET status = 'archived' WHERE client_name = 'Theta Uni'")
        real_lock(self)

    hooks.setattr(PostgresSession, "lock", lock)
    result = run_cli(capsys, *YEAR_ARGS)
    assert result.code == 0 and result.summary["clients_processed"] == 7, result
    assert dt.date.fromisoformat(result.summary["as_of"]) == dt.date(2025, 6, 30)
    assert (
        full_snapshot(world)[REQUIREMENTS]
        and scalar(world, f"SELECT count(*) FROM {REQUIREMENTS} WHERE client_name = 'Theta Uni'") == 0
    )
