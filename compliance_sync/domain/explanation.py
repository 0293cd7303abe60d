"""``explain`` as data: how SPEC §4 produced one client's, plan's, territory's, business unit's or APAC's figures,
built from the computation itself (its wanted rows, its clients and the provenance its rule functions recorded,
:mod:`compliance_sync.domain.provenance`), never recomputed beside it. Pure: no I/O; the result is one JSON-ready
dict that ``--json`` prints and :mod:`compliance_sync.service.explain_text` renders.

The direct backend's facts hold per-month counts, not events, so the events of the explained client are read
apart (:meth:`Reader.read_events`) and each is classified here; their tallies must equal the computation's counts
(checked: a difference means the data changed between the reads, and the command stops rather than show it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import difflib
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

from compliance_sync.domain.bu_map import RESERVED_BU, BuMap
from compliance_sync.domain.facts import Facts, Plan, RawEvent, Strategy
from compliance_sync.domain.findings import Findings, Severity
from compliance_sync.domain.fiscal import due_month
from compliance_sync.domain.provenance import normalise_name
from compliance_sync.domain.rules import Client, Computation, pct_hundredths, plans_in_scope, rollup, strategy_rank
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TERRITORY
from compliance_sync.domain.thresholds import Thresholds
from compliance_sync.errors import DataError, SettingsError

KINDS = ("client", "plan", "territory", "bu", "apac")
COMPLETED, SCHEDULED, NOT_COUNTED = "completed", "scheduled", "not counted"
DIFF_LINES = 200
OUTSIDE = "outside the FY window"  # rows per action listed in the target comparison


@dataclasses.dataclass(frozen=True)
class Subject:
    """What to explain: one of :data:`KINDS` and its name or id (None for APAC)."""

    kind: str
    value: str | None = None


@dataclasses.dataclass(frozen=True)
class Scope:
    """The subject resolved against the facts: what the reader must read besides them."""

    subject: Subject
    client: str | None = None  # client / plan
    plans: tuple[str, ...] = ()  # the plan ids whose rows are explained
    client_plans: tuple[str, ...] = ()  # every plan of the client in scope
    strategies: tuple[Strategy, ...] = ()  # territory: the FY's strategies of that name
    bu_name: str | None = None


# --- names ------------------------------------------------------------------------------------------------------
def closest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The candidates nearest to ``name``: same name ignoring case and accents first, then one contained in the
    other (normalised), then :func:`difflib.get_close_matches`."""
    pool = sorted(set(candidates))
    norm = normalise_name(name)
    same = [c for c in pool if normalise_name(c) == norm]
    inside = [
        c
        for c in pool
        if norm and (norm in normalise_name(c) or (normalise_name(c) and normalise_name(c) in norm)) and c not in same
    ]
    fuzzy = difflib.get_close_matches(name, pool, n=n, cutoff=0.4)
    folded = {c.casefold(): c for c in pool}
    fuzzy += [folded[c] for c in difflib.get_close_matches(name.casefold(), list(folded), n=n, cutoff=0.4)]
    return list(dict.fromkeys(same + inside + fuzzy))[:n]


def _no_match(what: str, name: str, candidates: Sequence[str], fy: int) -> SettingsError:
    near = closest(name, candidates)
    hint = f"closest: {', '.join(repr(c) for c in near)}" if near else f"no close match among {len(set(candidates))}"
    return SettingsError(f"explain: no {what} {name!r} in FY{fy}; {hint}")


