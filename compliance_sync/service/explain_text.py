"""``explain``'s text: the explanation dict of :mod:`compliance_sync.domain.explanation` as lines a person reads, top to
bottom in SPEC §4's order (periods, requirements, events, arithmetic, totals, roll-up), then the target rows now
against what a sync would write. Pure: lines in, nothing printed here."""

from __future__ import annotations

from typing import Any

from compliance_sync.domain.explanation import OUTSIDE

MAX_OTHER_EVENTS = 20  # events of types without a requirement listed one by one; the rest are counted


def _head(x: dict[str, Any]) -> str:
    return f"FY{x['fiscal_year']} ({x['window']['start']} … {x['window']['end']}), as_of {x['as_of']}"


def _span(start: str | None, end: str | None) -> str:
    return f"{start or '?'} … {end or 'open'}"


def _targets(x: dict[str, Any]) -> list[str]:
    t = x.get("targets")
    if not t:
        return []
    head = (
        f"Target rows of {t['table']} now against what a sync would write "
        f"({t['rows_now']} now, {t['rows_wanted']} wanted): "
    )
    if t["in_sync"]:
        return ["", head + "in sync"]
    counts = ", ".join(f"{k} {v}" for k, v in t["counts"].items())
    return ["", head + f"a sync would change them ({counts})", *(f"  {line}" for line in t["lines"])]


def _warnings(x: dict[str, Any]) -> list[str]:
    found = x.get("warnings") or {}
    return (
        ["", "Data-quality warnings of the FY (the sync's checks): " + ", ".join(f"{k} {v}" for k, v in found.items())]
        if found
        else []
    )


def render(x: dict[str, Any]) -> list[str]:
    kind = x["kind"]
    body = {"client": _client, "plan": _client, "territory": _territory, "bu": _bu, "apac": _apac}[kind](x)
    return body + _targets(x) + _warnings(x)


# --- client / plan -------------------------------------------------------------------------------------------------
def _client(x: dict[str, Any]) -> list[str]:
    plans = ", ".join(x["client_plans"])
    asked = (
        f"plan {x['plans'][0]} of client {x['client_name']!r}"
        if x["kind"] == "plan"
        else f"client {x['client_name']!r}"
    )
    out = [f"{_head(x)}: {asked}", f"Plans in scope of the client: {plans}"]
    out += ["", "Segment periods overlapping the FY (SPEC §4.2):"]
    for p in x["periods"]:
        mark = "✓" if p["used"] else "✗"
        note = (
            f"ignored: {p['ignored_reason']}"
            if not p["used"]
            else ("latest: gives the segment and the CSE" if p["latest"] else "")
        )
        out.append(
            (
                f"  {mark} {_span(p['effective_from'], p['effective_to']):<25} {p['tier_name'] or '?':<15} "
                f"CSE {p['cse_name']!r:<18} {note}"
            ).rstrip()
        )
    if not x["computed"]:
        return out + ["", f"Skipped: {x['skipped_reason']}"]
    place = x["territory"]
    where = (
        f"territory {place['territory']!r} (strategy {place['territory_strategy_id']}) → "
        + (f"BU {place['bu_name']} ({place['bu_entry']})" if place["bu_name"] else "no BU (the territory is unmapped)")
        if place["territory_strategy_id"]
        else f"unassigned: {place['unassigned']}"
    )
    out += [f"Segment {x['segment']!r}, CSE {x['cse_name']!r}; {where}"]
    for t in x["event_types"]:
        sources = ", ".join(f"{s['tier_name']} {s['frequency']}" for s in t["requirement_sources"])
        out += [
            "",
            f"{t['event_type_name']} ({t['event_type_id']}): "
            f"required {t['required_count']} = max over the periods' tiers ({sources})",
        ]
        for e in t["exclusions"]:
            out.append(
                f"  exclusion with reason {e['reason']!r}: "
                f"{'applies' if e['applies'] else 'does not apply (greyed out)'}"
            )
        inside = [e for e in t["events"] if not e["reason"].startswith(OUTSIDE)]
        for e in inside:
            flag = (
                "completed"
                if e["completed"] is True
                else "not completed"
                if e["completed"] is False
                else "completed null"
            )
            out.append(f"  {e['event_date'] or 'no date'}  {e['id']}  {flag:<13} → {e['counted_as']}: {e['reason']}")
        if not inside:
            out.append("  no event of this type in the window")
        if len(inside) < len(t["events"]):
            out.append(
                f"  ({len(t['events']) - len(inside)} more event(s) of this type outside the FY window: "
                "not counted; listed by --json)"
            )
        a = t["arithmetic"]
        out += [
            f"  completed {t['completed_count']}, scheduled {t['scheduled_count']}; credited {a['credited']}",
            f"  percentage: {a['percentage']}",
            f"  status: {'; '.join(a['status'])} ⇒ {t['status']}",
            f"  next_due_date: {a['next_due']}",
        ]
    if x["not_required"]:
        out += ["", "Event types not required of this client:"]
        out += [f"  {n['event_type_name']} ({n['event_type_id']}): {n['reason']}" for n in x["not_required"]]
    others = [e for e in x["other_events"] if not e["reason"].startswith(OUTSIDE)]
    if others:
        out += ["", f"Other events of the client in the window (not counted): {len(others)}"]
        out += [
            f"  {e['event_date'] or 'no date'}  {e['id']}  {e['event_type_name'] or e['event_type_id']}: {e['reason']}"
            for e in others[:MAX_OTHER_EVENTS]
        ]
        if len(others) > MAX_OTHER_EVENTS:
            out.append(f"  … {len(others) - MAX_OTHER_EVENTS} more (see --json)")
    for a in x["possible_aliases"]:
        out += [
            "",
            f"Near-miss name (possible_alias): {a['events']} event(s) in the window not counted: "
            f"logged under {a['name']!r}",
        ]
    tot = x["totals"]
    out += [
        "",
        f"Client totals: required {tot['required_total']}, credited {tot['credited_total']} "
        f"→ {tot['compliance_percentage']} %",
        f"  {tot['arithmetic']}",
        f"  flags: {tot['flags']}",
    ]
    return out


