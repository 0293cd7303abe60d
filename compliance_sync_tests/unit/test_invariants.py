"""SPEC §6 pre-write invariants: the rows of Appendix A pass; each kind of tampering is caught by the
matching invariant code."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from compliance_sync.domain.invariants import INVARIANTS, check_invariants
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TERRITORY
from compliance_sync.domain.thresholds import Thresholds
from compliance_sync_tests.scenario import Scenario, appendix_a


@pytest.fixture
def scenario():
    return appendix_a()


@pytest.fixture
def comp(scenario):
    # a fresh Computation per test: tampering mutates nested dicts / lists in place
    return scenario.compute()


def violations(found):
    return found.found()


FIELD = {
    "compliance_percentage": "percent",
    "status": "status",
    "completed_count": "completed",
    "required_count": "required",
    "scheduled_count": "scheduled",
}


def tamper(comp, event_type_name, **changes):
    """Change a requirement's values as the rules hand them to the writer (every plan of the client)."""
    for c in comp.clients.values():
        for i, r in enumerate(c.requirements):
            if r.event_type_name == event_type_name:
                c.requirements[i] = r._replace(**{FIELD[k]: v for k, v in changes.items()})


class Rows:
    """``rows[table]``: the wanted rows of a target, mutable in place (requirements: their plans)."""

    def __init__(self, comp):
        self.comp = comp

    def __getitem__(self, table):
        return self.comp.wanted.requirements.plans if table == REQUIREMENTS else self.comp.wanted.rows(table)


def codes(comp, thresholds=None):
    found = check_invariants(comp, thresholds or Thresholds())
    return {f.code for f in violations(found)}


def examples(comp, code):
    found = check_invariants(comp, Thresholds())
    return found[code].examples


# --- the untouched computation -------------------------------------------------------------------------------
def test_appendix_a_has_no_violations(scenario, comp):
    found = check_invariants(comp, scenario.thresholds)
    assert set(found) == set(INVARIANTS)
    assert violations(found) == []
    assert all(f.severity == "ERROR" and f.count == 0 and f.examples == [] for f in found.values())


def test_appendix_a_figures_are_what_the_invariants_see(comp):
    # sanity: the tampering below starts from the Appendix A figures
    t = comp.wanted.territories[0]
    assert (t["total_clients"], t["total_required_events"], t["total_completed_events"]) == (1, 19, 10)
    assert t["overall_compliance_percentage"] == Decimal("52.63")
    assert comp.wanted.apac[0]["actual_compliance"] == Decimal("52.63")
    assert len(comp.wanted.requirements) == 3


def test_larger_scenario_has_no_violations():
    s = Scenario(2026, 7, "2026-01-31")
    s.tier("Giant")
    s.tier("Nurture")
    s.event_type("QBR")
    s.event_type("HEALTH_CHECK")
    s.require("Giant", "QBR", 4)
    s.require("Giant", "HEALTH_CHECK", 12)
    s.require("Nurture", "QBR", 1)
    s.period("Alpha", "Giant", "2024-01-01", cse="Kim Lee")
    s.period("Beta", "Nurture", "2024-01-01", cse="Kim Lee")
    s.period("Gamma", "Giant", "2024-01-01", cse="Jo Park")
    s.period("Delta", "Nurture", "2024-01-01", cse="Nobody")
    for label, client in (("pa", "Alpha"), ("pa2", "Alpha"), ("pb", "Beta"), ("pc", "Gamma"), ("pd", "Delta")):
        s.plan(label, client)
    s.strategy("ts1", "Kim Lee", "VIC + NZ")
    s.strategy("ts2", "Jo Park", "Singapore")
    s.bu_map.territory["Singapore"] = "SEA"
    s.event("e1", "Alpha", "QBR", "2025-08-10")
    s.event("e2", "Alpha", "QBR", "2025-11-10")
    s.event("e3", "Beta", "QBR", "2025-09-01")
    s.event("e4", "Gamma", "HEALTH_CHECK", "2025-07-02")
    s.event("e5", "Gamma", "HEALTH_CHECK", "2026-03-02", completed=False)
    comp = s.compute()
    assert len(comp.wanted.territories) == 2
    assert len(comp.wanted.business_units) == 2
    assert violations(check_invariants(comp, s.thresholds)) == []


# --- territory totals ---------------------------------------------------------------------------------------
def test_tampered_total_required_events(comp):
    Rows(comp)[TERRITORY][0]["total_required_events"] = 20
    found = codes(comp)
    assert "territory_totals" in found
    assert "capacity_sums" in found  # Σ monthly required is still 19
    assert "rollup_percentages" in found  # 10/20 = 50.00 != 52.63
    assert any("total_required_events = 20" in e and "19" in e for e in examples(comp, "territory_totals"))


