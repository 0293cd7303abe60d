"""One FY's sync, step by step, without Dagster: read → rules → diff → invariants → guards → write.

The Dagster multi-asset (``assets/targets.py``) drives these functions and turns their results into
materialisations, observations and check results; the command line runs that same asset in-process and
prints the :class:`Outcome` it leaves behind. There is no second pipeline.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from compliance_sync.diff import Guard, SyncDiff, blocking_guards, diff_all
from compliance_sync.fiscal import FiscalYear, partition_keys
from compliance_sync.invariants import check_invariants, violations
from compliance_sync.model import APAC, REQUIREMENTS, TERRITORY, DataError, Finding, SettingsError
from compliance_sync.rules import Computation, compute
from compliance_sync.settings import BuMap, Settings


def make_backend(settings: Settings):
    """The backend the settings name: the direct PostgreSQL connection when configured (preferred)."""
    kind = settings.backend_kind()
    if kind == "postgres":
        from compliance_sync.backends.postgres import PostgresBackend

        return PostgresBackend(settings.db_url.value)
    raise SettingsError(
        "the REST backend (NEXT_PUBLIC_SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY) is not available in this "
        "release; set SUPABASE_DB_URL to Supabase's direct PostgreSQL connection string"
    )


def parse_year(text: str | int, settings: Settings, today: dt.date) -> FiscalYear:
    """``--year`` / partition key: an integer among the partitions (first FY … FY containing today + 1)."""
    raw = str(text).strip()
    if not raw.isdigit():
        raise SettingsError(f"--year must be a fiscal year such as 2026, got {text!r}")
    keys = partition_keys(settings.first_fiscal_year, today, settings.fy_start_month)
    if raw not in keys:
        raise SettingsError(f"--year {raw} is outside the fiscal-year partitions {keys[0]}…{keys[-1]}")
    return FiscalYear(int(raw), settings.fy_start_month)


def parse_as_of(text: str | None, name: str = "--as-of") -> dt.date | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        return dt.date.fromisoformat(str(text).strip())
    except ValueError:
        raise SettingsError(f"{name} must be a date YYYY-MM-DD, got {text!r}")


def today_in(settings: Settings) -> dt.date:
    return dt.datetime.now(settings.tz).date()


@dataclasses.dataclass
class Outcome:
    """Everything a run learned; the CLI prints it, Dagster turns it into metadata."""

    fy: FiscalYear
    as_of: dt.date
    mode: str  # "live" or "dry_run"
    backend: str
    started_at: dt.datetime
    comp: Computation | None = None
    diff: SyncDiff | None = None
    invariants: dict[str, Finding] = dataclasses.field(default_factory=dict)
    guards: list[Guard] = dataclasses.field(default_factory=list)  # the ones that stop (or would stop) a live run
    backend_warnings: list[str] = dataclasses.field(default_factory=list)
    source_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    written: bool = False
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # read_s, compute_s, write_s
    error: str | None = None
    exit_code: int = 0

    @property
    def findings(self) -> dict[str, Finding]:
        return dict(self.comp.findings) if self.comp else {}

    def orphan_findings(self) -> dict[str, Finding]:
        out = {}
        for name in (REQUIREMENTS, TERRITORY):
            f = Finding("orphans", "WARN", f"{name}: rows kept because they carry data the job does not own")
            if self.diff:
                t = self.diff.targets[name]
                for key in t.orphans:
                    f.add(", ".join(f"{c}={v}" for c, v in zip(t.table.key, key)))
            out[name] = f
        return out

    def warning_total(self) -> int:
        return sum(f.count for f in self.findings.values()) + sum(f.count for f in self.orphan_findings().values())

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        if self.mode == "dry_run":
            return "dry_run"
        return "written" if self.written and self.diff and self.diff.changes else "unchanged"

    def summary(self) -> dict[str, Any]:
        """The old script's summary, machine-readable (``--json``)."""
        stats = dict(self.comp.stats) if self.comp else {}
        targets = {name: t.counts() for name, t in self.diff.targets.items()} if self.diff else {}
        return {
            "fiscal_year": self.fy.year,
            "window": {"start": self.fy.start.isoformat(), "end": self.fy.end.isoformat()},
            "as_of": self.as_of.isoformat(),
            "mode": self.mode,
            "backend": self.backend,
            "status": self.status,
            "clients_processed": stats.get("clients_processed", 0),
            "clients_skipped": stats.get("clients_skipped", 0),
            "clients_at_risk": stats.get("clients_at_risk", 0),
            "clients_critical": stats.get("clients_critical", 0),
            "clients_compliant": stats.get("clients_compliant", 0),
            "clients_unassigned": stats.get("clients_unassigned", 0),
            "requirement_rows": stats.get("requirement_rows", 0),
            "territories": stats.get("territories", 0),
            "business_units": stats.get("business_units", 0),
            "apac_updated": bool(self.diff and self.diff.targets[APAC].changes) and (self.written or self.mode == "dry_run"),
            "targets": targets,
            "warnings": {code: f.count for code, f in self.findings.items() if f.count}
            | ({"orphans": sum(f.count for f in self.orphan_findings().values())} if any(f.count for f in self.orphan_findings().values()) else {}),
            "invariant_violations": {code: f.count for code, f in self.invariants.items() if f.count},
            "guards": [dataclasses.asdict(g) for g in self.guards],
            "source_rows": dict(self.source_counts),
            "timings": dict(self.timings),
            "error": self.error,
            "exit_code": self.exit_code,
        }

    def ledger_row(self, status: str) -> dict[str, Any]:
        stats = self.comp.stats if self.comp else {}
        counts = {k: 0 for k in ("inserted", "updated", "deleted", "unchanged", "orphans")}
        if self.diff:
            for t in self.diff.targets.values():
                for k, v in t.counts().items():
                    counts[k] += v
        return {
            "fiscal_year": self.fy.year,
            "as_of": self.as_of,
            "started_at": self.started_at,
            "finished_at": dt.datetime.now(dt.timezone.utc),
            "backend": self.backend,
            "mode": self.mode,
            "status": status,
            "clients_processed": stats.get("clients_processed", 0),
            "clients_skipped": stats.get("clients_skipped", 0),
            "rows_inserted": counts["inserted"],
            "rows_updated": counts["updated"],
            "rows_deleted": counts["deleted"],
            "rows_unchanged": counts["unchanged"],
            "orphans": counts["orphans"],
            "territories": stats.get("territories", 0),
            "business_units": stats.get("business_units", 0),
            "error": self.error,
        }


