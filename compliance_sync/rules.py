"""SPEC §4 as pure functions: the facts of one FY in, the wanted rows of the four targets and the
findings of SPEC §6 out. No I/O, no Dagster. Percentages and statuses use integer arithmetic only.

Each numbered step of SPEC §4 has one function below; :func:`compute` chains them.
Choices where the spec is silent (documented here and in the README):
- data-quality findings about segment periods and completed-after-``as_of`` events are reported for the
  clients of the FY's plans only (the other rows never reach a figure);
- an event's client is *unknown* when its name is neither a plan client of the FY nor a client of any
  segment period overlapping the FY;
- a frequency above 366 is an error wherever it appears in ``tier_event_requirements``.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import functools
from typing import Any, Iterable

import pandas as pd

from compliance_sync.fiscal import FiscalYear, due_counts_by_month, due_month
from compliance_sync.model import (
    APAC,
    FACT_COLUMNS,
    BUSINESS_UNIT,
    REQUIREMENTS,
    TARGET_BY_NAME,
    TERRITORY,
    DataError,
    Facts,
    Finding,
    records,
)
from compliance_sync.settings import RESERVED_BU, BuMap, Thresholds

MAX_FREQUENCY = 366
HUNDRED = decimal.Decimal("100.00")

# The warnings of SPEC §6, one Dagster check each (code -> description).
WARNINGS: dict[str, str] = {
    "invalid_segment_periods": "Segment periods ignored: null or unknown tier_id, or effective_to before effective_from",
    "overlapping_segment_periods": "Clients with overlapping segment periods within the FY, or several open ones",
    "clients_without_segmentation": "Plans whose client has no valid segment period in the FY (client skipped)",
    "negative_frequency": "tier_event_requirements rows with a negative frequency (treated as 0)",
    "undated_events": "Events with a null event_date (ignored)",
    "unknown_events": "Events of an unknown (or null) event type or of an unknown client (ignored)",
    "completed_future_events": "Events marked completed but dated after as_of (counted as scheduled)",
    "unmapped_territories": "Territories the BU map does not map (left out of business-unit rows)",
    "clients_without_strategy": "Clients whose CSE has no territory strategy this FY (unassigned: APAC only)",
    "unused_strategies": "Territory strategies without clients, or losing the per-CSE tie-break",
    "name_mismatches": "Names that match only when case or spaces are ignored; different names sharing a client_uuid",
    "orphans": "Target rows the run did not compute but kept because they carry data the job does not own",
    "compliance_cache_drift": "segmentation_event_compliance disagrees with the events of that calendar year",
}


# --- arithmetic of SPEC §4.5 ---------------------------------------------------------------------------
def pct_hundredths(completed: int, required: int, cap: bool = True) -> int:
    """``floor((20000*c + r) / (2*r))``: exact half-up rounding to hundredths of a percent."""
    value = (20000 * completed + required) // (2 * required)
    return min(value, 20000) if cap else value


def as_percent(hundredths: int) -> decimal.Decimal:
    return decimal.Decimal(hundredths).scaleb(-2)


def requirement_percent(completed: int, required: int) -> decimal.Decimal:
    return as_percent(pct_hundredths(completed, required, cap=True))


def rollup_percent(credited: int, required: int) -> decimal.Decimal:
    """Step 6: uncapped formula on credited / required totals; 100.00 when nothing is required."""
    if required == 0:
        return HUNDRED
    return as_percent(pct_hundredths(credited, required, cap=False))


def next_due_date(fy: FiscalYear, completed: int, required: int) -> dt.date | None:
    if completed >= required:
        return None
    return fy.month_end(due_month(completed + 1, required))


# --- intermediate shapes -----------------------------------------------------------------------------
@dataclasses.dataclass
class Period:
    id: str
    client_name: str
    tier_id: str | None
    cse_name: str | None
    client_uuid: str | None
    effective_from: dt.date | None
    effective_to: dt.date | None


@dataclasses.dataclass
class Requirement:
    event_type_id: str
    event_type_name: str
    required: int
    completed: int = 0
    scheduled: int = 0
    event_ids: list[str] = dataclasses.field(default_factory=list)
    completed_by_month: list[int] = dataclasses.field(default_factory=lambda: [0] * 12)
    scheduled_by_month: list[int] = dataclasses.field(default_factory=lambda: [0] * 12)
    percent: decimal.Decimal = HUNDRED
    status: str = ""
    next_due: dt.date | None = None


@dataclasses.dataclass
class Client:
    name: str
    segment: str
    cse_name: str | None
    client_uuid: str | None
    tier_ids: set[str]
    requirements: list[Requirement] = dataclasses.field(default_factory=list)
    required_total: int = 0
    credited_total: int = 0
    percent: decimal.Decimal = HUNDRED
    is_critical: bool = False
    is_at_risk: bool = False
    strategy_id: str | None = None
    bu_name: str | None = None

    @property
    def below(self) -> bool:
        return self.is_critical or self.is_at_risk


@dataclasses.dataclass
class Computation:
    """What one FY's rules produce: wanted rows per target, client figures, findings, summary counts."""

    fy: FiscalYear
    as_of: dt.date
    rows: dict[str, list[dict[str, Any]]]  # per target, the wanted rows: what the diff, invariants and writer use
    clients: dict[str, Client]
    territories: dict[str, dict[str, Any]]  # strategy id -> the territory row, plus "clients": [names]
    findings: dict[str, Finding]
    stats: dict[str, int]

    @functools.cached_property
    def wanted(self) -> dict[str, pd.DataFrame]:
        """The wanted rows as frames (key + owned columns, object dtype), for previews and reports."""
        return {name: _frame(name, items) for name, items in self.rows.items()}


