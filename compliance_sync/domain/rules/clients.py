"""SPEC §4 steps 1 and 2: the plans in scope and their clients' valid segment periods (the others reported)."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from compliance_sync.domain.facts import Facts, Period, Plan
from compliance_sync.domain.findings import Findings, WarningCode
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.provenance import PeriodNote, Trace


# --- step 1: plans and clients ------------------------------------------------------------------------------
def plans_in_scope(plans: Iterable[Plan], found: Findings) -> list[Plan]:
    """``fiscal_year = FY`` (the backend filtered it) and ``status IS DISTINCT FROM 'archived'``."""
    scope = []
    for p in sorted(plans, key=lambda p: p.id):
        if p.status == "archived":
            continue
        if p.client_name is None:
            found.add(WarningCode.CLIENTS_WITHOUT_SEGMENTATION, f"plan {p.id} has no client_name")
            continue
        scope.append(p)
    return scope


# --- step 2: segment periods --------------------------------------------------------------------------------
def period_problem(p: Period, tiers: dict[str, str | None]) -> str | None:
    """Why a period overlapping the FY is ignored (SPEC §4.2), or None when it counts."""
    if p.effective_from is None:
        return "has a null effective_from"
    if p.effective_to is not None and p.effective_to < p.effective_from:
        return f"ends {p.effective_to} before it starts {p.effective_from}"
    if p.tier_id is None:
        return "has a null tier_id"
    if p.tier_id not in tiers:
        return f"has unknown tier_id {p.tier_id}"
    if tiers[p.tier_id] is None:
        return f"has tier {p.tier_id}, which has no tier_name"
    return None


def valid_periods(
    facts: Facts, clients: set[str], tiers: dict[str, str | None], found: Findings, trace: Trace | None = None
) -> dict[str, list[Period]]:
    """Per plan client, its periods overlapping the FY with a known, named tier; the others are reported."""
    fy = facts.fy
    by_client: dict[str, list[Period]] = collections.defaultdict(list)
    for p in facts.periods:
        if p.client_name not in clients or (p.effective_from is not None and p.effective_from > fy.end):
            continue
        if p.effective_to is not None and p.effective_to < fy.start:
            continue
        problem = period_problem(p, tiers)
        if problem:
            found.add(WarningCode.INVALID_SEGMENT_PERIODS, f"{p.client_name}: period {p.id} {problem}")
        else:
            by_client[p.client_name].append(p)
        if trace is not None and trace.wants(p.client_name):
            trace.periods[p.client_name].append(PeriodNote(p, tiers.get(p.tier_id) if p.tier_id else None, problem))
    for name in sorted(by_client):
        check_overlaps(name, by_client[name], fy, found)
    return by_client


def check_overlaps(name: str, periods: list[Period], fy: FiscalYear, found: Findings) -> None:
    open_ones = [p for p in periods if p.effective_to is None]
    if len(open_ones) > 1:
        found.add(WarningCode.OVERLAPPING_SEGMENT_PERIODS, f"{name}: {len(open_ones)} open periods")
        return
    ordered = sorted(periods, key=lambda p: (p.effective_from, p.id))
    for prev, nxt in zip(ordered, ordered[1:]):
        if nxt.effective_from <= min(prev.effective_to or fy.end, fy.end):
            found.add(
                WarningCode.OVERLAPPING_SEGMENT_PERIODS,
                f"{name}: period {prev.id} ({prev.effective_from}…{prev.effective_to or 'open'}) overlaps "
                f"{nxt.id} ({nxt.effective_from}…{nxt.effective_to or 'open'})",
            )
            return


def latest_period(periods: list[Period]) -> Period:
    """Greatest ``effective_from``, ties broken by the greatest id (uuid order = lower-case hex order)."""
    return max(periods, key=lambda p: (p.effective_from, p.id))
