"""Dagster resources: where the data lives and how the job is configured.

Fields left unset are read at run time from the environment and ``.env`` / ``.env.local`` (SPEC §7), so
the same definitions work under ``dagster dev``, the daemon and the command line. Secrets are given as
``dg.EnvVar`` (the UI shows the variable's name, never its value) or read from the environment.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import dagster as dg

from compliance_sync.settings import BuMap, Secret, Settings, Thresholds, load_settings, validate_timezone


class ComplianceSyncResource(dg.ConfigurableResource):
    """The sync's settings and backend. Every field overrides the matching environment variable."""

    db_url: Optional[str] = None  # SUPABASE_DB_URL (secret: pass dg.EnvVar)
    bu_map_path: Optional[str] = None  # COMPLIANCE_SYNC_BU_MAP
    fy_start_month: Optional[int] = None  # COMPLIANCE_SYNC_FY_START_MONTH
    timezone: Optional[str] = None  # COMPLIANCE_SYNC_TIMEZONE
    thresholds: Optional[str] = None  # COMPLIANCE_SYNC_THRESHOLDS
    max_prune_fraction: Optional[float] = None  # COMPLIANCE_SYNC_MAX_PRUNE_FRACTION
    env_dir: Optional[str] = None  # where .env / .env.local live (default: the working directory)

    def settings(self) -> Settings:
        base = load_settings(self.env_dir)
        changes: dict[str, Any] = {}
        if self.db_url:
            changes["db_url"] = Secret(self.db_url)
        if self.bu_map_path:
            changes["bu_map_path"] = self.bu_map_path
        if self.fy_start_month is not None:
            changes["fy_start_month"] = self.fy_start_month
        if self.timezone:
            changes["timezone"] = validate_timezone(self.timezone, "resource compliance_sync.timezone")
        if self.thresholds:
            changes["thresholds"] = Thresholds.parse(self.thresholds, "resource compliance_sync.thresholds")
        if self.max_prune_fraction is not None:
            changes["max_prune_fraction"] = self.max_prune_fraction
        return dataclasses.replace(base, **changes)

    def bu_map(self) -> BuMap:
        return self.settings().bu_map()


class RunReport:
    """A hand-back slot for in-process callers (the CLI): the asset leaves its Outcome here."""

    def __init__(self) -> None:
        self.outcome = None
        self.error: tuple[str, int] | None = None  # (message, exit code) when the run stopped before an Outcome
