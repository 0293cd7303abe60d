"""The jobs: the sync, a dry run of it, and the checks alone; all partitioned by fiscal year.

The dry-run and checks jobs carry the tag ``compliance_sync/mode: dry_run``, which the step treats as
authoritative: editing ``dry_run: false`` into their launchpad config does not make them write. Their run
config for a partition says ``dry_run: true``; before a partition is picked, the launchpad shows the op's
own defaults, where ``dry_run`` is unset (Dagster gives a partitioned job no job-level default config).
"""

from __future__ import annotations

import dagster as dg

from compliance_sync.definitions.tags import DRY_RUN_TAGS
from compliance_sync.definitions.targets import sync_run_config

SYNC_JOB = "compliance_sync_job"
DRY_RUN_JOB = "compliance_sync_dry_run_job"
CHECKS_JOB = "compliance_checks_job"
READ_ONLY = "Read-only: writes no row, whatever its run config says (tagged compliance_sync/mode: dry_run)."


def dry_run_config(_partition_key: str | None = None) -> dict:
    """The run config of a dry-run or checks run of any fiscal year."""
    return sync_run_config(dry_run=True).to_config_dict()


def build_jobs(
    targets: dg.AssetsDefinition, partitions_def: dg.PartitionsDefinition
) -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        dg.define_asset_job(
            SYNC_JOB,
            selection=dg.AssetSelection.assets(targets),
            description=(
                "Sync one fiscal year into the four planning tables "
                "(run config: dry_run, as_of, allow_mass_prune, diff_limit)."
            ),
        ),
        dg.define_asset_job(
            DRY_RUN_JOB,
            selection=dg.AssetSelection.assets(targets),
            config=sync_run_config(dry_run=True),
            tags=DRY_RUN_TAGS,
            description="Compute one fiscal year and report the diff per target as observations and check results. "
            + READ_ONLY,
        ),
        dg.define_asset_job(
            CHECKS_JOB,
            # only the checks: the step runs them as a dry run, whatever the run config says. A selection of
            # checks alone does not infer the partitions from the assets: a partitioned config gives them
            # (define_asset_job's own partitions_def is deprecated).
            selection=dg.AssetSelection.checks_for_assets(targets),
            config=dg.PartitionedConfig(partitions_def=partitions_def, run_config_for_partition_key_fn=dry_run_config),
            tags=DRY_RUN_TAGS,
            description="Run the data-quality checks and pre-write invariants of one fiscal year. " + READ_ONLY,
        ),
    ]
