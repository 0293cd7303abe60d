"""A dry run before `migrate --minimal` (SPEC §3.3, §5 "Dry run"), on both paths, against real PostgreSQL and
the PostgREST test server: on targets without their unique keys, holding duplicate keys, the dry run exits 0
with the diff a live run makes once the keys exist (matching rows on the key columns, each duplicated key
through the row `--dedupe` keeps), and says what a live run needs and the command that gives it; a live run
still stops with exit 3 and touches nothing; after the migration the live run writes what the dry run showed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from compliance_sync.backends.postgres.migrate import apply_minimal, minimal_sql_script
from compliance_sync.domain.diff import SyncDiff, diff_rows, keeper_rank
from compliance_sync.domain.guards import next_command
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TARGET_BY_NAME, TARGETS, TERRITORY
from compliance_sync_tests.rest_support import clone, drop, rest_server

pytest.register_assert_rewrite("compliance_sync_tests.world")
from compliance_sync_tests.world import YEAR_ARGS, execute, owned_snapshot, run_cli, scalar  # noqa: E402

pytest_plugins = ["compliance_sync_tests.world"]  # its fixtures: world, world_db, cli_env

NEWER_COPY = "0a000000-0000-4000-8000-000000000001"
APAC_COPY = "ffffffff-ffff-4fff-bfff-ffffffffffff"  # the greatest uuid: wins the tie on updated_at


def raw_snapshot(url: str) -> dict[str, list[tuple]]:
    """Every row of the four targets with its physical position and creating transaction: any write, even
    one that stores the same values, changes it."""
    with psycopg.connect(url) as conn:
        return {
            t.name: conn.execute(
                sql.SQL("SELECT ctid::text, xmin::text, to_jsonb(x)::text FROM {} x ORDER BY ctid").format(
                    sql.Identifier(t.name)
                )
            ).fetchall()
            for t in TARGETS
        }


def keyless_with_duplicates(url: str, capsys) -> None:
    """The world synced once, then as on the app's real schema: no unique key on any target, duplicated keys
    in three of them, and sources changed since (rows to insert, update and delete)."""
    assert run_cli(capsys, *YEAR_ARGS).code == 0
    req, bu = REQUIREMENTS, BUSINESS_UNIT
    with psycopg.connect(url) as conn:
        keys = conn.execute(
            f"SELECT plan_id, event_type_id FROM {req} WHERE client_name = 'Beta Bank' ORDER BY event_type_id LIMIT 2"
        ).fetchall()
        first = [f"(('{plan}'::uuid, '{kind}'::uuid))" for plan, kind in keys]
        req_cols = [
            r[0]
            for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s", (req,))
        ]
        cols = ", ".join(c for c in req_cols if c not in ("id", "updated_at"))
        conn.execute("; ".join(f"DROP INDEX {t.name}_compliance_sync_key" for t in TARGETS))
        # key 0: a newer copy with other counts (kept: the dry run compares through it) and an undated one
        conn.execute(
            f"INSERT INTO {req} (id, {cols}, updated_at) "
            f"SELECT %s, {cols.replace('completed_count', 'completed_count + 5')}, "
            f"updated_at + interval '1 day' FROM {req} WHERE (plan_id, event_type_id) IN {first[0]}",
            (NEWER_COPY,),
        )
        conn.execute(
            f"INSERT INTO {req} ({cols}, updated_at) SELECT {cols}, NULL FROM {req} WHERE id = %s", (NEWER_COPY,)
        )
        # key 1: an older copy with other counts (the original is kept: unchanged)
        conn.execute(
            f"INSERT INTO {req} ({cols}, updated_at) SELECT {cols.replace('completed_count', 'completed_count + 7')}, "
            f"updated_at - interval '1 day' FROM {req} WHERE (plan_id, event_type_id) IN {first[1]}"
        )
        conn.execute(
            f"INSERT INTO {bu} (bu_name, fiscal_year, territory_count, updated_at) "
            f"SELECT bu_name, fiscal_year, 99, NULL FROM {bu} WHERE bu_name = 'SEA'"
        )
        conn.execute(
            f"INSERT INTO {APAC} (id, fiscal_year, actual_compliance, below_compliance_accounts, bu_contributions, "
            "updated_at) "
            f"SELECT %s, fiscal_year, 1.00, below_compliance_accounts, bu_contributions, updated_at FROM {APAC}",
            (APAC_COPY,),
        )
        # sources changed since the sync: a plan archived (rows to delete), a requirement row lost (to insert)
        conn.execute(
            "UPDATE account_plans SET status = 'archived' WHERE client_name = 'Theta Uni' AND fiscal_year = 2025"
        )
        conn.execute(f"DELETE FROM {req} WHERE client_name = 'Alpha Health'")


@contextlib.contextmanager
def via(backend: str, url: str, monkeypatch) -> Iterator[None]:
    """Run the command line over the direct connection or over REST (the PostgREST test server on ``url``)."""
    if backend == "postgres":
        yield
        return
    with rest_server(url) as srv:
        monkeypatch.delenv("SUPABASE_DB_URL", raising=False)
        monkeypatch.setenv("NEXT_PUBLIC_SUPABASE_URL", srv.url)
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", srv.service_role_key)
        try:
            yield
        finally:
            monkeypatch.setenv("SUPABASE_DB_URL", url)
            monkeypatch.delenv("NEXT_PUBLIC_SUPABASE_URL")
            monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY")


def migrate_minimal(backend: str, url: str, capsys) -> None:
    """What the dry run said to run: the migration over the direct connection, or its SQL as pasted into
    Supabase's SQL editor."""
    if backend == "postgres":
        assert run_cli(capsys, "migrate", "--minimal", "--dedupe").code == 0
        return
    assert run_cli(capsys, "migrate", "--minimal", "--dedupe", "--print-sql", as_json=False).code == 0
    script = minimal_sql_script(dedupe=True)
    if shutil.which("psql"):
        done = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-"],
            input=script,
            text=True,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    else:
        execute(url, script)


