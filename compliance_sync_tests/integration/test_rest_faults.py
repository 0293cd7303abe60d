"""Faults at every request position of a REST run (SPEC §5: "a failure at any point leaves every row either
old or new, never missing, and a rerun converges").

One tiny world (Appendix A plus three clients) whose next run inserts, updates, deletes, resets a business
unit and keeps an orphan. Its targets before that run ("old") are saved in a schema the REST API does not
expose and restored before every trial; a clean run gives "new". Each trial makes the test server fail the
n-th request of the run (a 503, a connection dropped before the server executes it, or dropped after the
server committed it), either once (the retry succeeds) or on every attempt (the run stops with exit 4).
After the run every target row is old or new and none is missing, the attempts at the failing request are
bounded, the ledger holds at most one row for the run, and a rerun reaches the clean run's state.

The default run samples the positions that matter (the API description, a schema probe, the first read, a
target's current rows, the first and last upsert, a delete, the ledger); ``-m slow`` sweeps them all.
"""

from __future__ import annotations

import collections
import time

import pytest

from compliance_sync.backends.rest import client as rest_client
from compliance_sync.backends.rest import write as rest_write
from compliance_sync.domain.bu_map import BuMap
from compliance_sync.domain.tables import EVENTS, LEDGER_TABLE, REQUIREMENTS, TARGETS
from compliance_sync.errors import ExitCode
from compliance_sync.service.summary import summary as summary_of
from compliance_sync_tests.rest_support import (
    database,
    ledger_rows,
    rest_backend,
    rest_server,
    restore_targets,
    run,
    save_targets,
    settings_for,
    target_state,
)
from compliance_sync_tests.scenario import appendix_a, uid
from compliance_sync_tests.world import execute, load

RETRIES = 1
KINDS = ("fail_503", "drop_before", "drop_after")
BU_MAP = BuMap({}, {"VIC + NZ": "ANZ", "NSW + ACT": "ANZ", "Singapore": "SEA"})


def world():
    s = appendix_a()
    for client, plan, tier, cse in (
        ("Beta Care", "p2", "Leverage", "Kim Lee"),
        ("Gamma Labs", "p3", "Leverage", "Kim Lee"),
        ("Delta Co", "p5", "Collaboration", "Sam Ong"),
    ):
        s.period(client, tier, "2024-01-01", cse=cse)
        s.plan(plan, client)
        s.event(f"{plan}-e1", client, "SLA_REVIEW", "2025-03-01")
    s.strategy("ts2", "Sam Ong", "Singapore")
    return s


CHANGES = (
    # p2 archived: its two requirement rows are stale; one carries a note (an orphan, kept), one is deleted
    f"UPDATE account_plans SET status = 'archived' WHERE id = '{uid('p2')}'",
    f"UPDATE {REQUIREMENTS} SET notes = 'keep' "
    f"WHERE plan_id = '{uid('p2')}' AND event_type_id = '{uid('type:SLA_REVIEW')}'",
    # one more completed event: requirement, territory, BU and APAC updates
    f"INSERT INTO {EVENTS} (id, client_name, event_type_id, event_date, completed) VALUES "
    f"('{uid('c2')}', 'Alpha Health', '{uid('type:HEALTH_CHECK')}', '2025-04-04', true)",
    # a new plan with a NULL status and a new CSE's territory: inserts in three targets
    f"INSERT INTO account_plans (id, client_name, fiscal_year, status) "
    f"VALUES ('{uid('p6')}', 'Epsilon Ltd', 2025, NULL)",
    f"INSERT INTO client_segmentation (id, client_name, tier_id, cse_name, effective_from) VALUES "
    f"('{uid('period:eps')}', 'Epsilon Ltd', '{uid('tier:Collaboration')}', 'Ria Das', '2024-01-01')",
    f"INSERT INTO territory_strategies (id, cse_name, territory, fiscal_year, status) VALUES "
    f"('{uid('ts3')}', 'Ria Das', 'NSW + ACT', 2025, 'approved')",
    # Sam Ong's strategy archived: its territory row is deleted and SEA gets no territory (reset)
    f"UPDATE territory_strategies SET status = 'archived' WHERE id = '{uid('ts2')}'",
)


