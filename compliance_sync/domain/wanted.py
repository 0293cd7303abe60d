"""The wanted rows of the four targets for one FY: what the rules produce and the backends plan against.

Requirement rows are one per plan in scope × its client's requirements (SPEC §4.5); they are kept in that
factored form (plans, and requirements per client) and expanded on demand, so a backend may expand them
where it is cheapest: the direct backend joins the two in PostgreSQL, the REST backend iterates
:meth:`RequirementRows.__iter__`. ``linked_event_ids`` come from the facts when the facts carry event ids;
the direct backend fills them from the events in PostgreSQL instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from collections.abc import Iterator
from typing import Any, NamedTuple

from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TERRITORY


class ClientRequirement(NamedTuple):
    """One client requirement of SPEC §4.3-4.5 (the same for each of the client's plans)."""

    event_type_id: str
    event_type_name: str | None
    required: int
    completed: int
    scheduled: int
    percent: decimal.Decimal
    status: str
    next_due: dt.date | None


@dataclasses.dataclass(frozen=True, slots=True)
class PlanRow:
    """A plan in scope whose client was computed: ``client_id`` is the plan's, else the latest period's uuid."""

    plan_id: str
    client_id: str | None
    client_name: str


@dataclasses.dataclass
class RequirementRows:
    fiscal_year: int
    plans: list[PlanRow]
    segments: dict[str, str]  # client name -> segment (tier name of the latest period)
    by_client: dict[str, list[ClientRequirement]]
    event_ids: dict[tuple[str | None, str | None], list[str]] | None = None  # None: the backend fills them

    def __len__(self) -> int:
        return sum(len(self.by_client.get(p.client_name, ())) for p in self.plans)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ids = self.event_ids
        for p in self.plans:
            segment = self.segments[p.client_name]
            for r in self.by_client.get(p.client_name, ()):
                yield {
                    "plan_id": p.plan_id,
                    "event_type_id": r.event_type_id,
                    "fiscal_year": self.fiscal_year,
                    "client_id": p.client_id,
                    "client_name": p.client_name,
                    "segment": segment,
                    "event_type_name": r.event_type_name,
                    "required_count": r.required,
                    "completed_count": r.completed,
                    "scheduled_count": r.scheduled,
                    "compliance_percentage": r.percent,
                    "status": r.status,
                    "next_due_date": r.next_due,
                    "linked_event_ids": None if ids is None else list(ids.get((p.client_name, r.event_type_id), ())),
                }


@dataclasses.dataclass
class WantedRows:
    fiscal_year: int
    requirements: RequirementRows
    territories: list[dict[str, Any]]
    business_units: list[dict[str, Any]]
    apac: list[dict[str, Any]]

    def rows(self, table: str) -> Any:
        """The rows of one target (an iterable of dicts: key + owned columns)."""
        return {
            REQUIREMENTS: self.requirements,
            TERRITORY: self.territories,
            BUSINESS_UNIT: self.business_units,
            APAC: self.apac,
        }[table]

    def count(self, table: str) -> int:
        return len(self.rows(table))


def longest_texts(wanted: WantedRows) -> dict[tuple[str, str], tuple[int, str]]:
    """(target, text column) -> (length, value) of the longest value about to be written (for varchar(n))."""
    from compliance_sync.domain.tables import TARGETS, TEXT

    out: dict[tuple[str, str], tuple[int, str]] = {}

    def see(table: str, column: str, values: Any) -> None:
        best = max((v for v in values if isinstance(v, str)), key=len, default=None)
        if best is not None:
            out[(table, column)] = (len(best), best)

    req = wanted.requirements
    see(REQUIREMENTS, "client_name", (p.client_name for p in req.plans))
    see(REQUIREMENTS, "segment", req.segments.values())
    see(REQUIREMENTS, "event_type_name", (r.event_type_name for rs in req.by_client.values() for r in rs))
    see(REQUIREMENTS, "status", (r.status for rs in req.by_client.values() for r in rs))
    for target in TARGETS:
        if target.name == REQUIREMENTS:
            continue
        for column, kind in target.types.items():
            if kind == TEXT:
                see(target.name, column, (row.get(column) for row in wanted.rows(target.name)))
    return out