@pytest.mark.parametrize("backend", ["postgres", "rest"])
def test_a_dry_run_before_the_minimal_migration_previews_the_run_after_it(world, capsys, monkeypatch, backend):
    keyless_with_duplicates(world, capsys)
    # what the dry run should show: the diff over a copy that got `migrate --minimal --dedupe`
    copy = clone(world)
    try:
        with psycopg.connect(copy) as conn:
            apply_minimal(conn, dedupe=True)
        monkeypatch.setenv("SUPABASE_DB_URL", copy)
        expected = run_cli(capsys, "--dry-run", *YEAR_ARGS).summary
        assert expected["live_run_needs"] == [] and expected["next_command"] is None
        assert run_cli(capsys, *YEAR_ARGS).code == 0
        after_live = owned_snapshot(copy)
    finally:
        monkeypatch.setenv("SUPABASE_DB_URL", world)
        drop(copy)
    req = expected["targets"][REQUIREMENTS]
    assert req["inserted"] and req["updated"] and req["deleted"] and expected["targets"][APAC]["updated"] == 1

    before = raw_snapshot(world)
    with via(backend, world, monkeypatch):
        dry = run_cli(capsys, "--dry-run", *YEAR_ARGS, as_json=False)
        summary = run_cli(capsys, "--dry-run", *YEAR_ARGS).summary
        live = run_cli(capsys, *YEAR_ARGS)
    assert dry.code == 0 and summary["exit_code"] == 0 and summary["status"] == "dry_run", summary["error"]
    assert summary["targets"] == expected["targets"]
    assert summary["diff"] == expected["diff"]
    assert summary["clients_processed"] == expected["clients_processed"]
    command = "compliance-sync migrate --minimal --dedupe" + (" --print-sql" if backend == "rest" else "")
    assert summary["next_command"] == command
    needs = {n["table"]: n for n in summary["live_run_needs"]}
    assert list(needs) == [t.name for t in TARGETS]
    assert all(needs[t.name]["missing_key"] == list(t.key) for t in TARGETS)
    assert {t: (n["duplicates"], n["duplicate_rows"]) for t, n in needs.items()} == {
        REQUIREMENTS: (2, 3),
        TERRITORY: (0, 0),
        BUSINESS_UNIT: (1, 1),
        APAC: (1, 1),
    }
    assert needs[REQUIREMENTS]["examples"][0].endswith(": 3 rows") and needs[REQUIREMENTS]["examples"][0].startswith(
        "plan_id="
    )
    assert needs[APAC]["examples"] == ["fiscal_year=2025: 2 rows"] and needs[TERRITORY]["examples"] == []
    assert {g["table"] for g in summary["guards"] if g["code"] == "missing_key" and g["stops_live_run"]} == set(needs)
    assert (
        "a live run needs: account_plan_event_requirements: a unique index on (plan_id, event_type_id, fiscal_year)"
        in dry.text
    )
    assert f"next, run `{command}`" in dry.text and "Live run needs:" in dry.text
    if backend == "rest":
        assert "Supabase's SQL editor" in dry.text
    # a live run still stops before any write, naming the migration
    assert live.code == 3 and "compliance-sync migrate --minimal" in live.summary["error"]
    assert all(f"{t.name} has no unique index on ({', '.join(t.key)})" in live.summary["error"] for t in TARGETS)
    assert raw_snapshot(world) == before

    migrate_minimal(backend, world, capsys)
    with via(backend, world, monkeypatch):
        written = run_cli(capsys, *YEAR_ARGS)
    assert written.code == 0 and written.summary["status"] == "written", written.summary["error"]
    assert written.summary["targets"] == summary["targets"]
    assert owned_snapshot(world) == after_live


