"""One FY's sync over the backend port, without Dagster: read → rules → plan → invariants → guards → write.

The Dagster multi-asset drives :func:`run_fiscal_year` and turns its :class:`Outcome` into events; the
command line materialises that asset in-process and prints the summary the asset records. A serialization
failure or deadlock (a planner editing a row the run writes) retries the whole run a bounded number of
times (tenacity), then stops with exit 3.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import enum
import logging
import re
import time
from typing import Any

import tenacity

from compliance_sync.backends.port import Backend
from compliance_sync.config.settings import Settings
from compliance_sync.domain.bu_map import BuMap
from compliance_sync.domain.diff import Action, SyncDiff
from compliance_sync.domain.findings import DIFF_WARNINGS, MAX_EXAMPLES, WARNINGS, Finding, Findings, Severity, WarningCode
from compliance_sync.domain.fiscal import FiscalYear, fiscal_year_of, partition_keys
from compliance_sync.domain.guards import Guard, blocking, find_guards, next_command
from compliance_sync.domain.invariants import check_invariants
from compliance_sync.domain.ledger import LedgerRow
from compliance_sync.domain.rules import Computation, compute
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TERRITORY
from compliance_sync.errors import ConcurrentChange, DataError, ExitCode, SettingsError, SyncError
from compliance_sync.service import diff_text as report

log = logging.getLogger(__name__)

CONCURRENT_ATTEMPTS = 3
PARTLY_WRITTEN = "partly written over REST"
CONVERGES = "every row is old or new, none missing, and a rerun converges"


def describe_partial(partial: dict[str, Any]) -> str:
    """One line: the rows the server acknowledged per target, and each write whose outcome is unknown."""
    done = [
        f"{name} upserted {c['upserted']}, deleted {c['deleted']}"
        for name, c in partial["acknowledged"].items()
        if c["upserted"] or c["deleted"]
    ]
    text = f"{PARTLY_WRITTEN}: acknowledged " + ("; ".join(done) if done else "nothing")
    for u in partial["unknown"]:
        text += f"; outcome unknown: {u['request']} on {u['table']} ({u['rows']} row(s)), {u['why']}"
    return f"{text}; {CONVERGES}"


class Mode(enum.StrEnum):
    LIVE = "live"
    DRY_RUN = "dry_run"


class RunStatus(enum.StrEnum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"
    DRY_RUN = "dry_run"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PARTLY_WRITTEN = "partly_written"  # REST: a write reached the server before a failure or an interrupt


def parse_year(text: str | int, settings: Settings, today: dt.date) -> FiscalYear:
    """``--year`` / partition key: an integer among the partitions (first FY … FY containing today + 1)."""
    raw = str(text).strip()
    if not raw.isdigit():
        raise SettingsError(f"--year must be a fiscal year such as 2026, got {text!r}")
    keys = partition_keys(settings.first_fiscal_year, today, settings.fy_start_month)
    if raw not in keys:
        raise SettingsError(f"--year {raw} is outside the fiscal-year partitions {keys[0]}…{keys[-1]}" if keys else f"--year {raw}: no partitions")
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


@dataclasses.dataclass
class Outcome:
    """Everything one run learned: what the command line prints and Dagster records."""

    fy: FiscalYear
    as_of: dt.date
    mode: Mode
    backend: str
    run_id: str
    started_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))
    comp: Computation | None = None
    diff: SyncDiff | None = None
    invariants: Findings | None = None
    guards: list[Guard] = dataclasses.field(default_factory=list)  # every guard found
    stopping: list[Guard] = dataclasses.field(default_factory=list)  # those that stop (or would stop) a live run
    backend_warnings: list[str] = dataclasses.field(default_factory=list)
    source_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    written: bool = False
    partly_written: bool = False  # REST only: a write reached the server before the stop (a rerun converges)
    partial: dict[str, Any] | None = None  # then: the rows acknowledged per target and the writes of unknown outcome
    error: str | None = None
    exit_code: ExitCode = ExitCode.OK

    # --- findings ------------------------------------------------------------------------------------------
    def findings(self) -> dict[str, Finding]:
        """The rules' warnings plus the diff's: orphans and rows with a NULL key, over all targets."""
        found = dict(self.comp.findings) if self.comp else {}
        for code in DIFF_WARNINGS:
            found[code] = Finding(code, Severity.WARN, WARNINGS[code])
            for name in TARGET_ORDER:
                f = self.target_finding(name, code)
                if f.count:
                    found[code].add(f"{name}: {f.count} row(s)", f.count)
        return found

    def target_finding(self, table: str, code: str) -> Finding:
        """The orphans / NULL-key finding of one target (its Dagster check)."""
        f = Finding(code, Severity.WARN, WARNINGS[code])
        if self.diff:
            t = self.diff.targets[table]
            f.count = t.orphans if code == WarningCode.ORPHANS else t.null_keys
            if code == WarningCode.ORPHANS:
                f.examples = [f"{report.row_label(t.table, line)} [{report.key_text(t.table, line.key)}]" for line in t.lines if line.action == Action.ORPHAN][:MAX_EXAMPLES]
            elif f.count:
                f.examples = [f"{f.count} row(s) with a NULL in ({', '.join(t.table.key)})"]
        return f

    def stop_reason(self) -> str | None:
        """Why a live run must not write (invariants first, then guards), or None."""
        bad = self.invariants.found() if self.invariants else []
        if bad:
            return "invariant violated, nothing written: " + "; ".join(f"{f.code} ({f.count}): {f.examples[0]}" for f in bad)
        if self.stopping:
            return "guard stopped the run, nothing written: " + "; ".join(g.message for g in self.stopping)
        return None

    @property
    def status(self) -> RunStatus:
        if self.partly_written and not self.written:  # failed or interrupted after a write reached the server
            return RunStatus.PARTLY_WRITTEN
        if self.exit_code == ExitCode.INTERRUPTED:
            return RunStatus.INTERRUPTED
        if self.error:
            return RunStatus.FAILED
        if self.mode == Mode.DRY_RUN:
            return RunStatus.DRY_RUN
        return RunStatus.WRITTEN if self.written and self.diff and self.diff.changes else RunStatus.UNCHANGED

    # --- what it reports --------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The old script's summary, machine-readable (``--json``, Dagster metadata, the ledger row)."""
        stats = dict(self.comp.stats) if self.comp else {}
        targets = {name: t.counts() for name, t in self.diff.targets.items()} if self.diff else {}
        warnings = {code: f.count for code, f in self.findings().items() if f.count}
        return {
            "fiscal_year": self.fy.year,
            "window": {"start": self.fy.start.isoformat(), "end": self.fy.end.isoformat()},
            "as_of": self.as_of.isoformat(),
            "mode": self.mode.value,
            "backend": self.backend,
            "run_id": self.run_id,
            "status": self.status.value,
            "written": "partly" if self.status == RunStatus.PARTLY_WRITTEN else self.written,
            "partly_written": self.partial if self.status == RunStatus.PARTLY_WRITTEN else None,
            **{k: stats.get(k, 0) for k in STAT_KEYS},
            "apac_updated": bool(self.diff and self.diff.targets[APAC].changes) and (self.written or self.mode == Mode.DRY_RUN),
            "targets": targets,
            "warnings": warnings,
            "backend_warnings": list(self.backend_warnings),
            "invariant_violations": {f.code: f.count for f in self.invariants.found()} if self.invariants else {},
            "live_run_needs": [n for t in self.diff.targets.values() if (n := t.live_run_needs())] if self.diff else [],
            "next_command": next_command(self.backend, self.diff) if self.diff else None,
            "guards": [{"code": g.code.value, "table": g.table, "message": g.message, "stops_live_run": g in self.stopping} for g in self.guards],
            "source_rows": dict(self.source_counts),
            "timings": dict(self.timings),
            "diff": {name: report.describe(t) for name, t in self.diff.targets.items()} if self.diff and self.mode == Mode.DRY_RUN else {},
            "error": self.error,
            "exit_code": int(self.exit_code),
        }

    def ledger_row(self, status: str) -> LedgerRow:
        stats = self.comp.stats if self.comp else {}
        counts = dict.fromkeys(("inserted", "updated", "deleted", "unchanged", "orphans"), 0)
        for t in self.diff.targets.values() if self.diff else ():
            for k, v in t.counts().items():
                counts[k] += v
        if self.partly_written and self.partial:  # what the server acknowledged, not what was planned
            done = self.partial["acknowledged"].values()
            new = sum(self.partial.get("inserted", {}).values())
            counts["inserted"] = new
            counts["updated"] = sum(c["upserted"] for c in done) - new
            counts["deleted"] = sum(c["deleted"] for c in done)
            status = RunStatus.PARTLY_WRITTEN.value
        return LedgerRow(
            run_id=self.run_id,
            fiscal_year=self.fy.year,
            as_of=self.as_of,
            started_at=self.started_at,
            finished_at=dt.datetime.now(dt.UTC),
            backend=self.backend,
            mode=self.mode.value,
            status=status,
            clients_processed=stats.get("clients_processed", 0),
            clients_skipped=stats.get("clients_skipped", 0),
            rows_inserted=counts["inserted"],
            rows_updated=counts["updated"],
            rows_deleted=counts["deleted"],
            rows_unchanged=counts["unchanged"],
            orphans=counts["orphans"],
            territories=stats.get("territories", 0),
            business_units=stats.get("business_units", 0),
            error=self.error,
            apac_compliance=self.comp.wanted.apac[0]["actual_compliance"] if self.comp else None,
        )


