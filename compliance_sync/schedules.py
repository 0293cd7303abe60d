"""The daily schedule (SPEC §7): the current FY, plus the previous FY during the first weeks of a new one.

Each run's config carries the tick's local date as ``as_of``, so a re-executed run reproduces the same numbers.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from compliance_sync.fiscal import fiscal_year_of
from compliance_sync.settings import Settings

SCHEDULE_NAME = "compliance_sync_daily"


def tick_requests(local_date: dt.date, settings: Settings, partition_keys: list[str], job_op: str = "compliance_sync") -> list[dg.RunRequest]:
    fy = fiscal_year_of(local_date, settings.fy_start_month)
    years = [fy.year]
    if (local_date - fy.start).days < settings.grace_days:
        years.append(fy.year - 1)
    requests = []
    for year in years:
        key = str(year)
        if key not in partition_keys:
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"fy{key}-{local_date.isoformat()}",
                partition_key=key,
                run_config={"ops": {job_op: {"config": {"as_of": local_date.isoformat()}}}},
                tags={"compliance_sync/as_of": local_date.isoformat(), "compliance_sync/trigger": "schedule"},
            )
        )
    return requests


def build_schedule(job, settings: Settings, partitions_def: dg.StaticPartitionsDefinition) -> dg.ScheduleDefinition:
    keys = partitions_def.get_partition_keys()

    @dg.schedule(
        name=SCHEDULE_NAME,
        job=job,
        cron_schedule=settings.schedule_cron,
        execution_timezone=settings.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily sync of the current fiscal year (and the previous one during its first "
        f"{settings.grace_days} days), as_of the tick's local date in {settings.timezone}.",
    )
    def compliance_sync_daily(context: dg.ScheduleEvaluationContext):
        local = context.scheduled_execution_time.astimezone(settings.tz).date()
        requests = tick_requests(local, settings, keys)
        if not requests:
            return dg.SkipReason(f"no fiscal-year partition for {local}")
        return requests

    return compliance_sync_daily
