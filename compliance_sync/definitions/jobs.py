"""The jobs: the sync, a dry run of it, and the checks alone; all partitioned by fiscal year.

The dry-run and checks jobs carry the tag ``compliance_sync/mode: dry_run``, which the step treats as
authoritative: editing ``dry_run: false`` into their launchpad config does not make them write.
"""

from __future__ import annotations

import copy

import dagster as dg

from compliance_sync.definitions.targets import MODE_TAG, OP_NAME

SYNC_JOB = "compliance_sync_job"
DRY_RUN_JOB = "compliance_sync_dry_run_job"
CHECKS_JOB = "compliance_checks_job"
DRY_RUN_CONFIG = {"ops": {OP_NAME: {"config": {"dry_run": True}}}}


def _dry_run_config(_partition_key: str) -> dict:
    return copy.deepcopy(DRY_RUN_CONFIG)


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
            config=copy.deepcopy(DRY_RUN_CONFIG),
            tags={MODE_TAG: "dry_run"},
            description="Compute one fiscal year and report the diff per target without writing (observations and check results).",
        ),
        dg.define_asset_job(
            CHECKS_JOB,
            # only the checks: the step runs them as a dry run, whatever the run config says. A selection of
            # checks alone does not infer the partitions from the assets: a partitioned config gives them
            # (define_asset_job's own partitions_def is deprecated).
            selection=dg.AssetSelection.checks_for_assets(targets),
            config=dg.PartitionedConfig(partitions_def=partitions_def, run_config_for_partition_key_fn=_dry_run_config),
            tags={MODE_TAG: "dry_run"},
            description="Run the data-quality checks and pre-write invariants of one fiscal year; never writes a row.",
        ),
    ]
