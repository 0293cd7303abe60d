"""SPEC §4 steps 7-9: the used strategy of each CSE and its territory, the business units, and APAC."""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterable
from typing import Any

from compliance_sync.domain.bu_map import RESERVED_BU, BuMap
from compliance_sync.domain.facts import Strategy
from compliance_sync.domain.findings import Findings, WarningCode
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.provenance import Trace
from compliance_sync.domain.rules.arithmetic import month_sums, text_key
from compliance_sync.domain.rules.scoring import rollup
from compliance_sync.domain.rules.shapes import Client, Territory
from compliance_sync.errors import DataError


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
    """The per-CSE tie-break's sort key: annual before quarterly, then latest ``updated_at`` (null oldest), then
    smallest id."""
    return (0 if _annual(s.quarter) else 1, *(-x for x in _recency(s.updated_at)), s.id)


def used_strategies(strategies: Iterable[Strategy], found: Findings, trace: Trace | None = None) -> dict[str, Strategy]:
    """Per CSE: annual before quarterly, then latest ``updated_at`` (null oldest), then smallest id."""
    by_cse: dict[str | None, list[Strategy]] = collections.defaultdict(list)
    for s in strategies:
        if s.status != "archived":
            by_cse[s.cse_name].append(s)
    used: dict[str, Strategy] = {}
    for cse, items in sorted(by_cse.items(), key=lambda kv: text_key(kv[0])):
        if cse is None:
            for s in items:
                found.add(WarningCode.UNUSED_STRATEGIES, f"strategy {s.id} ({s.territory}) has no cse_name")
            continue
        items.sort(key=strategy_rank)
        used[cse] = items[0]
        if trace is not None:
            trace.strategies[cse] = list(items)
        for s in items[1:]:
            found.add(
                WarningCode.UNUSED_STRATEGIES,
                f"{cse}: strategy {s.id} ({s.territory}, quarter {s.quarter or 'annual'}) loses to {items[0].id}",
            )
    return used


def assign_territories(
    fy: FiscalYear, clients: dict[str, Client], strategies: dict[str, Strategy], found: Findings
) -> dict[str, Territory]:
    """A client belongs to the used strategy of its CSE; clients without one are unassigned (reported)."""
    territories: dict[str, Territory] = {}
    for c in clients.values():
        s = strategies.get(c.cse_name) if c.cse_name is not None else None
        if s is None:
            found.add(
                WarningCode.CLIENTS_WITHOUT_STRATEGY,
                f"{c.name!r}: CSE {c.cse_name!r} has no territory strategy for FY{fy.year}",
            )
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
            fy.month_label(j + 1): {"required": due[j], "completed": done[j], "scheduled": planned[j]}
            for j in range(12)
        },
    }


# --- step 8: business units ---------------------------------------------------------------------------------
def map_business_units(
    territories: dict[str, Territory], rows: dict[str, dict[str, Any]], bu_map: BuMap, found: Findings
) -> dict[str, list[str]]:
    """BU -> the strategy ids of its territories; unmapped territories are reported and left out."""
    by_bu: dict[str, list[str]] = collections.defaultdict(list)
    for sid, t in territories.items():
        bu = bu_map.bu_for(t.strategy.cse_name, t.strategy.territory)
        if bu is None:
            found.add(
                WarningCode.UNMAPPED_TERRITORIES,
                f"territory {t.strategy.territory!r} (CSE {t.strategy.cse_name!r}, "
                f"{rows[sid]['total_clients']} clients) maps to no business unit",
            )
            continue
        if bu == RESERVED_BU:  # BuMap refuses it when loading; kept as a last line of defence
            raise DataError(f"BU map: '{RESERVED_BU}' is reserved and cannot be a business unit")
        by_bu[bu].append(sid)
    return dict(sorted(by_bu.items()))


def bu_row(
    fy: FiscalYear, bu: str, sids: list[str], territories: dict[str, Territory], rows: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    pct, _, below = rollup(c for sid in sids for c in territories[sid].members)
    ordered = sorted(sids, key=lambda sid: (text_key(rows[sid]["territory"]), text_key(rows[sid]["cse_name"]), sid))
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


# --- step 9: APAC -------------------------------------------------------------------------------------------
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
