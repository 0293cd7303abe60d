"""The tables of SPEC §3 and the run ledger: one definition each, used by every module.

Names, columns and their types; which target columns the job owns; how a target treats rows the run did not
compute. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Any


class Kind(enum.StrEnum):
    """Column type families: what the schema check accepts and how the diff compares values."""

    UUID = "uuid"
    TEXT = "text"
    INT = "int"
    BOOL = "bool"
    DATE = "date"
    NUMERIC = "numeric"
    JSONB = "jsonb"
    TIMESTAMPTZ = "timestamptz"


UUID, TEXT, INT, BOOL, DATE, NUMERIC, JSONB, TIMESTAMPTZ = Kind


class Group(enum.StrEnum):
    SEGMENTATION = "segmentation"
    PLANNING = "planning"


@dataclasses.dataclass(frozen=True)
class SourceTable:
    name: str
    columns: dict[str, Kind]
    group: Group
    description: str
    required: bool = True  # False: the table may be missing (client_event_exclusions)
    # columns that identify a row, for paging over REST (the primary key; SPEC lists none for some tables)
    keyset: tuple[str, ...] = ("id",)


class NotWanted(enum.StrEnum):
    """What happens to a target row of the FY that the run did not compute (SPEC §4.8, §5)."""

    PRUNE = "prune"  # deleted, or kept as an orphan when it carries data the job does not own
    RESET = "reset"  # its owned columns are reset (business units without territories)
    KEEP = "keep"  # left alone (APAC: its one row per FY is always computed)


@dataclasses.dataclass(frozen=True)
class TargetTable:
    name: str
    key: tuple[str, ...]
    types: dict[str, Kind]  # SPEC §3's columns in order: the key, the owned value columns, updated_at
    not_wanted: NotWanted
    description: str
    reset_values: dict[str, Any] = dataclasses.field(default_factory=dict)
    label: tuple[str, ...] = ()  # the owned columns a person recognises a row by (dry-run lines)

    @functools.cached_property  # read in the diff's inner loops
    def owned(self) -> tuple[str, ...]:
        """The value columns the job computes and compares (``updated_at`` is set by the writer)."""
        return tuple(c for c in self.types if c not in self.key and c != "updated_at")

    @functools.cached_property
    def columns(self) -> tuple[str, ...]:
        return self.key + self.owned


SOURCES: tuple[SourceTable, ...] = (
    SourceTable(
        "account_plans",
        {"id": UUID, "client_id": UUID, "client_name": TEXT, "fiscal_year": INT, "status": TEXT},
        Group.PLANNING,
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
        Group.PLANNING,
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
        Group.SEGMENTATION,
        "Segment periods: which tier and CSE a client has between effective_from and effective_to.",
    ),
    SourceTable(
        "segmentation_tiers",
        {"id": UUID, "tier_name": TEXT},
        Group.SEGMENTATION,
        "Segmentation tiers (Giant, Collaboration, Leverage, Maintain, Nurture, Sleeping Giant).",
    ),
    SourceTable(
        "segmentation_event_types",
        {"id": UUID, "event_name": TEXT, "event_code": TEXT, "is_active": BOOL},
        Group.SEGMENTATION,
        "Engagement event types; only active ones are required.",
    ),
    SourceTable(
        "tier_event_requirements",
        {"tier_id": UUID, "event_type_id": UUID, "frequency": INT},
        Group.SEGMENTATION,
        "How many events of each type a tier requires per year (0 = not required).",
        keyset=("tier_id", "event_type_id"),
    ),
    SourceTable(
        "segmentation_events",
        {"id": UUID, "client_name": TEXT, "event_type_id": UUID, "event_date": DATE, "completed": BOOL},
        Group.SEGMENTATION,
        "Engagement events, completed or scheduled.",
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
        Group.SEGMENTATION,
        "The segmentation system's compliance cache per calendar year; used only by the drift check.",
        keyset=("client_name", "event_type_id", "year"),
    ),
    SourceTable(
        "client_event_exclusions",
        {"client_name": TEXT, "event_type_id": UUID, "reason": TEXT},
        Group.SEGMENTATION,
        "Optional: (client, event type) pairs excluded from requirements unless the reason says 'greyed out'.",
        required=False,
        keyset=("client_name", "event_type_id"),
    ),
)
SOURCE_BY_NAME = {s.name: s for s in SOURCES}
# SPEC §5 guard: a live run stops when one of these returned no rows for the FY.
REQUIRED_NONEMPTY = ("account_plans", "client_segmentation", "segmentation_tiers", "tier_event_requirements")
EXCLUSIONS = "client_event_exclusions"
EVENTS = "segmentation_events"

REQUIREMENTS = "account_plan_event_requirements"
TERRITORY = "territory_compliance_summary"
BUSINESS_UNIT = "business_unit_planning"
APAC = "apac_planning_goals"


def column_types(spec: str) -> dict[str, Kind]:
    """``name kind, name kind, …`` (SPEC §3's order and types) as an ordered column -> kind mapping."""
    out = {}
    for item in spec.split(","):
        name, kind = item.split()
        out[name] = Kind(kind)
    return out


TARGETS: tuple[TargetTable, ...] = (
    TargetTable(
        REQUIREMENTS,
        ("plan_id", "event_type_id", "fiscal_year"),
        column_types("""
        plan_id uuid, event_type_id uuid, fiscal_year int, client_id uuid, client_name text, segment text,
        event_type_name text, required_count int, completed_count int, scheduled_count int,
        compliance_percentage numeric, status text, next_due_date date, linked_event_ids jsonb,
        updated_at timestamptz"""),
        NotWanted.PRUNE,
        "Event compliance per account plan and event type for one fiscal year.",
        label=("client_name", "event_type_name"),
    ),
    TargetTable(
        TERRITORY,
        ("territory_strategy_id", "fiscal_year"),
        column_types("""
        territory_strategy_id uuid, fiscal_year int, territory text, cse_name text, total_clients int,
        total_required_events int, total_completed_events int, overall_compliance_percentage numeric,
        clients_at_risk int, clients_critical int,
        segment_breakdown jsonb, monthly_capacity jsonb, updated_at timestamptz"""),
        NotWanted.PRUNE,
        "Compliance per CSE territory (the used territory strategy) for one fiscal year.",
        label=("territory", "cse_name"),
    ),
    TargetTable(
        BUSINESS_UNIT,
        ("bu_name", "fiscal_year"),
        column_types("""
        bu_name text, fiscal_year int, overall_compliance_percentage numeric, clients_below_compliance int,
        territory_count int, territory_data jsonb, updated_at timestamptz"""),
        NotWanted.RESET,
        "Compliance per business unit (ANZ, SEA, Greater China, ...) for one fiscal year; "
        "the financial columns are the planners' and never touched.",
        reset_values={
            "overall_compliance_percentage": None,
            "clients_below_compliance": 0,
            "territory_count": 0,
            "territory_data": [],
        },
        label=("bu_name",),
    ),
    TargetTable(
        APAC,
        ("fiscal_year",),
        column_types(
            "fiscal_year int, actual_compliance numeric, below_compliance_accounts int, bu_contributions jsonb, "
            "updated_at timestamptz"
        ),
        NotWanted.KEEP,
        "APAC-wide compliance for one fiscal year, with each business unit's contribution.",
        label=("fiscal_year",),
    ),
)
TARGET_BY_NAME = {t.name: t for t in TARGETS}
# Columns of a target that never count as data the job does not own (besides the key and the owned ones).
JOB_META_COLUMNS = ("id", "created_at", "updated_at")


# --- the run ledger (SPEC §3.4) ---------------------------------------------------------------------------
LEDGER_TABLE = "compliance_sync_runs"
# Written by every live run, in this order. `run_id` is the Dagster run id: it links "last synced" to the
# run, and over REST it makes the ledger write idempotent (a unique key, so a retried POST adds no row).
LEDGER_COLUMNS: dict[str, Kind] = {
    "run_id": TEXT,
    "fiscal_year": INT,
    "as_of": DATE,
    "started_at": TIMESTAMPTZ,
    "finished_at": TIMESTAMPTZ,
    "backend": TEXT,
    "mode": TEXT,
    "status": TEXT,
    "clients_processed": INT,
    "clients_skipped": INT,
    "rows_inserted": INT,
    "rows_updated": INT,
    "rows_deleted": INT,
    "rows_unchanged": INT,
    "orphans": INT,
    "territories": INT,
    "business_units": INT,
    "error": TEXT,
    "apac_compliance": NUMERIC,  # the APAC figure the run computed: the report's "change since the previous run"
}

SECTION3_TABLES: tuple[str, ...] = tuple(s.name for s in SOURCES) + tuple(t.name for t in TARGETS)
