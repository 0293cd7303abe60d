"""The pre-write invariants of SPEC §6, one function each, recomputed independently of the rules.

They share no arithmetic with :mod:`compliance_sync.domain.rules`: percentages come from ``Decimal`` division
rounded half-up, statuses from ``Fraction`` comparisons; each client's totals and flags are checked against
its requirement values, and every roll-up against its clients. Any violation is an error: the writer step
reports it as a failed ERROR check and stops before writing.
"""

from __future__ import annotations

import collections
import decimal
import functools
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from compliance_sync.domain.bu_map import RESERVED_BU
from compliance_sync.domain.diff import key_of
from compliance_sync.domain.findings import Findings, Severity
from compliance_sync.domain.rules import Client, Computation
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TARGET_BY_NAME, TERRITORY
from compliance_sync.domain.thresholds import Thresholds

INVARIANTS: dict[str, str] = {
    "territory_totals": "Each territory's totals are the sums over its clients",
    "rollup_percentages": "Each territory's, BU's and APAC's percentage is the step-6 percentage of its summed totals",
    "capacity_sums": "Σ monthly_capacity.required = total_required_events, over the twelve FY months",
    "value_ranges": "Percentages within [0, 200]; statuses and percentages consistent with the counts",
    "unique_keys": "No duplicate keys among the rows about to be written",
}
CENT = decimal.Decimal("0.01")
HUNDRED = decimal.Decimal(100)
MAX_PERCENT = decimal.Decimal(200)
_CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP)


@functools.lru_cache(maxsize=1 << 16)
def percent(done: int, required: int, cap: bool) -> decimal.Decimal:
    """done/required in percent, rounded half-up to hundredths; 100.00 when nothing is required."""
    if required == 0:
        return HUNDRED.quantize(CENT)
    exact = _CONTEXT.divide(decimal.Decimal(done) * HUNDRED, decimal.Decimal(required))
    value = exact.quantize(CENT, context=_CONTEXT)
    return min(value, MAX_PERCENT.quantize(CENT)) if cap else value


def status(done: int, required: int, thresholds: Thresholds) -> str:
    ratio = Fraction(100 * done, required)
    if ratio >= thresholds.exceeded_from:
        return "exceeded"
    if ratio >= thresholds.compliant_from:
        return "compliant"
    if ratio >= thresholds.at_risk_from:
        return "at_risk"
    return "critical"


def _group(members: Iterable[Client]) -> tuple[int, int, int, int, int, int]:
    n = required = credited = at_risk = critical = 0
    for c in members:
        n += 1
        required += c.required_total
        credited += c.credited_total
        at_risk += c.is_at_risk
        critical += c.is_critical
    return n, required, credited, at_risk, critical, at_risk + critical


def territory_totals(comp: Computation, found: Findings) -> None:
    for t in comp.wanted.territories:
        sid = t["territory_strategy_id"]
        members = comp.territories[sid].members if sid in comp.territories else []
        n, required, credited, at_risk, critical, _ = _group(members)
        expected = {
            "total_clients": n,
            "total_required_events": required,
            "total_completed_events": credited,
            "clients_at_risk": at_risk,
            "clients_critical": critical,
        }
        for col, value in expected.items():
            if t[col] != value:
                found.add("territory_totals", f"territory {sid}: {col} = {t[col]}, its clients sum to {value}")
        segments: dict[str, list[Client]] = collections.defaultdict(list)
        for m in members:
            segments[m.segment].append(m)
        breakdown = t["segment_breakdown"] or {}
        if set(breakdown) != set(segments):
            found.add(
                "territory_totals",
                f"territory {sid}: segment_breakdown segments {sorted(breakdown)} != {sorted(segments)}",
            )
        for seg, group in segments.items():
            e = breakdown.get(seg)
            if e is None:
                continue
            n, required, credited, *_ = _group(group)
            if (e["clients"], e["total_required"], e["total_completed"]) != (n, required, credited):
                found.add("territory_totals", f"territory {sid}: segment {seg} totals disagree with its clients")
            if e["compliance"] != percent(credited, required, False):
                found.add("rollup_percentages", f"territory {sid}: segment {seg} compliance {e['compliance']}")


