"""SPEC §4 steps 5 and 6: each requirement's percentage, status and next due date, then each client's totals,
flags and monthly figures; :func:`rollup` is step 6's percentage over any group of clients."""

from __future__ import annotations

import collections
import decimal
import functools
from collections.abc import Callable, Iterable

from compliance_sync.domain.facts import EventCounts, Facts, Period, Plan
from compliance_sync.domain.findings import Findings, WarningCode
from compliance_sync.domain.provenance import Trace
from compliance_sync.domain.rules.arithmetic import due_counts, month_sums, rollup_percent, score
from compliance_sync.domain.rules.clients import latest_period
from compliance_sync.domain.rules.requirements import (
    excluded_pairs,
    required_counts,
    requirement_notes,
    without_exclusions,
)
from compliance_sync.domain.rules.shapes import Client
from compliance_sync.domain.thresholds import Status, Thresholds
from compliance_sync.domain.wanted import ClientRequirement


# --- steps 5 and 6: per requirement and per client ----------------------------------------------------------
def score_requirement(
    scored: Callable[[int, int], tuple], type_id: str, name: str | None, required: int, counts: EventCounts | None
) -> ClientRequirement:
    completed = sum(counts.completed) if counts else 0
    scheduled = sum(counts.scheduled) if counts else 0
    percent, status, next_due = scored(completed, required)
    return ClientRequirement(type_id, name, required, completed, scheduled, percent, status, next_due)


def score_client(
    name: str, segment: str, last: Period, requirements: list[ClientRequirement], counts: list[EventCounts | None]
) -> Client:
    """Step 6: credited totals (``min(c, r)`` per requirement), flags, and the client's monthly figures."""
    seen = [c for c in counts if c is not None]
    done, planned = month_sums(c.completed for c in seen), month_sums(c.scheduled for c in seen)
    due = month_sums(due_counts(r.required) for r in requirements)
    critical = any(r.status == Status.CRITICAL for r in requirements)
    return Client(
        name=name,
        segment=segment,
        cse_name=last.cse_name,
        client_uuid=last.client_uuid,
        requirements=requirements,
        completed_by_month=done,
        scheduled_by_month=planned,
        due_by_month=due,
        required_total=sum(r.required for r in requirements),
        credited_total=sum(min(r.completed, r.required) for r in requirements),
        is_critical=critical,
        is_at_risk=not critical and any(r.status == Status.AT_RISK for r in requirements),
    )


def rollup(members: Iterable[Client]) -> tuple[decimal.Decimal, int, int]:
    """Step 6 percentage over a group of clients, with the number of clients and of those below compliance."""
    required = credited = n = below = 0
    for c in members:
        required += c.required_total
        credited += c.credited_total
        n += 1
        below += c.below
    return rollup_percent(credited, required), n, below


def score_clients(
    facts: Facts,
    thresholds: Thresholds,
    plans: list[Plan],
    periods: dict[str, list[Period]],
    freq: dict[str, dict[str, int]],
    events: dict[tuple, EventCounts],
    tiers: dict[str, str],
    active: dict[str, str | None],
    found: Findings,
    trace: Trace | None = None,
) -> dict[str, Client]:
    """Steps 5 and 6 for every client of the plans in scope; a client without a valid period is reported and skipped."""
    fy = facts.fy
    scored = functools.lru_cache(maxsize=None)(functools.partial(score, fy, thresholds))  # few distinct (c, r)
    excluded = excluded_pairs(facts)
    needs_by_tiers: dict[frozenset[str], tuple] = {}
    plans_per_client = collections.Counter(p.client_name for p in plans)
    clients: dict[str, Client] = {}
    for name in sorted(plans_per_client):
        if not periods.get(name):
            found.add(
                WarningCode.CLIENTS_WITHOUT_SEGMENTATION,
                f"{name!r} ({plans_per_client[name]} plan(s)): no segment period in {fy.describe()}",
            )
            continue
        last = latest_period(periods[name])
        tier_set = frozenset(p.tier_id for p in periods[name])
        if tier_set not in needs_by_tiers:
            needs_by_tiers[tier_set] = required_counts(tier_set, active, freq)
        needs = without_exclusions(name, needs_by_tiers[tier_set], excluded)
        if trace is not None and trace.wants(name):
            trace.latest[name] = last
            trace.requirements[name] = requirement_notes(name, periods[name], tiers, facts, active, freq, needs)
        counts = [events.get((name, type_id)) for type_id, _, _ in needs]
        reqs = [score_requirement(scored, t, n, r, c) for (t, n, r), c in zip(needs, counts)]  # 5
        clients[name] = score_client(name, tiers[last.tier_id], last, reqs, counts)  # 6
    return clients
