"""SPEC §4 as pure functions: the facts of one FY in, the wanted rows of the four targets and the findings of
SPEC §6 out. No I/O, no Dagster. Percentages and statuses use integer arithmetic only.

Each numbered step of SPEC §4 is one function below; :func:`compute` chains them, data flowing one way.
Choices where the spec is silent (also in the README):
- findings about segment periods and completed-after-``as_of`` events are reported for the FY's plan
  clients only (the other rows never reach a figure);
- an event's client is *unknown* when its name is neither a plan client of the FY nor the client of a
  segment period overlapping the FY;
- a frequency above 366 is an error wherever it appears in ``tier_event_requirements``;
- a plan without a ``client_name`` is skipped and reported; a tier without a ``tier_name`` cannot give a
  segment, so its periods are ignored and reported like periods of an unknown tier.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from compliance_sync.domain.bu_map import RESERVED_BU, BuMap
from compliance_sync.domain.facts import EventCounts, Facts, Period, Plan, Strategy
from compliance_sync.domain.findings import RULE_WARNINGS, WARNINGS, Findings, Severity, WarningCode
from compliance_sync.domain.fiscal import FiscalYear, due_counts_by_month, due_month
from compliance_sync.domain.provenance import ExclusionNote, PeriodNote, RequirementNote, TierFrequency, Trace, possible_aliases
from compliance_sync.domain.thresholds import Status, Thresholds
from compliance_sync.domain.wanted import ClientRequirement, PlanRow, RequirementRows, WantedRows
from compliance_sync.errors import DataError

MAX_FREQUENCY = 366
ZERO_MONTHS = (0,) * 12


# --- arithmetic of SPEC §4.5 ---------------------------------------------------------------------------
def pct_hundredths(completed: int, required: int, cap: bool = True) -> int:
    """``floor((20000*c + r) / (2*r))``: exact half-up rounding to hundredths of a percent."""
    value = (20000 * completed + required) // (2 * required)
    return min(value, 20000) if cap else value


@functools.lru_cache(maxsize=65536)
def as_percent(hundredths: int) -> decimal.Decimal:
    return decimal.Decimal(hundredths).scaleb(-2)


def requirement_percent(completed: int, required: int) -> decimal.Decimal:
    return as_percent(pct_hundredths(completed, required, cap=True))


def rollup_percent(credited: int, required: int) -> decimal.Decimal:
    """Step 6: the uncapped formula on credited / required totals; 100.00 when nothing is required."""
    return as_percent(10000 if required == 0 else pct_hundredths(credited, required, cap=False))


def next_due_date(fy: FiscalYear, completed: int, required: int) -> dt.date | None:
    """The due date of the (c+1)-th required event: the last day of FY month ceil(12k/r); None when done."""
    return None if completed >= required else fy.month_end(due_month(completed + 1, required))


@functools.cache
def due_counts(required: int) -> tuple[int, ...]:
    return tuple(due_counts_by_month(required))


# --- the shapes between steps ----------------------------------------------------------------------------
@dataclasses.dataclass(slots=True)
class Client:
    """A client of step 1 with a valid segment period (step 2) and its figures (steps 3-6)."""

    name: str
    segment: str
    cse_name: str | None
    client_uuid: str | None
    requirements: list[ClientRequirement]
    completed_by_month: tuple[int, ...]  # the client's step-4 events, over its required types
    scheduled_by_month: tuple[int, ...]
    due_by_month: tuple[int, ...]
    required_total: int
    credited_total: int
    is_critical: bool
    is_at_risk: bool

    @property
    def below(self) -> bool:
        return self.is_critical or self.is_at_risk

    @property
    def percent(self) -> decimal.Decimal:
        return rollup_percent(self.credited_total, self.required_total)


@dataclasses.dataclass
class Territory:
    """Step 7: the used strategy of a CSE and its clients."""

    strategy: Strategy
    members: list[Client]


@dataclasses.dataclass
class Computation:
    """What one FY's rules produce: wanted rows, the client figures behind them, findings, counts."""

    fy: FiscalYear
    as_of: dt.date
    wanted: WantedRows
    clients: dict[str, Client]
    territories: dict[str, Territory]  # strategy id -> territory with at least one client
    bu_of_client: dict[str, str | None]  # client -> its BU (None: unassigned)
    findings: Findings
    stats: dict[str, int]
    trace: Trace | None = None  # the provenance recorded when asked (explain); None for a sync


