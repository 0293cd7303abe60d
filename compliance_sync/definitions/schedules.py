"""The daily schedule (SPEC §7): the current FY, plus the previous FY during the first weeks of a new one.

Each run's config carries the tick's local date as ``as_of``, so a re-executed run reproduces its numbers;
its tag ``compliance_sync/as_of`` is the as_of the run computes with (that date clamped to the FY's last day).
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from compliance_sync.config.settings import Settings
from compliance_sync.definitions.tags import run_tags
from compliance_sync.definitions.targets import sync_run_config
from compliance_sync.domain.fiscal import FiscalYear, fiscal_year_of
from compliance_sync.errors import SettingsError

SCHEDULE_NAME = "compliance_sync_daily"


def scheduled_years(local_date: dt.date, settings: Settings, partition_keys: list[str]) -> list[str]:
    """The FY containing the date, and the previous FY while the date is within its first grace days."""
    fy = fiscal_year_of(local_date, settings.fy_start_month)
    years = [fy.year] + ([fy.year - 1] if (local_date - fy.start).days < settings.grace_days else [])
    return [str(y) for y in years if str(y) in partition_keys]


def run_request(key: str, local_date: dt.date, trigger: str, run_key: str, fy_start_month: int) -> dg.RunRequest:
    """A run of the FY ``key`` as of ``local_date``, tagged with the as_of it computes with."""
    return dg.RunRequest(
        run_key=run_key,
        partition_key=key,
        run_config=sync_run_config(as_of=local_date),
        tags=run_tags(trigger, FiscalYear(int(key), fy_start_month).as_of(local_date)),
    )


def tick_requests(local_date: dt.date, settings: Settings, partition_keys: list[str]) -> list[dg.RunRequest]:
    return [
        run_request(key, local_date, "schedule", f"fy{key}-{local_date.isoformat()}", settings.fy_start_month)
        for key in scheduled_years(local_date, settings, partition_keys)
    ]


def build_schedule(
    job: dg.UnresolvedAssetJobDefinition, settings: Settings, partitions_def: dg.StaticPartitionsDefinition
) -> dg.ScheduleDefinition:
    keys = partitions_def.get_partition_keys()

    def compliance_sync_daily(context: dg.ScheduleEvaluationContext):
        local = context.scheduled_execution_time.astimezone(settings.tz).date()
        requests = tick_requests(local, settings, keys)
        yield from requests or [dg.SkipReason(f"no fiscal-year partition for {local}")]

    try:
        return dg.ScheduleDefinition(
            name=SCHEDULE_NAME,
            job=job,
            cron_schedule=settings.schedule_cron,
            execution_timezone=settings.timezone,
            execution_fn=compliance_sync_daily,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Daily sync of the current fiscal year (and the previous one during its first "
            f"{settings.grace_days} days), as_of the tick's local date in {settings.timezone}.",
        )
    except dg.DagsterInvalidDefinitionError:
        raise SettingsError(
            f"COMPLIANCE_SYNC_SCHEDULE_CRON: {settings.schedule_cron!r} "
            "is not a valid cron schedule (five fields, e.g. '0 6 * * *')"
        ) from None
