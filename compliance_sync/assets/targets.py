"""The four planning targets as one multi-asset: one step locks, reads, computes, diffs, validates and writes
one fiscal year, in one transaction on the PostgreSQL backend.

Run config: ``dry_run`` (one switch for the whole run: observations with the diff and every check result,
no materialisation), ``as_of`` (YYYY-MM-DD; default: today in the configured timezone) and
``allow_mass_prune``. Selecting only the checks runs them on their own for the FY (a dry run that reports
only the selected checks).
"""


import collections
import datetime as dt
import time
from typing import Any, Iterator, Optional

import dagster as dg

from compliance_sync.assets.checks import CHECKS_BY_TARGET, GUARD_DESCRIPTION, check_specs, result_for
from compliance_sync.diff import describe
from compliance_sync.fiscal import FiscalYear
from compliance_sync.model import APAC, BUSINESS_UNIT, REQUIREMENTS, SOURCES, TARGET_BY_NAME, TARGETS, TERRITORY, DataError, Finding, SyncError
from compliance_sync.sync import Outcome, evaluate, make_backend, parse_as_of, stop_reason, today_in, write

DIFF_LINES = 50


class SyncConfig(dg.Config):
    dry_run: bool = False
    as_of: Optional[str] = None
    allow_mass_prune: bool = False


SEGMENTATION_SOURCES = [
    "account_plans",
    "client_segmentation",
    "segmentation_tiers",
    "segmentation_event_types",
    "tier_event_requirements",
    "segmentation_events",
    "segmentation_event_compliance",
    "client_event_exclusions",
]


def target_specs(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetSpec]:
    deps = {
        REQUIREMENTS: SEGMENTATION_SOURCES,
        TERRITORY: [REQUIREMENTS, "territory_strategies"],
        BUSINESS_UNIT: [TERRITORY],
        APAC: [BUSINESS_UNIT],
    }
    specs = []
    for t in TARGETS:
        specs.append(
            dg.AssetSpec(
                key=t.name,
                deps=deps[t.name],
                description=f"{t.description} Key: ({', '.join(t.key)}). Columns the job owns: "
                f"{', '.join(t.owned)}, updated_at; every other column is never written.",
                group_name="planning",
                partitions_def=partitions_def,
                skippable=True,
                kinds={"postgres"},
            )
        )
    return specs


def build_targets_asset(partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="compliance_sync",
        specs=target_specs(partitions_def),
        check_specs=check_specs(),
        can_subset=True,
        required_resource_keys={"compliance_sync", "run_report"},
        description="Sync one fiscal year of compliance from the segmentation tables into the four planning tables.",
    )
    def compliance_sync_targets(context: dg.AssetExecutionContext, config: SyncConfig) -> Iterator[Any]:
        yield from run_step(context, config)

    return compliance_sync_targets


def run_step(context: dg.AssetExecutionContext, config: SyncConfig) -> Iterator[Any]:
    resource = context.resources.compliance_sync
    report = context.resources.run_report
    started = dt.datetime.now(dt.timezone.utc)
    selected = {k.to_user_string() for k in context.selected_asset_keys}
    checks_only = not selected
    outcome: Outcome | None = None
    try:
        settings = resource.settings()
        fy = FiscalYear(int(context.partition_key), settings.fy_start_month)
        reference = parse_as_of(config.as_of, "run config as_of") or today_in(settings)
        as_of = fy.as_of(reference)
        dry = config.dry_run or checks_only
        backend = make_backend(settings)
        outcome = Outcome(fy, as_of, "dry_run" if dry else "live", backend.name, started)
        if report is not None:
            report.outcome = outcome
        if not checks_only and selected != set(TARGET_BY_NAME):
            raise SyncError(
                "the four targets are written together in one step: select all of "
                + ", ".join(TARGET_BY_NAME)
                + " (or only their checks)"
            )
        bu_map = settings.bu_map()
        context.log.info(f"{fy.describe()} as_of {as_of}, mode {outcome.mode}, backend {backend.name}")
        clock = time.perf_counter()
        with backend.session(fy, as_of) as session:
            outcome.timings["read_s"] = round(time.perf_counter() - clock, 3)
            clock = time.perf_counter()
            evaluate(outcome, session, settings, bu_map, config.allow_mass_prune)
            outcome.timings["compute_s"] = round(time.perf_counter() - clock, 3)
            for w in outcome.backend_warnings:
                context.log.warning(w)
            _observe_sources(context, outcome)
            checks = _check_results(context, outcome)
            if dry:
                if not checks_only:
                    for t in TARGETS:
                        yield dg.AssetObservation(asset_key=t.name, partition=fy.key, metadata=_dry_metadata(outcome, t.name))
                yield from checks.values()
                return
            reason = stop_reason(outcome)
            if reason:
                yield from checks.values()
                _record_failure(session, outcome, reason)
                raise DataError(reason)
            clock = time.perf_counter()
            try:
                write(outcome, session, dt.datetime.now(dt.timezone.utc))
            except SyncError as exc:
                _record_failure(session, outcome, str(exc))
                raise
        outcome.timings["write_s"] = round(time.perf_counter() - clock, 3)
        context.log.info(
            "written: "
            + "; ".join(f"{n} {t.counts()}" for n, t in outcome.diff.targets.items())
        )
        for t in TARGETS:
            yield dg.MaterializeResult(
                asset_key=t.name,
                metadata=_live_metadata(outcome, t.name),
                check_results=[r for r in checks.values() if r.asset_key.to_user_string() == t.name],
            )
    except SyncError as exc:
        if outcome is not None:
            outcome.error, outcome.exit_code = str(exc), exc.exit_code
        elif report is not None:
            report.outcome = None
            report.error = (str(exc), exc.exit_code)
        context.log.error(str(exc))
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def _record_failure(session, outcome: Outcome, error: str) -> None:
    """A live run that stopped still gets its ledger row (status failed, the reason); targets untouched."""
    outcome.error = error
    record = getattr(session, "record_failure", None)
    if record is not None:
        record(outcome.ledger_row("failed"))