@pytest.mark.parametrize(
    "column, value",
    [("total_clients", 2), ("clients_critical", 0), ("clients_at_risk", 1)],
)
def test_tampered_territory_counts(comp, column, value):
    Rows(comp)[TERRITORY][0][column] = value
    # total_clients also disagrees with the BU's territory_data entry
    assert codes(comp) == (
        {"territory_totals", "rollup_percentages"} if column == "total_clients" else {"territory_totals"}
    )
    sid = Rows(comp)[TERRITORY][0]["territory_strategy_id"]
    assert any(sid in e and column in e for e in examples(comp, "territory_totals"))


def test_tampered_total_completed_events(comp):
    Rows(comp)[TERRITORY][0]["total_completed_events"] = 11
    found = codes(comp)
    assert "territory_totals" in found
    assert "rollup_percentages" in found  # 11/19 = 57.89 != 52.63
    assert "capacity_sums" not in found


def test_tampered_bu_clients_below(comp):
    Rows(comp)[BUSINESS_UNIT][0]["clients_below_compliance"] = 0
    assert codes(comp) == {"territory_totals"}
    assert any("ANZ" in e for e in examples(comp, "territory_totals"))


def test_tampered_bu_territory_count(comp):
    Rows(comp)[BUSINESS_UNIT][0]["territory_count"] = 2
    assert codes(comp) == {"territory_totals"}


def test_tampered_apac_contribution_clients(comp):
    Rows(comp)[APAC][0]["bu_contributions"][0]["clients"] = 2
    assert codes(comp) == {"territory_totals", "rollup_percentages"}  # the sum, and the entry itself
    assert any("APAC" in e for e in examples(comp, "territory_totals"))


# --- roll-up percentages -----------------------------------------------------------------------------------
def test_tampered_territory_percentage(comp):
    Rows(comp)[TERRITORY][0]["overall_compliance_percentage"] = Decimal("52.64")
    assert codes(comp) == {"rollup_percentages"}


def test_tampered_bu_percentage(comp):
    Rows(comp)[BUSINESS_UNIT][0]["overall_compliance_percentage"] = Decimal("53.00")
    assert codes(comp) == {"rollup_percentages"}
    assert any("BU ANZ" in e and "53.00" in e for e in examples(comp, "rollup_percentages"))


def test_tampered_apac_actual_compliance(comp):
    Rows(comp)[APAC][0]["actual_compliance"] = Decimal("52.64")
    assert codes(comp) == {"rollup_percentages"}
    assert any("APAC FY2025" in e and "52.64" in e for e in examples(comp, "rollup_percentages"))


def test_apac_actual_compliance_null_with_clients(comp):
    Rows(comp)[APAC][0]["actual_compliance"] = None
    assert codes(comp) == {"rollup_percentages"}


def test_percentage_equal_as_number_is_fine(comp):
    # 52.63 written as 52.630 is the same number
    Rows(comp)[APAC][0]["actual_compliance"] = Decimal("52.630")
    Rows(comp)[BUSINESS_UNIT][0]["overall_compliance_percentage"] = Decimal("52.6300")
    assert codes(comp) == set()


# --- monthly capacity ---------------------------------------------------------------------------------------
def test_tampered_monthly_capacity_required(comp):
    Rows(comp)[TERRITORY][0]["monthly_capacity"]["2025-03"]["required"] = 3
    assert codes(comp) == {"capacity_sums"}
    assert any("Σ required 20" in e and "19" in e for e in examples(comp, "capacity_sums"))


def test_monthly_capacity_missing_month(comp):
    cap = Rows(comp)[TERRITORY][0]["monthly_capacity"]
    dec = cap.pop("2025-12")
    cap["2025-11"]["required"] += dec["required"]
    assert len(cap) == 11
    assert codes(comp) == {"capacity_sums"}
    assert any("11 months" in e for e in examples(comp, "capacity_sums"))


def test_monthly_capacity_null(comp):
    Rows(comp)[TERRITORY][0]["monthly_capacity"] = None
    assert codes(comp) == {"capacity_sums"}


# --- value ranges and statuses ------------------------------------------------------------------------------
def test_tampered_requirement_percentage(comp):
    tamper(comp, "Sla Review", compliance_percentage=Decimal("50.01"))
    assert codes(comp) == {"value_ranges"}
    assert any("percentage 50.01" in e for e in examples(comp, "value_ranges"))


def test_tampered_requirement_status(comp):
    tamper(comp, "Health Check", status="at_risk")  # 1 of 3 is critical
    assert codes(comp) == {"value_ranges"}
    assert any("status at_risk for 1/3" in e for e in examples(comp, "value_ranges"))


def test_tampered_completed_count(comp):
    tamper(comp, "Insight Tp", completed_count=8)  # 58.33 no longer matches 8/12
    assert codes(comp) == {"value_ranges"}


@pytest.mark.parametrize("column, value", [("required_count", 0), ("completed_count", -1), ("scheduled_count", -1)])
def test_impossible_counts(comp, column, value):
    tamper(comp, "Sla Review", **{column: value})
    assert codes(comp) == {"value_ranges"}