def resolve(facts: Facts, bu_map: BuMap, subject: Subject) -> Scope:
    """The subject against the FY's facts; a name or id that matches nothing is a :class:`SettingsError` (exit 2)
    naming the closest ones."""
    fy = facts.fy.year
    if subject.kind in ("client", "plan"):
        plans = plans_in_scope(facts.plans, Findings({"clients_without_segmentation": ""}, Severity.WARN))
        if subject.kind == "plan":
            wanted = str(subject.value).strip().lower()
            plan = next((p for p in plans if p.id == wanted), None)
            if plan is None:  # another FY's, archived, or no such plan: the backends read only the FY's plans in scope
                raise _no_match(
                    "plan in scope (fiscal_year of the FY, not archived) with id",
                    str(subject.value),
                    [p.id for p in plans],
                    fy,
                )
            client = plan.client_name
            chosen: list[Plan] = [plan]
        else:
            client = subject.value
            if client not in {p.client_name for p in plans}:
                raise _no_match(
                    "plan client (a client_name of a plan in scope)", str(client), [p.client_name for p in plans], fy
                )
            chosen = [p for p in plans if p.client_name == client]
        return Scope(
            subject, client, tuple(p.id for p in chosen), tuple(p.id for p in plans if p.client_name == client)
        )
    if subject.kind == "territory":
        strategies = tuple(s for s in facts.strategies if s.territory == subject.value)
        if not strategies:
            raise _no_match(
                "territory (territory_strategies.territory, not archived)",
                str(subject.value),
                [s.territory for s in facts.strategies if s.territory],
                fy,
            )
        return Scope(subject, strategies=strategies)
    if subject.kind == "bu":
        names = set(bu_map.cse.values()) | set(bu_map.territory.values())
        if subject.value not in names:
            raise SettingsError(
                _no_match("business unit (a BU of the BU map)", str(subject.value), sorted(names), fy).args[0]
                + f" ({bu_map.source or 'BU map'})"
            )
        return Scope(subject, bu_name=subject.value)
    if subject.kind == "apac":
        return Scope(subject)
    raise SettingsError(f"explain: unknown subject {subject.kind!r}; one of {', '.join(KINDS)}")


def alias_names(comp: Computation, client: str) -> list[str]:
    """The near-miss names (``possible_alias``) the computation found for ``client``."""
    return sorted({name for name, plan, _ in (comp.trace.aliases if comp.trace else ()) if plan == client})


# --- arithmetic as text -----------------------------------------------------------------------------------------------
def _pct(value: Any) -> str | None:
    return None if value is None else f"{decimal.Decimal(value):.2f}"


