"""How a run's :class:`~compliance_sync.service.outcome.Outcome` is shown: the old script's summary as a dict (the
command line's report and ``--json``, Dagster metadata), the ledger row, the findings with their examples, and the
texts of a stop. Rendering only: the outcome itself stays a record."""

from __future__ import annotations

import datetime as dt
from typing import Any

from compliance_sync.domain.diff import Action
from compliance_sync.domain.findings import DIFF_WARNINGS, MAX_EXAMPLES, WARNINGS, Finding, Severity, WarningCode
from compliance_sync.domain.guards import next_command
from compliance_sync.domain.ledger import LedgerRow
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TERRITORY
from compliance_sync.service import diff_text as report
from compliance_sync.service.outcome import Mode, Outcome, RunStatus

PARTLY_WRITTEN = "partly written over REST"
CONVERGES = "every row is old or new, none missing, and a rerun converges"
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


def stop_reason(outcome: Outcome) -> str | None:
    """Why a live run must not write (invariants first, then guards), or None."""
    bad = outcome.invariants.found() if outcome.invariants else []
    if bad:
        return "invariant violated, nothing written: " + "; ".join(
            f"{f.code} ({f.count}): {f.examples[0]}" for f in bad
        )
    if outcome.stopping:
        return "guard stopped the run, nothing written: " + "; ".join(g.message for g in outcome.stopping)
    return None


def findings(outcome: Outcome) -> dict[str, Finding]:
    """The rules' warnings plus the diff's: orphans and rows with a NULL key, over all targets."""
    found = dict(outcome.comp.findings) if outcome.comp else {}
    for code in DIFF_WARNINGS:
        found[code] = Finding(code, Severity.WARN, WARNINGS[code])
        for name in TARGET_ORDER:
            f = target_finding(outcome, name, code)
            if f.count:
                found[code].add(f"{name}: {f.count} row(s)", f.count)
    return found


def target_finding(outcome: Outcome, table: str, code: str) -> Finding:
    """The orphans / NULL-key finding of one target (its Dagster check), with rows people can read as examples."""
    f = Finding(code, Severity.WARN, WARNINGS[code])
    if outcome.diff:
        t = outcome.diff.targets[table]
        f.count = t.orphans if code == WarningCode.ORPHANS else t.null_keys
        if code == WarningCode.ORPHANS:
            f.examples = [
                f"{report.row_label(t.table, line)} [{report.key_text(t.table, line.key)}]"
                for line in t.lines
                if line.action == Action.ORPHAN
            ][:MAX_EXAMPLES]
        elif f.count:
            f.examples = [f"{f.count} row(s) with a NULL in ({', '.join(t.table.key)})"]
    return f


def summary(outcome: Outcome) -> dict[str, Any]:
    """The old script's summary, machine-readable (``--json``, Dagster metadata, the ledger row)."""
    o = outcome
    stats = dict(o.comp.stats) if o.comp else {}
    targets = {name: t.counts() for name, t in o.diff.targets.items()} if o.diff else {}
    warnings = {code: f.count for code, f in findings(o).items() if f.count}
    return {
        "fiscal_year": o.fy.year,
        "window": {"start": o.fy.start.isoformat(), "end": o.fy.end.isoformat()},
        "as_of": o.as_of.isoformat(),
        "mode": o.mode.value,
        "backend": o.backend,
        "run_id": o.run_id,
        "status": o.status.value,
        "written": "partly" if o.status == RunStatus.PARTLY_WRITTEN else o.written,
        "partly_written": o.partial if o.status == RunStatus.PARTLY_WRITTEN else None,
        **{k: stats.get(k, 0) for k in STAT_KEYS},
        "apac_updated": bool(o.diff and o.diff.targets[APAC].changes) and (o.written or o.mode == Mode.DRY_RUN),
        "targets": targets,
        "warnings": warnings,
        "backend_warnings": list(o.backend_warnings),
        "invariant_violations": {f.code: f.count for f in o.invariants.found()} if o.invariants else {},
        "live_run_needs": [n for t in o.diff.targets.values() if (n := t.live_run_needs())] if o.diff else [],
        "next_command": next_command(o.backend, o.diff) if o.diff else None,
        "guards": [
            {"code": g.code.value, "table": g.table, "message": g.message, "stops_live_run": g in o.stopping}
            for g in o.guards
        ],
        "source_rows": dict(o.source_counts),
        "timings": dict(o.timings),
        "diff": {name: report.describe(t) for name, t in o.diff.targets.items()}
        if o.diff and o.mode == Mode.DRY_RUN
        else {},
        "error": o.error,
        "exit_code": int(o.exit_code),
    }


def ledger_row(outcome: Outcome, status: str) -> LedgerRow:
    """The run ledger's row; after a partial REST write, the counts the server acknowledged, not the plan's."""
    o = outcome
    stats = o.comp.stats if o.comp else {}
    counts = dict.fromkeys(("inserted", "updated", "deleted", "unchanged", "orphans"), 0)
    for t in o.diff.targets.values() if o.diff else ():
        for k, v in t.counts().items():
            counts[k] += v
    if o.partly_written and o.partial:  # what the server acknowledged, not what was planned
        done = o.partial["acknowledged"].values()
        new = sum(o.partial.get("inserted", {}).values())
        counts["inserted"] = new
        counts["updated"] = sum(c["upserted"] for c in done) - new
        counts["deleted"] = sum(c["deleted"] for c in done)
        status = RunStatus.PARTLY_WRITTEN.value
    return LedgerRow(
        run_id=o.run_id,
        fiscal_year=o.fy.year,
        as_of=o.as_of,
        started_at=o.started_at,
        finished_at=dt.datetime.now(dt.UTC),
        backend=o.backend,
        mode=o.mode.value,
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
        error=o.error,
        apac_compliance=o.comp.wanted.apac[0]["actual_compliance"] if o.comp else None,
    )
