"""A small builder for rule tests: describe a situation as table rows, get the rules' result.

Ids are readable, deterministic uuids (``uid("a1")``) so tests can state expected ordering.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from decimal import Decimal
from typing import Any

from compliance_sync.domain.bu_map import BuMap
from compliance_sync.domain.facts import facts_from_rows
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.rules import compute
from compliance_sync.domain.thresholds import Thresholds


def uid(label: str) -> str:
    """A stable uuid for a label; ``uid('00…')`` style ordering is not implied: compare uid() values."""
    return str(uuid.UUID(bytes=hashlib.md5(label.encode()).digest(), version=4))


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


class Scenario:
    def __init__(self, year: int = 2025, start_month: int = 1, as_of: str | None = None):
        self.fy = FiscalYear(year, start_month)
        self.as_of = d(as_of) if as_of else self.fy.end
        self.tiers: list[dict] = []
        self.types: list[dict] = []
        self.requirements: list[dict] = []
        self.periods: list[dict] = []
        self.plans: list[dict] = []
        self.strategies: list[dict] = []
        self.events: list[dict] = []
        self.exclusions: list[dict] | None = []
        self.cache: list[dict] = []
        self.bu_map = BuMap({}, {"VIC + NZ": "ANZ"})
        self.thresholds = Thresholds()

    # -- builders --------------------------------------------------------------------------------------
    def tier(self, name: str) -> str:
        self.tiers.append({"id": uid("tier:" + name), "tier_name": name})
        return uid("tier:" + name)

    def event_type(self, code: str, active: Any = True) -> str:
        self.types.append(
            {
                "id": uid("type:" + code),
                "event_name": code.title().replace("_", " "),
                "event_code": code,
                "is_active": active,
            }
        )
        return uid("type:" + code)

    def require(self, tier: str, code: str, frequency: Any) -> None:
        self.requirements.append(
            {"tier_id": uid("tier:" + tier), "event_type_id": uid("type:" + code), "frequency": frequency}
        )

    def period(
        self,
        client: str,
        tier: str | None,
        start: str,
        end: str | None = None,
        cse: str | None = "Kim Lee",
        label: str | None = None,
        client_uuid: str | None = None,
        tier_id: str | None = None,
    ) -> str:
        pid = uid(label or f"period:{client}:{start}")
        self.periods.append(
            {
                "id": pid,
                "client_name": client,
                "tier_id": tier_id if tier_id is not None else (uid("tier:" + tier) if tier else None),
                "cse_name": cse,
                "client_uuid": client_uuid,
                "effective_from": d(start),
                "effective_to": d(end) if end else None,
            }
        )
        return pid

    def plan(
        self, label: str, client: str, status: Any = "approved", client_id: str | None = None, year: int | None = None
    ) -> str:
        self.plans.append(
            {
                "id": uid(label),
                "client_id": client_id,
                "client_name": client,
                "fiscal_year": year or self.fy.year,
                "status": status,
            }
        )
        return uid(label)

    def strategy(
        self,
        label: str,
        cse: str,
        territory: str,
        quarter: Any = None,
        updated_at: Any = None,
        status: str = "approved",
        year: int | None = None,
    ) -> str:
        self.strategies.append(
            {
                "id": uid(label),
                "cse_name": cse,
                "territory": territory,
                "fiscal_year": year or self.fy.year,
                "quarter": quarter,
                "status": status,
                "updated_at": updated_at,
            }
        )
        return uid(label)

    def event(
        self,
        label: str,
        client: str,
        code: str | None,
        date: str | None,
        completed: Any = True,
        type_id: str | None = None,
    ) -> str:
        self.events.append(
            {
                "id": uid(label),
                "client_name": client,
                "event_type_id": type_id if type_id is not None else (uid("type:" + code) if code else None),
                "event_date": d(date) if date else None,
                "completed": completed,
            }
        )
        return uid(label)

    def exclude(self, client: str, code: str, reason: Any) -> None:
        assert self.exclusions is not None
        self.exclusions.append({"client_name": client, "event_type_id": uid("type:" + code), "reason": reason})

    # -- running --------------------------------------------------------------------------------------
    def facts(self):
        return facts_from_rows(
            self.fy,
            self.as_of,
            plans=self.plans,
            periods=self.periods,
            tiers=self.tiers,
            event_types=self.types,
            requirements=self.requirements,
            strategies=self.strategies,
            exclusions=self.exclusions,
            events=self.events,
            compliance_cache=self.cache,
        )

    def compute(self):
        return compute(self.facts(), self.thresholds, self.bu_map)


def rows(comp, table: str) -> list[dict]:
    return [dict(r) for r in comp.wanted.rows(table)]


# SPEC Appendix A's monthly_capacity, Jan…Dec: (required, completed, scheduled)
APPENDIX_A_CAPACITY = [
    (1, 1, 0),
    (1, 2, 0),
    (2, 2, 0),
    (2, 1, 0),
    (1, 2, 0),
    (2, 2, 0),
    (1, 0, 1),
    (2, 0, 1),
    (2, 0, 0),
    (1, 0, 0),
    (1, 0, 0),
    (3, 0, 0),
]


def appendix_a() -> Scenario:
    """SPEC Appendix A, FY2025, start month 1, as_of 2025-06-30."""
    s = Scenario(2025, 1, "2025-06-30")
    s.tier("Leverage")
    s.tier("Collaboration")
    for code in ("SLA_REVIEW", "INSIGHT_TP", "HEALTH_CHECK"):
        s.event_type(code)
    for code, lev, col in (("SLA_REVIEW", 2, 4), ("INSIGHT_TP", 4, 12), ("HEALTH_CHECK", 0, 3)):
        s.require("Leverage", code, lev)
        s.require("Collaboration", code, col)
    s.period("Alpha Health", "Leverage", "2023-01-01", "2025-03-31")
    s.period("Alpha Health", "Collaboration", "2025-04-01")
    s.plan("p1", "Alpha Health")
    s.strategy("ts1", "Kim Lee", "VIC + NZ")
    s.event("a1", "Alpha Health", "SLA_REVIEW", "2025-02-10")
    s.event("a2", "Alpha Health", "SLA_REVIEW", "2025-05-20")
    s.event("a3", "Alpha Health", "SLA_REVIEW", "2025-07-10")
    s.event("a4", "Alpha Health", "SLA_REVIEW", "2025-08-15", completed=False)
    for i in range(6):
        s.event(f"b{i}", "Alpha Health", "INSIGHT_TP", f"2025-{i + 1:02d}-15")
    s.event("b6", "Alpha Health", "INSIGHT_TP", "2025-06-25")
    s.event("c1", "Alpha Health", "HEALTH_CHECK", "2025-03-03")
    return s


# --- Appendix A's business-unit and APAC rows, for tests that build target rows by hand ----------------------
def bu_row(bu: str = "ANZ", fy: int = 2025, **over: Any) -> dict[str, Any]:
    row = {
        "bu_name": bu,
        "fiscal_year": fy,
        "overall_compliance_percentage": Decimal("52.63"),
        "clients_below_compliance": 1,
        "territory_count": 1,
        "territory_data": [
            {"territory": "VIC + NZ", "cse_name": "Kim Lee", "clients": 1, "compliance": Decimal("52.63")}
        ],
    }
    row.update(over)
    return row


def apac_row(fy: int = 2025, **over: Any) -> dict[str, Any]:
    row = {
        "fiscal_year": fy,
        "actual_compliance": Decimal("52.63"),
        "below_compliance_accounts": 1,
        "bu_contributions": [{"bu_name": "ANZ", "compliance": Decimal("52.63"), "clients": 1, "clients_below": 1}],
    }
    row.update(over)
    return row


# --- wanted rows by hand, for backend tests ---------------------------------------------------------------
def wanted_rows(fiscal_year: int = 2025, requirements=(), territories=(), business_units=(), apac=()):
    """:class:`WantedRows` from whole target rows (dicts). Requirement rows are factored back into plans and
    client requirements, as the rules hand them over; their ``linked_event_ids`` are left to the backend,
    which takes them from the FY's events it read."""
    from compliance_sync.domain.wanted import ClientRequirement, PlanRow, RequirementRows, WantedRows

    plans: dict[str, PlanRow] = {}
    segments: dict[str, str] = {}
    by_client: dict[str, list] = {}
    for r in requirements:
        plans.setdefault(r["plan_id"], PlanRow(r["plan_id"], r.get("client_id"), r["client_name"]))
        segments[r["client_name"]] = r["segment"]
        reqs = by_client.setdefault(r["client_name"], [])
        if not any(x.event_type_id == r["event_type_id"] for x in reqs):
            reqs.append(
                ClientRequirement(
                    r["event_type_id"],
                    r["event_type_name"],
                    r["required_count"],
                    r["completed_count"],
                    r["scheduled_count"],
                    r["compliance_percentage"],
                    r["status"],
                    r["next_due_date"],
                )
            )
    return WantedRows(
        fiscal_year,
        RequirementRows(fiscal_year, list(plans.values()), segments, by_client),
        [dict(t) for t in territories],
        [dict(b) for b in business_units],
        [dict(a) for a in apac],
    )