class _Findings(dict):
    def add(self, code: str, example: str) -> None:
        self[code].add(example)


def _new_findings() -> _Findings:
    found = _Findings()
    for code, description in WARNINGS.items():
        found[code] = Finding(code, "WARN", description)
    return found


class Rows:
    """The facts' frames as lists of dicts, converted once per computation."""

    def __init__(self, facts: Facts) -> None:
        for name in FACT_COLUMNS:
            frame = getattr(facts, name)
            setattr(self, name, None if frame is None else records(frame))


def _id(value: Any) -> str | None:
    return None if value is None else str(value).lower()


def _date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, pd.Timestamp):
        return value.date()
    return value


def _fold(name: str) -> str:
    """A name with case and whitespace ignored (for the name-mismatch warning only)."""
    return "".join(str(name).split()).casefold()


# --- step 1: plans and clients ------------------------------------------------------------------------
def plans_in_scope(rows: Rows) -> list[dict[str, Any]]:
    """``fiscal_year = FY`` (the backend filtered it) and ``status IS DISTINCT FROM 'archived'``."""
    plans = []
    for p in rows.plans:
        if p.get("status") == "archived":
            continue
        plans.append({"id": _id(p["id"]), "client_id": _id(p.get("client_id")), "client_name": p["client_name"]})
    return plans


# --- step 2: segment periods ----------------------------------------------------------------------------
def client_periods(
    rows: Rows, fy: FiscalYear, clients: Iterable[str], tiers: dict[str, str], found: _Findings
) -> dict[str, list[Period]]:
    """Valid periods overlapping the FY per client; invalid ones are reported for plan clients."""
    wanted = set(clients)
    by_client: dict[str, list[Period]] = collections.defaultdict(list)
    for row in rows.periods:
        p = Period(
            id=_id(row["id"]),
            client_name=row["client_name"],
            tier_id=_id(row.get("tier_id")),
            cse_name=row.get("cse_name"),
            client_uuid=_id(row.get("client_uuid")),
            effective_from=_date(row.get("effective_from")),
            effective_to=_date(row.get("effective_to")),
        )
        if p.client_name not in wanted:
            continue
        if p.effective_from is None or p.effective_from > fy.end:
            continue
        if p.effective_to is not None and p.effective_to < fy.start:
            continue
        if p.effective_to is not None and p.effective_to < p.effective_from:
            found.add("invalid_segment_periods", f"{p.client_name}: period {p.id} ends {p.effective_to} before it starts {p.effective_from}")
            continue
        if p.tier_id is None:
            found.add("invalid_segment_periods", f"{p.client_name}: period {p.id} has a null tier_id")
            continue
        if p.tier_id not in tiers:
            found.add("invalid_segment_periods", f"{p.client_name}: period {p.id} has unknown tier_id {p.tier_id}")
            continue
        by_client[p.client_name].append(p)
    for name, periods in by_client.items():
        _check_overlaps(name, periods, fy, found)
    return by_client


