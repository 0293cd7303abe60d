"""SPEC §4 as pure functions: the facts of one FY in, the wanted rows of the four targets and the findings of
SPEC §6 out. No I/O, no configuration, no Dagster; integer arithmetic only.

One module per group of steps (:mod:`.clients` 1-2, :mod:`.requirements` 3-4, :mod:`.scoring` 5-6,
:mod:`.rollups` 7-9, :mod:`.quality` the cross-table findings, :mod:`.arithmetic` §4.5);
:func:`compute` chains them in SPEC order. The choices where the spec is silent: docs/architecture.md."""

from __future__ import annotations

import dataclasses
import datetime as dt

from compliance_sync.domain.bu_map import BuMap
from compliance_sync.domain.facts import Facts, Plan
from compliance_sync.domain.findings import RULE_WARNINGS, WARNINGS, Findings, Severity
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.provenance import Trace
from compliance_sync.domain.rules.arithmetic import pct_hundredths, requirement_percent, rollup_percent
from compliance_sync.domain.rules.clients import plans_in_scope, valid_periods
from compliance_sync.domain.rules.quality import check_aliases, check_cache_drift, check_names, report_undated
from compliance_sync.domain.rules.requirements import frequency_table, index_events
from compliance_sync.domain.rules.rollups import (
    apac_row,
    assign_territories,
    bu_row,
    map_business_units,
    strategy_rank,
    territory_row,
    used_strategies,
)
from compliance_sync.domain.rules.scoring import rollup, score_clients
from compliance_sync.domain.rules.shapes import Client, Territory
from compliance_sync.domain.thresholds import Thresholds
from compliance_sync.domain.wanted import PlanRow, RequirementRows, WantedRows

__all__ = [
    "Client",
    "Computation",
    "Territory",
    "apac_row",
    "bu_row",
    "compute",
    "pct_hundredths",
    "plans_in_scope",
    "requirement_percent",
    "rollup",
    "rollup_percent",
    "strategy_rank",
    "territory_row",
]


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


# --- the whole computation ----------------------------------------------------------------------------------
def run_stats(
    plans: list[Plan],
    plan_clients: list[str],
    clients: dict[str, Client],
    bu_of_client: dict[str, str | None],
    wanted: WantedRows,
) -> dict[str, int]:
    """The counts of the run's summary (``summary.STAT_KEYS`` orders the ones the old script's report shows)."""
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
        plans=[
            PlanRow(p.id, p.client_id or clients[p.client_name].client_uuid, p.client_name)
            for p in plans
            if p.client_name in clients
        ],
        segments={name: c.segment for name, c in clients.items()},
        by_client={name: c.requirements for name, c in clients.items()},
        event_ids=facts.event_ids,
    )
    wanted = WantedRows(fy.year, requirement_rows, list(territory_rows.values()), bu_rows, [apac])
    stats = run_stats(plans, plan_clients, clients, bu_of_client, wanted)
    return Computation(fy, facts.as_of, wanted, clients, territories, bu_of_client, found, stats, trace)