def _fold(name: str) -> str:
    """A name with case and whitespace ignored (for the name-mismatch warning only)."""
    return "".join(str(name).split()).casefold()


def _text_key(value: Any) -> str:
    return "" if value is None else str(value)


# --- step 1: plans and clients ------------------------------------------------------------------------
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


# --- step 2: segment periods ------------------------------------------------------------------------------
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


def valid_periods(facts: Facts, clients: set[str], tiers: dict[str, str | None], found: Findings, trace: Trace | None = None) -> dict[str, list[Period]]:
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


# --- step 3: requirements ---------------------------------------------------------------------------------
def frequency_table(facts: Facts, tiers: dict[str, str | None], codes: dict[str, str], found: Findings) -> dict[str, dict[str, int]]:
    """tier_id -> {event_type_id: frequency}; null counts as 0, negative is reported and counts as 0,
    above 366 is an error naming the tier and the event type."""
    table: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for row in facts.requirements:
        freq = 0 if row.frequency is None else int(row.frequency)
        tier_label = tiers.get(row.tier_id) or row.tier_id
        type_label = codes.get(row.event_type_id) or row.event_type_id
        if freq > MAX_FREQUENCY:
            raise DataError(
                f"tier_event_requirements.frequency = {freq} for tier {tier_label!s} and event type "
                f"{type_label!s} is above {MAX_FREQUENCY} (events per year)"
            )
        if freq < 0:
            found.add(WarningCode.NEGATIVE_FREQUENCY, f"tier {tier_label}, event type {type_label}: frequency {freq}")
            freq = 0
        if row.tier_id is not None and row.event_type_id is not None:
            table[row.tier_id][row.event_type_id] = max(freq, table[row.tier_id].get(row.event_type_id, 0))
    return table


def exclusion_applies(reason: str | None) -> bool:
    """An exclusion removes its pair unless ``lower(reason)`` contains 'greyed out' (null or empty removes it)."""
    return reason is None or "greyed out" not in reason.lower()


def excluded_pairs(facts: Facts) -> set[tuple[str | None, str | None]]:
    """Pairs removed by ``client_event_exclusions`` unless ``lower(reason)`` contains 'greyed out'."""
    return {(row.client_name, row.event_type_id) for row in facts.exclusions or () if exclusion_applies(row.reason)}


def max_frequency(tier_ids: Iterable[str], type_id: str, freq: dict[str, dict[str, int]]) -> int:
    """``MAX(frequency)`` of one event type over the given tiers (0 when none requires it)."""
    return max((freq.get(tier, {}).get(type_id, 0) for tier in tier_ids), default=0)


def required_counts(tier_ids: frozenset[str], active: dict[str, str | None], freq: dict[str, dict[str, int]]) -> tuple[tuple[str, str | None, int], ...]:
    """``required = MAX(frequency)`` over the tiers of all the client's periods, keeping ``> 0``:
    (event type id, event name, required), in event type id order. Clients share tier sets, so
    :func:`compute` asks once per set."""
    return tuple((type_id, name, required) for type_id, name in active.items() if (required := max_frequency(tier_ids, type_id, freq)) > 0)


def requirement_notes(
    client: str, periods: list[Period], tiers: dict[str, str | None], facts: Facts, active: dict[str, str | None],
    freq: dict[str, dict[str, int]], needs: Sequence[tuple[str, str | None, int]],
) -> list[RequirementNote]:
    """The provenance of one client's step 3 (for ``explain``): per event type any of its tiers lists, each valid
    period's frequency, the maximum (:func:`max_frequency`, as :func:`required_counts` takes it), the exclusion
    rows and whether they apply; ``required`` is what the computation kept (``needs``)."""
    kept = {type_id: r for type_id, _, r in needs}
    names = {t.id: t.event_name for t in facts.event_types}
    rows = collections.defaultdict(list)
    for row in facts.exclusions or ():
        if row.client_name == client:
            rows[row.event_type_id].append(ExclusionNote(row.reason, exclusion_applies(row.reason)))
    ordered = sorted(periods, key=lambda p: (p.effective_from, p.id))
    listed = {type_id for p in ordered for type_id in freq.get(p.tier_id, {})} | set(rows) | set(kept)
    notes = []
    for type_id in sorted(t for t in listed if t is not None):
        sources = tuple(
            TierFrequency(p.id, p.tier_id, tiers.get(p.tier_id), p.effective_from, p.effective_to, max_frequency((p.tier_id,), type_id, freq)) for p in ordered
        )
        maximum = max_frequency({p.tier_id for p in ordered}, type_id, freq)
        notes.append(RequirementNote(type_id, names.get(type_id), type_id in active, sources, maximum, tuple(rows.get(type_id, ())), kept.get(type_id, 0)))
    return notes