def rollup_percentages(comp: Computation, found: Findings) -> None:
    rows = comp.wanted
    for t in rows.territories:
        if t["overall_compliance_percentage"] != percent(
            t["total_completed_events"], t["total_required_events"], False
        ):
            found.add(
                "rollup_percentages",
                f"territory {t['territory_strategy_id']}: {t['overall_compliance_percentage']} "
                f"for {t['total_completed_events']}/{t['total_required_events']}",
            )
    by_territory = {(t["territory"], t["cse_name"]): t for t in rows.territories}
    members_of_bu: dict[str, list[Client]] = collections.defaultdict(list)
    for name, c in comp.clients.items():
        members_of_bu[comp.bu_of_client.get(name) or RESERVED_BU].append(c)
    for bu in rows.business_units:
        n, required, credited, _, _, below = _group(members_of_bu.get(bu["bu_name"], []))
        if bu["overall_compliance_percentage"] != percent(credited, required, False):
            found.add(
                "rollup_percentages",
                f"BU {bu['bu_name']}: {bu['overall_compliance_percentage']} for {credited}/{required}",
            )
        if bu["clients_below_compliance"] != below or bu["territory_count"] != len(bu["territory_data"]):
            found.add("territory_totals", f"BU {bu['bu_name']}: counts disagree with its territories and clients")
        for d in bu["territory_data"]:
            t = by_territory.get((d["territory"], d["cse_name"]))
            if t is None or t["overall_compliance_percentage"] != d["compliance"] or t["total_clients"] != d["clients"]:
                found.add(
                    "rollup_percentages",
                    f"BU {bu['bu_name']}: territory_data entry {d['territory']!r} disagrees with its territory row",
                )
    everyone = list(comp.clients.values())
    for apac in rows.apac:
        n, required, credited, _, _, below = _group(everyone)
        want = percent(credited, required, False) if n else None
        if apac["actual_compliance"] != want:
            found.add("rollup_percentages", f"APAC FY{apac['fiscal_year']}: {apac['actual_compliance']} != {want}")
        if apac["below_compliance_accounts"] != below:
            found.add("territory_totals", "APAC: below_compliance_accounts disagrees with its clients")
        if sum(e["clients"] for e in apac["bu_contributions"]) != n:
            found.add("territory_totals", "APAC: bu_contributions do not add up to every client")
        for e in apac["bu_contributions"]:
            n, required, credited, _, _, below = _group(members_of_bu.get(e["bu_name"], []))
            if (e["compliance"], e["clients"], e["clients_below"]) != (percent(credited, required, False), n, below):
                found.add("rollup_percentages", f"APAC: contribution of {e['bu_name']} disagrees with its clients")


def capacity_sums(comp: Computation, found: Findings) -> None:
    for t in comp.wanted.territories:
        capacity = t["monthly_capacity"] or {}
        total = sum(int(m["required"]) for m in capacity.values())
        if len(capacity) != 12 or total != t["total_required_events"]:
            found.add(
                "capacity_sums",
                f"territory {t['territory_strategy_id']}: {len(capacity)} months, "
                f"Σ required {total} != total_required_events {t['total_required_events']}",
            )


