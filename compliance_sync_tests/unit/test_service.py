"""One fiscal year's run (:func:`compliance_sync.service.sync.run_fiscal_year`) over the in-memory backend: the order
of its steps, what stops a dry run and a live run, the bounded retries after a concurrent change, the failure
records in the ledger, and what an interrupt leaves written. No database, no Dagster: milliseconds each."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import tenacity

from compliance_sync.backends.memory import Faults, MemoryBackend
from compliance_sync.config.settings import Settings, load_settings
from compliance_sync.domain.guards import GuardCode
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, LEDGER_TABLE, REQUIREMENTS, TARGETS, TERRITORY
from compliance_sync.errors import ExitCode
from compliance_sync.service import sync
from compliance_sync.service.summary import summary as summary_of
from compliance_sync.service.sync import CONCURRENT_ATTEMPTS, Mode, Outcome, RunOptions, RunStatus, run_fiscal_year
from compliance_sync_tests.scenario import Scenario, appendix_a, uid

FY = appendix_a().fy
AS_OF = dt.date(2025, 6, 30)
NO_WAIT = tenacity.wait_none()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings(tmp_path, {})  # defaults only: no environment, no .env


def sources(s: Scenario) -> dict[str, list[dict]]:
    return {
        "account_plans": s.plans,
        "client_segmentation": s.periods,
        "segmentation_tiers": s.tiers,
        "segmentation_event_types": s.types,
        "tier_event_requirements": s.requirements,
        "territory_strategies": s.strategies,
        "segmentation_events": s.events,
        "segmentation_event_compliance": s.cache,
        "client_event_exclusions": s.exclusions or [],
    }


def backend(*, stale_territories: int = 0, atomic: bool = True, **faults) -> MemoryBackend:
    """Appendix A; ``stale_territories`` rows of the FY that the run would delete (a mass prune past 3)."""
    tables = sources(appendix_a())
    tables[TERRITORY] = [
        {"territory_strategy_id": uid(f"gone{i}"), "fiscal_year": FY.year} for i in range(stale_territories)
    ]
    return MemoryBackend(tables, atomic=atomic, faults=Faults(**faults))


def run(b: MemoryBackend, settings: Settings, mode: Mode = Mode.LIVE, allow_mass_prune: bool = False) -> Outcome:
    outcome = Outcome(FY, AS_OF, mode, b.name.value, f"test-{uuid.uuid4()}")
    options = RunOptions(mode, allow_mass_prune, 50, outcome.run_id)
    return run_fiscal_year(b, settings, appendix_a().bu_map, outcome, options, retry_wait=NO_WAIT)


def interrupted(b: MemoryBackend, settings: Settings) -> Outcome:
    """A live run that an interrupt ends: raised after the outcome says what was written."""
    outcome = Outcome(FY, AS_OF, Mode.LIVE, b.name.value, f"test-{uuid.uuid4()}")
    with pytest.raises(KeyboardInterrupt):
        run_fiscal_year(
            b, settings, appendix_a().bu_map, outcome, RunOptions(run_id=outcome.run_id), retry_wait=NO_WAIT
        )
    return outcome


def target_rows(b: MemoryBackend) -> dict[str, int]:
    return {t.name: len(b.rows(t.name, FY.year)) for t in TARGETS}


def ledger_statuses(b: MemoryBackend) -> list[str]:
    return [r["status"] for r in b.tables[LEDGER_TABLE]]


@pytest.fixture
def broken_rules(monkeypatch):
    """The rules with a bug: the first territory counts one client too many (territory_totals breaks)."""
    real = sync.compute

    def compute(*args, **kwargs):
        comp = real(*args, **kwargs)
        comp.wanted.territories[0]["total_clients"] += 1
        return comp

    monkeypatch.setattr(sync, "compute", compute)


# --- the order of the steps ------------------------------------------------------------------------------------
def test_a_live_run_reads_computes_plans_checks_then_writes(settings):
    b = backend()
    outcome = run(b, settings)
    assert outcome.exit_code == ExitCode.OK and outcome.error is None
    assert b.calls == ["read_facts", "plan", "apply"]
    assert list(outcome.timings) == ["read_s", "compute_s", "plan_s", "write_s"]
    assert outcome.invariants is not None and not outcome.invariants.found()  # checked before the write
    assert outcome.status == RunStatus.WRITTEN and outcome.written
    assert target_rows(b) == {REQUIREMENTS: 3, TERRITORY: 1, BUSINESS_UNIT: 1, APAC: 1}
    assert ledger_statuses(b) == ["succeeded"]
    ledger = b.tables[LEDGER_TABLE][0]
    assert (ledger["run_id"], ledger["rows_inserted"], ledger["backend"]) == (outcome.run_id, 6, "memory")


def test_a_second_run_changes_nothing(settings):
    b = backend()
    run(b, settings)
    before = [dict(r) for t in TARGETS for r in b.rows(t.name)]
    again = run(b, settings)
    assert again.status == RunStatus.UNCHANGED and again.diff.changes == 0
    assert [dict(r) for t in TARGETS for r in b.rows(t.name)] == before
    assert ledger_statuses(b) == ["succeeded", "succeeded"]


def test_invariants_are_reported_before_guards(settings, broken_rules):
    b = backend(stale_territories=3)
    outcome = run(b, settings)
    assert outcome.exit_code == ExitCode.DATA
    assert [g.code for g in outcome.stopping] == [GuardCode.MASS_PRUNE]  # a guard fired too ...
    assert outcome.error.startswith("invariant violated, nothing written: territory_totals")  # ... the invariant leads
    assert "apply" not in b.calls


# --- what stops a dry run, what stops a live run ------------------------------------------------------------------
def test_a_guard_never_stops_a_dry_run(settings):
    b = backend(stale_territories=3)
    outcome = run(b, settings, Mode.DRY_RUN)
    assert outcome.exit_code == ExitCode.OK and outcome.status == RunStatus.DRY_RUN
    summary = summary_of(outcome)
    assert [(g["code"], g["stops_live_run"]) for g in summary["guards"]] == [("mass_prune", True)]
    assert summary["diff"][TERRITORY]  # the row-level diff a dry run shows
    assert b.calls == ["read_facts", "plan"]
    assert target_rows(b)[TERRITORY] == 3 and ledger_statuses(b) == []


def test_a_guard_stops_a_live_run_unless_lifted(settings):
    b = backend(stale_territories=3)
    outcome = run(b, settings)
    assert outcome.exit_code == ExitCode.DATA and outcome.error.startswith("guard stopped the run, nothing written")
    assert "apply" not in b.calls and target_rows(b)[TERRITORY] == 3
    assert ledger_statuses(b) == ["failed"]
    lifted = run(b, settings, allow_mass_prune=True)
    assert lifted.status == RunStatus.WRITTEN
    assert [r["territory_strategy_id"] for r in b.rows(TERRITORY)] == [uid("ts1")]  # the stale rows deleted


def test_a_broken_invariant_stops_a_dry_run_without_a_ledger_row(settings, broken_rules):
    b = backend()
    outcome = run(b, settings, Mode.DRY_RUN)
    assert outcome.exit_code == ExitCode.DATA and "territory_totals" in outcome.error
    assert summary_of(outcome)["invariant_violations"]["territory_totals"] == 1
    assert b.calls == ["read_facts", "plan"] and ledger_statuses(b) == []  # a dry run records nothing


def test_a_broken_invariant_stops_a_live_run_with_a_failed_ledger_row(settings, broken_rules):
    b = backend()
    outcome = run(b, settings)
    assert outcome.exit_code == ExitCode.DATA and outcome.status == RunStatus.FAILED
    assert b.calls == ["read_facts", "plan", "record_failure"]
    assert target_rows(b) == dict.fromkeys(target_rows(b), 0)
    (row,) = b.tables[LEDGER_TABLE]
    assert row["status"] == "failed" and row["error"] == outcome.error and row["run_id"] == outcome.run_id


def test_a_data_error_at_apply_is_recorded_and_writes_nothing(settings):
    b = backend(data_error_at_apply="account_plan_event_requirements: value too long for column segment")
    outcome = run(b, settings)
    assert outcome.exit_code == ExitCode.DATA and "value too long" in outcome.error
    assert not outcome.written and target_rows(b) == dict.fromkeys(target_rows(b), 0)
    assert ledger_statuses(b) == ["failed"] and b.attempts == 1  # a data error is not retried


# --- retries after a concurrent change ---------------------------------------------------------------------------
def test_a_concurrent_change_is_retried_and_only_the_run_is_recorded(settings):
    b = backend(concurrent_change_on=frozenset({1, 2}))
    outcome = run(b, settings)
    assert outcome.exit_code == ExitCode.OK and outcome.status == RunStatus.WRITTEN
    assert b.attempts == 3 and b.calls.count("read_facts") == 3  # each attempt reads again
    assert ledger_statuses(b) == ["succeeded"]  # attempts that were retried leave no failed row


def test_retries_are_bounded_then_exit_3_naming_the_attempts(settings):
    b = backend(concurrent_change_on=frozenset(range(1, 10)))
    outcome = run(b, settings)
    assert b.attempts == CONCURRENT_ATTEMPTS == 3
    assert outcome.exit_code == ExitCode.DATA
    assert "could not serialize access" in outcome.error and "still failing after 3 attempts" in outcome.error
    assert target_rows(b) == dict.fromkeys(target_rows(b), 0)
    assert ledger_statuses(b) == ["failed"]  # the last attempt only


def test_the_wait_between_attempts_is_tenacitys(settings):
    waits = []

    def wait(retry_state: tenacity.RetryCallState) -> float:
        waits.append(retry_state.attempt_number)
        return 0.0

    b = backend(concurrent_change_on=frozenset({1, 2}))
    outcome = Outcome(FY, AS_OF, Mode.LIVE, b.name.value, "test-wait")
    run_fiscal_year(b, settings, appendix_a().bu_map, outcome, RunOptions(run_id="test-wait"), retry_wait=wait)
    assert waits == [1, 2] and outcome.exit_code == ExitCode.OK


# --- interrupts ------------------------------------------------------------------------------------------------------
def test_an_interrupt_mid_apply_on_an_atomic_backend_writes_nothing(settings):
    b = backend(interrupt_after_writes=2)
    outcome = interrupted(b, settings)
    assert outcome.exit_code == ExitCode.INTERRUPTED and outcome.status == RunStatus.INTERRUPTED
    assert not outcome.written and not outcome.partly_written
    assert outcome.error == "interrupted: nothing written (none of it)"
    assert target_rows(b) == dict.fromkeys(target_rows(b), 0) and ledger_statuses(b) == []


def test_an_interrupt_mid_apply_without_transactions_says_part_is_written(settings):
    b = backend(interrupt_after_writes=2, atomic=False)
    outcome = interrupted(b, settings)
    assert outcome.exit_code == ExitCode.INTERRUPTED
    assert not outcome.written and outcome.partly_written
    assert sum(target_rows(b).values()) == 2 and ledger_statuses(b) == []


def test_an_interrupt_after_the_commit_says_the_fy_was_written(settings):
    b = backend(interrupt_after_commit=True)
    outcome = interrupted(b, settings)
    assert outcome.exit_code == ExitCode.INTERRUPTED and outcome.written
    assert outcome.error == "interrupted: the FY was written (all of it)"
    assert target_rows(b) == {REQUIREMENTS: 3, TERRITORY: 1, BUSINESS_UNIT: 1, APAC: 1}
    assert ledger_statuses(b) == ["succeeded"]
