"""The shapes every module shares: the tables of SPEC §3, the facts of one FY, findings.

Kept free of I/O and Dagster so the rules, the diff, both backends and the tests agree on one
vocabulary. Values inside the frames are plain Python objects: ``str`` for uuids and text,
``datetime.date`` for dates, ``bool`` / ``None`` for booleans, ``int`` / ``None`` for integers,
``decimal.Decimal`` for numerics, parsed JSON (lists / dicts) for jsonb.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pandas as pd

# --- column types the schema check accepts (PostgreSQL `format_type` families) -------------------
UUID = "uuid"
TEXT = "text"
INT = "int"
BOOL = "bool"
DATE = "date"
NUMERIC = "numeric"
JSONB = "jsonb"
TIMESTAMPTZ = "timestamptz"


@dataclasses.dataclass(frozen=True)
class SourceTable:
    name: str
    columns: dict[str, str]
    group: str  # Dagster group: "segmentation" or "planning"
    description: str
    required: bool = True  # False: the table may be missing (client_event_exclusions)


SOURCES: tuple[SourceTable, ...] = (
    SourceTable(
        "account_plans",
        {"id": UUID, "client_id": UUID, "client_name": TEXT, "fiscal_year": INT, "status": TEXT},
        "planning",
        "Account plans, one per client and fiscal year; the plans in scope (not archived) define the clients.",
    ),
    SourceTable(
        "territory_strategies",
        {
            "id": UUID,
            "cse_name": TEXT,
            "territory": TEXT,
            "fiscal_year": INT,
            "quarter": TEXT,
            "status": TEXT,
            "updated_at": TIMESTAMPTZ,
        },
        "planning",
        "CSE territory strategies per fiscal year (annual or quarterly); one is used per CSE.",
    ),
    SourceTable(
        "client_segmentation",
        {
            "id": UUID,
            "client_name": TEXT,
            "tier_id": UUID,
            "cse_name": TEXT,
            "client_uuid": UUID,
            "effective_from": DATE,
            "effective_to": DATE,
        },
        "segmentation",
        "Segment periods: which tier and CSE a client has between effective_from and effective_to.",
    ),
    SourceTable(
        "segmentation_tiers",
        {"id": UUID, "tier_name": TEXT},
        "segmentation",
        "Segmentation tiers (Giant, Collaboration, Leverage, Maintain, Nurture, Sleeping Giant).",
    ),
    SourceTable(
        "segmentation_event_types",
        {"id": UUID, "event_name": TEXT, "event_code": TEXT, "is_active": BOOL},
        "segmentation",
        "Engagement event types; only active ones are required.",
    ),
    SourceTable(
        "tier_event_requirements",
        {"tier_id": UUID, "event_type_id": UUID, "frequency": INT},
        "segmentation",
        "How many events of each type a tier requires per year (0 = not required).",
    ),
    SourceTable(
        "segmentation_events",
        {
            "id": UUID,
            "client_name": TEXT,
            "event_type_id": UUID,
            "event_date": DATE,
            "completed": BOOL,
        },
        "segmentation",
        "Engagement events, completed or scheduled; aggregated in the database per client, type and FY month.",
    ),
    SourceTable(
        "segmentation_event_compliance",
        {
            "client_name": TEXT,
            "event_type_id": UUID,
            "year": INT,
            "expected_count": INT,
            "actual_count": INT,
            "compliance_percentage": NUMERIC,
            "status": TEXT,
        },
        "segmentation",
        "The segmentation system's compliance cache per calendar year; used only by the drift check.",
    ),
    SourceTable(
        "client_event_exclusions",
        {"client_name": TEXT, "event_type_id": UUID, "reason": TEXT},
        "segmentation",
        "Optional: (client, event type) pairs excluded from requirements unless the reason says 'greyed out'.",
        required=False,
    ),
)
# SPEC §5 guard: a live run stops when one of these returned no rows for the FY.
REQUIRED_NONEMPTY = ("account_plans", "client_segmentation", "segmentation_tiers", "tier_event_requirements")


@dataclasses.dataclass(frozen=True)
class TargetTable:
    name: str
    key: tuple[str, ...]
    owned: tuple[str, ...]  # the owned value columns (updated_at is set by the writer, not diffed)
    types: dict[str, str]  # type of every key and owned column, plus updated_at
    not_wanted: str  # "prune": delete or keep as orphan; "reset": write reset values; "keep"
    reset_values: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        return self.key + self.owned


REQUIREMENTS = "account_plan_event_requirements"
TERRITORY = "territory_compliance_summary"
BUSINESS_UNIT = "business_unit_planning"
APAC = "apac_planning_goals"

TARGETS: tuple[TargetTable, ...] = (
    TargetTable(
        REQUIREMENTS,
        key=("plan_id", "event_type_id", "fiscal_year"),
        owned=(
            "client_id",
            "client_name",
            "segment",
            "event_type_name",
            "required_count",
            "completed_count",
            "scheduled_count",
            "compliance_percentage",
            "status",
            "next_due_date",
            "linked_event_ids",
        ),
        types={
            "plan_id": UUID,
            "event_type_id": UUID,
            "fiscal_year": INT,
            "client_id": UUID,
            "client_name": TEXT,
            "segment": TEXT,
            "event_type_name": TEXT,
            "required_count": INT,
            "completed_count": INT,
            "scheduled_count": INT,
            "compliance_percentage": NUMERIC,
            "status": TEXT,
            "next_due_date": DATE,
            "linked_event_ids": JSONB,
            "updated_at": TIMESTAMPTZ,
        },
        not_wanted="prune",
        description="Event compliance per account plan and event type for one fiscal year.",
    ),
    TargetTable(
        TERRITORY,
        key=("territory_strategy_id", "fiscal_year"),
        owned=(
            "territory",
            "cse_name",
            "total_clients",
            "total_required_events",
            "total_completed_events",
            "overall_compliance_percentage",
            "clients_at_risk",
            "clients_critical",
            "segment_breakdown",
            "monthly_capacity",
        ),
        types={
            "territory_strategy_id": UUID,
            "fiscal_year": INT,
            "territory": TEXT,
            "cse_name": TEXT,
            "total_clients": INT,
            "total_required_events": INT,
            "total_completed_events": INT,
            "overall_compliance_percentage": NUMERIC,
            "clients_at_risk": INT,
            "clients_critical": INT,
            "segment_breakdown": JSONB,
            "monthly_capacity": JSONB,
            "updated_at": TIMESTAMPTZ,
        },
        not_wanted="prune",
        description="Compliance per CSE territory (the used territory strategy) for one fiscal year.",
    ),
    TargetTable(
        BUSINESS_UNIT,
        key=("bu_name", "fiscal_year"),
        owned=("overall_compliance_percentage", "clients_below_compliance", "territory_count", "territory_data"),
        types={
            "bu_name": TEXT,
            "fiscal_year": INT,
            "overall_compliance_percentage": NUMERIC,
            "clients_below_compliance": INT,
            "territory_count": INT,
            "territory_data": JSONB,
            "updated_at": TIMESTAMPTZ,
        },
        not_wanted="reset",
        reset_values={
            "overall_compliance_percentage": None,
            "clients_below_compliance": 0,
            "territory_count": 0,
            "territory_data": [],
        },
        description="Compliance per business unit (ANZ, SEA, Greater China, ...) for one fiscal year; "
        "the financial columns are the planners' and never touched.",
    ),
    TargetTable(
        APAC,
        key=("fiscal_year",),
        owned=("actual_compliance", "below_compliance_accounts", "bu_contributions"),
        types={
            "fiscal_year": INT,
            "actual_compliance": NUMERIC,
            "below_compliance_accounts": INT,
            "bu_contributions": JSONB,
            "updated_at": TIMESTAMPTZ,
        },
        not_wanted="keep",
        description="APAC-wide compliance for one fiscal year, with each business unit's contribution.",
    ),
)
TARGET_BY_NAME = {t.name: t for t in TARGETS}


# --- the facts of one FY, as a backend hands them to the rules --------------------------------------
FACT_COLUMNS: dict[str, tuple[str, ...]] = {
    # account_plans with fiscal_year = FY (the rules drop archived ones)
    "plans": ("id", "client_id", "client_name", "status"),
    # client_segmentation rows whose period overlaps the FY (a backend may pre-filter; the rules re-check)
    "periods": ("id", "client_name", "tier_id", "cse_name", "client_uuid", "effective_from", "effective_to"),
    "tiers": ("id", "tier_name"),
    "event_types": ("id", "event_name", "event_code", "is_active"),
    "requirements": ("tier_id", "event_type_id", "frequency"),
    # territory_strategies with fiscal_year = FY (the rules drop archived ones)
    "strategies": ("id", "cse_name", "territory", "quarter", "status", "updated_at"),
    "exclusions": ("client_name", "event_type_id", "reason"),
    # segmentation_events with start <= event_date <= end, grouped by (client_name, event_type_id, fy_month):
    #   completed = completed IS TRUE AND event_date <= as_of; scheduled = the rest;
    #   completed_future = completed IS TRUE AND event_date > as_of (a subset of scheduled);
    #   event_ids = ids ordered by (event_date, id). event_type_id may be None or unknown.
    "event_facts": ("client_name", "event_type_id", "fy_month", "completed", "scheduled", "completed_future", "event_ids"),
    # segmentation_events with event_date IS NULL (any year)
    "undated_events": ("id", "client_name"),
    # segmentation_event_compliance rows whose calendar year overlaps the FY
    "compliance_cache": ("client_name", "event_type_id", "year", "actual_count"),
    # completed events (completed IS TRUE) per client, type and calendar year, for the years overlapping the FY
    "calendar_completed": ("client_name", "event_type_id", "year", "completed"),
}


def empty_frame(name: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in FACT_COLUMNS[name]})


@dataclasses.dataclass
class Facts:
    """Everything the rules need for one FY. ``exclusions`` is None when the table does not exist."""

    fiscal_year: int
    start: dt.date
    end: dt.date
    as_of: dt.date
    plans: pd.DataFrame
    periods: pd.DataFrame
    tiers: pd.DataFrame
    event_types: pd.DataFrame
    requirements: pd.DataFrame
    strategies: pd.DataFrame
    exclusions: pd.DataFrame | None
    event_facts: pd.DataFrame
    undated_events: pd.DataFrame
    compliance_cache: pd.DataFrame
    calendar_completed: pd.DataFrame
    # rows read per source table for this FY (recorded as Dagster observations); derived from the frames
    source_counts: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.source_counts:
            self.source_counts = self.count_sources()

    def count_sources(self) -> dict[str, int]:
        ev = self.event_facts
        in_window = int(sum(ev["completed"]) + sum(ev["scheduled"])) if len(ev) else 0
        counts = {
            "account_plans": len(self.plans),
            "client_segmentation": len(self.periods),
            "segmentation_tiers": len(self.tiers),
            "segmentation_event_types": len(self.event_types),
            "tier_event_requirements": len(self.requirements),
            "territory_strategies": len(self.strategies),
            "segmentation_events": in_window + len(self.undated_events),
            "segmentation_event_compliance": len(self.compliance_cache),
        }
        if self.exclusions is not None:
            counts["client_event_exclusions"] = len(self.exclusions)
        return counts


# --- findings -----------------------------------------------------------------------------------------
MAX_EXAMPLES = 20


@dataclasses.dataclass
class Finding:
    """A warning of SPEC §6 (the run carries on) or an error (it stops); ``count`` is the total."""

    code: str
    severity: str  # "WARN" or "ERROR"
    description: str
    count: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)


class SyncError(Exception):
    """A stop before any write. ``exit_code``: 3 data / schema / guards / invariants, 4 connection, 2 usage."""

    exit_code = 3


class DataError(SyncError):
    exit_code = 3


class SettingsError(SyncError):
    exit_code = 2


class ConnectionFailure(SyncError):
    exit_code = 4


def records(rows: pd.DataFrame | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A frame's rows as dicts with missing values (None, NaN, NaT) as None, much faster than
    ``DataFrame.to_dict``; a list of dicts is returned as it is."""
    if rows is None:
        return []
    if isinstance(rows, list):
        return rows
    if len(rows) == 0:
        return []
    columns = list(rows.columns)
    values = []
    for c in columns:
        col = rows[c]
        missing = col.isna()
        values.append(col.astype(object).where(~missing, None).tolist() if missing.any() else col.tolist())
    return [dict(zip(columns, row)) for row in zip(*values)]
