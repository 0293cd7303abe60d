"""The names runs carry, in one place: the op (its run config lives at ``ops.compliance_sync.config``), the
tags every run of this code location may carry, and the metadata key of the run's summary. Public: stored
runs, schedules and the command line depend on them."""

from __future__ import annotations

import datetime as dt

OP_NAME = "compliance_sync"
MODE_TAG = "compliance_sync/mode"  # "dry_run" on every run launched as a dry run: the step then never writes
DRY_RUN = "dry_run"  # the value of MODE_TAG
TRIGGER_TAG = "compliance_sync/trigger"  # cli, demo, schedule, change
AS_OF_TAG = "compliance_sync/as_of"  # the as_of the run computes with: the reference date clamped to the FY
PARTITION_TAG = "dagster/partition"  # Dagster's own: the fiscal year of a partitioned run
SUMMARY = "compliance_sync/summary"  # metadata: the run's summary JSON, which the command line reads back

DRY_RUN_TAGS = {MODE_TAG: DRY_RUN}


def run_tags(trigger: str, as_of: dt.date, dry_run: bool = False) -> dict[str, str]:
    """The tags of a run launched by this code (command line, demo, schedule, sensor)."""
    return {TRIGGER_TAG: trigger, AS_OF_TAG: as_of.isoformat()} | (DRY_RUN_TAGS if dry_run else {})