def test_statuses_follow_the_given_thresholds(comp):
    # with thresholds 10,20,30 the Appendix A rows (50 %, 58.33 %, 33.33 %) are all "exceeded"
    assert codes(comp, Thresholds.parse("10,20,30")) == {"value_ranges"}
    found = check_invariants(comp, Thresholds.parse("10,20,30"))
    assert found["value_ranges"].count == 3


@pytest.mark.parametrize(
    "where",
    ["segment_breakdown", "territory_data", "bu_contributions"],
)
def test_percentage_250_out_of_range(comp, where):
    if where == "segment_breakdown":
        Rows(comp)[TERRITORY][0]["segment_breakdown"]["Collaboration"]["compliance"] = Decimal("250.00")
    elif where == "territory_data":
        Rows(comp)[BUSINESS_UNIT][0]["territory_data"][0]["compliance"] = Decimal("250.00")
    else:
        Rows(comp)[APAC][0]["bu_contributions"][0]["compliance"] = Decimal("250.00")
    # out of range, and no longer the percentage of the clients it summarises
    assert codes(comp) == {"value_ranges", "rollup_percentages"}
    assert any("250.00 outside [0, 200]" in e for e in examples(comp, "value_ranges"))


def test_negative_percentage_out_of_range(comp):
    Rows(comp)[BUSINESS_UNIT][0]["territory_data"][0]["compliance"] = Decimal("-0.01")
    assert codes(comp) == {"value_ranges", "rollup_percentages"}


def test_requirement_percentage_250(comp):
    tamper(comp, "Sla Review", compliance_percentage=Decimal("250.00"))
    found = check_invariants(comp, Thresholds())
    assert {f.code for f in violations(found)} == {"value_ranges"}
    # reported both as inconsistent with the counts and as out of range
    assert found["value_ranges"].count == 2
    assert any("outside [0, 200]" in e for e in found["value_ranges"].examples)


def test_percentage_200_is_in_range():
    s = appendix_a()
    s.event("extra1", "Alpha Health", "HEALTH_CHECK", "2025-04-01")
    for i in range(5):
        s.event(f"extra-h{i}", "Alpha Health", "HEALTH_CHECK", f"2025-05-0{i + 1}")
    comp = s.compute()
    pcts = {r["event_type_name"]: r["compliance_percentage"] for r in comp.wanted.requirements}
    assert pcts["Health Check"] == Decimal("200.00")  # 7 of 3, capped
    assert violations(check_invariants(comp, s.thresholds)) == []


# --- unique keys ------------------------------------------------------------------------------------------
def test_duplicate_requirement_row(comp):
    items = Rows(comp)[REQUIREMENTS]
    items.append(items[0])
    assert codes(comp) == {"unique_keys"}
    ex = examples(comp, "unique_keys")
    assert any(REQUIREMENTS in e and "appears 2 times" in e for e in ex)


def test_duplicate_requirement_key_differing_in_uuid_case(comp):
    items = Rows(comp)[REQUIREMENTS]
    items.append(dataclasses.replace(items[0], plan_id=str(items[0].plan_id).upper()))
    assert "unique_keys" in codes(comp)


def test_duplicate_apac_row(comp):
    items = Rows(comp)[APAC]
    items.append(dict(items[0]))
    assert codes(comp) == {"unique_keys"}
    assert any(APAC in e for e in examples(comp, "unique_keys"))


# --- several at once ------------------------------------------------------------------------------------------
def test_counts_and_examples_accumulate(comp):
    for name in ("Sla Review", "Insight Tp", "Health Check"):
        tamper(comp, name, status="exceeded")
    found = check_invariants(comp, Thresholds())
    assert [f.code for f in violations(found)] == ["value_ranges"]
    assert found["value_ranges"].count == 3
    assert len(found["value_ranges"].examples) == 3
    assert all(f.severity == "ERROR" for f in violations(found))


def test_violations_lists_only_findings_with_counts(comp):
    Rows(comp)[APAC][0]["actual_compliance"] = Decimal("1.00")
    Rows(comp)[TERRITORY][0]["monthly_capacity"]["2025-01"]["required"] = 99
    found = check_invariants(comp, Thresholds())
    assert sorted(f.code for f in violations(found)) == ["capacity_sums", "rollup_percentages"]
    assert all(found[c].count == 0 for c in ("territory_totals", "value_ranges", "unique_keys"))


def test_tampered_apac_below_and_segment_breakdown(comp):
    Rows(comp)[APAC][0]["below_compliance_accounts"] = 0
    assert codes(comp) == {"territory_totals"}


def test_tampered_segment_breakdown_totals(comp):
    Rows(comp)[TERRITORY][0]["segment_breakdown"]["Collaboration"]["total_required"] = 18
    assert codes(comp) == {"territory_totals"}
