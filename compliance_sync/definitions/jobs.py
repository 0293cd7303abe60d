"""The jobs: the sync, a dry run of it, and the checks alone; all partitioned by fiscal year."""

from __future__ import annotations

import dagster as dg

from compliance_sync.definitions.targets import MODE_TAG, OP_NAME

SYNC_JOB = "compliance_sync_job"
DRY_RUN_JOB = "compliance_sync_dry_run_job"
CHECKS_JOB = "compliance_checks_job"


def build_jobs(targets: dg.AssetsDefinition, partitions_def: dg.PartitionsDefinition) -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        dg.define_asset_job(
            SYNC_JOB,
            selection=dg.AssetSelection.assets(targets),
            description="Sync one fiscal year into the four planning tables (run config: dry_run, as_of, allow_mass_prune, diff_limit).",
        ),
        dg.define_asset_job(
            DRY_RUN_JOB,
            selection=dg.AssetSelection.assets(targets),
            config={"ops": {OP_NAME: {"config": {"dry_run": True}}}},
            tags={MODE_TAG: "dry_run"},
            description="Compute one fiscal year and report the diff per target without writing (observations and check results).",
        ),
        dg.define_asset_job(
            CHECKS_JOB,
            # only the checks: the step runs them as a dry run, whatever the run config says
            selection=dg.AssetSelection.checks_for_assets(targets),
            tags={MODE_TAG: "dry_run"},
            partitions_def=partitions_def,  # a selection of checks alone cannot infer it
            description="Run the data-quality checks and pre-write invariants of one fiscal year; never writes a row.",
        ),
    ]