def evaluate(outcome: Outcome, session, settings: Settings, bu_map: BuMap, allow_mass_prune: bool) -> None:
    """Rules, diff, invariants and guards over one session's facts and current rows (no writes)."""
    facts = session.facts
    outcome.source_counts = dict(facts.source_counts)
    outcome.backend_warnings = list(getattr(session, "warnings", []))
    outcome.comp = compute(facts, outcome.fy, settings.thresholds, bu_map)
    outcome.diff = diff_all(outcome.fy.year, session.current, outcome.comp.rows, facts.source_counts, settings.max_prune_fraction)
    outcome.invariants = check_invariants(outcome.comp, settings.thresholds)
    outcome.guards = blocking_guards(outcome.diff, allow_mass_prune)


def stop_reason(outcome: Outcome) -> str | None:
    """Why a live run must not write (invariants first, then guards), or None."""
    bad = violations(outcome.invariants)
    if bad:
        return "invariant violated, nothing written: " + "; ".join(f"{f.code} ({f.count}): {f.examples[0]}" for f in bad)
    if outcome.guards:
        return "guard stopped the run, nothing written: " + "; ".join(g.message for g in outcome.guards)
    return None


def write(outcome: Outcome, session, run_ts: dt.datetime) -> None:
    reason = stop_reason(outcome)
    if reason:
        raise DataError(reason)
    session.apply(outcome.diff, run_ts, ledger=outcome.ledger_row("succeeded"))
    outcome.written = True