def value_ranges(comp: Computation, thresholds: Thresholds, found: Findings) -> None:
    statuses: dict[tuple[int, int], str] = {}  # (completed, required) -> status: few distinct pairs

    def status_of(done: int, required: int) -> str:
        if (done, required) not in statuses:
            statuses[(done, required)] = status(done, required, thresholds)
        return statuses[(done, required)]

    for name, c in comp.clients.items():
        required = sum(r.required for r in c.requirements)
        credited = sum(min(r.completed, r.required) for r in c.requirements)
        if (c.required_total, c.credited_total) != (required, credited):
            found.add(
                "value_ranges",
                f"{name}: client totals {c.credited_total}/{c.required_total}, "
                f"its requirements sum to {credited}/{required}",
            )
        if all(r.required > 0 and r.status == status_of(r.completed, r.required) for r in c.requirements):
            # flags follow the statuses (a wrong status is reported below, once)
            critical = any(r.status == "critical" for r in c.requirements)
            at_risk = not critical and any(r.status == "at_risk" for r in c.requirements)
            if (c.is_critical, c.is_at_risk) != (critical, at_risk):
                found.add(
                    "value_ranges",
                    f"{name}: flags critical={c.is_critical}, at_risk={c.is_at_risk} disagree with its statuses",
                )
        for r in c.requirements:
            where = f"{name} / {r.event_type_name}"
            if r.required <= 0 or r.completed < 0 or r.scheduled < 0:
                found.add("value_ranges", f"{where}: counts {r.completed}/{r.required}, scheduled {r.scheduled}")
                continue
            if r.percent != percent(r.completed, r.required, True):
                found.add("value_ranges", f"{where}: percentage {r.percent} for {r.completed}/{r.required}")
            if r.status != status_of(r.completed, r.required):
                found.add("value_ranges", f"{where}: status {r.status} for {r.completed}/{r.required}")
    for value, where in _percentages(comp):
        if value is not None and not (0 <= value <= MAX_PERCENT):
            found.add("value_ranges", f"{where}: {value} outside [0, 200]")


def _percentages(comp: Computation) -> Iterable[tuple[Any, str]]:
    for name, c in comp.clients.items():
        for r in c.requirements:
            yield r.percent, f"{REQUIREMENTS} {name} / {r.event_type_name}"
    rows = comp.wanted
    for r in rows.territories:
        yield r["overall_compliance_percentage"], f"{TERRITORY} {r['territory_strategy_id']}"
        for seg, e in (r["segment_breakdown"] or {}).items():
            yield e["compliance"], f"{TERRITORY} {r['territory_strategy_id']} segment {seg}"
    for r in rows.business_units:
        yield r["overall_compliance_percentage"], f"{BUSINESS_UNIT} {r['bu_name']}"
        for d in r["territory_data"]:
            yield d["compliance"], f"{BUSINESS_UNIT} {r['bu_name']} territory {d['territory']}"
    for r in rows.apac:
        yield r["actual_compliance"], f"{APAC} FY{r['fiscal_year']}"
        for d in r["bu_contributions"]:
            yield d["compliance"], f"{APAC} contribution {d['bu_name']}"


def unique_keys(comp: Computation, found: Findings) -> None:
    req = comp.wanted.requirements
    plan_counts = collections.Counter(str(p.plan_id).lower() for p in req.plans)
    for plan_id, n in plan_counts.items():
        if n > 1:
            found.add("unique_keys", f"{REQUIREMENTS}: plan {plan_id} appears {n} times")
    for name, reqs in req.by_client.items():
        for type_id, n in collections.Counter(r.event_type_id for r in reqs).items():
            if n > 1:
                found.add("unique_keys", f"{REQUIREMENTS}: event type {type_id} appears {n} times for {name}")
    for table in (TERRITORY, BUSINESS_UNIT, APAC):
        target = TARGET_BY_NAME[table]
        for key, n in collections.Counter(key_of(target, r) for r in comp.wanted.rows(table)).items():
            if n > 1:
                found.add("unique_keys", f"{table}: key {key} appears {n} times")


def check_invariants(comp: Computation, thresholds: Thresholds) -> Findings:
    found = Findings(INVARIANTS, Severity.ERROR)
    territory_totals(comp, found)
    rollup_percentages(comp, found)
    capacity_sums(comp, found)
    value_ranges(comp, thresholds, found)
    unique_keys(comp, found)
    return found
