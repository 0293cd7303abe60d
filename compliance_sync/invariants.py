"""The pre-write invariants of SPEC §6, re-derived independently from the rows about to be written.

Any violation is an error: the writer step reports it as a failed ERROR check and stops before writing.
"""

from __future__ import annotations

import collections
import decimal
from typing import Any

from compliance_sync.diff import key_of
from compliance_sync.model import APAC, BUSINESS_UNIT, REQUIREMENTS, TARGET_BY_NAME, TERRITORY, Finding
from compliance_sync.rules import Computation, requirement_percent, rollup_percent
from compliance_sync.settings import Thresholds

INVARIANTS: dict[str, str] = {
    "territory_totals": "Each territory's totals are the sums over its clients",
    "rollup_percentages": "Each territory's, BU's and APAC's percentage is the step-6 percentage of its summed totals",
    "capacity_sums": "Σ monthly_capacity.required = total_required_events, over the twelve FY months",
    "value_ranges": "Percentages within [0, 200]; statuses and percentages consistent with the counts",
    "unique_keys": "No duplicate keys among the rows about to be written",
}
MAX_PERCENT = decimal.Decimal(200)


def check_invariants(comp: Computation, thresholds: Thresholds) -> dict[str, Finding]:
    found = {code: Finding(code, "ERROR", text) for code, text in INVARIANTS.items()}
    rows = comp.rows
    clients = comp.clients

    for t in rows[TERRITORY]:
        sid = t["territory_strategy_id"]
        members = [clients[n] for n in comp.territories.get(sid, {}).get("clients", [])]
        expected = {
            "total_clients": len(members),
            "total_required_events": sum(c.required_total for c in members),
            "total_completed_events": sum(c.credited_total for c in members),
            "clients_at_risk": sum(1 for c in members if c.is_at_risk),
            "clients_critical": sum(1 for c in members if c.is_critical),
        }
        for col, value in expected.items():
            if t[col] != value:
                found["territory_totals"].add(f"territory {sid}: {col} = {t[col]}, clients sum to {value}")
        pct = rollup_percent(t["total_completed_events"], t["total_required_events"])
        if t["overall_compliance_percentage"] != pct:
            found["rollup_percentages"].add(f"territory {sid}: {t['overall_compliance_percentage']} != {pct}")
        segments: dict[str, list] = {}
        for c in members:
            segments.setdefault(c.segment, []).append(c)
        breakdown = t["segment_breakdown"] or {}
        if set(breakdown) != set(segments):
            found["territory_totals"].add(f"territory {sid}: segment_breakdown segments {sorted(breakdown)} != {sorted(segments)}")
        for seg, group in segments.items():
            e = breakdown.get(seg)
            want = (len(group), sum(c.required_total for c in group), sum(c.credited_total for c in group))
            if e is not None and (e["clients"], e["total_required"], e["total_completed"]) != want:
                found["territory_totals"].add(f"territory {sid}: segment {seg} totals disagree with its clients")
            if e is not None and e["compliance"] != rollup_percent(want[2], want[1]):
                found["rollup_percentages"].add(f"territory {sid}: segment {seg} compliance {e['compliance']}")
        capacity = t["monthly_capacity"] or {}
        total = sum(int(m["required"]) for m in capacity.values())
        if len(capacity) != 12 or total != t["total_required_events"]:
            found["capacity_sums"].add(
                f"territory {sid}: {len(capacity)} months, Σ required {total} != total_required_events {t['total_required_events']}"
            )

    for bu in rows[BUSINESS_UNIT]:
        members = [c for c in clients.values() if c.bu_name == bu["bu_name"]]
        pct = rollup_percent(sum(c.credited_total for c in members), sum(c.required_total for c in members))
        if bu["overall_compliance_percentage"] != pct:
            found["rollup_percentages"].add(f"BU {bu['bu_name']}: {bu['overall_compliance_percentage']} != {pct}")
        below = sum(1 for c in members if c.below)
        if bu["clients_below_compliance"] != below or bu["territory_count"] != len(bu["territory_data"]):
            found["territory_totals"].add(f"BU {bu['bu_name']}: counts disagree with its territories")
        for d in bu["territory_data"]:
            same = [t for t in rows[TERRITORY] if (t["territory"], t["cse_name"]) == (d["territory"], d["cse_name"])]
            if not any(t["overall_compliance_percentage"] == d["compliance"] and t["total_clients"] == d["clients"] for t in same):
                found["rollup_percentages"].add(f"BU {bu['bu_name']}: territory_data entry {d['territory']!r} disagrees with its territory row")

    for apac in rows[APAC]:
        everyone = list(clients.values())
        pct = (
            rollup_percent(sum(c.credited_total for c in everyone), sum(c.required_total for c in everyone))
            if everyone
            else None
        )
        if apac["actual_compliance"] != pct:
            found["rollup_percentages"].add(f"APAC FY{apac['fiscal_year']}: {apac['actual_compliance']} != {pct}")
        if sum(e["clients"] for e in apac["bu_contributions"]) != len(everyone):
            found["territory_totals"].add("APAC: bu_contributions do not add up to every client")
        if apac["below_compliance_accounts"] != sum(1 for c in everyone if c.below):
            found["territory_totals"].add("APAC: below_compliance_accounts disagrees with its clients")
        for e in apac["bu_contributions"]:
            group = [c for c in everyone if (c.bu_name or "Unassigned") == e["bu_name"]]
            want = rollup_percent(sum(c.credited_total for c in group), sum(c.required_total for c in group))
            if e["compliance"] != want or e["clients"] != len(group) or e["clients_below"] != sum(1 for c in group if c.below):
                found["rollup_percentages"].add(f"APAC: contribution of {e['bu_name']} disagrees with its clients")

    for r in rows[REQUIREMENTS]:
        req, done = r["required_count"], r["completed_count"]
        if req <= 0 or done < 0 or r["scheduled_count"] < 0:
            found["value_ranges"].add(f"plan {r['plan_id']} / {r['event_type_name']}: counts {done}/{req}")
            continue
        if r["compliance_percentage"] != requirement_percent(done, req):
            found["value_ranges"].add(f"plan {r['plan_id']} / {r['event_type_name']}: percentage {r['compliance_percentage']}")
        if r["status"] != thresholds.status(done, req):
            found["value_ranges"].add(f"plan {r['plan_id']} / {r['event_type_name']}: status {r['status']} for {done}/{req}")

    for value, where in _percentages(rows):
        if value is not None and not (0 <= value <= MAX_PERCENT):
            found["value_ranges"].add(f"{where}: {value} outside [0, 200]")

    for name, items in rows.items():
        table = TARGET_BY_NAME[name]
        counts = collections.Counter(key_of(table, r) for r in items)
        for key, n in counts.items():
            if n > 1:
                found["unique_keys"].add(f"{name}: key {key} appears {n} times")
    return found


def _percentages(rows: dict[str, list[dict[str, Any]]]):
    for r in rows[REQUIREMENTS]:
        yield r["compliance_percentage"], f"{REQUIREMENTS} plan {r['plan_id']}"
    for r in rows[TERRITORY]:
        yield r["overall_compliance_percentage"], f"{TERRITORY} {r['territory_strategy_id']}"
        for seg, e in (r["segment_breakdown"] or {}).items():
            yield e["compliance"], f"{TERRITORY} {r['territory_strategy_id']} segment {seg}"
    for r in rows[BUSINESS_UNIT]:
        yield r["overall_compliance_percentage"], f"{BUSINESS_UNIT} {r['bu_name']}"
        for d in r["territory_data"]:
            yield d["compliance"], f"{BUSINESS_UNIT} {r['bu_name']} territory {d['territory']}"
    for r in rows[APAC]:
        yield r["actual_compliance"], f"{APAC} FY{r['fiscal_year']}"
        for d in r["bu_contributions"]:
            yield d["compliance"], f"{APAC} contribution {d['bu_name']}"


def violations(found: dict[str, Finding]) -> list[Finding]:
    return [f for f in found.values() if f.count]
