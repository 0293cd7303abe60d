"""Edges of the pure core that mutation testing (benchmarks/mutation.sh, docs/mutation.md) showed no test
pinned down: every branch of the pre-write invariants names what it found, the invariants raise no false
alarm at the exact thresholds and never crash on rows without members, and the shared pure diff
(``diff_rows``, the REST path's) counts NULL-key rows, the guards' figures and every action exactly."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from compliance_sync.domain.diff import diff_rows, same, sort_key
from compliance_sync.domain.invariants import check_invariants
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, JSONB, NUMERIC, REQUIREMENTS, TARGET_BY_NAME, UUID
from compliance_sync.domain.thresholds import Thresholds
from compliance_sync_tests.scenario import Scenario, apac_row, appendix_a, bu_row

D = Decimal


def found(comp, thresholds=None) -> dict[str, list[str]]:
    return {f.code: f.examples for f in check_invariants(comp, thresholds or Thresholds()).found()}


def two_segment_world() -> Scenario:
    """Two clients of different segments in one territory, and a client with a requirement of 1."""
    s = Scenario(2025, 1, "2025-12-31")
    s.tier("Leverage")
    s.tier("Collaboration")
    s.tier("Single")
    s.event_type("SLA")
    s.require("Leverage", "SLA", 2)
    s.require("Collaboration", "SLA", 4)
    s.require("Single", "SLA", 1)
    s.period("Alpha", "Collaboration", "2024-01-01")
    s.period("Beta", "Leverage", "2024-01-01")
    s.period("Gamma", "Single", "2024-01-01")
    for client in ("Alpha", "Beta", "Gamma"):
        s.plan(f"plan {client}", client)
    s.event("a1", "Alpha", "SLA", "2025-02-01")
    s.event("b1", "Beta", "SLA", "2025-02-01")
    s.strategy("ts1", "Kim Lee", "VIC + NZ")
    return s


# --- no false alarm ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("thresholds", [(50, 80, 100), (25, 50, 75), (40, 60, 80)])
def test_no_violation_exactly_at_each_threshold(thresholds):
    """c/r exactly on a threshold (e.g. 4/5 = 80 %): the rules and the invariants agree on the status."""
    s = Scenario(2025, 1, "2025-12-31")
    s.event_type("SLA")
    s.thresholds = Thresholds(*map(Fraction, thresholds))
    s.tier("T")
    s.require("T", "SLA", 100)
    for done in [t + d for t in thresholds for d in (-1, 0)]:  # exactly on each threshold, and just below it
        s.period(f"Client {done}", "T", "2024-01-01")
        s.plan(f"plan {done}", f"Client {done}")
        for k in range(done):
            s.event(f"e{done}.{k}", f"Client {done}", "SLA", "2025-01-02")
    s.strategy("ts1", "Kim Lee", "VIC + NZ")
    comp = s.compute()
    statuses = [c.requirements[0].status for _, c in sorted(comp.clients.items(), key=lambda kv: int(kv[0].split()[1]))]
    assert statuses == ["critical", "at_risk", "at_risk", "compliant", "compliant", "exceeded"]
    assert found(comp, s.thresholds) == {}


def test_no_clients_no_violation():
    s = Scenario(2025)
    s.tier("Leverage")
    comp = s.compute()
    assert comp.wanted.apac[0]["actual_compliance"] is None
    assert found(comp) == {}


# --- every branch names what it found ---------------------------------------------------------------------------------
def test_segment_breakdown_missing_a_segment_and_another_segment_wrong():
    comp = two_segment_world().compute()
    t = comp.wanted.territories[0]
    assert set(t["segment_breakdown"]) == {"Collaboration", "Leverage", "Single"}
    first = next(iter(t["segment_breakdown"]))  # the first segment met is dropped; the others are still checked
    del t["segment_breakdown"][first]
    for seg in t["segment_breakdown"]:
        t["segment_breakdown"][seg]["total_required"] += 1
    got = found(comp)
    examples = got["territory_totals"]
    assert any("segment_breakdown segments" in e and first in e for e in examples)
    assert sum("totals disagree with its clients" in e for e in examples) == 2


def test_segment_compliance_wrong_is_a_rollup_violation_naming_the_segment():
    comp = appendix_a().compute()
    comp.wanted.territories[0]["segment_breakdown"]["Collaboration"]["compliance"] = D("52.64")
    assert found(comp)["rollup_percentages"] == [
        f"territory {comp.wanted.territories[0]['territory_strategy_id']}: segment Collaboration compliance 52.64"
    ]


def test_territory_percentage_wrong_names_the_territory_and_its_figures():
    comp = appendix_a().compute()
    t = comp.wanted.territories[0]
    t["overall_compliance_percentage"] = D("52.64")
    assert f"territory {t['territory_strategy_id']}: 52.64 for 10/19" in found(comp)["rollup_percentages"]


def test_rollups_are_uncapped():
    """SPEC §4.6: the roll-up percentage is the formula without the cap (only a requirement's is capped)."""
    comp = appendix_a().compute()
    client = next(iter(comp.clients.values()))
    client.credited_total = 50  # 50 / 19 = 263.16 %: impossible from real rows, but the rule must not cap it
    t = comp.wanted.territories[0]
    t.update(total_completed_events=50, overall_compliance_percentage=D("263.16"))
    t["segment_breakdown"]["Collaboration"].update(total_completed=50, compliance=D("263.16"))
    comp.wanted.business_units[0]["overall_compliance_percentage"] = D("263.16")
    comp.wanted.business_units[0]["territory_data"][0]["compliance"] = D("263.16")
    comp.wanted.apac[0]["actual_compliance"] = D("263.16")
    comp.wanted.apac[0]["bu_contributions"][0]["compliance"] = D("263.16")
    got = found(comp)
    assert "rollup_percentages" not in got and "territory_totals" not in got
    assert any("outside [0, 200]" in e for e in got["value_ranges"])  # ... though such a value is out of range


def test_a_territory_row_without_members_is_reported_not_a_crash():
    comp = appendix_a().compute()
    comp.wanted.territories[0]["territory_strategy_id"] = "00000000-0000-4000-8000-000000000000"
    got = found(comp)
    assert any(
        e.startswith("territory 00000000-0000-4000-8000-000000000000: total_clients = 1, its clients sum to 0")
        for e in got["territory_totals"]
    )


def test_a_bu_row_or_contribution_without_clients_is_reported_not_a_crash():
    comp = appendix_a().compute()
    comp.wanted.business_units[0]["bu_name"] = "Nowhere"
    comp.wanted.apac[0]["bu_contributions"][0]["bu_name"] = "Elsewhere"
    got = found(comp)
    assert "BU Nowhere: 52.63 for 0/0" in got["rollup_percentages"]
    assert "BU Nowhere: counts disagree with its territories and clients" in got["territory_totals"]
    assert "APAC: contribution of Elsewhere disagrees with its clients" in got["rollup_percentages"]


def test_bu_territory_data_entry_wrong_names_the_territory():
    comp = appendix_a().compute()
    comp.wanted.business_units[0]["territory_data"][0]["clients"] = 2
    assert (
        "BU ANZ: territory_data entry 'VIC + NZ' disagrees with its territory row" in found(comp)["rollup_percentages"]
    )


def test_apac_below_and_contribution_totals_wrong_are_named():
    comp = appendix_a().compute()
    comp.wanted.apac[0]["below_compliance_accounts"] = 0
    comp.wanted.apac[0]["bu_contributions"].append(
        {"bu_name": "Unassigned", "compliance": D("100.00"), "clients": 1, "clients_below": 0}
    )
    examples = found(comp)["territory_totals"]
    assert "APAC: below_compliance_accounts disagrees with its clients" in examples
    assert "APAC: bu_contributions do not add up to every client" in examples


def test_apac_percentage_wrong_is_named():
    comp = appendix_a().compute()
    comp.wanted.apac[0]["actual_compliance"] = D("1.00")
    assert found(comp)["rollup_percentages"] == ["APAC FY2025: 1.00 != 52.63"]


def test_client_totals_and_flags_wrong_are_named_even_for_a_requirement_of_one():
    comp = two_segment_world().compute()
    gamma = comp.clients["Gamma"]
    assert [r.required for r in gamma.requirements] == [1] and gamma.is_critical
    gamma.is_critical, gamma.is_at_risk = False, True
    beta = comp.clients["Beta"]
    beta.required_total += 1
    examples = found(comp)["value_ranges"]
    assert "Gamma: flags critical=False, at_risk=True disagree with its statuses" in examples
    assert "Beta: client totals 1/3, its requirements sum to 1/2" in examples


# --- the shared pure diff (the REST path's) ---------------------------------------------------------------------------
REQ_T, BU_T, APAC_T = TARGET_BY_NAME[REQUIREMENTS], TARGET_BY_NAME[BUSINESS_UNIT], TARGET_BY_NAME[APAC]
P = [f"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4{i}" for i in "abcdef"]
T1 = "8b3c4d5e-6f70-4182-9cad-1e2f3a4b5c6d"


def req(plan, completed=2, **over):
    row = {
        "plan_id": plan,
        "event_type_id": T1,
        "fiscal_year": 2025,
        "client_id": None,
        "client_name": "Alpha",
        "segment": "Leverage",
        "event_type_name": "Sla",
        "required_count": 4,
        "completed_count": completed,
        "scheduled_count": 0,
        "compliance_percentage": D("50.00"),
        "status": "at_risk",
        "next_due_date": None,
        "linked_event_ids": [],
    }
    row.update(over)
    return row


def test_diff_rows_null_keys_are_counted_and_never_touched():
    current = [
        req(None, completed=9),
        req(P[0], completed=3),
        req(P[1], completed=None),
        req(None, completed=7),
        req(P[2], completed=2),
    ]
    wanted = [req(P[2], completed=2), req(P[3])]
    diff, changes = diff_rows(REQ_T, current, wanted, 10)
    assert (diff.null_keys, diff.current_count) == (2, 3)  # after a NULL-key row, the others are still read
    assert diff.current_completed == 3 + 0 + 2  # NULL-key rows and NULL counts add nothing
    assert diff.counts() == {"inserted": 1, "updated": 0, "deleted": 2, "orphans": 0, "unchanged": 1}
    assert [r["plan_id"] for r in changes.deletes] == [P[0], P[1]]
    assert all(line.key[0] is not None for line in diff.lines)


def test_diff_rows_counts_every_action_beyond_one():
    current = [
        req(P[0]),
        req(P[1]),
        req(P[2]),
        req(P[3]) | {"has_foreign": True},
        req(P[4]) | {"has_foreign": True},
        req(P[5]),
    ]
    wanted = [req(P[0], completed=3), req(P[1], completed=4), req(P[5])]
    diff, changes = diff_rows(REQ_T, current, wanted, 1)
    assert diff.counts() == {"inserted": 0, "updated": 2, "deleted": 1, "orphans": 2, "unchanged": 1}
    assert [r["plan_id"] for r in changes.upserts] == [P[0], P[1]] and [r["plan_id"] for r in changes.deletes] == [P[2]]
    assert len(diff.lines) == 3 and diff.hidden() == 2 + 1 + 2 - 3  # one line per action (limit 1)


def test_diff_rows_bu_figures_for_the_collapse_guard_and_reset_upserts():
    current = [
        bu_row("ANZ"),
        bu_row("SEA", territory_count=0),
        bu_row("GC", territory_count=None),
        bu_row("NZ", territory_count=2),
    ]
    diff, changes = diff_rows(BU_T, current, [bu_row("ANZ")], 10)
    assert diff.current_with_territories == 2 and diff.current_completed == 0
    assert diff.counts() == {
        "inserted": 0,
        "updated": 3,
        "deleted": 0,
        "orphans": 0,
        "unchanged": 1,
    }  # SEA, GC, NZ reset
    assert sorted(r["bu_name"] for r in changes.upserts) == ["GC", "NZ", "SEA"]
    assert all(r["territory_count"] == 0 and r["territory_data"] == [] for r in changes.upserts)


def test_diff_rows_apac_kept_and_lines_in_key_order():
    diff, _ = diff_rows(
        APAC_T,
        [apac_row(fy=10), apac_row(fy=9)],
        [apac_row(fy=11), apac_row(fy=10, below_compliance_accounts=5), apac_row(fy=9)],
        10,
    )
    assert diff.counts() == {"inserted": 1, "updated": 1, "deleted": 0, "orphans": 0, "unchanged": 1}
    assert diff.current_with_territories == 0 and diff.current_completed == 0
    wanted = [bu_row("b"), bu_row("B"), bu_row("a"), bu_row("A")]
    diff, _ = diff_rows(BU_T, [], wanted, 10)
    assert [line.key[0] for line in diff.lines] == ["A", "B", "a", "b"]  # code point order
    assert sorted([(10,), (9,), (100,)], key=sort_key) == [(9,), (10,), (100,)]  # numbers as numbers


def test_same_normalises_both_sides():
    upper, lower = T1.upper(), T1
    assert same(UUID, lower, upper) and same(UUID, upper, lower)
    assert same(NUMERIC, D("52.60"), "52.6") and same(NUMERIC, "52.6", D("52.60"))
    assert same(JSONB, '{"a": true, "b": [1, "x"]}', {"a": True, "b": [D("1.0"), "x"]})
    assert not same(JSONB, '{"a": "true"}', {"a": True}) and not same(JSONB, {"a": 2}, '{"a": true}')
    assert not same(JSONB, '{"a": null}', {"a": "null"})


def test_jsonb_values_compare_as_jsonb_does():
    """JSON true is not the number 1 (Python says True == 1), at any depth and on either side; an object is
    never equal to an array, whatever their contents."""
    assert not same(JSONB, {"a": True}, {"a": 1}) and not same(JSONB, {"a": 1}, {"a": True})
    assert not same(JSONB, [1], [True]) and not same(JSONB, [True], [1])
    assert not same(JSONB, {"x": 1}, ["x"]) and not same(JSONB, ["x"], {"x": 1})
    assert not same(JSONB, [{"x": 1}], [["x"]]) and not same(JSONB, [["x"]], [{"x": 1}])
    assert same(JSONB, {"a": [True, 1]}, {"a": [True, D("1.0")]}) and same(JSONB, [False], [False])


# --- the rules' findings name what they found; inputs the REST path hands over ----------------------------------------
def one_client(**period) -> Scenario:
    s = Scenario(2025, 1, "2025-06-30")
    s.tier("Leverage")
    s.event_type("SLA")
    s.require("Leverage", "SLA", 4)
    s.period("Alpha Health", "Leverage", "2024-01-01", **period)
    s.plan("p1", "Alpha Health")
    s.strategy("ts1", "Kim Lee", "VIC + NZ")
    return s


def examples(comp, code: str) -> list[str]:
    return comp.findings[code].examples


def test_overlapping_periods_examples_name_the_periods():
    s = one_client()
    s.period("Alpha Health", "Leverage", "2025-02-01")
    assert examples(s.compute(), "overlapping_segment_periods") == ["Alpha Health: 2 open periods"]
    s = one_client()
    s.periods.clear()
    first = s.period("Alpha Health", "Leverage", "2024-01-01", "2025-03-31")
    second = s.period("Alpha Health", "Leverage", "2025-03-01")
    assert examples(s.compute(), "overlapping_segment_periods") == [
        f"Alpha Health: period {first} (2024-01-01…2025-03-31) overlaps {second} (2025-03-01…open)"
    ]


def test_unknown_events_examples_count_completed_and_scheduled():
    s = one_client()
    s.event("u1", "Alpha Health", None, "2025-02-01", type_id="11111111-1111-4111-8111-111111111111")
    s.event("u2", "Alpha Health", None, "2025-09-01", completed=False, type_id="11111111-1111-4111-8111-111111111111")
    s.event("n1", "Alpha Health", None, "2025-03-01")
    s.event("n2", "Alpha Health", None, "2025-03-02")
    s.event("n3", "Alpha Health", None, "2025-10-02", completed=False)
    got = sorted(examples(s.compute(), "unknown_events"))
    assert got == [
        "2 event(s) of client 'Alpha Health' with unknown event type 11111111-1111-4111-8111-111111111111",
        "3 event(s) of client 'Alpha Health' with a null event type",
    ]


def test_unknown_client_examples_count_completed_and_scheduled():
    s = one_client()
    s.event("x1", "Stranger Co", "SLA", "2025-02-01")
    s.event("x2", "Stranger Co", "SLA", "2025-03-01")
    s.event("x3", "Stranger Co", "SLA", "2025-10-01", completed=False)
    assert examples(s.compute(), "unknown_events") == ["3 event(s) of unknown client 'Stranger Co' (SLA)"]


def test_names_matching_only_without_spaces_or_case_are_reported_and_others_not():
    s = one_client()
    s.event("e1", "AlphaHealth", "SLA", "2025-02-01")  # spaces dropped
    s.event("e2", "ALPHA  HEALTH", "SLA", "2025-02-02")  # case and spaces
    s.event("e3", "Beta Bank", "SLA", "2025-02-03")  # another client altogether: unknown, not a near-match
    comp = s.compute()
    assert sorted(examples(comp, "name_mismatches")) == [
        "'ALPHA  HEALTH' matches ['Alpha Health'] only when case or spaces are ignored",
        "'AlphaHealth' matches ['Alpha Health'] only when case or spaces are ignored",
    ]


def test_territory_data_orders_a_null_territory_first():
    s = one_client(cse="Kim Lee")
    s.tier("Collaboration")
    s.period("Beta Bank", "Leverage", "2024-01-01", cse="Ana Souza")
    s.plan("p2", "Beta Bank")
    s.strategy("ts2", "Ana Souza", None)  # a strategy without a territory name
    s.period("Gamma Gov", "Leverage", "2024-01-01", cse="Zed Null")
    s.plan("p3", "Gamma Gov")
    s.strategy("ts3", "Zed Null", "Apple Isle")
    s.bu_map.cse.update({"Ana Souza": "ANZ", "Zed Null": "ANZ"})
    s.bu_map.territory["VIC + NZ"] = "ANZ"
    [bu] = s.compute().wanted.business_units
    assert [d["territory"] for d in bu["territory_data"]] == [None, "Apple Isle", "VIC + NZ"]


def test_strategy_tie_break_reads_timestamps_as_instants():
    """updated_at as the direct path reads it (aware datetimes, any offset) and as REST hands it over (ISO
    text, with or without an offset; without one it is UTC)."""
    import datetime as dt

    def winner(*stamps) -> str:
        s = one_client()
        s.strategies.clear()
        for i, stamp in enumerate(stamps):
            s.strategy(f"ts{i}", "Kim Lee", f"T{i}", updated_at=stamp)
        return s.compute().wanted.territories[0]["territory"]

    sydney = dt.timezone(dt.timedelta(hours=10))
    # 09:00 in Sydney on the 2nd is 23:00 UTC on the 1st: midnight UTC on the 2nd is later
    assert winner(dt.datetime(2025, 1, 2, 9, tzinfo=sydney), dt.datetime(2025, 1, 2, 0, tzinfo=dt.UTC)) == "T1"
    assert winner("2025-01-02T09:00:00+10:00", "2025-01-02T00:00:00+00:00") == "T1"
    assert winner("2025-01-02T00:30:00", dt.datetime(2025, 1, 2, 9, tzinfo=sydney)) == "T0"  # naive text is UTC
    assert winner(dt.datetime(2025, 1, 2, 0, 30), "2025-01-02T00:20:00+00:00") == "T0"  # a naive datetime too
    assert winner(None, "2024-01-01T00:00:00Z") == "T1"  # null is older than any time


# --- every rule finding, word for word, and the counts of the summary -------------------------------------------------
def pid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def golden() -> tuple[Scenario, dict]:
    """One FY with every warning the rules report; ids chosen so their order is known."""
    import datetime as dt

    from compliance_sync_tests.scenario import uid

    s = Scenario(2025, 1, "2025-06-30")
    s.tier("Leverage")
    s.tier("Collaboration")
    nameless = uid("tier:Nameless")
    s.tiers.append({"id": nameless, "tier_name": None})
    sla, qbr, old = s.event_type("SLA"), s.event_type("QBR"), s.event_type("OLD", active=False)
    s.require("Leverage", "SLA", 2)
    s.require("Leverage", "QBR", 1)
    s.require("Collaboration", "SLA", 4)
    s.require("Collaboration", "QBR", -1)  # negative: reported, counts as 0
    s.requirements.append({"tier_id": nameless, "event_type_id": sla, "frequency": 3})
    # periods
    s.period("Alpha", "Collaboration", "2024-01-01", cse="Kim Lee", client_uuid=uid("u1"), label="a-col")
    s.period("Alpha", None, "2025-02-01", "2025-02-28", cse="Kim Lee", label="a-null")
    s.period("Alpha", None, "2025-03-01", "2025-03-31", cse="Kim Lee", label="a-unknown", tier_id=uid("tier:Ghost"))
    s.period("Alpha", "Collaboration", "2025-05-01", "2025-04-01", cse="Kim Lee", label="a-backwards")
    s.period("Beta", "Leverage", "2024-01-01", cse="Kim Lee", client_uuid=uid("u1"), label="b-1")
    s.period("Beta", "Leverage", "2025-03-01", cse="Kim Lee", label="b-2")  # a second open period
    s.period("Gamma", None, "2024-01-01", cse="Kim Lee", client_uuid=uid("u2"), label="g-nameless", tier_id=nameless)
    s.period("Eta", "Leverage", "2024-01-01", cse="Lee Wong", label="e-1")  # a CSE without strategy
    s.period("Hana", "Leverage", "2024-01-01", cse="Ana Souza", label="h-1")  # a territory no BU maps
    # plans: a plan without client_name and an archived one come first (ids order)
    s.plans.append({"id": pid(1), "client_id": None, "client_name": None, "fiscal_year": 2025, "status": "approved"})
    s.plans.append({"id": pid(2), "client_id": None, "client_name": "Delta", "fiscal_year": 2025, "status": "archived"})
    for n, client in ((3, "Alpha"), (4, "Alpha"), (5, "Beta"), (6, "Gamma"), (7, "Eta"), (8, "Hana")):
        s.plans.append(
            {"id": pid(n), "client_id": None, "client_name": client, "fiscal_year": 2025, "status": "approved"}
        )
    # strategies: Kim's annual wins over the quarterly; Raj's has no clients; one without CSE; Lee's is archived
    s.strategy("ts-kim", "Kim Lee", "VIC + NZ", updated_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    s.strategy("ts-kim-q1", "Kim Lee", "VIC + NZ", quarter="Q1", updated_at=dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    s.strategy("ts-raj", "Raj Patel", "Singapore")
    s.strategy("ts-none", None, "Nowhere")
    s.strategy("ts-lee-archived", "Lee Wong", "Taiwan", status="archived")
    s.strategy("ts-ana", "Ana Souza", "Hong Kong")
    s.bu_map.territory.update({"VIC + NZ": "ANZ", "Singapore": "SEA"})
    # events
    s.event("a-sla-1", "Alpha", "SLA", "2025-01-10")
    s.event("a-sla-2", "Alpha", "SLA", "2025-08-01")  # completed after as_of
    s.event("a-old", "Alpha", "OLD", "2025-02-10")  # an inactive type: known, not required
    s.event("a-ghost-1", "Alpha", None, "2025-02-11", type_id=uid("type:Ghost"))
    s.event("a-ghost-2", "Alpha", None, "2025-09-11", completed=False, type_id=uid("type:Ghost"))
    s.event("a-nulltype", "Alpha", None, "2025-02-12")
    s.event("stranger", "Stranger Co", "SLA", "2025-02-13")
    s.event("near-name", "ALPHA", "SLA", "2025-02-14")
    s.event("undated", "Beta", "SLA", None)
    s.event("b-qbr", "Beta", "QBR", "2025-04-01")
    s.cache += [
        {"client_name": "Alpha", "event_type_id": sla, "year": 2025, "actual_count": 5, "expected_count": 4},
        {
            "client_name": "Alpha",
            "event_type_id": qbr,
            "year": 2025,
            "actual_count": 3,
            "expected_count": 0,
        },  # no event at all
        {"client_name": "Beta", "event_type_id": qbr, "year": 2025, "actual_count": 1, "expected_count": 1},  # right
        {
            "client_name": "Beta",
            "event_type_id": uid("type:Ghost"),
            "year": 2025,
            "actual_count": 1,
            "expected_count": 1,
        },
    ]
    ids = {"sla": sla, "qbr": qbr, "old": old, "nameless": nameless}
    return s, ids


def test_every_rule_finding_word_for_word_and_the_counts():
    from compliance_sync.domain.facts import facts_from_rows
    from compliance_sync.domain.rules import compute
    from compliance_sync_tests.scenario import uid

    s, ids = golden()
    # prefiltered: the rules get archived plans and strategies too, and must leave them out themselves
    facts = facts_from_rows(
        s.fy,
        s.as_of,
        plans=[p for p in s.plans],
        periods=s.periods,
        tiers=s.tiers,
        event_types=s.types,
        requirements=s.requirements,
        strategies=s.strategies,
        exclusions=[],
        events=s.events,
        compliance_cache=s.cache,
        prefiltered=True,
    )
    comp = compute(facts, s.thresholds, s.bu_map)
    got = {code: f.examples for code, f in comp.findings.items() if f.count}
    ghost = uid("type:Ghost")
    assert got == {
        "invalid_segment_periods": [
            f"Alpha: period {uid('a-null')} has a null tier_id",
            f"Alpha: period {uid('a-unknown')} has unknown tier_id {uid('tier:Ghost')}",
            f"Alpha: period {uid('a-backwards')} ends 2025-04-01 before it starts 2025-05-01",
            f"Gamma: period {uid('g-nameless')} has tier {ids['nameless']}, which has no tier_name",
        ],
        "overlapping_segment_periods": ["Beta: 2 open periods"],
        "clients_without_segmentation": [
            f"plan {pid(1)} has no client_name",
            "'Gamma' (1 plan(s)): no segment period in FY2025 (2025-01-01 … 2025-12-31)",
        ],
        "negative_frequency": ["tier Collaboration, event type QBR: frequency -1"],
        "undated_events": [f"event {uid('undated')} of 'Beta' has no event_date"],
        "unknown_events": got.get("unknown_events"),  # in the events' order: compared below, sorted
        "completed_future_events": ["Alpha: 1 SLA event(s) completed but dated after as_of"],
        "unmapped_territories": ["territory 'Hong Kong' (CSE 'Ana Souza', 1 clients) maps to no business unit"],
        "clients_without_strategy": ["'Eta': CSE 'Lee Wong' has no territory strategy for FY2025"],
        "unused_strategies": [
            "strategy " + uid("ts-none") + " (Nowhere) has no cse_name",
            f"Kim Lee: strategy {uid('ts-kim-q1')} (VIC + NZ, quarter Q1) loses to {uid('ts-kim')}",
            f"Raj Patel: strategy {uid('ts-raj')} (Singapore) has no clients this FY",
        ],
        "name_mismatches": [
            "'ALPHA' matches ['Alpha'] only when case or spaces are ignored",
            f"client_uuid {uid('u1')} is shared by different names ['Alpha', 'Beta']",
        ],
        "compliance_cache_drift": [
            "Alpha QBR 2025: cache says 3, events say 0",
            "Alpha SLA 2025: cache says 5, events say 2",
            f"Beta {ghost} 2025: cache says 1, events say 0",
        ],
    }
    assert sorted(got["unknown_events"]) == sorted(
        [
            f"2 event(s) of client 'Alpha' with unknown event type {ghost}",
            "1 event(s) of client 'Alpha' with a null event type",
            "1 event(s) of unknown client 'ALPHA' (SLA)",
            "1 event(s) of unknown client 'Stranger Co' (SLA)",
        ]
    )
    assert all(f.severity == "WARN" for f in comp.findings.values())
    assert comp.stats == {
        "plans_in_scope": 6,  # neither the plan without client_name nor the archived one
        "clients_processed": 4,  # Alpha, Beta, Eta, Hana
        "clients_skipped": 1,  # Gamma
        "clients_at_risk": 0,
        "clients_critical": 4,
        "clients_compliant": 0,
        "clients_unassigned": 2,  # Eta (no strategy), Hana (unmapped territory)
        "requirement_rows": 2 * 1 + 2 + 2 + 2,  # Alpha: SLA on 2 plans (QBR is 0); Beta, Eta, Hana: SLA and QBR
        "territories": 2,
        "business_units": 1,
    }
    assert comp.wanted.fiscal_year == 2025 and comp.wanted.requirements.fiscal_year == 2025
    assert [p.plan_id for p in comp.wanted.requirements.plans] == [pid(n) for n in (3, 4, 5, 7, 8)]


def test_rules_filter_what_a_backend_hands_over_unfiltered():
    """The rules apply SPEC §4's filters themselves: a period starting after the FY, one ending before it,
    one without a start are ignored, whatever their order; an event of a plan client without a period is that
    client's (not an unknown client's)."""
    from compliance_sync.domain.facts import facts_from_rows
    from compliance_sync.domain.rules import compute

    s = one_client()
    s.periods.clear()
    s.period("Alpha Health", "Leverage", "2023-01-01", "2024-12-31", label="ended")  # before the FY
    s.period("Alpha Health", "Leverage", "2026-01-01", label="later")  # after it
    s.periods.append({**s.periods[0], "id": "00000000-0000-4000-8000-00000000000f", "effective_from": None})
    s.period("Alpha Health", "Leverage", "2024-06-01", label="valid")
    s.plan("p-iota", "Iota")  # a plan client without any period, with an event
    s.event("iota-event", "Iota", "SLA", "2025-02-01")
    facts = facts_from_rows(
        s.fy,
        s.as_of,
        plans=s.plans,
        periods=s.periods,
        tiers=s.tiers,
        event_types=s.types,
        requirements=s.requirements,
        strategies=s.strategies,
        events=s.events,
        prefiltered=True,
    )
    comp = compute(facts, s.thresholds, s.bu_map)
    assert list(comp.clients) == ["Alpha Health"] and comp.clients["Alpha Health"].required_total == 4
    assert comp.findings["invalid_segment_periods"].count == 0  # the start-less one ends before the FY: out of scope
    assert comp.findings["overlapping_segment_periods"].count == 0
    assert comp.findings["unknown_events"].count == 0
    assert comp.findings["clients_without_segmentation"].examples == [
        "'Iota' (1 plan(s)): no segment period in FY2025 (2025-01-01 … 2025-12-31)"
    ]


def test_event_types_without_a_code_are_named_by_their_name():
    s = one_client()
    s.types.append(
        {
            "id": "00000000-0000-4000-8000-0000000000aa",
            "event_name": "Quarterly Review",
            "event_code": None,
            "is_active": True,
        }
    )
    s.requirements.append(
        {"tier_id": s.tiers[0]["id"], "event_type_id": "00000000-0000-4000-8000-0000000000aa", "frequency": -3}
    )
    assert s.compute().findings["negative_frequency"].examples == [
        "tier Leverage, event type Quarterly Review: frequency -3"
    ]


def test_strategies_without_clients_are_reported_in_strategy_id_order():
    s = one_client()
    s.strategies.clear()
    s.strategy("ts1", "Kim Lee", "VIC + NZ")
    s.strategies.append(
        {
            "id": "00000000-0000-4000-8000-000000000002",
            "cse_name": "Aaron",
            "territory": "A",
            "fiscal_year": 2025,
            "quarter": None,
            "status": "approved",
            "updated_at": None,
        }
    )
    s.strategies.append(
        {
            "id": "00000000-0000-4000-8000-000000000001",
            "cse_name": "Zoe",
            "territory": "Z",
            "fiscal_year": 2025,
            "quarter": None,
            "status": "approved",
            "updated_at": None,
        }
    )
    assert s.compute().findings["unused_strategies"].examples == [
        "Zoe: strategy 00000000-0000-4000-8000-000000000001 (Z) has no clients this FY",
        "Aaron: strategy 00000000-0000-4000-8000-000000000002 (A) has no clients this FY",
    ]


def test_normalize_dates_text_and_json_default():
    import datetime as dt

    from compliance_sync.domain.diff import normalize, to_json
    from compliance_sync.domain.tables import DATE, TEXT

    assert normalize(DATE, "2025-09-30") == normalize(DATE, "2025-09-30T00:00:00+00:00") == dt.date(2025, 9, 30)
    assert normalize(TEXT, 5) == "5"
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        to_json({"x": object()})
    assert to_json({"name": "Zoë", "pct": D("3.13")}) == '{"name":"Zoë","pct":3.13}'


def test_requirement_counts_and_duplicate_keys_are_named():
    comp = appendix_a().compute()
    client = comp.clients["Alpha Health"]
    sla, insight, health = client.requirements
    client.requirements[0] = sla._replace(required=0)  # then a wrong percentage after it: both reported
    client.requirements[1] = insight._replace(percent=D("1.00"))
    client.requirements.append(health)  # an event type twice
    plans = comp.wanted.requirements.plans
    plans.append(plans[0])  # a plan twice
    got = found(comp)
    assert "Alpha Health / Sla Review: counts 2/0, scheduled 2" in got["value_ranges"]
    assert "Alpha Health / Insight Tp: percentage 1.00 for 7/12" in got["value_ranges"]
    assert got["unique_keys"] == [
        f"{REQUIREMENTS}: plan {plans[0].plan_id} appears 2 times",
        f"{REQUIREMENTS}: event type {health.event_type_id} appears 2 times for Alpha Health",
    ]


# --- the survivors of the second mutation run that were not equivalent ------------------------------------------------
def test_diff_rows_rows_kept_or_already_reset_are_counted_unchanged():
    diff, changes = diff_rows(APAC_T, [apac_row(fy=9), apac_row(fy=10)], [], 10)
    assert (
        diff.counts() == {"inserted": 0, "updated": 0, "deleted": 0, "orphans": 0, "unchanged": 2}
        and not changes.upserts
    )
    reset = {
        "overall_compliance_percentage": None,
        "clients_below_compliance": 0,
        "territory_count": 0,
        "territory_data": [],
    }
    diff, _ = diff_rows(BU_T, [bu_row("SEA", **reset), bu_row("GC", **reset)], [], 10)
    assert diff.counts()["unchanged"] == 2


def test_an_open_period_overlapped_by_a_later_closed_one_is_named():
    s = one_client()
    later = s.period("Alpha Health", "Leverage", "2025-03-01", "2025-04-30", label="later")
    first = s.periods[0]["id"]
    assert examples(s.compute(), "overlapping_segment_periods") == [
        f"Alpha Health: period {first} (2024-01-01…open) overlaps {later} (2025-03-01…2025-04-30)"
    ]


def test_losing_strategies_are_reported_per_cse_in_name_order():
    s = one_client()
    s.strategies.clear()
    for n, cse, quarter in ((9, "Aaron", None), (8, "Aaron", "Q2"), (1, "Zoe", None), (2, "Zoe", None)):
        s.strategies.append(
            {
                "id": pid(n),
                "cse_name": cse,
                "territory": cse[0],
                "fiscal_year": 2025,
                "quarter": quarter,
                "status": "approved",
                "updated_at": None,
            }
        )
    assert s.compute().findings["unused_strategies"].examples[:2] == [
        f"Aaron: strategy {pid(8)} (A, quarter Q2) loses to {pid(9)}",
        f"Zoe: strategy {pid(2)} (Z, quarter annual) loses to {pid(1)}",  # two annual ones: the smaller id wins
    ]


def test_naive_timestamps_are_utc_whatever_the_machine_timezone(monkeypatch):
    import datetime as dt
    import time

    monkeypatch.setenv("TZ", "Australia/Sydney")
    time.tzset()
    try:
        s = one_client()
        s.strategies.clear()
        s.strategy("ts0", "Kim Lee", "T0", updated_at=dt.datetime(2025, 1, 2, 0, 30))  # naive: 00:30 UTC
        s.strategy("ts1", "Kim Lee", "T1", updated_at="2025-01-02T00:20:00+00:00")
        assert s.compute().wanted.territories[0]["territory"] == "T0"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_unassigned_as_a_business_unit_is_refused_even_past_the_bu_map_loader():
    from compliance_sync.domain.bu_map import BuMap
    from compliance_sync.errors import DataError

    s = one_client()
    s.bu_map = BuMap({}, {"VIC + NZ": "Unassigned"})  # built directly: BuMap.load would have refused it
    with pytest.raises(DataError, match="'Unassigned' is reserved and cannot be a business unit"):
        s.compute()


def test_cache_drift_examples_sorted_with_null_names_and_years():
    from compliance_sync.domain.facts import facts_from_rows
    from compliance_sync.domain.rules import compute

    s = one_client()
    sla = s.types[0]["id"]
    s.cache += [
        {"client_name": "Alpha Health", "event_type_id": sla, "year": 2025, "actual_count": 4},
        {"client_name": None, "event_type_id": sla, "year": 2025, "actual_count": 2},
        {"client_name": "Alpha Health", "event_type_id": sla, "year": None, "actual_count": 1},
    ]
    facts = facts_from_rows(
        s.fy,
        s.as_of,
        plans=s.plans,
        periods=s.periods,
        tiers=s.tiers,
        event_types=s.types,
        requirements=s.requirements,
        strategies=s.strategies,
        compliance_cache=s.cache,
        prefiltered=True,
    )
    assert compute(facts, s.thresholds, s.bu_map).findings["compliance_cache_drift"].examples == [
        "None SLA 2025: cache says 2, events say 0",
        "Alpha Health SLA None: cache says 1, events say 0",
        "Alpha Health SLA 2025: cache says 4, events say 0",
    ]


def test_summary_counts_of_each_kind_of_client():
    s = one_client()  # Alpha Health: SLA 4 required, 0 done: critical, in VIC + NZ (ANZ)
    for name, done in (("Beta", 2), ("Gamma", 4), ("Delta", 4)):
        s.period(name, "Leverage", "2024-01-01", cse="Kim Lee" if name != "Delta" else "Raj Patel")
        s.plan(f"p-{name}", name)
        for k in range(done):
            s.event(f"{name}{k}", name, "SLA", "2025-01-02")
    s.strategy("ts2", "Raj Patel", "Singapore")  # no BU maps Singapore: Delta is unassigned
    comp = s.compute()
    assert (comp.fy, comp.as_of) == (s.fy, s.as_of)
    assert {
        k: comp.stats[k] for k in ("clients_at_risk", "clients_critical", "clients_compliant", "clients_unassigned")
    } == {
        "clients_at_risk": 1,
        "clients_critical": 1,
        "clients_compliant": 2,
        "clients_unassigned": 1,
    }


def test_invariant_status_near_a_threshold_from_below():
    s = Scenario(2025, 1, "2025-12-31")
    s.event_type("SLA")
    s.tier("T")
    s.require("T", "SLA", 200)
    for done in (99, 159, 199):  # 49.5 %, 79.5 %, 99.5 %: just under each default threshold
        s.period(f"Client {done}", "T", "2024-01-01")
        s.plan(f"plan {done}", f"Client {done}")
        for k in range(done):
            s.event(f"e{done}.{k}", f"Client {done}", "SLA", "2025-01-02")
    comp = s.compute()
    assert sorted(c.requirements[0].status for c in comp.clients.values()) == ["at_risk", "compliant", "critical"]
    assert found(comp) == {}
