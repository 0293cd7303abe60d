"""The Dagster code location (``compliance_sync.definitions``): source specs, the four-target writer and
its checks, the per-FY report, jobs, the schedule, the sensors and the resource; one in-process executor
(the job is one step).

Partitions, the schedule, freshness and the sensors are shaped by settings read when the location loads: a
bad one makes the location fail to load with a one-line message naming it.
"""

from __future__ import annotations

import dagster as dg

from compliance_sync.definitions.fy_report import build_report_asset, build_report_sensor
from compliance_sync.definitions.jobs import CHECKS_JOB, DRY_RUN_JOB, SYNC_JOB, build_jobs
from compliance_sync.definitions.partitions import fiscal_year_partitions
from compliance_sync.definitions.resources import ComplianceSyncResource
from compliance_sync.definitions.schedules import build_schedule
from compliance_sync.definitions.sensors import build_change_sensor, build_failure_alert
from compliance_sync.definitions.sources import source_specs
from compliance_sync.definitions.targets import build_targets_asset
from compliance_sync.errors import SettingsError
from compliance_sync.logs import route_warnings
from compliance_sync.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None, resources: dict | None = None) -> dg.Definitions:
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
        resources={"compliance_sync": ComplianceSyncResource()} | (resources or {}),
        executor=dg.in_process_executor,
    )


class SettingsLoadError(Exception):
    """A setting that shapes the definitions is wrong: the code location does not load."""


_loaded: dict[str, dg.Definitions] = {}


def __getattr__(name: str) -> dg.Definitions:
    """``defs`` is built on first access (PEP 562), not when a submodule is imported: the command line
    imports the wiring and validates settings itself before anything reads the environment."""
    if name != "defs":
        raise AttributeError(name)
    if "defs" not in _loaded:
        route_warnings()
        try:
            _loaded["defs"] = build_definitions()
        except SettingsError as exc:
            raise SettingsLoadError(str(exc)) from None
    return _loaded["defs"]


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"defs"})

__all__ = ["CHECKS_JOB", "DRY_RUN_JOB", "SYNC_JOB", "build_definitions", "defs"]
