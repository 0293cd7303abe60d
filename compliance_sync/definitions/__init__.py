"""The Dagster code location (``compliance_sync.definitions``, attribute ``defs``): source specs, the
four-target writer and its checks, the per-FY report, jobs, the schedule, the sensors and the resource; one
in-process executor (the job is one step).

``defs`` is a ``@dg.definitions`` function: Dagster (``dagster dev``, ``dg``) calls it when it loads the
location, not when a submodule is imported, so the command line imports the wiring and validates settings
itself. Partitions, the schedule, freshness and the sensors' status and interval are shaped by settings read
then: a bad one makes the location fail to load with a one-line message naming it.
"""

from __future__ import annotations

import dagster as dg

from compliance_sync.config.logs import route_warnings
from compliance_sync.config.settings import Settings, load_settings
from compliance_sync.definitions.fy_report import build_report_asset, build_report_sensor
from compliance_sync.definitions.jobs import CHECKS_JOB, DRY_RUN_JOB, SYNC_JOB, build_jobs
from compliance_sync.definitions.partitions import fiscal_year_partitions
from compliance_sync.definitions.resources import RESOURCE_KEY, ComplianceSyncResource, SyncSource
from compliance_sync.definitions.schedules import build_schedule
from compliance_sync.definitions.sensors import build_change_sensor, build_failure_alert
from compliance_sync.definitions.sources import source_specs
from compliance_sync.definitions.targets import build_targets_asset
from compliance_sync.errors import SettingsError


def build_definitions(settings: Settings | None = None, sync: SyncSource | None = None) -> dg.Definitions:
    """The definitions for ``settings`` (default: read now); ``sync`` replaces the resource, e.g. a
    :class:`~compliance_sync.definitions.resources.FixedSync` holding a backend."""
    settings = settings or load_settings()
    partitions = fiscal_year_partitions(settings)
    targets = build_targets_asset(partitions, settings.freshness_hours)
    jobs = build_jobs(targets, partitions)
    sync_job = jobs[0]
    report = build_report_asset(partitions)
    return dg.Definitions(
        assets=[*source_specs(), targets, report],
        jobs=jobs,
        schedules=[build_schedule(sync_job, settings, partitions)],
        sensors=[
            build_failure_alert(settings),
            build_change_sensor(settings, sync_job, partitions.get_partition_keys()),
            build_report_sensor(report),
        ],
        resources={RESOURCE_KEY: sync if sync is not None else ComplianceSyncResource()},
        executor=dg.in_process_executor,
    )


class SettingsLoadError(Exception):
    """A setting that shapes the definitions is wrong: the code location does not load."""


@dg.definitions
def defs() -> dg.Definitions:
    """The code location as ``dagster dev -w workspace.yaml`` and ``dg`` load it."""
    route_warnings()
    try:
        return build_definitions()
    except SettingsError as exc:
        raise SettingsLoadError(str(exc)) from None


__all__ = ["CHECKS_JOB", "DRY_RUN_JOB", "SYNC_JOB", "SettingsLoadError", "build_definitions", "defs"]