def test_the_kept_row_of_a_duplicated_key_is_the_one_dedupe_keeps(world, capsys):
    """Direct and REST pick the same row of each duplicated key as the migration keeps: newest updated_at
    (NULL oldest), then greatest id."""
    keyless_with_duplicates(world, capsys)
    with psycopg.connect(world) as conn:
        rows = conn.execute(
            f"SELECT to_jsonb(x) FROM {REQUIREMENTS} x WHERE fiscal_year = 2025 AND (plan_id, event_type_id) IN "
            f"(SELECT plan_id, event_type_id FROM {REQUIREMENTS} GROUP BY 1, 2 HAVING count(*) > 1)"
        ).fetchall()
        kept_by_rank = {}
        for (row,) in rows:
            k = (row["plan_id"], row["event_type_id"])
            if k not in kept_by_rank or keeper_rank(row) > keeper_rank(kept_by_rank[k]):
                kept_by_rank[k] = row
        apply_minimal(conn, dedupe=True)
        left = {r[0] for r in conn.execute(f"SELECT id::text FROM {REQUIREMENTS}")}
    assert {r["id"] for r in kept_by_rank.values()} <= left
    assert NEWER_COPY in {r["id"] for r in kept_by_rank.values()}
    assert scalar(world, f"SELECT id::text FROM {APAC}") == APAC_COPY


def test_the_printed_sql_with_dedupe_keeps_the_rows_the_migration_keeps(world, capsys):
    keyless_with_duplicates(world, capsys)
    copy = clone(world)
    try:
        with psycopg.connect(copy) as conn:
            apply_minimal(conn, dedupe=True)
        execute(world, minimal_sql_script(dedupe=True))
        ids = "SELECT array_agg(id::text ORDER BY id) FROM {}"
        assert all(scalar(world, ids.format(t.name)) == scalar(copy, ids.format(t.name)) for t in TARGETS)
        execute(world, minimal_sql_script(dedupe=True))  # idempotent
    finally:
        drop(copy)
    assert run_cli(capsys, *YEAR_ARGS).code == 0


