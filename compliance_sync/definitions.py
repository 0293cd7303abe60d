"""The Dagster code location: source specs, the four-target writer with its checks, jobs, schedule, resources.

Partition keys, the schedule's cron and timezone are read from the environment when the location loads.
The in-process executor is the default: the job is one step (benchmarks/executors.py: 2.4× faster than
multiprocess on a demo dry run).
"""

from __future__ import annotations

import dagster as dg

from compliance_sync.assets.sources import source_specs
from compliance_sync.assets.targets import build_targets_asset
from compliance_sync.partitions import fiscal_year_partitions
from compliance_sync.resources import ComplianceSyncResource
from compliance_sync.schedules import build_schedule
from compliance_sync.settings import load_settings

SYNC_JOB = "compliance_sync_job"
CHECKS_JOB = "compliance_checks_job"


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    settings = load_settings()
    partitions = fiscal_year_partitions(settings)
    targets = build_targets_asset(partitions)
    sync_job = dg.define_asset_job(
        SYNC_JOB,
        selection=dg.AssetSelection.assets(targets),
        description="Sync one fiscal year into the four planning tables (run config: dry_run, as_of, allow_mass_prune).",
    )
    checks_job = dg.define_asset_job(
        CHECKS_JOB,
        # the same step as a dry run: every check result and the diff as observations, nothing written
        selection=dg.AssetSelection.assets(targets),
        config={"ops": {"compliance_sync": {"config": {"dry_run": True}}}},
        description="Run the data-quality checks and pre-write invariants of one fiscal year without writing "
        "(a dry run: check results and diff observations, no materialisation).",
    )
    return dg.Definitions(
        assets=[*source_specs(partitions), targets],
        jobs=[sync_job, checks_job],
        schedules=[build_schedule(sync_job, settings, partitions)],
        resources={
            "compliance_sync": ComplianceSyncResource(),
            "run_report": dg.ResourceDefinition.none_resource(description="filled by the command line only"),
        }
        | (resources or {}),
        executor=dg.in_process_executor,
    )


defs = build_definitions()