# The counts of the old script's summary, in its order; the rules' stats carry them.
STAT_KEYS = (
    "clients_processed",
    "clients_skipped",
    "clients_unassigned",
    "clients_at_risk",
    "clients_critical",
    "clients_compliant",
    "requirement_rows",
    "territories",
    "business_units",
)
TARGET_ORDER = (REQUIREMENTS, TERRITORY, BUSINESS_UNIT, APAC)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    mode: Mode = Mode.LIVE
    allow_mass_prune: bool = False
    diff_limit: int = 50
    run_id: str = ""


def _timed(outcome: Outcome, name: str, started: float) -> None:
    outcome.timings[name] = round(time.perf_counter() - started, 3)


def _attempt(backend: Backend, settings: Settings, bu_map: BuMap, outcome: Outcome, options: RunOptions, last: bool = True) -> None:
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
            reason = outcome.stop_reason()
            if outcome.mode == Mode.DRY_RUN:
                if outcome.invariants.found():  # a guard never stops a dry run; a broken invariant does
                    raise DataError(reason)
                return
            if reason:
                raise DataError(reason)
            clock = time.perf_counter()
            session.apply(outcome.diff, dt.datetime.now(dt.UTC), outcome.ledger_row("succeeded"))
            outcome.written = True
            outcome.backend_warnings = list(session.warnings)  # what writing noticed (orphans found late, ...)
            _timed(outcome, "write_s", clock)
        except SyncError as exc:
            outcome.backend_warnings = list(session.warnings)
            _partly(outcome, session)
            if outcome.mode == Mode.LIVE and (last or not isinstance(exc, ConcurrentChange)):  # the last attempt is recorded
                outcome.error = _error_text(outcome, exc)
                session.record_failure(outcome.ledger_row("failed"))
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
        before_sleep=lambda rs: log.warning("FY%s: %s; retrying the run (attempt %d of %d)", outcome.fy.year, rs.outcome.exception(), rs.attempt_number + 1, CONCURRENT_ATTEMPTS),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                outcome.written, outcome.error = False, None
                _attempt(backend, settings, bu_map, outcome, options, last=attempt.retry_state.attempt_number >= CONCURRENT_ATTEMPTS)
    except ConcurrentChange as exc:
        outcome.error, outcome.exit_code = f"{exc} (still failing after {CONCURRENT_ATTEMPTS} attempts; rerun the FY)", exc.exit_code
    except SyncError as exc:
        outcome.error, outcome.exit_code = _error_text(outcome, exc), exc.exit_code
    except (KeyboardInterrupt, SystemExit):
        outcome.exit_code = ExitCode.INTERRUPTED
        outcome.error = "interrupted: " + (
            "the FY was written (all of it)" if outcome.written
            else describe_partial(outcome.partial) if outcome.partly_written and outcome.partial
            else "nothing written (none of it)"
        )
        raise
    return outcome