@pytest.fixture(scope="module")
def bench(server_url, tmp_path_factory):
    """The world, its old targets saved, the clean run's new state and request sequence, and a server."""
    tmp = tmp_path_factory.mktemp("rest-faults")
    with pytest.MonkeyPatch.context() as mp, database(server_url) as url:
        mp.setattr(rest_client, "BACKOFF_S", 0.001)
        s = world()
        load(url, s)
        settings = settings_for(tmp)
        with rest_server(url) as srv:
            first = run(rest_backend(srv), BU_MAP, settings)
            assert first.exit_code == 0, first.error
            execute(url, *CHANGES)
            save_targets(url)
            old = target_state(url)
            srv.clear_requests()
            clean = run(rest_backend(srv, retries=RETRIES), BU_MAP, settings)
            assert clean.exit_code == 0, clean.error
            changes = summary_of(clean)["targets"]
            assert all(changes[t.name]["updated"] for t in TARGETS)
            assert (
                changes[REQUIREMENTS]["inserted"]
                and changes[REQUIREMENTS]["deleted"] == 1
                and changes[REQUIREMENTS]["orphans"] == 1
            )
            assert changes["territory_compliance_summary"]["deleted"] == 1
            sequence = [(r.method, r.table, r.query, r.headers.get("content-length")) for r in srv.requests]
            new = target_state(url)
            assert new != old
            yield {"url": url, "srv": srv, "settings": settings, "old": old, "new": new, "sequence": sequence}


def assert_old_or_new(now: dict, old: dict, new: dict) -> None:
    for table in now:
        keys = set(old[table]) | set(new[table])
        assert set(now[table]) <= keys, f"{table}: rows neither old nor new: {set(now[table]) - keys}"
        for key in keys:
            if key in old[table] and key in new[table]:
                assert key in now[table], f"{table} {key}: missing"
                assert now[table][key] in (old[table][key], new[table][key]), f"{table} {key}: neither old nor new"
            elif key in now[table]:
                assert now[table][key] == old[table].get(key, new[table].get(key)), f"{table} {key}: changed"


def set_fault(srv, kind: str, nth: int, times: int) -> None:
    if kind == "fail_503":
        srv.faults.fail(nth, times=times, status=503)
    else:
        srv.faults.drop(nth, times=times, when=kind.removeprefix("drop_"))


def trial(bench: dict, kind: str, nth: int, persists: bool) -> None:
    srv, url = bench["srv"], bench["url"]
    restore_targets(url)
    srv.faults.clear()
    srv.clear_requests()
    attempts = RETRIES + 1 if persists else 1
    set_fault(srv, kind, nth, attempts)
    outcome = run(rest_backend(srv, retries=RETRIES), BU_MAP, bench["settings"])
    faulted = [r for r in srv.requests if r.faults]
    label = f"{kind} at request {nth} ({bench['sequence'][nth - 1][:2]}), {'persisting' if persists else 'once'}"
    assert len(faulted) == attempts, label  # bounded: the failing request and its retries, nothing more
    assert len({(r.method, r.table, r.query) for r in faulted}) == 1, label  # all of them the same request
    if persists:
        assert outcome.exit_code == ExitCode.CONNECTION, f"{label}: {outcome.error}"
        assert f"still failing after {RETRIES + 1} attempts" in outcome.error, label
    else:
        assert outcome.exit_code == 0, f"{label}: {outcome.error}"
    now = target_state(url)
    assert_old_or_new(now, bench["old"], bench["new"])
    if not persists:
        assert now == bench["new"], label
    assert max(collections.Counter(r["run_id"] for r in ledger_rows(url)).values()) == 1, label  # never twice
    srv.faults.clear()
    rerun = run(rest_backend(srv, retries=RETRIES), BU_MAP, bench["settings"])
    assert rerun.exit_code == 0, f"{label}: rerun: {rerun.error}"
    assert target_state(url) == bench["new"], f"{label}: the rerun did not converge"


def sample_positions(sequence: list[tuple]) -> dict[str, int]:
    """1-based positions of the requests that matter, in a clean run's request sequence."""

    def first(pred) -> int:
        return next(i for i, r in enumerate(sequence, 1) if pred(r))

    def last(pred) -> int:
        return max(i for i, r in enumerate(sequence, 1) if pred(r))

    is_upsert = lambda r: r[0] == "POST" and r[3] != "2" and r[1] != LEDGER_TABLE  # noqa: E731 (not a zero-row probe)
    return {
        "api_description": 1,
        "key_probe": first(lambda r: r[0] == "POST" and r[3] == "2"),
        "first_read": first(lambda r: r[0] == "GET" and r[1] == EVENTS),
        "current_rows": first(lambda r: r[0] == "GET" and r[1] == REQUIREMENTS),
        "first_upsert": first(is_upsert),
        "last_upsert": last(is_upsert),
        "first_delete": first(lambda r: r[0] == "DELETE"),
        "ledger": first(lambda r: r[1] == LEDGER_TABLE),
    }


