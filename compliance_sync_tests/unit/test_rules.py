"""SPEC §4, rule by rule and boundary by boundary, without a database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from compliance_sync.domain.bu_map import BuMap
from compliance_sync.domain.rules import pct_hundredths, requirement_percent, rollup_percent
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TERRITORY
from compliance_sync.errors import DataError
from compliance_sync_tests.scenario import APPENDIX_A_CAPACITY, Scenario, appendix_a, d, rows, uid


def by_code(comp, code_of=None):
    out = {}
    for r in rows(comp, REQUIREMENTS):
        out[(r["plan_id"], r["event_type_name"])] = r
    return out


def one_client(year=2025, start_month=1, as_of=None, tier="Leverage", reqs=(("SLA_REVIEW", 4),)) -> Scenario:
    s = Scenario(year, start_month, as_of)
    s.tier(tier)
    for code, freq in reqs:
        s.event_type(code)
        s.require(tier, code, freq)
    s.period("Alpha", tier, "2020-01-01")
    s.plan("p1", "Alpha")
    s.strategy("ts1", "Kim Lee", "VIC + NZ")
    return s


def req_row(comp, code="SLA_REVIEW", plan="p1"):
    name = code.title().replace("_", " ")
    matches = [r for r in rows(comp, REQUIREMENTS) if r["event_type_name"] == name and r["plan_id"] == uid(plan)]
    assert len(matches) <= 1
    return matches[0] if matches else None


# --- Appendix A ---------------------------------------------------------------------------------------------
def test_appendix_a_requirement_rows():
    comp = appendix_a().compute()
    got = {r["event_type_name"]: r for r in rows(comp, REQUIREMENTS)}
    assert set(got) == {"Sla Review", "Insight Tp", "Health Check"}
    expected = {
        "Sla Review": (4, 2, 2, Decimal("50.00"), "at_risk", d("2025-09-30"), ["a1", "a2", "a3", "a4"]),
        "Insight Tp": (12, 7, 0, Decimal("58.33"), "at_risk", d("2025-08-31"), [f"b{i}" for i in range(7)]),
        "Health Check": (3, 1, 0, Decimal("33.33"), "critical", d("2025-08-31"), ["c1"]),
    }
    for name, (req, comp_, sched, pct, status, due, ids) in expected.items():
        r = got[name]
        assert r["plan_id"] == uid("p1") and r["fiscal_year"] == 2025
        assert r["segment"] == "Collaboration" and r["client_name"] == "Alpha Health"
        assert (r["required_count"], r["completed_count"], r["scheduled_count"]) == (req, comp_, sched)
        assert r["compliance_percentage"] == pct and str(r["compliance_percentage"]) == str(pct)
        assert r["status"] == status
        assert r["next_due_date"] == due
        assert r["linked_event_ids"] == [uid(i) for i in ids]


def test_appendix_a_rollups():
    comp = appendix_a().compute()
    alpha = comp.clients["Alpha Health"]
    assert (alpha.required_total, alpha.credited_total, alpha.percent) == (19, 10, Decimal("52.63"))
    assert alpha.is_critical and not alpha.is_at_risk
    [t] = rows(comp, TERRITORY)
    assert t["territory_strategy_id"] == uid("ts1") and t["territory"] == "VIC + NZ" and t["cse_name"] == "Kim Lee"
    assert (t["total_clients"], t["total_required_events"], t["total_completed_events"]) == (1, 19, 10)
    assert t["overall_compliance_percentage"] == Decimal("52.63")
    assert (t["clients_at_risk"], t["clients_critical"]) == (0, 1)
    assert t["segment_breakdown"] == {
        "Collaboration": {"clients": 1, "total_required": 19, "total_completed": 10, "compliance": Decimal("52.63")}
    }
    expected = APPENDIX_A_CAPACITY
    assert list(t["monthly_capacity"]) == [f"2025-{m:02d}" for m in range(1, 13)]
    assert [
        tuple(v[k] for k in ("required", "completed", "scheduled")) for v in t["monthly_capacity"].values()
    ] == expected
    [bu] = rows(comp, BUSINESS_UNIT)
    assert bu == {
        "bu_name": "ANZ",
        "fiscal_year": 2025,
        "overall_compliance_percentage": Decimal("52.63"),
        "clients_below_compliance": 1,
        "territory_count": 1,
        "territory_data": [
            {"territory": "VIC + NZ", "cse_name": "Kim Lee", "clients": 1, "compliance": Decimal("52.63")}
        ],
    }
    [apac] = rows(comp, APAC)
    assert apac == {
        "fiscal_year": 2025,
        "actual_compliance": Decimal("52.63"),
        "below_compliance_accounts": 1,
        "bu_contributions": [{"bu_name": "ANZ", "compliance": Decimal("52.63"), "clients": 1, "clients_below": 1}],
    }
    assert comp.findings["completed_future_events"].count == 1


# --- arithmetic -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "c,r,pct",
    [
        (1, 32, "3.13"),
        (3, 32, "9.38"),
        (9999, 20000, "50.00"),
        (1, 3, "33.33"),
        (2, 3, "66.67"),
        (0, 5, "0.00"),
        (5, 5, "100.00"),
        (10, 5, "200.00"),
        (11, 5, "200.00"),
        (7, 12, "58.33"),
    ],
)
def test_percentage_half_up_and_cap(c, r, pct):
    assert requirement_percent(c, r) == Decimal(pct)
    assert str(requirement_percent(c, r)) == pct


def test_rollup_uncapped_and_empty():
    assert rollup_percent(0, 0) == Decimal("100.00")
    assert pct_hundredths(30, 10, cap=False) == 30000


@pytest.mark.parametrize(
    "c,r,status",
    [
        (5, 10, "at_risk"),
        (4, 10, "critical"),
        (8, 10, "compliant"),
        (7, 10, "at_risk"),
        (10, 10, "exceeded"),
        (9, 10, "compliant"),
        (183, 366, "at_risk"),
        (182, 366, "critical"),
        (0, 1, "critical"),
    ],
)
def test_status_thresholds_exact(c, r, status):
    s = one_client(reqs=(("SLA_REVIEW", r),), as_of="2025-12-31")
    for i in range(c):
        s.event(f"e{i}", "Alpha", "SLA_REVIEW", "2025-06-01")
    comp = s.compute()
    row = req_row(comp)
    assert row["status"] == status
    assert row["completed_count"] == c


def test_20000_9999_shows_50_but_is_critical():
    from compliance_sync.domain.thresholds import Thresholds

    assert requirement_percent(9999, 20000) == Decimal("50.00")
    assert Thresholds().status(9999, 20000) == "critical"
    assert Thresholds().status(10000, 20000) == "at_risk"


def test_cap_at_200_and_credit_capped_per_type():
    s = one_client(reqs=(("SLA_REVIEW", 2), ("HEALTH_CHECK", 2)))
    for i in range(5):
        s.event(f"e{i}", "Alpha", "SLA_REVIEW", "2025-03-01")
    comp = s.compute()
    assert req_row(comp)["compliance_percentage"] == Decimal("200.00")
    assert req_row(comp)["status"] == "exceeded"
    assert req_row(comp, "HEALTH_CHECK")["status"] == "critical"
    client = comp.clients["Alpha"]
    assert (client.required_total, client.credited_total, client.percent) == (4, 2, Decimal("50.00"))


def test_due_dates_and_next_due():
    s = one_client(reqs=(("SLA_REVIEW", 5),), as_of="2025-12-31")
    s.event("e1", "Alpha", "SLA_REVIEW", "2025-01-05")
    comp = s.compute()
    # k = 2 of 5: month ceil(24/5) = 5 -> 2025-05-31
    assert req_row(comp)["next_due_date"] == d("2025-05-31")
    [t] = rows(comp, TERRITORY)
    assert [m["required"] for m in t["monthly_capacity"].values()] == [
        0,
        0,
        1,
        0,
        1,
        0,
        0,
        1,
        0,
        1,
        0,
        1,
    ]  # months 3, 5, 8, 10, 12


def test_next_due_null_when_met():
    s = one_client(reqs=(("SLA_REVIEW", 1),))
    s.event("e1", "Alpha", "SLA_REVIEW", "2025-01-05")
    assert req_row(s.compute())["next_due_date"] is None


def test_overdue_next_due_date_is_in_the_past():
    s = one_client(reqs=(("SLA_REVIEW", 12),), as_of="2025-11-15")
    assert req_row(s.compute())["next_due_date"] == d("2025-01-31")


# --- requirements ----------------------------------------------------------------------------------------
def test_no_requirements_client_counts_with_100():
    s = one_client(reqs=(("SLA_REVIEW", 0),))
    comp = s.compute()
    assert rows(comp, REQUIREMENTS) == []
    c = comp.clients["Alpha"]
    assert (c.required_total, c.percent, c.is_critical, c.is_at_risk) == (0, Decimal("100.00"), False, False)
    [t] = rows(comp, TERRITORY)
    assert t["total_clients"] == 1 and t["overall_compliance_percentage"] == Decimal("100.00")
    assert rows(comp, APAC)[0]["actual_compliance"] == Decimal("100.00")


def test_max_over_periods_and_latest_segment():
    s = Scenario(2025)
    s.tier("Giant")
    s.tier("Nurture")
    s.event_type("SLA_REVIEW")
    s.event_type("INSIGHT_TP")
    s.require("Giant", "SLA_REVIEW", 6)
    s.require("Nurture", "SLA_REVIEW", 2)
    s.require("Nurture", "INSIGHT_TP", 3)
    s.period("Alpha", "Giant", "2024-01-01", "2025-06-30", cse="Old CSE")
    s.period("Alpha", "Nurture", "2025-07-01", cse="Kim Lee", client_uuid=uid("alpha-uuid"))
    s.plan("p1", "Alpha")
    s.strategy("ts1", "Kim Lee", "VIC + NZ")
    comp = s.compute()
    assert req_row(comp)["required_count"] == 6
    assert req_row(comp, "INSIGHT_TP")["required_count"] == 3
    assert req_row(comp)["segment"] == "Nurture"
    assert req_row(comp)["client_id"] == uid("alpha-uuid")
    assert comp.clients["Alpha"].cse_name == "Kim Lee"


def test_plan_client_id_wins_over_period_uuid():
    s = one_client()
    s.plans[0]["client_id"] = uid("plan-client")
    s.periods[0]["client_uuid"] = uid("period-client")
    assert req_row(s.compute())["client_id"] == uid("plan-client")


def test_latest_period_tie_broken_by_greatest_id():
    s = Scenario(2025)
    s.tier("Giant")
    s.tier("Nurture")
    s.event_type("SLA_REVIEW")
    s.require("Giant", "SLA_REVIEW", 1)
    a = s.period("Alpha", "Giant", "2025-01-01", label="x1", cse="A")
    b = s.period("Alpha", "Nurture", "2025-01-01", "2025-12-31", label="x2", cse="B")
    s.plan("p1", "Alpha")
    comp = s.compute()
    winner = max(a, b)
    assert comp.clients["Alpha"].segment == ("Giant" if winner == a else "Nurture")


@pytest.mark.parametrize(
    "start,end,included",
    [
        ("2024-01-01", "2024-12-31", False),
        ("2025-12-31", None, True),
        ("2024-01-01", "2025-01-01", True),
        ("2026-01-01", None, False),
    ],
)
def test_period_boundaries(start, end, included):
    s = Scenario(2025)
    s.tier("Giant")
    s.event_type("SLA_REVIEW")
    s.require("Giant", "SLA_REVIEW", 2)
    s.period("Alpha", "Giant", start, end)
    s.plan("p1", "Alpha")
    comp = s.compute()
    assert ("Alpha" in comp.clients) is included
    assert comp.findings["clients_without_segmentation"].count == (0 if included else 1)


def test_period_ending_before_it_starts_is_ignored_and_reported():
    s = one_client()
    s.periods.clear()
    s.period("Alpha", "Leverage", "2025-05-01", "2025-03-01")
    comp = s.compute()
    assert "Alpha" not in comp.clients
    assert comp.findings["invalid_segment_periods"].count == 1
    assert rows(comp, REQUIREMENTS) == [] and rows(comp, TERRITORY) == []
    assert rows(comp, APAC)[0]["actual_compliance"] is None


def test_a_period_without_effective_from_is_ignored_and_reported():
    s = one_client()
    s.periods.clear()
    s.period("Alpha", "Leverage", "2025-01-01", label="no-start")
    s.periods[-1]["effective_from"] = None
    comp = s.compute()
    assert "Alpha" not in comp.clients and rows(comp, REQUIREMENTS) == []
    assert comp.findings["invalid_segment_periods"].examples == [
        f"Alpha: period {uid('no-start')} has a null effective_from"
    ]
    assert comp.findings["clients_without_segmentation"].count == 1


def test_a_period_without_effective_from_beside_a_valid_one_is_reported_and_the_valid_one_used():
    s = one_client(tier="Leverage")
    s.tier("Collaboration")
    s.period("Alpha", "Collaboration", "2025-01-01", label="no-start")
    s.periods[-1]["effective_from"] = None
    s.period("Other", "Collaboration", "2025-01-01", "2024-06-30", label="no-start-ended")  # ended before the FY
    s.periods[-1]["effective_from"] = None
    comp = s.compute()
    assert comp.clients["Alpha"].segment == "Leverage"
    assert comp.findings["invalid_segment_periods"].count == 1  # the period ending before the FY is out of scope


def test_null_and_unknown_tiers_ignored_and_reported():
    s = one_client()
    s.period("Alpha", None, "2025-02-01", label="null-tier")
    s.period("Alpha", None, "2025-03-01", label="unknown-tier", tier_id=uid("no-such-tier"))
    comp = s.compute()
    assert comp.findings["invalid_segment_periods"].count == 2
    assert comp.clients["Alpha"].segment == "Leverage"


def test_two_open_periods_reported():
    s = one_client()
    s.period("Alpha", "Leverage", "2025-02-01")
    comp = s.compute()
    assert comp.findings["overlapping_segment_periods"].count == 1
    assert "Alpha" in comp.clients


def test_overlapping_closed_periods_reported_adjacent_not():
    s = one_client()
    s.periods.clear()
    s.period("Alpha", "Leverage", "2024-01-01", "2025-03-31")
    s.period("Alpha", "Leverage", "2025-04-01")
    assert s.compute().findings["overlapping_segment_periods"].count == 0
    s.periods.clear()
    s.period("Alpha", "Leverage", "2024-01-01", "2025-04-01")
    s.period("Alpha", "Leverage", "2025-04-01")
    assert s.compute().findings["overlapping_segment_periods"].count == 1


@pytest.mark.parametrize(
    "reason,excluded",
    [
        (None, True),
        ("", True),
        ("Client declined", True),
        ("Greyed out", False),
        ("GREYED OUT by CSE", False),
        ("greyedout", True),
    ],
)
def test_exclusions(reason, excluded):
    s = one_client(reqs=(("SLA_REVIEW", 4), ("INSIGHT_TP", 2)))
    s.exclude("Alpha", "SLA_REVIEW", reason)
    comp = s.compute()
    assert (req_row(comp) is None) is excluded
    assert req_row(comp, "INSIGHT_TP") is not None


def test_exclusions_table_missing():
    s = one_client()
    s.exclusions = None
    assert req_row(s.compute()) is not None


@pytest.mark.parametrize("active,required", [(True, True), (False, False), (None, False)])
def test_inactive_and_null_active_types(active, required):
    s = one_client(reqs=())
    s.event_type("SLA_REVIEW", active=active)
    s.require("Leverage", "SLA_REVIEW", 3)
    assert (req_row(s.compute()) is not None) is required


def test_null_frequency_is_zero_and_negative_reported():
    s = one_client(reqs=(("SLA_REVIEW", None), ("INSIGHT_TP", -2)))
    comp = s.compute()
    assert rows(comp, REQUIREMENTS) == []
    assert comp.findings["negative_frequency"].count == 1


@pytest.mark.parametrize("freq", [366, 367])
def test_frequency_limit(freq):
    s = one_client(reqs=(("SLA_REVIEW", freq),))
    if freq == 366:
        assert req_row(s.compute())["required_count"] == 366
    else:
        with pytest.raises(DataError, match=r"Leverage.*SLA_REVIEW"):
            s.compute()


# --- counting ----------------------------------------------------------------------------------------
def test_null_completed_counts_as_scheduled():
    s = one_client()
    s.event("e1", "Alpha", "SLA_REVIEW", "2025-02-01", completed=None)
    s.event("e2", "Alpha", "SLA_REVIEW", "2025-02-02", completed=False)
    s.event("e3", "Alpha", "SLA_REVIEW", "2025-02-03", completed=True)
    r = req_row(s.compute())
    assert (r["completed_count"], r["scheduled_count"]) == (1, 2)


def test_completed_future_events_scheduled_and_reported():
    s = one_client(as_of="2025-06-30")
    s.event("e1", "Alpha", "SLA_REVIEW", "2025-06-30")
    s.event("e2", "Alpha", "SLA_REVIEW", "2025-07-01")
    comp = s.compute()
    r = req_row(comp)
    assert (r["completed_count"], r["scheduled_count"]) == (1, 1)
    assert comp.findings["completed_future_events"].count == 1


def test_event_window_boundaries():
    s = one_client()
    s.event("first", "Alpha", "SLA_REVIEW", "2025-01-01")
    s.event("last", "Alpha", "SLA_REVIEW", "2025-12-31")
    s.event("before", "Alpha", "SLA_REVIEW", "2024-12-31")
    s.event("after", "Alpha", "SLA_REVIEW", "2026-01-01")
    r = req_row(s.compute())
    assert r["completed_count"] == 2
    assert r["linked_event_ids"] == [uid("first"), uid("last")]


def test_linked_ids_ordered_by_date_then_id():
    s = one_client()
    labels = ["x", "y", "z", "w"]
    for label in labels:
        s.event(label, "Alpha", "SLA_REVIEW", "2025-03-03")
    s.event("early", "Alpha", "SLA_REVIEW", "2025-03-02")
    r = req_row(s.compute())
    assert r["linked_event_ids"] == [uid("early")] + sorted(uid(x) for x in labels)


def test_as_of_before_fy_start_nothing_completed():
    s = one_client(as_of="2024-06-01")
    s.event("e1", "Alpha", "SLA_REVIEW", "2025-02-01")
    r = req_row(s.compute())
    assert (r["completed_count"], r["scheduled_count"], r["next_due_date"]) == (0, 1, d("2025-03-31"))


def test_unknown_and_undated_events_ignored_and_reported():
    s = one_client()
    s.event("e1", "Alpha", None, "2025-02-01")
    s.event("e2", "Alpha", None, "2025-02-01", type_id=uid("type:NOPE"))
    s.event("e3", "Nobody", "SLA_REVIEW", "2025-02-01")
    s.event("e4", "Alpha", "SLA_REVIEW", None)
    comp = s.compute()
    assert req_row(comp)["completed_count"] == 0
    assert comp.findings["unknown_events"].count == 3
    assert comp.findings["undated_events"].count == 1


def test_several_plans_one_client():
    s = one_client()
    s.plan("p2", "Alpha", status=None)
    s.plan("p3", "Alpha", status="archived")
    s.plan("p4", "Alpha", year=2024)
    s.event("e1", "Alpha", "SLA_REVIEW", "2025-02-01")
    comp = s.compute()
    assert {r["plan_id"] for r in rows(comp, REQUIREMENTS)} == {uid("p1"), uid("p2")}
    [t] = rows(comp, TERRITORY)
    assert t["total_clients"] == 1 and t["total_required_events"] == 4
    assert sum(m["required"] for m in t["monthly_capacity"].values()) == 4
    assert sum(m["completed"] for m in t["monthly_capacity"].values()) == 1


def test_archived_plan_only_client_not_processed():
    s = one_client()
    s.plans[0]["status"] = "archived"
    comp = s.compute()
    assert comp.clients == {} and rows(comp, APAC)[0]["actual_compliance"] is None
    assert rows(comp, APAC)[0]["bu_contributions"] == []


def test_names_match_exactly():
    s = one_client()
    s.plan("p2", "alpha ")
    s.event("e1", "ALPHA", "SLA_REVIEW", "2025-02-01")
    comp = s.compute()
    assert "alpha " not in comp.clients
    assert req_row(comp)["completed_count"] == 0
    assert comp.findings["name_mismatches"].count == 2
    assert comp.findings["clients_without_segmentation"].count == 1


def test_different_names_sharing_client_uuid_reported():
    s = one_client()
    s.period("Alpha Pty", "Leverage", "2020-01-01", client_uuid=uid("same"))
    s.periods[0]["client_uuid"] = uid("same")
    assert s.compute().findings["name_mismatches"].count == 1


# --- territories ------------------------------------------------------------------------------------
def test_annual_beats_quarterly_and_blank_quarter_is_annual():
    s = one_client()
    s.strategies.clear()
    q = s.strategy("q", "Kim Lee", "Q terr", quarter="Q1", updated_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    blank = s.strategy(
        "blank", "Kim Lee", "Blank terr", quarter="  ", updated_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    )
    comp = s.compute()
    [t] = rows(comp, TERRITORY)
    assert t["territory_strategy_id"] == blank and t["territory"] == "Blank terr"
    assert comp.findings["unused_strategies"].count == 1
    assert q not in {r["territory_strategy_id"] for r in rows(comp, TERRITORY)}


def test_latest_updated_at_wins_null_oldest():
    s = one_client()
    s.strategies.clear()
    s.strategy("old", "Kim Lee", "Old", updated_at=None)
    new = s.strategy("new", "Kim Lee", "New", updated_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    assert rows(s.compute(), TERRITORY)[0]["territory_strategy_id"] == new


@pytest.mark.parametrize(
    ("stamps", "winner"),
    [
        ((dt.datetime(2099, 1, 1, tzinfo=dt.UTC), "infinity"), "s1"),  # infinity: later than any time
        (("-infinity", dt.datetime(1970, 1, 1, tzinfo=dt.UTC)), "s1"),  # -infinity: earlier than any time
        ((None, "-infinity"), "s1"),  # null: older still
        (("infinity", "2025-01-01T00:00:00+00:00", None, "-infinity"), "s0"),
        (("infinity", "infinity"), None),  # equal: the smallest id
    ],
)
def test_infinite_updated_at_orders_as_the_latest_or_earliest_time(stamps, winner):
    s = one_client()
    s.strategies.clear()
    ids = {
        label: s.strategy(label, "Kim Lee", label, updated_at=stamp)
        for label, stamp in ((f"s{i}", st) for i, st in enumerate(stamps))
    }
    comp = s.compute()
    expected = ids[winner] if winner else min(ids.values())
    assert rows(comp, TERRITORY)[0]["territory_strategy_id"] == expected
    assert comp.findings["unused_strategies"].count == len(stamps) - 1


def test_equal_updated_at_smallest_id_wins():
    s = one_client()
    s.strategies.clear()
    when = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    ids = [s.strategy(label, "Kim Lee", label, updated_at=when) for label in ("s1", "s2", "s3")]
    assert rows(s.compute(), TERRITORY)[0]["territory_strategy_id"] == min(ids)


def test_archived_strategy_not_used():
    s = one_client()
    s.strategies[0]["status"] = "archived"
    comp = s.compute()
    assert rows(comp, TERRITORY) == []
    assert comp.findings["clients_without_strategy"].count == 1


def test_unassigned_clients_only_at_apac():
    s = one_client()
    s.period("Beta", "Leverage", "2020-01-01", cse=None)
    s.plan("p2", "Beta")
    s.event("e1", "Beta", "SLA_REVIEW", "2025-02-01")
    s.event("e2", "Beta", "SLA_REVIEW", "2025-03-01")
    comp = s.compute()
    [t] = rows(comp, TERRITORY)
    assert t["total_clients"] == 1
    [apac] = rows(comp, APAC)
    assert apac["actual_compliance"] == Decimal("25.00")  # (0 + 2) / (4 + 4)
    assert apac["bu_contributions"][-1] == {
        "bu_name": "Unassigned",
        "compliance": Decimal("50.00"),
        "clients": 1,
        "clients_below": 1,
    }
    assert apac["bu_contributions"][0]["bu_name"] == "ANZ"
    assert comp.findings["clients_without_strategy"].count == 1


def test_strategy_without_clients_reported():
    s = one_client()
    s.strategy("lonely", "Nobody", "Nowhere")
    comp = s.compute()
    assert len(rows(comp, TERRITORY)) == 1
    assert comp.findings["unused_strategies"].count == 1


# --- business units and APAC --------------------------------------------------------------------------
def two_territories() -> Scenario:
    s = one_client()
    s.period("Beta", "Leverage", "2020-01-01", cse="Ann Wu")
    s.plan("p2", "Beta")
    s.strategy("ts2", "Ann Wu", "Singapore")
    s.event("e1", "Beta", "SLA_REVIEW", "2025-02-01")
    return s


def test_unmapped_territory_left_out_of_bu_rows():
    comp = two_territories().compute()
    assert [r["bu_name"] for r in rows(comp, BUSINESS_UNIT)] == ["ANZ"]
    assert comp.findings["unmapped_territories"].count == 1
    contributions = rows(comp, APAC)[0]["bu_contributions"]
    assert [c["bu_name"] for c in contributions] == ["ANZ", "Unassigned"]
    assert contributions[1]["clients"] == 1 and contributions[1]["compliance"] == Decimal("25.00")


def test_cse_entry_beats_territory_entry():
    s = two_territories()
    s.bu_map = BuMap({"Ann Wu": "SEA"}, {"VIC + NZ": "ANZ", "Singapore": "ANZ"})
    comp = s.compute()
    assert [r["bu_name"] for r in rows(comp, BUSINESS_UNIT)] == ["ANZ", "SEA"]


def test_bu_weighted_by_requirements_not_average_of_territories():
    s = two_territories()
    s.bu_map = BuMap({}, {"VIC + NZ": "ANZ", "Singapore": "ANZ"})
    s.require("Leverage", "SLA_REVIEW", 4)
    for i in range(4):
        s.event(f"a{i}", "Alpha", "SLA_REVIEW", "2025-02-01")
    comp = s.compute()
    [bu] = rows(comp, BUSINESS_UNIT)
    assert bu["overall_compliance_percentage"] == Decimal("62.50")  # (4 + 1) / 8
    assert bu["territory_count"] == 2 and bu["clients_below_compliance"] == 1
    assert [t["territory"] for t in bu["territory_data"]] == ["Singapore", "VIC + NZ"]


def test_territory_data_sorted_by_code_point():
    s = two_territories()
    s.strategies[1]["territory"] = "a-lower"
    s.strategies[0]["territory"] = "Z-upper"
    s.bu_map = BuMap({"Kim Lee": "ANZ", "Ann Wu": "ANZ"}, {})
    [bu] = rows(s.compute(), BUSINESS_UNIT)
    assert [t["territory"] for t in bu["territory_data"]] == ["Z-upper", "a-lower"]


def test_apac_with_no_clients():
    s = one_client()
    s.plans.clear()
    comp = s.compute()
    [apac] = rows(comp, APAC)
    assert apac == {
        "fiscal_year": 2025,
        "actual_compliance": None,
        "below_compliance_accounts": 0,
        "bu_contributions": [],
    }


def test_start_month_7():
    s = one_client(year=2026, start_month=7, as_of="2026-06-30", reqs=(("SLA_REVIEW", 12),))
    s.event("in-first", "Alpha", "SLA_REVIEW", "2025-07-01")
    s.event("in-last", "Alpha", "SLA_REVIEW", "2026-06-30")
    s.event("out", "Alpha", "SLA_REVIEW", "2025-06-30")
    comp = s.compute()
    r = req_row(comp)
    assert r["completed_count"] == 2 and r["next_due_date"] == d("2025-09-30")
    [t] = rows(comp, TERRITORY)
    assert list(t["monthly_capacity"])[0] == "2025-07" and list(t["monthly_capacity"])[-1] == "2026-06"
    assert t["monthly_capacity"]["2025-07"]["completed"] == 1 and t["monthly_capacity"]["2026-06"]["completed"] == 1


def test_monthly_capacity_sums_to_total_required():
    s = one_client(reqs=(("SLA_REVIEW", 7), ("INSIGHT_TP", 13), ("HEALTH_CHECK", 366)))
    s.period("Beta", "Leverage", "2020-01-01")
    s.plan("p2", "Beta")
    [t] = rows(s.compute(), TERRITORY)
    assert (
        sum(m["required"] for m in t["monthly_capacity"].values()) == t["total_required_events"] == 2 * (7 + 13 + 366)
    )


def test_segment_breakdown_only_segments_with_clients():
    s = one_client()
    s.tier("Giant")
    s.require("Giant", "SLA_REVIEW", 6)
    s.period("Beta", "Giant", "2020-01-01")
    s.plan("p2", "Beta")
    [t] = rows(s.compute(), TERRITORY)
    assert set(t["segment_breakdown"]) == {"Giant", "Leverage"}
    assert t["segment_breakdown"]["Giant"]["total_required"] == 6


def test_cache_drift_reported():
    s = one_client()
    s.event("e1", "Alpha", "SLA_REVIEW", "2025-02-01")
    s.cache.append({"client_name": "Alpha", "event_type_id": uid("type:SLA_REVIEW"), "year": 2025, "actual_count": 1})
    assert s.compute().findings["compliance_cache_drift"].count == 0
    s.cache[0]["actual_count"] = 3
    s.cache.append({"client_name": "Alpha", "event_type_id": uid("type:SLA_REVIEW"), "year": 2023, "actual_count": 9})
    assert s.compute().findings["compliance_cache_drift"].count == 1
