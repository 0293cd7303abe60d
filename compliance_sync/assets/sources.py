"""The source tables of SPEC §3.1 as external assets: observed by each run, never materialised here."""

from __future__ import annotations

import dagster as dg

from compliance_sync.model import SOURCES


def source_specs(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            key=s.name,
            description=s.description + ("" if s.required else " (optional table)"),
            group_name=s.group,
            partitions_def=partitions_def,
            kinds={"postgres"},
            metadata={"columns used": ", ".join(s.columns)},
        )
        for s in SOURCES
    ]
