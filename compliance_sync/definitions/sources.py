"""The source tables of SPEC §3.1 as external assets: never materialised here; each run records an
observation of each with the rows it read and the fiscal year it read them for. Unpartitioned (SPEC §7):
a partitioned external asset would show as "0% filled" for ever."""

from __future__ import annotations

import dagster as dg

from compliance_sync.domain.tables import SOURCES


def source_specs() -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            key=s.name,
            description=s.description + ("" if s.required else " (optional table)"),
            group_name=s.group.value,
            kinds={"postgres"},
            metadata={"columns used": dg.MetadataValue.text(", ".join(s.columns))},
        )
        for s in SOURCES
    ]


def observations(source_counts: dict[str, int], fiscal_year: str, as_of: str) -> list[dg.AssetObservation]:
    return [
        dg.AssetObservation(
            asset_key=s.name,
            metadata={
                "rows_read": n,
                "fiscal_year": dg.MetadataValue.text(fiscal_year),
                "as_of": dg.MetadataValue.text(as_of),
            },
        )
        for s in SOURCES
        if (n := source_counts.get(s.name)) is not None
    ]
