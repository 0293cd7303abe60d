"""The checks declared beside the writer, one per SPEC §6 warning (WARN) and pre-write invariant (ERROR),
each on the target whose rows it concerns and partitioned by fiscal year like the targets, so the UI shows
each FY's own results. Every run — live, dry, or checks only — reports every selected check."""

from __future__ import annotations

import warnings

import dagster as dg

from compliance_sync.domain.findings import DIFF_WARNINGS, WARNINGS, Finding, Severity, WarningCode
from compliance_sync.domain.invariants import INVARIANTS
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TERRITORY
from compliance_sync.service.outcome import Mode, Outcome
from compliance_sync.service.summary import target_finding

GUARDS = "write_guards"
GUARD_DESCRIPTION = (
    "No SPEC §5 guard stops a live run (empty required source, mass prune, a collapse that looks like hidden rows, "
    "a target key without its unique index)"
)
PER_TARGET = DIFF_WARNINGS  # warnings counted per target by the diff
# The Checks tab lists each check once, with the latest execution of whichever FY ran last.
PER_FY = (
    " Per fiscal year: a list of checks shows the latest run of any FY; "
    "read one FY's result in that FY's partition of the check."
)

# target -> (warning codes, invariant codes)
CHECKS_BY_TARGET: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    REQUIREMENTS: (
        (
            WarningCode.INVALID_SEGMENT_PERIODS,
            WarningCode.OVERLAPPING_SEGMENT_PERIODS,
            WarningCode.CLIENTS_WITHOUT_SEGMENTATION,
            WarningCode.NEGATIVE_FREQUENCY,
            WarningCode.UNDATED_EVENTS,
            WarningCode.UNKNOWN_EVENTS,
            WarningCode.COMPLETED_FUTURE_EVENTS,
            WarningCode.NAME_MISMATCHES,
            WarningCode.POSSIBLE_ALIAS,
            WarningCode.COMPLIANCE_CACHE_DRIFT,
            WarningCode.ORPHANS,
            WarningCode.NULL_KEY_ROWS,
        ),
        ("value_ranges", "unique_keys"),
    ),
    TERRITORY: (
        (
            WarningCode.CLIENTS_WITHOUT_STRATEGY,
            WarningCode.UNUSED_STRATEGIES,
            WarningCode.ORPHANS,
            WarningCode.NULL_KEY_ROWS,
        ),
        ("territory_totals", "capacity_sums"),
    ),
    BUSINESS_UNIT: ((WarningCode.UNMAPPED_TERRITORIES, WarningCode.NULL_KEY_ROWS), ("rollup_percentages",)),
    APAC: ((), (GUARDS,)),
}


def check_specs(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    specs = []
    with warnings.catch_warnings():
        # partitioned checks are a preview feature of Dagster 1.13, used knowingly (per-FY results)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        for target, (warns, errors) in CHECKS_BY_TARGET.items():
            for code in warns:
                specs.append(
                    dg.AssetCheckSpec(
                        str(code),
                        asset=target,
                        description=f"WARN: {WARNINGS[code]}.{PER_FY}",
                        partitions_def=partitions_def,
                    )
                )
            for code in errors:
                text = GUARD_DESCRIPTION if code == GUARDS else INVARIANTS[code]
                specs.append(
                    dg.AssetCheckSpec(
                        code,
                        asset=target,
                        description=f"ERROR: {text}.{PER_FY}",
                        blocking=True,
                        partitions_def=partitions_def,
                    )
                )
    return specs


def _finding(outcome: Outcome, target: str, code: str) -> Finding:
    if code in PER_TARGET:
        return target_finding(outcome, target, code)
    if code == GUARDS:
        # a dry run reports what a live run would do: a guard never fails it (SPEC §7)
        f = Finding(GUARDS, Severity.WARN if outcome.mode == Mode.DRY_RUN else Severity.ERROR, GUARD_DESCRIPTION)
        for g in outcome.stopping:
            f.add(("a live run would stop: " if outcome.mode == Mode.DRY_RUN else "") + g.message)
        return f
    if code in INVARIANTS:
        return outcome.invariants[code] if outcome.invariants else Finding(code, Severity.ERROR, INVARIANTS[code])
    return outcome.comp.findings[code] if outcome.comp else Finding(code, Severity.WARN, WARNINGS[code])


def result(target: str, finding: Finding, partition: str) -> dg.AssetCheckResult:
    metadata: dict[str, dg.RawMetadataValue] = {"total": finding.count, "fiscal_year": dg.MetadataValue.text(partition)}
    if finding.examples:
        metadata["examples"] = dg.MetadataValue.md("\n".join(f"- {e}" for e in finding.examples))
    return dg.AssetCheckResult(
        asset_key=target,
        check_name=finding.code,
        passed=finding.count == 0,
        severity=dg.AssetCheckSeverity.ERROR if finding.severity == Severity.ERROR else dg.AssetCheckSeverity.WARN,
        description=f"FY{partition}: {finding.description}",
        metadata=metadata,
    )


def check_results(outcome: Outcome, selected: set[tuple[str, str]]) -> dict[tuple[str, str], dg.AssetCheckResult]:
    """A result for every selected (target, check) the outcome can speak for."""
    out = {}
    for target, (warns, errors) in CHECKS_BY_TARGET.items():
        for code in warns + errors:
            if (target, code) in selected and (outcome.comp is not None or code == GUARDS):
                out[(target, code)] = result(target, _finding(outcome, target, code), outcome.fy.key)
    return out