def _check_overlaps(name: str, periods: list[Period], fy: FiscalYear, found: _Findings) -> None:
    open_ones = [p for p in periods if p.effective_to is None]
    if len(open_ones) > 1:
        found.add("overlapping_segment_periods", f"{name}: {len(open_ones)} open periods")
        return
    ordered = sorted(periods, key=lambda p: (p.effective_from, p.id))
    for prev, nxt in zip(ordered, ordered[1:]):
        prev_end = prev.effective_to or fy.end
        if nxt.effective_from <= min(prev_end, fy.end):
            found.add(
                "overlapping_segment_periods",
                f"{name}: period {prev.id} ({prev.effective_from}…{prev.effective_to or 'open'}) overlaps "
                f"{nxt.id} ({nxt.effective_from}…{nxt.effective_to or 'open'})",
            )
            return


def latest_period(periods: list[Period]) -> Period:
    """Greatest ``effective_from``, ties broken by the greatest id (uuid order = lowercase hex order)."""
    return max(periods, key=lambda p: (p.effective_from, p.id))


# --- step 3: requirements ---------------------------------------------------------------------------------
def frequency_table(rows: Rows, tiers: dict[str, str], types: dict[str, dict], found: _Findings) -> dict[str, dict[str, int]]:
    """tier_id -> {event_type_id: frequency}; null counts as 0, negative is reported and counts as 0."""
    table: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for row in rows.requirements:
        tier_id, type_id, freq = _id(row.get("tier_id")), _id(row.get("event_type_id")), row.get("frequency")
        freq = 0 if freq is None else int(freq)
        tier_label = tiers.get(tier_id, tier_id)
        type_label = types.get(type_id, {}).get("event_code") or type_id
        if freq > MAX_FREQUENCY:
            raise DataError(
                f"tier_event_requirements.frequency = {freq} for tier {tier_label!s} and event type "
                f"{type_label!s} is above {MAX_FREQUENCY} (events per year)"
            )
        if freq < 0:
            found.add("negative_frequency", f"tier {tier_label}, event type {type_label}: frequency {freq}")
            freq = 0
        if tier_id is None or type_id is None:
            continue
        table[tier_id][type_id] = max(freq, table[tier_id].get(type_id, 0))
    return table


def excluded_pairs(rows: Rows) -> set[tuple[str, str]]:
    """Pairs removed by ``client_event_exclusions`` unless ``lower(reason)`` contains 'greyed out'."""
    pairs = set()
    for row in rows.exclusions or []:
        reason = row.get("reason")
        if reason is not None and "greyed out" in str(reason).lower():
            continue
        pairs.add((row.get("client_name"), _id(row.get("event_type_id"))))
    return pairs


def client_requirements(
    client: str,
    tier_ids: set[str],
    active_types: dict[str, dict],
    freq: dict[str, dict[str, int]],
    excluded: set[tuple[str, str]],
) -> list[Requirement]:
    """``required = MAX(frequency)`` over the tiers of all the client's periods, keeping ``> 0``."""
    out = []
    for type_id, t in active_types.items():
        required = max((freq.get(tier, {}).get(type_id, 0) for tier in tier_ids), default=0)
        if required <= 0 or (client, type_id) in excluded:
            continue
        out.append(Requirement(type_id, t["event_name"], required))
    return out