# --- roll-ups -------------------------------------------------------------------------------------------------------
def _members(clients: list[dict[str, Any]], indent: str = "  ") -> list[str]:
    return [
        f"{indent}{c['client_name']!r:<32} {c['segment'] or '?':<15} "
        f"required {c['required_total']:>4}  credited {c['credited_total']:>4}  "
        f"{c['compliance_percentage']:>7} %  {c['status']}"
        for c in clients
    ]


def _strategy(choice: dict[str, Any] | None, indent: str = "  ") -> list[str]:
    if not choice:
        return []
    used = choice["used"]
    out = [
        f"{indent}strategy of CSE {choice['cse_name']!r}: {used['id']} "
        f"({used['territory']!r}, {used['quarter'] or 'annual'}, updated {used['updated_at']}); rule: {choice['rule']}"
    ]
    out += [
        f"{indent}  passed over {p['id']} ({p['territory']!r}, {p['quarter'] or 'annual'}): {p['why']}"
        for p in choice["passed_over"]
    ]
    return out


def _territory(x: dict[str, Any]) -> list[str]:
    out = [f"{_head(x)}: territory {x['territory']!r}"]
    for r in x["rows"]:
        out += [
            "",
            f"Strategy {r['territory_strategy_id']} (CSE {r['cse_name']!r}): {r['total_clients']} clients, "
            f"required {r['total_required_events']}, "
            f"completed (credited) {r['total_completed_events']} → {r['overall_compliance_percentage']} %; "
            f"at risk {r['clients_at_risk']}, critical {r['clients_critical']}",
            f"  {r['arithmetic']}",
        ]
        out += _strategy(r["strategy"])
        out.append(f"  business unit: {r['bu_name'] or 'none'} ({r['bu_entry']})")
        out.append("  clients (weights: required and credited totals):")
        out += _members(r["contributors"], "    ")
    for n in x["not_used"]:
        out += [
            "",
            f"Strategy {n['territory_strategy_id']} (CSE {n['cse_name']!r}, {n['quarter'] or 'annual'}) "
            f"not used: {n['why']}",
        ]
    if len(x["rows"]) > 1:
        out += ["", f"All rows of the territory: {x['arithmetic']}"]
    return out


def _bu(x: dict[str, Any]) -> list[str]:
    out = [
        f"{_head(x)}: business unit {x['bu_name']!r} ({x['map']})",
        f"overall {x['overall_compliance_percentage']} %, clients below compliance {x['clients_below_compliance']}, "
        f"territories {x['territory_count']}",
        f"  {x['arithmetic']}",
        "",
        "Territories (weights: required and credited totals of their clients):",
    ]
    for t in x["contributors"]:
        out.append(
            f"  {t['territory']!r} (CSE {t['cse_name']!r}, {t['territory_strategy_id']}): "
            f"{t['clients']} clients, required {t['required_total']}, "
            f"credited {t['credited_total']} → {t['compliance_percentage']} %; map entry {t['bu_entry']}"
        )
    out += ["", "Clients:"] + _members(x["clients"])
    out += _unmapped(x, "Unmapped territories of the FY (in no BU): ")
    return out


def _unmapped(x: dict[str, Any], title: str) -> list[str]:
    """The territories the BU map does not map, after a blank line (none: nothing)."""
    if not x["unmapped_territories"]:
        return []
    listed = (f"{u['territory']!r} (CSE {u['cse_name']!r}, {u['clients']} clients)" for u in x["unmapped_territories"])
    return ["", title + ", ".join(listed)]


def _apac(x: dict[str, Any]) -> list[str]:
    out = [
        f"{_head(x)}: APAC",
        f"actual_compliance {x['overall_compliance_percentage']} %, below compliance {x['below_compliance_accounts']}",
        f"  {x['arithmetic']}",
        "",
        "Business units (weights: required and credited totals of their clients):",
    ]
    for b in x["contributors"]:
        out.append(
            f"  {b['bu_name']:<16} {b['clients']:>4} clients ({b['clients_below']} below)  "
            f"required {b['required_total']:>5}  credited {b['credited_total']:>5}  → {b['compliance_percentage']} %"
        )
    if x["unassigned_clients"]:
        out += ["", "Unassigned clients (no territory: APAC only):"] + [
            f"  {c['client_name']!r}: {c['why']}" for c in x["unassigned_clients"]
        ]
    out += _unmapped(x, "Unmapped territories (their clients count as Unassigned): ")
    chosen = [s for s in x["strategies"] if s and s["passed_over"]]
    if chosen:
        out += ["", "Strategies chosen over others (per CSE):"]
        for s in chosen:
            out += _strategy(s)
    return out