def _num(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


def _exact(c: int, r: int) -> str:
    """100·c/r with up to six decimals, '…' when it goes on."""
    value = Fraction(100 * c, r)
    shown = decimal.Decimal(value.numerator) / decimal.Decimal(value.denominator)
    text = f"{shown.quantize(decimal.Decimal('0.000001'), rounding=decimal.ROUND_DOWN).normalize():f}"
    return text if Fraction(decimal.Decimal(text)) == value else text + "…"


def percentage_steps(c: int, r: int, cap: bool = True) -> str:
    """SPEC §4.5's formula with the numbers filled in (the value is :func:`rules.pct_hundredths`'s)."""
    h = pct_hundredths(c, r, cap=cap)
    top, bottom = 20000 * c + r, 2 * r
    floor = top // bottom
    capped = f"min({floor}, 20000) = {h}" if cap else f"{h}"
    return (
        f"exact 100×{c}/{r} = {_exact(c, r)} %; "
        f"half-up to hundredths: floor((20000×{c} + {r}) / (2×{r})) = floor({top} / {bottom}) "
        f"→ {capped} hundredths = {h / 100:.2f} %"
    )


def status_steps(c: int, r: int, thresholds: Thresholds, status: str) -> list[str]:
    """Each threshold tried in order against the exact ratio, until one holds."""
    out = []
    for cut, name in (
        (thresholds.exceeded_from, "exceeded"),
        (thresholds.compliant_from, "compliant"),
        (thresholds.at_risk_from, "at_risk"),
    ):
        holds = 100 * c * cut.denominator >= cut.numerator * r
        out.append(
            f"100×{c} = {100 * c} {'≥' if holds else '<'} {_num(cut)}×{r} = {_num(cut * r)} "
            f"→ {name + ' ✓' if holds else 'not ' + name}"
        )
        if holds:
            break
    else:
        out.append("below every threshold → critical")
    if out and status not in out[-1]:  # the computation's status is what is shown; the steps must agree with it
        raise DataError(f"explain: the status steps end in {out[-1]!r}, the computation says {status!r}")
    return out


# --- one client ------------------------------------------------------------------------------------------------------
def classify(
    e: RawEvent, comp: Computation, facts: Facts, client: str, required: set[str], excluded: set[str]
) -> tuple[str, str]:
    """(counted as, why) for one event of the explained client or one of its near-miss names (SPEC §4.4)."""
    fy, as_of = comp.fy, comp.as_of
    types = {t.id: t for t in facts.event_types}
    if e.client_name != client:
        return NOT_COUNTED, f"logged under {e.client_name!r}, not {client!r} (possible alias; names must match exactly)"
    if e.event_date is None:
        return NOT_COUNTED, "no event_date"
    if e.event_type_id is None:
        return NOT_COUNTED, "no event_type_id"
    if e.event_type_id not in types:
        return NOT_COUNTED, f"unknown event type {e.event_type_id}"
    if not fy.start <= e.event_date <= fy.end:
        return NOT_COUNTED, f"{OUTSIDE} {fy.start} … {fy.end}"
    if types[e.event_type_id].is_active is not True:
        return NOT_COUNTED, "event type inactive"
    if e.event_type_id in excluded:
        return NOT_COUNTED, "requirement excluded (client_event_exclusions)"
    if e.event_type_id not in required:
        return NOT_COUNTED, "event type not required for this client"
    if e.completed is True and e.event_date <= as_of:
        return COMPLETED, f"completed, dated on or before as_of {as_of}"
    if e.completed is True:
        return SCHEDULED, f"completed but dated after as_of {as_of}: counts as scheduled"
    return SCHEDULED, "not completed yet" if e.completed is False else "completed is null: not completed"


def _event_order(e: RawEvent) -> tuple:
    return (e.event_date or dt.date.min, e.id)


def _period(note: Any, latest_id: str | None) -> dict[str, Any]:
    p = note.period
    return {
        "id": p.id,
        "tier_id": p.tier_id,
        "tier_name": note.tier_name,
        "effective_from": _iso(p.effective_from),
        "effective_to": _iso(p.effective_to),
        "cse_name": p.cse_name,
        "client_uuid": p.client_uuid,
        "used": note.ignored is None,
        "ignored_reason": note.ignored,
        "latest": p.id == latest_id,
    }


def _iso(d: dt.date | str | None) -> str | None:
    """ISO text of a date or timestamp (REST hands ``updated_at`` over as text already)."""
    return d if d is None or isinstance(d, str) else d.isoformat()


def explain_client(
    comp: Computation, facts: Facts, scope: Scope, events: Sequence[RawEvent], thresholds: Thresholds, bu_map: BuMap
) -> dict[str, Any]:
    """A client's (or one plan's) figures with their provenance; ``events``: its raw events and its near-miss names'."""
    name = scope.client
    trace = comp.trace
    c: Client | None = comp.clients.get(name)
    notes = trace.requirements.get(name, []) if trace else []
    latest = trace.latest.get(name) if trace else None
    required = {r.event_type_id for r in c.requirements} if c else set()
    excluded = {n.event_type_id for n in notes if any(x.applies for x in n.exclusions) and n.maximum > 0}
    classified = [(e, *classify(e, comp, facts, name, required, excluded)) for e in sorted(events, key=_event_order)]
    out: dict[str, Any] = {
        "kind": scope.subject.kind,
        "fiscal_year": comp.fy.year,
        "window": {"start": comp.fy.start.isoformat(), "end": comp.fy.end.isoformat()},
        "as_of": comp.as_of.isoformat(),
        "client_name": name,
        "plans": list(scope.plans),
        "client_plans": list(scope.client_plans),
        "computed": c is not None,
        "skipped_reason": None
        if c
        else "no valid segment period overlapping the FY (clients_without_segmentation): no figure, no row",
        "segment": c.segment if c else None,
        "cse_name": c.cse_name if c else None,
        "periods": [
            _period(n, latest.id if latest else None)
            for n in sorted(
                trace.periods.get(name, []), key=lambda n: (n.period.effective_from or dt.date.min, n.period.id)
            )
        ]
        if trace
        else [],
        "event_types": [],
        "not_required": [],
        "other_events": [],
        "possible_aliases": [
            {"name": a, "events": n} for a, plan, n in (trace.aliases if trace else ()) if plan == name
        ],
    }
    by_type: dict[str | None, list[tuple]] = {}
    for row in classified:
        key = row[0].event_type_id if row[0].event_type_id in required else None
        by_type.setdefault(key, []).append(row)
    for n in notes:
        if n.event_type_id in required or n.maximum <= 0 and not n.exclusions:
            continue
        why = (
            "event type inactive"
            if not n.active
            else "excluded: "
            + "; ".join(
                f"reason {x.reason!r} {'applies' if x.applies else 'does not apply (greyed out)'}" for x in n.exclusions
            )
            if n.maximum > 0
            else "no tier of the client requires it"
        )
        out["not_required"].append(
            {
                "event_type_id": n.event_type_id,
                "event_type_name": n.event_type_name,
                "maximum_frequency": n.maximum,
                "reason": why,
            }
        )
    notes_by_type = {n.event_type_id: n for n in notes}
    type_names = {t.id: t.event_name for t in facts.event_types}
    for r in c.requirements if c else ():
        rows = by_type.get(r.event_type_id, [])
        done = [e.id for e, how, _ in rows if how == COMPLETED]
        planned = [e.id for e, how, _ in rows if how == SCHEDULED]
        if (len(done), len(planned)) != (r.completed, r.scheduled):
            raise DataError(
                f"explain: the events read for {name!r} and event type {r.event_type_name!r} "
                f"count {len(done)} completed and {len(planned)} scheduled, "
                f"the computation {r.completed} and {r.scheduled}: "
                "the data changed between the reads; run explain again"
            )
        note = notes_by_type.get(r.event_type_id)
        credited = min(r.completed, r.required)
        k = r.completed + 1
        month = due_month(k, r.required) if r.completed < r.required else None
        if month is not None and comp.fy.month_end(month) != r.next_due:
            raise DataError(
                f"explain: due date of event {k} of {r.required} disagrees with the computation ({r.next_due})"
            )
        out["event_types"].append(
            {
                "event_type_id": r.event_type_id,
                "event_type_name": r.event_type_name,
                "required_count": r.required,
                "completed_count": r.completed,
                "scheduled_count": r.scheduled,
                "credited_count": credited,
                "compliance_percentage": _pct(r.percent),
                "status": r.status,
                "next_due_date": _iso(r.next_due),
                "linked_event_ids": [e.id for e, how, _ in rows if how != NOT_COUNTED],
                "counted_event_ids": done,
                "scheduled_event_ids": planned,
                "not_counted": [
                    {"id": e.id, "reason": why, "event_date": _iso(e.event_date), "completed": e.completed}
                    for e, how, why in rows
                    if how == NOT_COUNTED
                ],
                "requirement_sources": [
                    {
                        "period_id": s.period_id,
                        "tier_name": s.tier_name,
                        "effective_from": _iso(s.effective_from),
                        "effective_to": _iso(s.effective_to),
                        "frequency": s.frequency,
                    }
                    for s in (note.sources if note else ())
                ],
                "maximum_frequency": note.maximum if note else r.required,
                "exclusions": [{"reason": x.reason, "applies": x.applies} for x in (note.exclusions if note else ())],
                "events": [
                    {
                        "id": e.id,
                        "event_date": _iso(e.event_date),
                        "completed": e.completed,
                        "counted_as": how,
                        "reason": why,
                    }
                    for e, how, why in rows
                ],
                "arithmetic": {
                    "credited": f"min(completed {r.completed}, required {r.required}) = {credited}",
                    "percentage": percentage_steps(r.completed, r.required),
                    "status": status_steps(r.completed, r.required, thresholds, r.status),
                    "next_due": (
                        f"all {r.required} done (completed {r.completed} ≥ required {r.required}): none"
                        if month is None
                        else f"due date k = completed + 1 = {k} of {r.required}: "
                        f"FY month ceil(12×{k}/{r.required}) = {month} "
                        f"({comp.fy.month_label(month)}), its last day {r.next_due}"
                        + (" (overdue)" if r.next_due < comp.as_of else "")
                    ),
                },
            }
        )
    out["other_events"] = [
        {
            "id": e.id,
            "event_type_id": e.event_type_id,
            "event_type_name": type_names.get(e.event_type_id),
            "event_date": _iso(e.event_date),
            "completed": e.completed,
            "reason": why,
        }
        for e, how, why in by_type.get(None, [])
    ]
    if c:
        out["totals"] = {
            "required_total": c.required_total,
            "credited_total": c.credited_total,
            "compliance_percentage": _pct(c.percent),
            "arithmetic": (
                f"credited Σ min(c, r) = "
                f"{' + '.join(str(min(r.completed, r.required)) for r in c.requirements) or '0'} = {c.credited_total}; "
                f"required Σ r = {' + '.join(str(r.required) for r in c.requirements) or '0'} = {c.required_total}; "
                + (
                    percentage_steps(c.credited_total, c.required_total, cap=False) + " (not capped)"
                    if c.required_total
                    else "nothing required: 100.00 %"
                )
            ),
            "is_critical": c.is_critical,
            "is_at_risk": c.is_at_risk,
            "flags": (
                "critical: at least one requirement is critical"
                if c.is_critical
                else "at risk: a requirement is at_risk and none critical"
                if c.is_at_risk
                else "neither critical nor at risk"
            ),
        }
        out["territory"] = _client_place(comp, c, bu_map)
    return out


def _client_place(comp: Computation, c: Client, bu_map: BuMap) -> dict[str, Any]:
    for sid, t in comp.territories.items():
        if any(m.name == c.name for m in t.members):
            bu = comp.bu_of_client.get(c.name)
            return {
                "territory_strategy_id": sid,
                "territory": t.strategy.territory,
                "cse_name": t.strategy.cse_name,
                "bu_name": bu,
                "bu_entry": _bu_entry(bu_map, t.strategy),
            }
    return {
        "territory_strategy_id": None,
        "territory": None,
        "cse_name": c.cse_name,
        "bu_name": None,
        "bu_entry": None,
        "unassigned": f"CSE {c.cse_name!r} has no territory strategy this FY: counted at APAC level only",
    }


def _bu_entry(bu_map: BuMap, s: Strategy) -> str | None:
    if s.cse_name is not None and s.cse_name in bu_map.cse:
        return f"cse: {s.cse_name!r} → {bu_map.cse[s.cse_name]} (the CSE entry wins)"
    if s.territory is not None and s.territory in bu_map.territory:
        return f"territory: {s.territory!r} → {bu_map.territory[s.territory]}"
    return None


# --- roll-ups --------------------------------------------------------------------------------------------------------
def _client_row(c: Client) -> dict[str, Any]:
    return {
        "client_name": c.name,
        "segment": c.segment,
        "cse_name": c.cse_name,
        "required_total": c.required_total,
        "credited_total": c.credited_total,
        "compliance_percentage": _pct(c.percent),
        "status": "critical" if c.is_critical else "at_risk" if c.is_at_risk else "ok",
    }


def weighted(members: Sequence[Any], label: str = "clients") -> str:
    """The step-6 percentage over a group as arithmetic: Σ credited / Σ required."""
    req = sum(m["required_total"] for m in members)
    cred = sum(m["credited_total"] for m in members)
    if req == 0:
        return f"no requirement over {len(members)} {label}: 100.00 %" if members else f"no {label}"
    return f"Σ credited {cred} / Σ required {req} over {len(members)} {label}: " + percentage_steps(
        cred, req, cap=False
    )


def _why_lost(winner: Strategy, loser: Strategy) -> str:
    a, b = strategy_rank(winner), strategy_rank(loser)
    if a[0] != b[0]:
        return "quarterly; an annual strategy wins"
    if a[1] != b[1]:
        return f"updated_at {loser.updated_at or 'null'} is older than {winner.updated_at}"
    return f"same updated_at; id {winner.id} is smaller"


def strategy_choice(comp: Computation, cse: str | None) -> dict[str, Any] | None:
    ranked = comp.trace.strategies.get(cse) if comp.trace and cse is not None else None
    if not ranked:
        return None
    used = ranked[0]
    return {
        "cse_name": cse,
        "used": {
            "id": used.id,
            "territory": used.territory,
            "quarter": used.quarter or None,
            "updated_at": _iso(used.updated_at),
        },
        "rule": "annual before quarterly, then latest updated_at (null oldest), then smallest id",
        "passed_over": [
            {
                "id": s.id,
                "territory": s.territory,
                "quarter": s.quarter or None,
                "updated_at": _iso(s.updated_at),
                "why": _why_lost(used, s),
            }
            for s in ranked[1:]
        ],
    }


def _unmapped(comp: Computation) -> list[dict[str, Any]]:
    return [
        {"territory": t.strategy.territory, "cse_name": t.strategy.cse_name, "clients": len(t.members)}
        for sid, t in comp.territories.items()
        if not any(comp.bu_of_client.get(m.name) for m in t.members)
    ]


def _unassigned(comp: Computation) -> list[dict[str, Any]]:
    placed = {m.name for t in comp.territories.values() for m in t.members}
    return [
        _client_row(c) | {"why": f"CSE {c.cse_name!r} has no territory strategy this FY"}
        for name, c in comp.clients.items()
        if name not in placed
    ]


def _header(comp: Computation, kind: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "fiscal_year": comp.fy.year,
        "window": {"start": comp.fy.start.isoformat(), "end": comp.fy.end.isoformat()},
        "as_of": comp.as_of.isoformat(),
    }


def explain_territory(comp: Computation, scope: Scope, bu_map: BuMap) -> dict[str, Any]:
    rows = {r["territory_strategy_id"]: r for r in comp.wanted.territories}
    out = _header(comp, "territory") | {"territory": scope.subject.value, "rows": [], "not_used": []}
    members: list[dict[str, Any]] = []
    for s in sorted(scope.strategies, key=lambda s: s.id):
        if s.id not in rows:
            ranked = comp.trace.strategies.get(s.cse_name, []) if comp.trace and s.cse_name is not None else []
            if s.cse_name is None:
                why = "no cse_name: no client can belong to it"
            elif ranked and ranked[0].id != s.id:
                why = f"loses the tie-break for CSE {s.cse_name!r} to {ranked[0].id} ({_why_lost(ranked[0], s)})"
            else:
                why = f"used for CSE {s.cse_name!r}, but no client of the FY has that CSE"
            out["not_used"].append(
                {"territory_strategy_id": s.id, "cse_name": s.cse_name, "quarter": s.quarter or None, "why": why}
            )
            continue
        row, t = rows[s.id], comp.territories[s.id]
        clients = [_client_row(c) for c in sorted(t.members, key=lambda c: c.name)]
        members += clients
        bu = bu_map.bu_for(s.cse_name, s.territory)
        out["rows"].append(
            {
                "territory_strategy_id": s.id,
                "cse_name": s.cse_name,
                "total_clients": row["total_clients"],
                "total_required_events": row["total_required_events"],
                "total_completed_events": row["total_completed_events"],
                "overall_compliance_percentage": _pct(row["overall_compliance_percentage"]),
                "clients_at_risk": row["clients_at_risk"],
                "clients_critical": row["clients_critical"],
                "arithmetic": weighted(clients),
                "contributors": clients,
                "segment_breakdown": {
                    k: v | {"compliance": _pct(v["compliance"])} for k, v in row["segment_breakdown"].items()
                },
                "strategy": strategy_choice(comp, s.cse_name),
                "bu_name": bu,
                "bu_entry": _bu_entry(bu_map, s)
                or "none: the territory maps to no business unit (unmapped_territories); left out of BU rows",
            }
        )
    req = sum(m["required_total"] for m in members)
    cred = sum(m["credited_total"] for m in members)
    out |= {
        "overall_compliance_percentage": _pct(
            rollup(c for sid in rows if sid in {s.id for s in scope.strategies} for c in comp.territories[sid].members)[
                0
            ]
        )
        if members
        else None,
        "total_required_events": req,
        "total_completed_events": cred,
        "contributors": members,
        "arithmetic": weighted(members),
    }
    return out


def explain_bu(comp: Computation, scope: Scope, bu_map: BuMap) -> dict[str, Any]:
    bu = scope.bu_name
    row = next((r for r in comp.wanted.business_units if r["bu_name"] == bu), None)
    out = _header(comp, "bu") | {"bu_name": bu, "map": bu_map.source or "BU map"}
    territories, members = [], []
    for sid, t in comp.territories.items():
        if bu_map.bu_for(t.strategy.cse_name, t.strategy.territory) != bu:
            continue
        clients = [_client_row(c) for c in sorted(t.members, key=lambda c: c.name)]
        members += clients
        territories.append(
            {
                "territory_strategy_id": sid,
                "territory": t.strategy.territory,
                "cse_name": t.strategy.cse_name,
                "clients": len(clients),
                "required_total": sum(m["required_total"] for m in clients),
                "credited_total": sum(m["credited_total"] for m in clients),
                "compliance_percentage": _pct(rollup(t.members)[0]),
                "bu_entry": _bu_entry(bu_map, t.strategy),
            }
        )
    territories.sort(key=lambda t: (t["territory"] or "", t["cse_name"] or "", t["territory_strategy_id"]))
    out |= {
        "overall_compliance_percentage": _pct(row["overall_compliance_percentage"]) if row else None,
        "clients_below_compliance": row["clients_below_compliance"] if row else 0,
        "territory_count": row["territory_count"] if row else 0,
        "total_required_events": sum(m["required_total"] for m in members),
        "total_completed_events": sum(m["credited_total"] for m in members),
        "arithmetic": weighted(members)
        if row
        else "no territory maps to this BU this FY: its row (if any) is reset (percentage null, counts 0)",
        "contributors": territories,
        "clients": members,
        "unmapped_territories": _unmapped(comp),
    }
    return out


def explain_apac(comp: Computation, bu_map: BuMap) -> dict[str, Any]:
    apac = comp.wanted.apac[0]
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, c in comp.clients.items():
        groups.setdefault(comp.bu_of_client.get(name) or RESERVED_BU, []).append(_client_row(c))
    contributors = []
    for entry in apac["bu_contributions"]:
        clients = groups.get(entry["bu_name"], [])
        contributors.append(
            {
                "bu_name": entry["bu_name"],
                "clients": entry["clients"],
                "clients_below": entry["clients_below"],
                "required_total": sum(m["required_total"] for m in clients),
                "credited_total": sum(m["credited_total"] for m in clients),
                "compliance_percentage": _pct(entry["compliance"]),
            }
        )
    everyone = [m for g in groups.values() for m in g]
    return _header(comp, "apac") | {
        "overall_compliance_percentage": _pct(apac["actual_compliance"]),
        "below_compliance_accounts": apac["below_compliance_accounts"],
        "total_required_events": sum(m["required_total"] for m in everyone),
        "total_completed_events": sum(m["credited_total"] for m in everyone),
        "arithmetic": weighted(contributors, "business units")
        if everyone
        else "no client this FY: actual_compliance null",
        "contributors": contributors,
        "unassigned_clients": _unassigned(comp),
        "unmapped_territories": _unmapped(comp),
        "strategies": [strategy_choice(comp, cse) for cse in sorted(comp.trace.strategies)] if comp.trace else [],
    }


# --- the target rows now against what a sync would write -------------------------------------------------------------
def target_keys(scope: Scope) -> tuple[str, str | None, list[str]]:
    """(target, column, values) of the rows the subject's figures are written to."""
    kind = scope.subject.kind
    if kind in ("client", "plan"):
        return REQUIREMENTS, "plan_id", list(scope.plans)
    if kind == "territory":
        return TERRITORY, "territory_strategy_id", sorted(s.id for s in scope.strategies)
    if kind == "bu":
        return BUSINESS_UNIT, "bu_name", [scope.bu_name]
    return APAC, None, []


def wanted_rows(comp: Computation, scope: Scope, explained: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows a sync would write for the subject's keys (requirement rows with the ids the events gave)."""
    table, column, values = target_keys(scope)
    if table == REQUIREMENTS:
        ids = {(scope.client, t["event_type_id"]): t["linked_event_ids"] for t in explained.get("event_types", [])}
        rows = dataclasses.replace(comp.wanted.requirements, event_ids=ids)
        return [r for r in rows if r["plan_id"] in set(values)]
    rows = comp.wanted.rows(table)
    return [r for r in rows if column is None or r[column] in set(values)]