# --- step 4: counting ---------------------------------------------------------------------------------------
def event_index(
    rows: Rows, types: dict[str, dict], known_clients: set[str], in_scope: set[str], found: _Findings
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Event facts per (client, event type), month order; unknown types / clients reported."""
    index: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows.event_facts:
        client, type_id = row.get("client_name"), _id(row.get("event_type_id"))
        n = int(row.get("completed") or 0) + int(row.get("scheduled") or 0)
        if type_id is None or type_id not in types:
            found.add("unknown_events", f"{n} event(s) of client {client!r} with {'null' if type_id is None else 'unknown'} event type {type_id or ''}".rstrip())
            continue
        if client not in known_clients:
            found.add("unknown_events", f"{n} event(s) of unknown client {client!r} ({types[type_id]['event_code']})")
            continue
        future = int(row.get("completed_future") or 0)
        if future and client in in_scope:
            found.add(
                "completed_future_events",
                f"{client}: {future} {types[type_id]['event_code']} event(s) completed but dated after as_of (FY month {row['fy_month']})",
            )
        index[(client, type_id)].append(row)
    for rows in index.values():
        rows.sort(key=lambda r: int(r["fy_month"]))
    return index


def count_events(req: Requirement, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        j = int(row["fy_month"]) - 1
        c, s = int(row.get("completed") or 0), int(row.get("scheduled") or 0)
        req.completed += c
        req.scheduled += s
        req.completed_by_month[j] += c
        req.scheduled_by_month[j] += s
        ids = row.get("event_ids") or []
        req.event_ids.extend(_id(i) for i in ids)


# --- steps 5 and 6: per requirement and per client --------------------------------------------------------
def score_requirement(req: Requirement, fy: FiscalYear, thresholds: Thresholds) -> None:
    req.percent = requirement_percent(req.completed, req.required)
    req.status = thresholds.status(req.completed, req.required)
    req.next_due = next_due_date(fy, req.completed, req.required)


def score_client(client: Client) -> None:
    client.required_total = sum(r.required for r in client.requirements)
    client.credited_total = sum(min(r.completed, r.required) for r in client.requirements)
    client.percent = rollup_percent(client.credited_total, client.required_total)
    client.is_critical = any(r.status == "critical" for r in client.requirements)
    client.is_at_risk = not client.is_critical and any(r.status == "at_risk" for r in client.requirements)


# --- step 7: territories ------------------------------------------------------------------------------------
def _annual(quarter: Any) -> bool:
    return quarter is None or str(quarter).strip() == ""


def used_strategies(rows: Rows, found: _Findings) -> dict[str, dict[str, Any]]:
    """Per CSE: annual before quarterly, then latest ``updated_at`` (null oldest), then smallest id."""
    by_cse: dict[Any, list[dict[str, Any]]] = collections.defaultdict(list)
    for s in rows.strategies:
        if s.get("status") == "archived":
            continue
        s = dict(s, id=_id(s["id"]))
        by_cse[s.get("cse_name")].append(s)
    used: dict[str, dict[str, Any]] = {}
    for cse, items in by_cse.items():
        if cse is None:
            for s in items:
                found.add("unused_strategies", f"strategy {s['id']} ({s.get('territory')}) has no cse_name")
            continue

        def rank(s: dict[str, Any]):
            ts = s.get("updated_at")
            stamp = pd.Timestamp(ts).timestamp() if ts is not None else float("-inf")
            return (0 if _annual(s.get("quarter")) else 1, -stamp, s["id"])

        items.sort(key=rank)
        used[cse] = items[0]
        for s in items[1:]:
            found.add(
                "unused_strategies",
                f"{cse}: strategy {s['id']} ({s.get('territory')}, quarter {s.get('quarter') or 'annual'}) loses to {items[0]['id']}",
            )
    return used


@functools.lru_cache(maxsize=None)
def _due_counts(required: int) -> tuple[int, ...]:
    return tuple(due_counts_by_month(required))


def _breakdown_entry() -> dict[str, int]:
    return {"clients": 0, "total_required": 0, "total_completed": 0}


def territory_row(fy: FiscalYear, strategy: dict[str, Any], members: list[Client]) -> dict[str, Any]:
    required = sum(c.required_total for c in members)
    credited = sum(c.credited_total for c in members)
    segments: dict[str, dict[str, int]] = {}
    for c in members:
        e = segments.setdefault(c.segment, _breakdown_entry())
        e["clients"] += 1
        e["total_required"] += c.required_total
        e["total_completed"] += c.credited_total
    breakdown = {
        seg: dict(e, compliance=rollup_percent(e["total_completed"], e["total_required"]))
        for seg, e in sorted(segments.items())
    }
    due, done, planned = [0] * 12, [0] * 12, [0] * 12
    for c in members:
        for r in c.requirements:
            for j, n in enumerate(_due_counts(r.required)):
                due[j] += n
            for j in range(12):
                done[j] += r.completed_by_month[j]
                planned[j] += r.scheduled_by_month[j]
    capacity = {fy.month_label(j + 1): {"required": due[j], "completed": done[j], "scheduled": planned[j]} for j in range(12)}
    return {
        "territory_strategy_id": strategy["id"],
        "fiscal_year": fy.year,
        "territory": strategy.get("territory"),
        "cse_name": strategy.get("cse_name"),
        "total_clients": len(members),
        "total_required_events": required,
        "total_completed_events": credited,
        "overall_compliance_percentage": rollup_percent(credited, required),
        "clients_at_risk": sum(1 for c in members if c.is_at_risk),
        "clients_critical": sum(1 for c in members if c.is_critical),
        "segment_breakdown": breakdown,
        "monthly_capacity": capacity,
    }


def _text_key(value: Any) -> str:
    return "" if value is None else str(value)


# --- steps 8 and 9: business units and APAC -------------------------------------------------------------------
def rollup(members: list[Client]) -> tuple[decimal.Decimal, int]:
    required = sum(c.required_total for c in members)
    credited = sum(c.credited_total for c in members)
    return rollup_percent(credited, required), sum(1 for c in members if c.below)


def bu_rows(
    fy: FiscalYear, territories: dict[str, dict[str, Any]], clients: dict[str, Client], bu_map: BuMap, found: _Findings
) -> list[dict[str, Any]]:
    by_bu: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for sid, t in territories.items():
        bu = bu_map.bu_for(t["cse_name"], t["territory"])
        if bu is None:
            found.add("unmapped_territories", f"territory {t['territory']!r} (CSE {t['cse_name']!r}, {t['total_clients']} clients) maps to no business unit")
            continue
        if bu == RESERVED_BU:  # BuMap validation refuses it; kept as a last line of defence
            raise DataError(f"BU map: '{RESERVED_BU}' is reserved and cannot be a business unit")
        by_bu[bu].append(t)
        for name in t["clients"]:
            clients[name].bu_name = bu
    rows = []
    for bu in sorted(by_bu):
        terrs = by_bu[bu]
        members = [clients[n] for t in terrs for n in t["clients"]]
        pct, below = rollup(members)
        data = sorted(
            (
                {
                    "territory": t["territory"],
                    "cse_name": t["cse_name"],
                    "clients": t["total_clients"],
                    "compliance": t["overall_compliance_percentage"],
                    "_id": t["territory_strategy_id"],
                }
                for t in terrs
            ),
            key=lambda d: (_text_key(d["territory"]), _text_key(d["cse_name"]), d["_id"]),
        )
        for d in data:
            del d["_id"]
        rows.append(
            {
                "bu_name": bu,
                "fiscal_year": fy.year,
                "overall_compliance_percentage": pct,
                "clients_below_compliance": below,
                "territory_count": len(terrs),
                "territory_data": data,
            }
        )
    return rows


def apac_row(fy: FiscalYear, clients: dict[str, Client]) -> dict[str, Any]:
    members = list(clients.values())
    by_bu: dict[str, list[Client]] = collections.defaultdict(list)
    unassigned: list[Client] = []
    for c in members:
        (by_bu[c.bu_name] if c.bu_name is not None else unassigned).append(c)
    contributions = []
    for bu in sorted(by_bu):
        pct, below = rollup(by_bu[bu])
        contributions.append({"bu_name": bu, "compliance": pct, "clients": len(by_bu[bu]), "clients_below": below})
    if unassigned:
        pct, below = rollup(unassigned)
        contributions.append({"bu_name": RESERVED_BU, "compliance": pct, "clients": len(unassigned), "clients_below": below})
    pct, below = rollup(members) if members else (None, 0)
    return {
        "fiscal_year": fy.year,
        "actual_compliance": pct,
        "below_compliance_accounts": below,
        "bu_contributions": contributions,
    }


# --- data quality that needs several tables --------------------------------------------------------------------
def check_names(rows: Rows, plan_clients: set[str], found: _Findings) -> None:
    seg_names = {r["client_name"] for r in rows.periods if r.get("client_name") is not None}
    folded = collections.defaultdict(set)
    for n in seg_names:
        folded[_fold(n)].add(n)
    others = set(plan_clients) | {r["client_name"] for r in rows.event_facts if r.get("client_name")}
    for name in sorted(others - seg_names):
        matches = folded.get(_fold(name))
        if matches:
            found.add("name_mismatches", f"{name!r} matches {sorted(matches)!r} only when case or spaces are ignored")
    by_uuid = collections.defaultdict(set)
    for r in rows.periods:
        if r.get("client_uuid") is not None and r.get("client_name") is not None:
            by_uuid[_id(r["client_uuid"])].add(r["client_name"])
    for uid, names in sorted(by_uuid.items()):
        if len(names) > 1:
            found.add("name_mismatches", f"client_uuid {uid} is shared by different names {sorted(names)!r}")


def check_cache_drift(rows: Rows, types: dict[str, dict], found: _Findings) -> None:
    actual = {
        (r["client_name"], _id(r["event_type_id"]), int(r["year"])): int(r.get("completed") or 0)
        for r in rows.calendar_completed
    }
    for r in rows.compliance_cache:
        key = (r["client_name"], _id(r.get("event_type_id")), int(r["year"]))
        cached = r.get("actual_count")
        real = actual.get(key, 0)
        if cached is None or int(cached) != real:
            code = types.get(key[1], {}).get("event_code") or key[1]
            found.add("compliance_cache_drift", f"{key[0]} {code} {key[2]}: cache says {cached}, events say {real}")


# --- the whole computation ------------------------------------------------------------------------------------
def compute(facts: Facts, fy: FiscalYear, thresholds: Thresholds, bu_map: BuMap) -> Computation:
    found = _new_findings()
    rows = Rows(facts)
    tiers = {_id(t["id"]): t["tier_name"] for t in rows.tiers}
    types = {_id(t["id"]): t for t in rows.event_types}
    active = {tid: t for tid, t in sorted(types.items(), key=lambda kv: kv[0]) if t.get("is_active") is True}

    # step 1
    plans = plans_in_scope(rows)
    plans_per_client = collections.Counter(p["client_name"] for p in plans)
    plan_clients = list(plans_per_client)  # first-seen order

    # step 2
    periods = client_periods(rows, fy, plan_clients, tiers, found)
    # step 3
    freq = frequency_table(rows, tiers, types, found)
    excluded = excluded_pairs(rows)

    clients: dict[str, Client] = {}
    for name in plan_clients:
        ps = periods.get(name)
        if not ps:
            found.add("clients_without_segmentation", f"{name!r} ({plans_per_client[name]} plan(s)): no segment period in {fy.describe()}")
            continue
        last = latest_period(ps)
        tier_ids = {p.tier_id for p in ps}
        clients[name] = Client(
            name=name,
            segment=tiers[last.tier_id],
            cse_name=last.cse_name,
            client_uuid=last.client_uuid,
            tier_ids=tier_ids,
            requirements=client_requirements(name, tier_ids, active, freq, excluded),
        )

    # step 4-6
    known_clients = set(plan_clients) | {r["client_name"] for r in rows.periods}
    events = event_index(rows, types, known_clients, set(clients), found)
    for c in clients.values():
        for req in c.requirements:
            count_events(req, events.get((c.name, req.event_type_id), []))
            score_requirement(req, fy, thresholds)
        score_client(c)

    requirement_rows = []
    for p in plans:
        c = clients.get(p["client_name"])
        if c is None:
            continue
        for req in c.requirements:
            requirement_rows.append(
                {
                    "plan_id": p["id"],
                    "event_type_id": req.event_type_id,
                    "fiscal_year": fy.year,
                    "client_id": p["client_id"] or c.client_uuid,
                    "client_name": p["client_name"],
                    "segment": c.segment,
                    "event_type_name": req.event_type_name,
                    "required_count": req.required,
                    "completed_count": req.completed,
                    "scheduled_count": req.scheduled,
                    "compliance_percentage": req.percent,
                    "status": req.status,
                    "next_due_date": req.next_due,
                    "linked_event_ids": list(req.event_ids),
                }
            )

    # step 7
    strategies = used_strategies(rows, found)
    members: dict[str, list[Client]] = collections.defaultdict(list)
    for c in clients.values():
        s = strategies.get(c.cse_name) if c.cse_name is not None else None
        if s is None:
            found.add("clients_without_strategy", f"{c.name!r}: CSE {c.cse_name!r} has no territory strategy for FY{fy.year}")
            continue
        c.strategy_id = s["id"]
        members[s["id"]].append(c)
    territories: dict[str, dict[str, Any]] = {}
    for cse, s in sorted(strategies.items(), key=lambda kv: kv[1]["id"]):
        if not members.get(s["id"]):
            found.add("unused_strategies", f"{cse}: strategy {s['id']} ({s.get('territory')}) has no clients this FY")
            continue
        row = territory_row(fy, s, members[s["id"]])
        territories[s["id"]] = dict(row, clients=[c.name for c in members[s["id"]]])

    # steps 8-9
    business_units = bu_rows(fy, territories, clients, bu_map, found)
    apac = apac_row(fy, clients)

    # data quality across tables
    for r in rows.undated_events:
        found.add("undated_events", f"event {_id(r['id'])} of {r.get('client_name')!r} has no event_date")
    check_names(rows, set(plan_clients), found)
    check_cache_drift(rows, types, found)

    wanted_rows = {
        REQUIREMENTS: requirement_rows,
        TERRITORY: [{k: v for k, v in t.items() if k != "clients"} for t in territories.values()],
        BUSINESS_UNIT: business_units,
        APAC: [apac],
    }
    stats = {
        "plans_in_scope": len(plans),
        "clients_processed": len(clients),
        "clients_skipped": len(plan_clients) - len(clients),
        "clients_at_risk": sum(1 for c in clients.values() if c.is_at_risk),
        "clients_critical": sum(1 for c in clients.values() if c.is_critical),
        "clients_compliant": sum(1 for c in clients.values() if not c.below),
        "clients_unassigned": sum(1 for c in clients.values() if c.bu_name is None),
        "requirement_rows": len(requirement_rows),
        "territories": len(territories),
        "business_units": len(business_units),
    }
    return Computation(fy, facts.as_of, wanted_rows, clients, territories, dict(found), stats)


def _frame(table: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = list(TARGET_BY_NAME[table].columns)
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.DataFrame(rows, columns=columns, dtype=object)
