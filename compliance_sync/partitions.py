"""The fiscal-year partitions, computed when the code location loads (SPEC §2)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from compliance_sync.fiscal import partition_keys
from compliance_sync.settings import Settings, load_settings


def fiscal_year_partitions(settings: Settings | None = None, today: dt.date | None = None) -> dg.StaticPartitionsDefinition:
    """From ``COMPLIANCE_SYNC_FIRST_FY`` to the FY containing today (in the configured timezone) plus one."""
    settings = settings or load_settings()
    today = today or dt.datetime.now(settings.tz).date()
    return dg.StaticPartitionsDefinition(partition_keys(settings.first_fiscal_year, today, settings.fy_start_month))