def test_dagster_dry_run_reports_the_missing_keys_as_a_warning_and_a_live_run_fails(world, capsys):
    from compliance_sync.definitions import SYNC_JOB, build_definitions

    keyless_with_duplicates(world, capsys)
    before = raw_snapshot(world)
    job = build_definitions().resolve_job_def(SYNC_JOB)
    config = lambda dry: {"ops": {"compliance_sync": {"config": {"dry_run": dry, "as_of": "2025-06-30"}}}}  # noqa: E731
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(run_config=config(True), instance=instance, partition_key="2025")
        assert result.success
        [guards] = [c for c in result.get_asset_check_evaluations() if c.check_name == "write_guards"]
        assert not guards.passed and guards.severity == dg.AssetCheckSeverity.WARN
        examples = guards.metadata["examples"].value
        assert "a live run would stop: account_plan_event_requirements has no unique index" in examples
        assert "compliance-sync migrate --minimal --dedupe" in examples
        apac = next(o for o in result.get_asset_observation_events() if o.asset_key.to_user_string() == APAC)
        meta = apac.asset_observation_data.asset_observation.metadata
        assert "has no unique index on (fiscal_year)" in meta["guards"].value
        assert meta["compliance_sync/summary"].value["next_command"] == "compliance-sync migrate --minimal --dedupe"

        failed = job.execute_in_process(
            run_config=config(False), instance=instance, partition_key="2025", raise_on_error=False
        )
        assert not failed.success
        [failure] = [e for e in failed.all_events if e.is_step_failure]
        assert "compliance-sync migrate --minimal" in failure.step_failure_data.error.message
    assert raw_snapshot(world) == before


# --- pure parts ----------------------------------------------------------------------------------------------
def _row(key: str, updated: str | None, ident: str | None, completed: int) -> dict:
    return {
        "plan_id": key,
        "event_type_id": "e",
        "fiscal_year": 2025,
        "completed_count": completed,
        "updated_at": updated,
        "id": ident,
        "has_foreign": False,
    }


def test_diff_rows_compares_a_duplicated_key_through_the_row_dedupe_keeps():
    t = TARGET_BY_NAME[REQUIREMENTS]
    current = [
        _row("a", "2025-01-01T00:00:00+00:00", "1", 1),
        _row("a", "2025-01-02T00:00:00.5+00:00", "0", 2),  # the latest updated_at: kept
        _row("a", None, "9", 3),  # NULL updated_at: the oldest
        _row("b", "2025-01-01T00:00:00+00:00", "1", 4),
        _row("b", "2025-01-01T00:00:00+00:00", "2", 5),  # tie on updated_at: the greatest id
        _row("c", None, None, 6),
    ]
    wanted = [{c: r.get(c) for c in t.columns} for r in (current[1], current[4], current[5])]
    diff, changes = diff_rows(t, current, wanted, 10, key_backed=False)
    assert (diff.unchanged, diff.updated, diff.inserted, diff.deleted, diff.current_count) == (3, 0, 0, 0, 3)
    assert (diff.duplicate_keys, diff.duplicate_rows) == (2, 3)
    assert diff.duplicate_examples == [
        "plan_id=a, event_type_id=e, fiscal_year=2025: 3 rows",
        "plan_id=b, event_type_id=e, fiscal_year=2025: 2 rows",
    ]
    assert diff.live_run_needs()["missing_key"] == list(t.key) and changes.upserts == []
    assert diff_rows(t, current[3:], wanted, 10)[0].live_run_needs() is None


def test_next_command_names_the_migration_of_each_path():
    t = TARGET_BY_NAME[APAC]
    keyless = diff_rows(t, [{"fiscal_year": 2025, "updated_at": None}] * 2, [], 5, key_backed=False)[0]
    backed = diff_rows(t, [], [], 5)[0]
    assert next_command("postgres", SyncDiff(2025, {APAC: backed})) is None
    assert next_command("postgres", SyncDiff(2025, {APAC: keyless})) == "compliance-sync migrate --minimal --dedupe"
    assert (
        next_command("rest", SyncDiff(2025, {APAC: keyless}))
        == "compliance-sync migrate --minimal --dedupe --print-sql"
    )
    keyless.duplicate_keys = 0
    assert next_command("rest", SyncDiff(2025, {APAC: keyless})) == "compliance-sync migrate --minimal --print-sql"