def _observe_sources(context: dg.AssetExecutionContext, outcome: Outcome) -> None:
    for s in SOURCES:
        if s.name in outcome.source_counts:
            context.log_event(
                dg.AssetObservation(
                    asset_key=s.name,
                    partition=outcome.fy.key,
                    metadata={"rows_read": outcome.source_counts[s.name], "as_of": outcome.as_of.isoformat()},
                )
            )


def _check_results(context: dg.AssetExecutionContext, outcome: Outcome) -> "dict[tuple[str, str], dg.AssetCheckResult]":
    selected = {(k.asset_key.to_user_string(), k.name) for k in context.selected_asset_check_keys}
    findings = outcome.findings
    orphans = outcome.orphan_findings()
    guard = Finding("write_guards", "ERROR", GUARD_DESCRIPTION)
    for g in outcome.guards:
        guard.add(g.message)
    results = {}
    for target, (warns, errors) in CHECKS_BY_TARGET.items():
        for code in warns + errors:
            if (target, code) not in selected:
                continue
            if code == "orphans":
                f = orphans[target]
            elif code == "write_guards":
                f = guard
            elif code in findings:
                f = findings[code]
            else:
                f = outcome.invariants[code]
            if f.count:
                (context.log.error if f.severity == "ERROR" else context.log.warning)(
                    f"{target} check {code}: {f.count} ({'; '.join(f.examples[:3])})"
                )
            results[(target, code)] = result_for(target, f)
    return results


def _counts_metadata(outcome: Outcome, name: str) -> dict[str, Any]:
    diff = outcome.diff.targets[name]
    meta: dict[str, Any] = {
        "fiscal_year": outcome.fy.year,
        "window": f"{outcome.fy.start} … {outcome.fy.end}",
        "as_of": outcome.as_of.isoformat(),
        "rows": len(outcome.comp.rows[name]),
    }
    meta.update({f"timing_{k}": v for k, v in outcome.timings.items()})
    meta.update(diff.counts())
    return meta


def _dry_metadata(outcome: Outcome, name: str) -> dict[str, Any]:
    meta = _counts_metadata(outcome, name)
    meta["mode"] = "dry_run"
    lines = describe(outcome.diff.targets[name], limit=DIFF_LINES)
    meta["diff"] = dg.MetadataValue.md("```\n" + ("\n".join(lines) or "no changes") + "\n```")
    meta["guards"] = dg.MetadataValue.md("\n".join(f"- {g.message}" for g in outcome.guards) or "none")
    return meta


def _live_metadata(outcome: Outcome, name: str) -> dict[str, Any]:
    meta = _counts_metadata(outcome, name)
    rows = outcome.comp.rows[name]
    if name == REQUIREMENTS:
        statuses = collections.Counter(r["status"] for r in rows)
        for status in ("critical", "at_risk", "compliant", "exceeded"):
            meta[f"status_{status}"] = int(statuses.get(status, 0))
        meta["preview"] = _preview(rows, ["client_name", "event_type_name", "required_count", "completed_count", "compliance_percentage", "status"])
    elif name == TERRITORY:
        meta["preview"] = _preview(rows, ["territory", "cse_name", "total_clients", "total_required_events", "total_completed_events", "overall_compliance_percentage"])
    elif name == BUSINESS_UNIT:
        for row in rows:
            if row["overall_compliance_percentage"] is not None:
                meta[f"compliance_{row['bu_name']}"] = float(row["overall_compliance_percentage"])
            meta[f"clients_below_{row['bu_name']}"] = int(row["clients_below_compliance"])
        meta["preview"] = _preview(rows, ["bu_name", "overall_compliance_percentage", "clients_below_compliance", "territory_count"])
    else:
        row = rows[0]
        if row["actual_compliance"] is not None:
            meta["actual_compliance"] = float(row["actual_compliance"])
        meta["below_compliance_accounts"] = int(row["below_compliance_accounts"])
        stats = outcome.comp.stats
        for k in ("clients_processed", "clients_skipped", "clients_at_risk", "clients_critical", "clients_compliant", "clients_unassigned"):
            meta[k] = int(stats[k])
    return meta


def _preview(rows: list[dict[str, Any]], columns: list[str], limit: int = 10) -> dg.MetadataValue:
    """The first rows as a markdown table (the UI renders it on the materialisation)."""
    if not rows:
        return dg.MetadataValue.md("_no rows_")
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join("" if r[c] is None else str(r[c]) for c in columns) + " |\n" for r in rows[:limit])
    more = f"\n… {len(rows) - limit} more rows" if len(rows) > limit else ""
    return dg.MetadataValue.md(head + body + more)
