"""The checks declared beside the writer: SPEC §6 warnings (WARN) and the pre-write invariants (ERROR).

Each check lives on the target whose rows it concerns. Every run — live, dry, or checks only — yields a
result for every selected check, with the total and up to 20 examples.
"""

from __future__ import annotations

import dagster as dg

from compliance_sync.invariants import INVARIANTS
from compliance_sync.model import APAC, BUSINESS_UNIT, REQUIREMENTS, TERRITORY, Finding
from compliance_sync.rules import WARNINGS

# target -> (warning codes, invariant codes)
CHECKS_BY_TARGET: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    REQUIREMENTS: (
        (
            "invalid_segment_periods",
            "overlapping_segment_periods",
            "clients_without_segmentation",
            "negative_frequency",
            "undated_events",
            "unknown_events",
            "completed_future_events",
            "name_mismatches",
            "compliance_cache_drift",
            "orphans",
        ),
        ("value_ranges", "unique_keys"),
    ),
    TERRITORY: (("clients_without_strategy", "unused_strategies", "orphans"), ("territory_totals", "capacity_sums")),
    BUSINESS_UNIT: (("unmapped_territories",), ("rollup_percentages",)),
    APAC: ((), ("write_guards",)),
}
GUARD_DESCRIPTION = "No SPEC §5 guard stops a live run (empty required source, mass prune)"


def check_specs() -> list[dg.AssetCheckSpec]:
    specs = []
    for target, (warns, errors) in CHECKS_BY_TARGET.items():
        for code in warns:
            specs.append(dg.AssetCheckSpec(code, asset=target, description=f"WARN: {WARNINGS[code]}"))
        for code in errors:
            text = GUARD_DESCRIPTION if code == "write_guards" else INVARIANTS[code]
            specs.append(dg.AssetCheckSpec(code, asset=target, description=f"ERROR: {text}", blocking=True))
    return specs


def result_for(target: str, finding: Finding) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if finding.severity == "ERROR" else dg.AssetCheckSeverity.WARN
    metadata: dict[str, dg.RawMetadataValue] = {"total": finding.count}
    if finding.examples:
        metadata["examples"] = dg.MetadataValue.md("\n".join(f"- {e}" for e in finding.examples))
    return dg.AssetCheckResult(
        asset_key=target,
        check_name=finding.code,
        passed=finding.count == 0,
        severity=severity,
        description=finding.description,
        metadata=metadata,
    )