SAMPLED = [
    "api_description",
    "key_probe",
    "first_read",
    "current_rows",
    "first_upsert",
    "last_upsert",
    "first_delete",
    "ledger",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", SAMPLED)
def test_persisting_fault_leaves_old_or_new_and_a_rerun_converges(bench, where, kind):
    trial(bench, kind, sample_positions(bench["sequence"])[where], persists=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["first_upsert", "first_delete", "ledger"])
def test_one_failed_attempt_is_retried_to_the_clean_result(bench, where, kind):
    trial(bench, kind, sample_positions(bench["sequence"])[where], persists=False)


def test_the_sample_covers_each_kind_of_request(bench):
    positions = sample_positions(bench["sequence"])
    assert len(set(positions.values())) == len(positions)
    assert positions["last_upsert"] < positions["first_delete"] < positions["ledger"] == len(bench["sequence"])


@pytest.mark.slow
@pytest.mark.parametrize("persists", [True, False], ids=["persisting", "once"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_request_position(bench, kind, persists):
    for nth in range(1, len(bench["sequence"]) + 1):
        trial(bench, kind, nth, persists)


# --- after a fault, the summary says what reached the server (SPEC §5 "Partly written") -----------------------------
def partly_trial(bench: dict, monkeypatch, arrange, chunk: int = rest_write.UPSERT_CHUNK):
    """A run with ``arrange(srv, url)``'s fault in place: its outcome, the targets after it, the ledger."""
    srv, url = bench["srv"], bench["url"]
    restore_targets(url)
    srv.faults.clear()
    srv.clear_requests()
    monkeypatch.setattr(rest_write, "UPSERT_CHUNK", chunk)
    undo = arrange(srv, url)
    try:
        outcome = run(rest_backend(srv, retries=RETRIES), BU_MAP, bench["settings"])
    finally:
        srv.faults.clear()
        if isinstance(undo, str):  # SQL that undoes the arrangement
            execute(url, undo)
    now = target_state(url)
    assert_old_or_new(now, bench["old"], bench["new"])
    ledger = [r for r in ledger_rows(url) if r["run_id"] == outcome.run_id]
    return outcome, now, ledger


def changed_rows(now: dict, old: dict, table: str) -> int:
    """Rows of ``table`` that are no longer what they were (upserted or inserted by the run)."""
    return sum(1 for key, row in now[table].items() if old[table].get(key) != row)


def assert_partly(outcome, exit_code: ExitCode) -> dict:
    summary = summary_of(outcome)
    assert outcome.exit_code == exit_code, outcome.error
    assert summary["status"] == "partly_written" and summary["written"] == "partly", summary["error"]
    assert summary["exit_code"] == int(exit_code)
    assert "partly written over REST" in summary["error"] and "a rerun converges" in summary["error"]
    return summary["partly_written"]


def test_a_503_on_the_second_upsert_chunk_reports_the_acknowledged_chunks(bench, monkeypatch):
    monkeypatch.setattr(rest_write, "UPSERT_IN_FLIGHT", 1)  # one chunk on the wire at a time: the count is exact
    probes = sum(1 for r in bench["sequence"] if r[0] == "POST" and r[1] == REQUIREMENTS and r[3] == "2")
    outcome, now, ledger = partly_trial(
        bench,
        monkeypatch,
        lambda srv, url: srv.faults.fail(probes + 2, times=None, method="POST", table=REQUIREMENTS, status=503),
        chunk=1,
    )
    partial = assert_partly(outcome, ExitCode.CONNECTION)
    acked = partial["acknowledged"][REQUIREMENTS]
    assert acked == {"upserted": 1, "deleted": 0}  # the first chunk of one row
    assert {(u["table"], u["request"], u["rows"]) for u in partial["unknown"]} == {(REQUIREMENTS, "upsert", 1)}
    assert "HTTP 503" in partial["unknown"][0]["why"] and "possibly applied" in partial["unknown"][0]["why"]
    assert acked["upserted"] == changed_rows(now, bench["old"], REQUIREMENTS)  # the 503 was answered before executing
    assert all(
        partial["acknowledged"][t.name] == {"upserted": 0, "deleted": 0} for t in TARGETS if t.name != REQUIREMENTS
    )
    assert ledger and ledger[0]["status"] == "partly_written"
    assert (
        ledger[0]["rows_inserted"] + ledger[0]["rows_updated"] == acked["upserted"] and ledger[0]["rows_deleted"] == 0
    )


def test_a_permission_refusal_on_a_delete_exits_3_and_reports_every_upsert(bench, monkeypatch):
    refuse = f"""
        CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'permission denied for table %', TG_TABLE_NAME USING ERRCODE = '42501'; END $$;
        CREATE TRIGGER refuse_delete BEFORE DELETE ON {REQUIREMENTS} FOR EACH ROW EXECUTE FUNCTION refuse_delete()"""
    undo = f"DROP TRIGGER refuse_delete ON {REQUIREMENTS}; DROP FUNCTION refuse_delete()"
    outcome, now, ledger = partly_trial(bench, monkeypatch, lambda srv, url: (execute(url, refuse), undo)[1])
    partial = assert_partly(outcome, ExitCode.DATA)
    assert "permission denied" in outcome.error and "42501" in outcome.error
    assert partial["unknown"] == []  # PostgREST's refusal rolled the DELETE back: nothing unknown
    for t in TARGETS:
        assert partial["acknowledged"][t.name] == {"upserted": changed_rows(now, bench["old"], t.name), "deleted": 0}, (
            t.name
        )
    assert sum(c["upserted"] for c in partial["acknowledged"].values()) > 0
    assert now[REQUIREMENTS].keys() >= bench["old"][REQUIREMENTS].keys()  # nothing deleted
    assert ledger and ledger[0]["status"] == "partly_written"


def test_a_connection_dropped_after_the_server_committed_is_reported_as_possibly_applied(bench, monkeypatch):
    outcome, now, ledger = partly_trial(
        bench,
        monkeypatch,
        lambda srv, url: srv.faults.drop(times=None, method="DELETE", table=REQUIREMENTS, when="after"),
    )
    partial = assert_partly(outcome, ExitCode.CONNECTION)
    assert [(u["table"], u["request"], u["rows"]) for u in partial["unknown"]] == [(REQUIREMENTS, "delete", 1)]
    assert "connection was lost" in partial["unknown"][0]["why"]
    assert partial["acknowledged"][REQUIREMENTS]["deleted"] == 0  # not acknowledged, yet applied:
    assert now[REQUIREMENTS].keys() == bench["new"][REQUIREMENTS].keys()
    assert ledger and ledger[0]["status"] == "partly_written"


def test_sigterm_during_a_delete_reports_it_as_possibly_applied(bench, tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import threading

    import yaml

    srv, url = bench["srv"], bench["url"]
    restore_targets(url)
    srv.faults.clear()
    (tmp_path / "bu_map.yaml").write_text(yaml.safe_dump({"territory": dict(BU_MAP.territory)}), encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPLIANCE_SYNC_", "SUPABASE_", "NEXT_PUBLIC_", "DAGSTER_HOME"))
    }
    env |= {
        "NEXT_PUBLIC_SUPABASE_URL": srv.url,
        "SUPABASE_SERVICE_ROLE_KEY": srv.service_role_key,
        "COMPLIANCE_SYNC_BU_MAP": str(tmp_path / "bu_map.yaml"),
        "COMPLIANCE_SYNC_FIRST_FY": "2024",
        "COMPLIANCE_SYNC_REST_RETRIES": "1",
    }
    release = threading.Event()
    held = srv.faults.delay(
        30, method="DELETE", table=REQUIREMENTS, when="after", event=release
    )  # executed, committed, held
    proc = subprocess.Popen(
        [sys.executable, "-m", "compliance_sync.entrypoints.cli", "--year", "2025", "--as-of", "2025-06-30", "--json"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while held.fired == 0:
            assert time.monotonic() < deadline and proc.poll() is None, "the DELETE never came"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        release.set()
        srv.faults.clear()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    summary = json.loads(out)
    assert summary["exit_code"] == 130 and summary["status"] == "partly_written" and summary["written"] == "partly"
    assert "no stale row deleted yet" not in summary["error"]
    partial = summary["partly_written"]
    assert [(u["table"], u["request"], u["rows"]) for u in partial["unknown"]] == [(REQUIREMENTS, "delete", 1)]
    assert "interrupted" in partial["unknown"][0]["why"] and "possibly applied" in partial["unknown"][0]["why"]
    now = target_state(url)
    assert_old_or_new(now, bench["old"], bench["new"])
    for t in TARGETS:
        assert partial["acknowledged"][t.name] == {"upserted": changed_rows(now, bench["old"], t.name), "deleted": 0}, (
            t.name
        )
    assert now[REQUIREMENTS].keys() == bench["new"][REQUIREMENTS].keys()  # the DELETE on the wire was applied