def without_exclusions(client: str, needs: Sequence[tuple[str, str | None, int]], excluded: set) -> Sequence[tuple[str, str | None, int]]:
    """The client's requirements less its exclusions (``client_event_exclusions``)."""
    return [n for n in needs if (client, n[0]) not in excluded] if excluded else needs


# --- step 4: counting ---------------------------------------------------------------------------------------
def index_events(facts: Facts, codes: dict[str, str], known_clients: set[str], segmented: set[str], found: Findings) -> dict[tuple, EventCounts]:
    """Event counts per (client, event type); events of unknown types or clients, and completed-but-future
    events of the clients being computed, reported."""
    index: dict[tuple, EventCounts] = {}
    for e in facts.event_counts:
        if e.event_type_id is None or e.event_type_id not in codes:
            n = sum(e.completed) + sum(e.scheduled)
            kind = "a null event type" if e.event_type_id is None else f"unknown event type {e.event_type_id}"
            found.add(WarningCode.UNKNOWN_EVENTS, f"{n} event(s) of client {e.client_name!r} with {kind}")
            continue
        if e.client_name not in known_clients:
            n = sum(e.completed) + sum(e.scheduled)
            found.add(WarningCode.UNKNOWN_EVENTS, f"{n} event(s) of unknown client {e.client_name!r} ({codes[e.event_type_id]})")
            continue
        if e.completed_future and e.client_name in segmented:
            found.add(WarningCode.COMPLETED_FUTURE_EVENTS, f"{e.client_name}: {e.completed_future} {codes[e.event_type_id]} event(s) completed but dated after as_of")
        index[(e.client_name, e.event_type_id)] = e
    return index


# --- steps 5 and 6: per requirement and per client ------------------------------------------------------------
def score(fy: FiscalYear, thresholds: Thresholds, completed: int, required: int) -> tuple[decimal.Decimal, str, dt.date | None]:
    """SPEC §4.5 for one (completed, required): percentage, status, next due date."""
    return requirement_percent(completed, required), thresholds.status(completed, required).value, next_due_date(fy, completed, required)


def score_requirement(scored: Callable[[int, int], tuple], type_id: str, name: str | None, required: int, counts: EventCounts | None) -> ClientRequirement:
    completed = sum(counts.completed) if counts else 0
    scheduled = sum(counts.scheduled) if counts else 0
    percent, status, next_due = scored(completed, required)
    return ClientRequirement(type_id, name, required, completed, scheduled, percent, status, next_due)


