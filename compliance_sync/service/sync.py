"""One FY's sync over the backend port, without Dagster: read → rules → plan → invariants → guards → write.

:func:`run_fiscal_year` fills an :class:`~compliance_sync.service.outcome.Outcome`; the Dagster asset and the command
line render it (:mod:`compliance_sync.service.summary`). Why it retries, and in what order it checks:
docs/architecture.md, "Service"."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import logging
import re
import time
from typing import Any

import tenacity

from compliance_sync.backends.port import Backend
from compliance_sync.config.settings import Settings
from compliance_sync.domain.bu_map import BuMap
from compliance_sync.domain.fiscal import FiscalYear, fiscal_year_of, partition_keys
from compliance_sync.domain.guards import blocking, find_guards
from compliance_sync.domain.invariants import check_invariants
from compliance_sync.domain.rules import compute
from compliance_sync.errors import ConcurrentChange, DataError, ExitCode, SettingsError, SyncError
from compliance_sync.service.outcome import Mode, Outcome, RunStatus
from compliance_sync.service.summary import describe_partial, ledger_row, stop_reason

# the outcome's types stay importable from here, where a run is started
__all__ = [
    "CONCURRENT_ATTEMPTS",
    "RETRY_WAIT",
    "Mode",
    "Outcome",
    "RunOptions",
    "RunStatus",
    "current_year",
    "parse_as_of",
    "parse_year",
    "run_fiscal_year",
]

log = logging.getLogger(__name__)

CONCURRENT_ATTEMPTS = 3


def parse_year(text: str | int, settings: Settings, today: dt.date) -> FiscalYear:
    """``--year`` / partition key: an integer among the partitions (first FY … FY containing today + 1)."""
    raw = str(text).strip()
    if not raw.isdigit():
        raise SettingsError(f"--year must be a fiscal year such as 2026, got {text!r}")
    keys = partition_keys(settings.first_fiscal_year, today, settings.fy_start_month)
    if raw not in keys:
        raise SettingsError(
            f"--year {raw} is outside the fiscal-year partitions {keys[0]}…{keys[-1]}"
            if keys
            else f"--year {raw}: no partitions"
        )
    return FiscalYear(int(raw), settings.fy_start_month)


def current_year(settings: Settings) -> int:
    return fiscal_year_of(settings.today(), settings.fy_start_month).year


def parse_as_of(text: str | None, name: str = "--as-of") -> dt.date | None:
    if text is None or str(text).strip() == "":
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(text).strip()):  # fromisoformat also takes 20250630, 2025-W27-1
        raise SettingsError(f"{name} must be a date YYYY-MM-DD, got {text!r}")
    try:
        return dt.date.fromisoformat(str(text).strip())
    except ValueError:
        raise SettingsError(f"{name} must be a date YYYY-MM-DD, got {text!r}") from None


@dataclasses.dataclass(frozen=True)
class RunOptions:
    mode: Mode = Mode.LIVE
    allow_mass_prune: bool = False
    diff_limit: int = 50
    run_id: str = ""


def _timed(outcome: Outcome, name: str, started: float) -> None:
    outcome.timings[name] = round(time.perf_counter() - started, 3)


def _attempt(
    backend: Backend, settings: Settings, bu_map: BuMap, outcome: Outcome, options: RunOptions, last: bool = True
) -> None:
    with backend.session(outcome.fy, outcome.as_of) as session:
        try:
            outcome.partly_written, outcome.partial = False, None
            session.keys_required = outcome.mode == Mode.LIVE  # a dry run works before `migrate --minimal` (SPEC §5)
            clock = time.perf_counter()
            facts = session.read_facts()
            _timed(outcome, "read_s", clock)
            clock = time.perf_counter()
            outcome.source_counts = facts.source_counts()
            outcome.comp = compute(facts, settings.thresholds, bu_map)
            _timed(outcome, "compute_s", clock)
            clock = time.perf_counter()
            # the independent check runs while the backend plans (the direct path mostly waits on PostgreSQL)
            with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compliance_sync-invariants") as pool:
                checked = pool.submit(check_invariants, outcome.comp, settings.thresholds)
                outcome.diff = session.plan(outcome.comp.wanted, options.diff_limit)
                outcome.invariants = checked.result()
            _timed(outcome, "plan_s", clock)
            stats = outcome.comp.stats
            outcome.guards = find_guards(
                outcome.diff,
                outcome.source_counts,
                facts.events_in_window,
                stats["territories"],
                stats["business_units"],
                settings.max_prune_fraction,
                outcome.backend,
            )
            outcome.stopping = blocking(outcome.guards, options.allow_mass_prune)
            outcome.backend_warnings = list(session.warnings)
            reason = stop_reason(outcome)
            if outcome.mode == Mode.DRY_RUN:
                if outcome.invariants.found():  # a guard never stops a dry run; a broken invariant does
                    raise DataError(reason)
                return
            if reason:
                raise DataError(reason)
            clock = time.perf_counter()
            session.apply(outcome.diff, dt.datetime.now(dt.UTC), ledger_row(outcome, "succeeded"))
            outcome.written = True
            outcome.backend_warnings = list(session.warnings)  # what writing noticed (orphans found late, ...)
            _timed(outcome, "write_s", clock)
        except SyncError as exc:
            outcome.backend_warnings = list(session.warnings)
            _partly(outcome, session)
            # a live run records its failure; of the attempts after a concurrent change, only the last
            if outcome.mode == Mode.LIVE and (last or not isinstance(exc, ConcurrentChange)):
                outcome.error = _error_text(outcome, exc)
                session.record_failure(ledger_row(outcome, "failed"))
            raise
        except BaseException:  # Ctrl-C, SIGTERM: say exactly what was written
            outcome.written = session.committed
            _partly(outcome, session)
            raise


RETRY_WAIT = tenacity.wait_exponential(multiplier=0.5, max=5)  # between attempts after a concurrent change


def _error_text(outcome: Outcome, exc: SyncError) -> str:
    if outcome.partly_written and outcome.partial:
        return f"{exc} ({describe_partial(outcome.partial)})"
    return str(exc)


def _partly(outcome: Outcome, session: Any) -> None:
    """After a stop: whether a write reached the server, and what the server acknowledged."""
    outcome.partly_written = session.partly_written and not session.committed
    outcome.partial = session.written_so_far() if outcome.partly_written else None


def run_fiscal_year(
    backend: Backend,
    settings: Settings,
    bu_map: BuMap,
    outcome: Outcome,
    options: RunOptions,
    *,
    retry_wait: tenacity.wait.wait_base = RETRY_WAIT,
) -> Outcome:
    """Run one FY into ``outcome``: a stop leaves its message and exit code there (nothing is raised); an
    interrupt (Ctrl-C, SIGTERM) is raised after the outcome says whether the FY was written. ``retry_wait``:
    tenacity's wait between attempts (``tenacity.wait_none()`` in tests)."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(ConcurrentChange),
        stop=tenacity.stop_after_attempt(CONCURRENT_ATTEMPTS),
        wait=retry_wait,
        before_sleep=lambda rs: log.warning(
            "FY%s: %s; retrying the run (attempt %d of %d)",
            outcome.fy.year,
            rs.outcome.exception(),
            rs.attempt_number + 1,
            CONCURRENT_ATTEMPTS,
        ),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                outcome.written, outcome.error = False, None
                _attempt(
                    backend,
                    settings,
                    bu_map,
                    outcome,
                    options,
                    last=attempt.retry_state.attempt_number >= CONCURRENT_ATTEMPTS,
                )
    except ConcurrentChange as exc:
        outcome.error, outcome.exit_code = (
            f"{exc} (still failing after {CONCURRENT_ATTEMPTS} attempts; rerun the FY)",
            exc.exit_code,
        )
    except SyncError as exc:
        outcome.error, outcome.exit_code = _error_text(outcome, exc), exc.exit_code
    except (KeyboardInterrupt, SystemExit):
        outcome.exit_code = ExitCode.INTERRUPTED
        outcome.error = "interrupted: " + (
            "the FY was written (all of it)"
            if outcome.written
            else describe_partial(outcome.partial)
            if outcome.partly_written and outcome.partial
            else "nothing written (none of it)"
        )
        raise
    return outcome
