"""The fiscal-year partitions (SPEC §2), computed when the code location loads."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from compliance_sync.config.settings import Settings
from compliance_sync.domain.fiscal import partition_keys
from compliance_sync.errors import SettingsError


def fiscal_year_partitions(settings: Settings, today: dt.date | None = None) -> dg.StaticPartitionsDefinition:
    """From ``COMPLIANCE_SYNC_FIRST_FY`` to the FY containing today (in the configured timezone) plus one."""
    keys = partition_keys(settings.first_fiscal_year, today or settings.today(), settings.fy_start_month)
    if not keys:
        raise SettingsError(
            f"COMPLIANCE_SYNC_FIRST_FY={settings.first_fiscal_year} "
            "is after the fiscal year containing today plus one: "
            "there would be no fiscal-year partition"
        )
    return dg.StaticPartitionsDefinition(keys)