def month_sums(rows: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    """Element-wise sum of twelve-month tuples."""
    return tuple(map(sum, zip(ZERO_MONTHS, *rows)))


def score_client(name: str, segment: str, last: Period, requirements: list[ClientRequirement], counts: list[EventCounts | None]) -> Client:
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


# --- step 7: territories ------------------------------------------------------------------------------------
def _annual(quarter: Any) -> bool:
    return quarter is None or str(quarter).strip() == ""


def _recency(value: Any) -> tuple[int, float]:
    """``updated_at`` in SPEC §4.7's order: null < -infinity < any time < infinity (PostgreSQL's infinite
    timestamps arrive as the text ``infinity`` / ``-infinity`` on both paths); a time without offset is UTC."""
    if value is None:
        return (0, 0.0)
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "-infinity":
            return (1, 0.0)
        if text in ("infinity", "+infinity"):
            return (3, 0.0)
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (2, value.timestamp())


def strategy_rank(s: Strategy) -> tuple:
    """The per-CSE tie-break's sort key: annual before quarterly, then latest ``updated_at`` (null oldest), then smallest id."""
    return (0 if _annual(s.quarter) else 1, *(-x for x in _recency(s.updated_at)), s.id)


def used_strategies(strategies: Iterable[Strategy], found: Findings, trace: Trace | None = None) -> dict[str, Strategy]:
    """Per CSE: annual before quarterly, then latest ``updated_at`` (null oldest), then smallest id."""
    by_cse: dict[str | None, list[Strategy]] = collections.defaultdict(list)
    for s in strategies:
        if s.status != "archived":
            by_cse[s.cse_name].append(s)
    used: dict[str, Strategy] = {}
    for cse, items in sorted(by_cse.items(), key=lambda kv: _text_key(kv[0])):
        if cse is None:
            for s in items:
                found.add(WarningCode.UNUSED_STRATEGIES, f"strategy {s.id} ({s.territory}) has no cse_name")
            continue
        items.sort(key=strategy_rank)
        used[cse] = items[0]
        if trace is not None:
            trace.strategies[cse] = list(items)
        for s in items[1:]:
            found.add(WarningCode.UNUSED_STRATEGIES, f"{cse}: strategy {s.id} ({s.territory}, quarter {s.quarter or 'annual'}) loses to {items[0].id}")
    return used


def assign_territories(fy: FiscalYear, clients: dict[str, Client], strategies: dict[str, Strategy], found: Findings) -> dict[str, Territory]:
    """A client belongs to the used strategy of its CSE; clients without one are unassigned (reported)."""
    territories: dict[str, Territory] = {}
    for c in clients.values():
        s = strategies.get(c.cse_name) if c.cse_name is not None else None
        if s is None:
            found.add(WarningCode.CLIENTS_WITHOUT_STRATEGY, f"{c.name!r}: CSE {c.cse_name!r} has no territory strategy for FY{fy.year}")
            continue
        territories.setdefault(s.id, Territory(s, [])).members.append(c)
    for cse, s in sorted(strategies.items(), key=lambda kv: kv[1].id):
        if s.id not in territories:
            found.add(WarningCode.UNUSED_STRATEGIES, f"{cse}: strategy {s.id} ({s.territory}) has no clients this FY")
    return dict(sorted(territories.items()))


def territory_row(fy: FiscalYear, t: Territory) -> dict[str, Any]:
    pct, n, _ = rollup(t.members)
    segments: dict[str, list[Client]] = collections.defaultdict(list)
    for c in t.members:
        segments[c.segment].append(c)
    breakdown = {}
    for seg in sorted(segments):
        group = segments[seg]
        breakdown[seg] = {
            "clients": len(group),
            "total_required": sum(c.required_total for c in group),
            "total_completed": sum(c.credited_total for c in group),
            "compliance": rollup(group)[0],
        }
    due = month_sums(c.due_by_month for c in t.members)
    done = month_sums(c.completed_by_month for c in t.members)
    planned = month_sums(c.scheduled_by_month for c in t.members)
    return {
        "territory_strategy_id": t.strategy.id,
        "fiscal_year": fy.year,
        "territory": t.strategy.territory,
        "cse_name": t.strategy.cse_name,
        "total_clients": n,
        "total_required_events": sum(c.required_total for c in t.members),
        "total_completed_events": sum(c.credited_total for c in t.members),
        "overall_compliance_percentage": pct,
        "clients_at_risk": sum(1 for c in t.members if c.is_at_risk),
        "clients_critical": sum(1 for c in t.members if c.is_critical),
        "segment_breakdown": breakdown,
        "monthly_capacity": {
            fy.month_label(j + 1): {"required": due[j], "completed": done[j], "scheduled": planned[j]} for j in range(12)
        },
    }


# --- step 8: business units -------------------------------------------------------------------------------------
def map_business_units(territories: dict[str, Territory], rows: dict[str, dict[str, Any]], bu_map: BuMap, found: Findings) -> dict[str, list[str]]:
    """BU -> the strategy ids of its territories; unmapped territories are reported and left out."""
    by_bu: dict[str, list[str]] = collections.defaultdict(list)
    for sid, t in territories.items():
        bu = bu_map.bu_for(t.strategy.cse_name, t.strategy.territory)
        if bu is None:
            found.add(WarningCode.UNMAPPED_TERRITORIES, f"territory {t.strategy.territory!r} (CSE {t.strategy.cse_name!r}, {rows[sid]['total_clients']} clients) maps to no business unit")
            continue
        if bu == RESERVED_BU:  # BuMap refuses it when loading; kept as a last line of defence
            raise DataError(f"BU map: '{RESERVED_BU}' is reserved and cannot be a business unit")
        by_bu[bu].append(sid)
    return dict(sorted(by_bu.items()))


def bu_row(fy: FiscalYear, bu: str, sids: list[str], territories: dict[str, Territory], rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pct, _, below = rollup(c for sid in sids for c in territories[sid].members)
    ordered = sorted(sids, key=lambda sid: (_text_key(rows[sid]["territory"]), _text_key(rows[sid]["cse_name"]), sid))
    return {
        "bu_name": bu,
        "fiscal_year": fy.year,
        "overall_compliance_percentage": pct,
        "clients_below_compliance": below,
        "territory_count": len(sids),
        "territory_data": [
            {
                "territory": rows[sid]["territory"],
                "cse_name": rows[sid]["cse_name"],
                "clients": rows[sid]["total_clients"],
                "compliance": rows[sid]["overall_compliance_percentage"],
            }
            for sid in ordered
        ],
    }


# --- step 9: APAC -------------------------------------------------------------------------------------------------
def apac_row(fy: FiscalYear, clients: dict[str, Client], bu_of_client: dict[str, str | None]) -> dict[str, Any]:
    groups: dict[str, list[Client]] = collections.defaultdict(list)
    for name, c in clients.items():
        groups[bu_of_client.get(name) or RESERVED_BU].append(c)
    order = sorted(b for b in groups if b != RESERVED_BU) + ([RESERVED_BU] if RESERVED_BU in groups else [])
    contributions = []
    for bu in order:
        pct, n, below = rollup(groups[bu])
        contributions.append({"bu_name": bu, "compliance": pct, "clients": n, "clients_below": below})
    pct, n, below = rollup(clients.values())
    return {
        "fiscal_year": fy.year,
        "actual_compliance": pct if n else None,
        "below_compliance_accounts": below,
        "bu_contributions": contributions,
    }


# --- data quality across tables -------------------------------------------------------------------------------------
def check_names(facts: Facts, plan_clients: set[str], found: Findings) -> None:
    seg_names = {p.client_name for p in facts.periods if p.client_name is not None}
    folded: dict[str, set[str]] = collections.defaultdict(set)
    for n in seg_names:
        folded[_fold(n)].add(n)
    others = plan_clients | {e.client_name for e in facts.event_counts if e.client_name}
    for name in sorted(others - seg_names):
        matches = folded.get(_fold(name))
        if matches:
            found.add(WarningCode.NAME_MISMATCHES, f"{name!r} matches {sorted(matches)!r} only when case or spaces are ignored")
    by_uuid: dict[str, set[str]] = collections.defaultdict(set)
    for p in facts.periods:
        if p.client_uuid is not None and p.client_name is not None:
            by_uuid[p.client_uuid].add(p.client_name)
    for uuid, names in sorted(by_uuid.items()):
        if len(names) > 1:
            found.add(WarningCode.NAME_MISMATCHES, f"client_uuid {uuid} is shared by different names {sorted(names)!r}")


def check_aliases(facts: Facts, plan_clients: set[str], found: Findings, trace: Trace | None = None) -> None:
    """SPEC §6 ``possible_alias``: event client names (in the FY window) that are not plan clients but nearly
    match one; reported with both names and the event count, never matched, no figure changes."""
    events: collections.Counter = collections.Counter()
    for e in facts.event_counts:
        if e.client_name is not None and e.client_name not in plan_clients:
            events[e.client_name] += sum(e.completed) + sum(e.scheduled)
    pairs = possible_aliases(events, plan_clients)
    for name, plan, n in pairs:
        found.add(WarningCode.POSSIBLE_ALIAS, f"{n} event(s) logged under {name!r} may belong to plan client {plan!r} (not counted)")
    if trace is not None:
        trace.aliases = pairs


def check_cache_drift(facts: Facts, codes: dict[str, str], found: Findings) -> None:
    actual = {(r.client_name, r.event_type_id, r.year): r.completed for r in facts.calendar_completed}
    for r in sorted(facts.compliance_cache, key=lambda r: (_text_key(r.client_name), _text_key(r.event_type_id), r.year or 0)):
        key = (r.client_name, r.event_type_id, r.year)
        real = actual.get(key, 0)
        if r.actual_count is None or int(r.actual_count) != real:
            found.add(WarningCode.COMPLIANCE_CACHE_DRIFT, f"{r.client_name} {codes.get(r.event_type_id) or r.event_type_id} {r.year}: cache says {r.actual_count}, events say {real}")


def report_undated(facts: Facts, found: Findings) -> None:
    for e in sorted(facts.undated_events, key=lambda e: e.id):
        found.add(WarningCode.UNDATED_EVENTS, f"event {e.id} of {e.client_name!r} has no event_date")


# --- the whole computation ------------------------------------------------------------------------------------------
def score_clients(
    facts: Facts, thresholds: Thresholds, plans: list[Plan], periods: dict[str, list[Period]], freq: dict[str, dict[str, int]],
    events: dict[tuple, EventCounts], tiers: dict[str, str], active: dict[str, str | None], found: Findings, trace: Trace | None = None,
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
            found.add(WarningCode.CLIENTS_WITHOUT_SEGMENTATION, f"{name!r} ({plans_per_client[name]} plan(s)): no segment period in {fy.describe()}")
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


def run_stats(plans: list[Plan], plan_clients: list[str], clients: dict[str, Client], bu_of_client: dict[str, str | None], wanted: WantedRows) -> dict[str, int]:
    """The counts of the run's summary (``sync.STAT_KEYS`` orders the ones the old script's report shows)."""
    return {
        "plans_in_scope": len(plans),
        "clients_processed": len(clients),
        "clients_skipped": len(plan_clients) - len(clients),
        "clients_at_risk": sum(1 for c in clients.values() if c.is_at_risk),
        "clients_critical": sum(1 for c in clients.values() if c.is_critical),
        "clients_compliant": sum(1 for c in clients.values() if not c.below),
        "clients_unassigned": sum(1 for name in clients if bu_of_client.get(name) is None),
        "requirement_rows": len(wanted.requirements),
        "territories": len(wanted.territories),
        "business_units": len(wanted.business_units),
    }


def compute(facts: Facts, thresholds: Thresholds, bu_map: BuMap, trace: Trace | None = None) -> Computation:
    """SPEC §4's steps in order, each one function; the findings they report; the wanted rows and counts.
    With a ``trace``, the steps also record the provenance of its clients' figures (``explain``)."""
    fy = facts.fy
    found = Findings({c: WARNINGS[c] for c in RULE_WARNINGS}, Severity.WARN)
    tiers = {t.id: t.tier_name for t in facts.tiers}
    codes = {t.id: t.event_code or t.event_name or t.id for t in facts.event_types}
    active = {t.id: t.event_name for t in sorted(facts.event_types, key=lambda t: t.id) if t.is_active is True}

    plans = plans_in_scope(facts.plans, found)  # 1
    plan_clients = sorted({p.client_name for p in plans})
    periods = valid_periods(facts, set(plan_clients), tiers, found, trace)  # 2
    freq = frequency_table(facts, tiers, codes, found)  # 3
    known = set(plan_clients) | {p.client_name for p in facts.periods}
    events = index_events(facts, codes, known, {n for n in plan_clients if periods.get(n)}, found)  # 4
    clients = score_clients(facts, thresholds, plans, periods, freq, events, tiers, active, found, trace)  # 5, 6

    territories = assign_territories(fy, clients, used_strategies(facts.strategies, found, trace), found)  # 7
    territory_rows = {sid: territory_row(fy, t) for sid, t in territories.items()}
    by_bu = map_business_units(territories, territory_rows, bu_map, found)  # 8
    bu_rows = [bu_row(fy, bu, sids, territories, territory_rows) for bu, sids in by_bu.items()]
    bu_of_client = {c.name: bu for bu, sids in by_bu.items() for sid in sids for c in territories[sid].members}
    apac = apac_row(fy, clients, bu_of_client)  # 9

    report_undated(facts, found)
    check_names(facts, set(plan_clients), found)
    check_aliases(facts, set(plan_clients), found, trace)
    check_cache_drift(facts, codes, found)

    requirement_rows = RequirementRows(
        fiscal_year=fy.year,
        plans=[PlanRow(p.id, p.client_id or clients[p.client_name].client_uuid, p.client_name) for p in plans if p.client_name in clients],
        segments={name: c.segment for name, c in clients.items()},
        by_client={name: c.requirements for name, c in clients.items()},
        event_ids=facts.event_ids,
    )
    wanted = WantedRows(fy.year, requirement_rows, list(territory_rows.values()), bu_rows, [apac])
    stats = run_stats(plans, plan_clients, clients, bu_of_client, wanted)
    return Computation(fy, facts.as_of, wanted, clients, territories, bu_of_client, found, stats, trace)
