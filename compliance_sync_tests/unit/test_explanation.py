"""explain's pure parts: the provenance the rules record, the explanation built from it (SPEC Appendix A), the
near-miss client names of SPEC §6 (possible_alias), and the closest names offered for a name that matches nothing."""

from __future__ import annotations

import datetime as dt

import pytest

from compliance_sync.domain.explanation import (
    Subject,
    closest,
    explain_apac,
    explain_bu,
    explain_client,
    explain_territory,
    resolve,
)
from compliance_sync.domain.facts import RawEvent
from compliance_sync.domain.provenance import Trace, normalise_name, possible_aliases
from compliance_sync.domain.rules import compute
from compliance_sync.errors import DataError, SettingsError
from compliance_sync.service import explain_text
from compliance_sync_tests.scenario import Scenario, appendix_a, uid


def raw_events(s: Scenario, client: str | None = None) -> list[RawEvent]:
    return [
        RawEvent(e["id"], e["client_name"], e["event_type_id"], e["event_date"], e["completed"])
        for e in s.events
        if client is None or e["client_name"] == client
    ]


def explained(s: Scenario, subject: Subject, events: list[RawEvent] | None = None) -> dict:
    facts = s.facts()
    scope = resolve(facts, s.bu_map, subject)
    comp = compute(facts, s.thresholds, s.bu_map, Trace(frozenset([scope.client]) if scope.client else frozenset()))
    if scope.client:
        return explain_client(comp, facts, scope, raw_events(s) if events is None else events, s.thresholds, s.bu_map)
    return (
        {"territory": explain_territory, "bu": explain_bu}[subject.kind](comp, scope, s.bu_map)
        if subject.kind != "apac"
        else explain_apac(comp, s.bu_map)
    )


# --- near-miss names ------------------------------------------------------------------------------------------------
def test_names_are_normalised_without_case_accents_or_punctuation():
    assert normalise_name("Ngā Awa Health-Trust") == "ngaawahealthtrust"
    assert normalise_name("St Vincent's Care (NSW)") == "stvincentscarensw"
    assert normalise_name("Straße 1") == "strasse1"
    assert normalise_name("ÉCOLE") == normalise_name("ecole")


def test_possible_aliases_match_containment_both_ways_and_never_short_names():
    plans = ["Albury Wodonga Health", "Alpha Health", "Acme Ltd", "Beta", "North Wodonga Health Service"]
    events = {
        "Albury Wodonga": 3,  # contained in a plan name
        "Wodonga Health": 7,  # contained in the middle of plan names
        "alpha health": 2,  # equal once normalised
        "Alpha Health Pty Ltd": 1,  # a plan name contained in it
        "Acme": 5,  # too short (4 characters)
        "Beta Group": 1,  # the plan name is too short
        "Gamma Mining": 4,  # nothing alike
        "Alpha Health": 9,  # a plan client itself: never reported
    }
    assert possible_aliases(events, plans) == [
        ("Albury Wodonga", "Albury Wodonga Health", 3),
        ("Alpha Health Pty Ltd", "Alpha Health", 1),
        ("Wodonga Health", "Albury Wodonga Health", 7),
        ("Wodonga Health", "North Wodonga Health Service", 7),
        ("alpha health", "Alpha Health", 2),
    ]
    assert possible_aliases({}, plans) == [] and possible_aliases({"Zed Corp": 1}, []) == []


def test_possible_alias_is_reported_by_the_rules_and_changes_no_figure():
    s = appendix_a()
    before = s.compute()
    s.event("near", "Alpha Health Ltd", "SLA_REVIEW", "2025-03-01")
    s.event("near2", "Alpha Health Ltd", "SLA_REVIEW", "2025-03-02")
    after = s.compute()
    found = after.findings["possible_alias"]
    assert found.count == 1 and found.examples == [
        "2 event(s) logged under 'Alpha Health Ltd' may belong to plan client 'Alpha Health' (not counted)"
    ]
    assert list(after.wanted.requirements) == list(before.wanted.requirements)
    assert after.wanted.territories == before.wanted.territories and after.wanted.apac == before.wanted.apac
    assert before.findings["possible_alias"].count == 0


def test_explain_lists_near_miss_events_as_not_counted():
    s = appendix_a()
    near = s.event("near", "alpha health", "SLA_REVIEW", "2025-03-01")
    x = explained(s, Subject("client", "Alpha Health"))
    assert x["possible_aliases"] == [{"name": "alpha health", "events": 1}]
    sla = next(t for t in x["event_types"] if t["event_type_name"] == "Sla Review")
    assert [n["id"] for n in sla["not_counted"]] == [near]
    assert "logged under 'alpha health'" in sla["not_counted"][0]["reason"]
    assert any("not counted: logged under 'alpha health'" in line for line in explain_text.render(x))


# --- provenance: SPEC Appendix A --------------------------------------------------------------------------------------
def test_a_sync_records_no_provenance_and_a_trace_changes_no_figure():
    s = appendix_a()
    plain = s.compute()
    traced = compute(s.facts(), s.thresholds, s.bu_map, Trace(frozenset(["Alpha Health"])))
    assert plain.trace is None
    assert list(plain.wanted.requirements) == list(traced.wanted.requirements)
    assert (plain.wanted.territories, plain.wanted.business_units, plain.wanted.apac) == (
        traced.wanted.territories,
        traced.wanted.business_units,
        traced.wanted.apac,
    )
    # only the asked clients' details are recorded
    other = compute(s.facts(), s.thresholds, s.bu_map, Trace(frozenset(["Someone Else"])))
    assert other.trace.periods == {} and other.trace.requirements == {}


def test_appendix_a_explained():
    s = appendix_a()
    x = explained(s, Subject("plan", uid("p1")))
    assert (x["fiscal_year"], x["as_of"], x["client_name"], x["plans"]) == (
        2025,
        "2025-06-30",
        "Alpha Health",
        [uid("p1")],
    )
    assert [(p["tier_name"], p["effective_from"], p["effective_to"], p["used"], p["latest"]) for p in x["periods"]] == [
        ("Leverage", "2023-01-01", "2025-03-31", True, False),
        ("Collaboration", "2025-04-01", None, True, True),
    ]
    by_name = {t["event_type_name"]: t for t in x["event_types"]}
    sla, insight, health = by_name["Sla Review"], by_name["Insight Tp"], by_name["Health Check"]
    assert [(r["tier_name"], r["frequency"]) for r in sla["requirement_sources"]] == [
        ("Leverage", 2),
        ("Collaboration", 4),
    ]
    assert [(r["tier_name"], r["frequency"]) for r in health["requirement_sources"]] == [
        ("Leverage", 0),
        ("Collaboration", 3),
    ]
    assert (
        sla["required_count"],
        sla["completed_count"],
        sla["scheduled_count"],
        sla["compliance_percentage"],
        sla["status"],
        sla["next_due_date"],
    ) == (4, 2, 2, "50.00", "at_risk", "2025-09-30")
    assert sla["counted_event_ids"] == [uid("a1"), uid("a2")] and sla["scheduled_event_ids"] == [uid("a3"), uid("a4")]
    assert [e["reason"] for e in sla["events"]][2] == "completed but dated after as_of 2025-06-30: counts as scheduled"
    assert "ceil(12×3/4) = 9" in sla["arithmetic"]["next_due"]
    assert (insight["compliance_percentage"], insight["status"], insight["next_due_date"]) == (
        "58.33",
        "at_risk",
        "2025-08-31",
    )
    assert (
        "exact 100×7/12 = 58.333333… %" in insight["arithmetic"]["percentage"]
        and "floor(140012 / 24)" in insight["arithmetic"]["percentage"]
    )
    assert insight["arithmetic"]["status"][-1] == "100×7 = 700 ≥ 50×12 = 600 → at_risk ✓"
    assert (health["compliance_percentage"], health["status"], health["counted_event_ids"]) == (
        "33.33",
        "critical",
        [uid("c1")],
    )
    tot = x["totals"]
    assert (
        tot["required_total"],
        tot["credited_total"],
        tot["compliance_percentage"],
        tot["is_critical"],
        tot["is_at_risk"],
    ) == (19, 10, "52.63", True, False)
    assert (
        x["territory"]["territory"] == "VIC + NZ"
        and x["territory"]["bu_name"] == "ANZ"
        and "territory: 'VIC + NZ' → ANZ" in x["territory"]["bu_entry"]
    )
    text = "\n".join(explain_text.render(x))
    assert "required 4 = max over the periods' tiers (Leverage 2, Collaboration 4)" in text


def test_events_outside_the_window_inactive_or_excluded_are_not_counted_with_their_reason():
    s = appendix_a()
    s.event_type("RETIRED", active=False)
    s.require("Collaboration", "RETIRED", 2)
    s.exclude("Alpha Health", "HEALTH_CHECK", "Client declined")
    s.exclude("Alpha Health", "INSIGHT_TP", "Greyed out - n/a")
    s.event("old", "Alpha Health", "SLA_REVIEW", "2024-12-31")
    s.event("gone", "Alpha Health", "RETIRED", "2025-02-02")
    x = explained(s, Subject("client", "Alpha Health"))
    names = [t["event_type_name"] for t in x["event_types"]]
    assert sorted(names) == ["Insight Tp", "Sla Review"]
    sla = next(t for t in x["event_types"] if t["event_type_name"] == "Sla Review")
    assert sla["not_counted"][0]["id"] == uid("old") and sla["not_counted"][0]["reason"].startswith(
        "outside the FY window"
    )
    insight = next(t for t in x["event_types"] if t["event_type_name"] == "Insight Tp")
    assert insight["exclusions"] == [{"reason": "Greyed out - n/a", "applies": False}]
    reasons = {n["event_type_name"]: n["reason"] for n in x["not_required"]}
    assert reasons["Health Check"].startswith("excluded: reason 'Client declined' applies")
    assert reasons["Retired"] == "event type inactive"
    others = {e["id"]: e["reason"] for e in x["other_events"]}
    assert (
        others[uid("gone")] == "event type inactive"
        and others[uid("c1")] == "requirement excluded (client_event_exclusions)"
    )


def test_events_that_do_not_add_up_to_the_computed_counts_stop_the_explanation():
    s = appendix_a()
    events = [e for e in raw_events(s) if e.id != uid("a1")]  # as if a1 had been deleted between the reads
    with pytest.raises(DataError, match="the data changed between the reads"):
        explained(s, Subject("client", "Alpha Health"), events)


def test_rollups_explained():
    s = appendix_a()
    t = explained(s, Subject("territory", "VIC + NZ"))
    assert (t["overall_compliance_percentage"], t["total_required_events"], t["total_completed_events"]) == (
        "52.63",
        19,
        10,
    )
    assert (
        t["rows"][0]["contributors"][0]["client_name"] == "Alpha Health"
        and "Σ credited 10 / Σ required 19" in t["arithmetic"]
    )
    b = explained(s, Subject("bu", "ANZ"))
    assert (b["overall_compliance_percentage"], b["clients_below_compliance"], b["territory_count"]) == ("52.63", 1, 1)
    a = explained(s, Subject("apac"))
    assert (
        a["overall_compliance_percentage"],
        a["total_required_events"],
        a["total_completed_events"],
        a["below_compliance_accounts"],
    ) == ("52.63", 19, 10, 1)
    assert [c["bu_name"] for c in a["contributors"]] == ["ANZ"]


def test_strategy_tie_break_and_unassigned_clients_explained():
    s = appendix_a()
    s.strategy("ts1-q2", "Kim Lee", "VIC + NZ", quarter="Q2", updated_at=dt.datetime(2025, 5, 1, tzinfo=dt.UTC))
    s.period("Beta Co", "Leverage", "2024-01-01", cse="Nobody")
    s.plan("p2", "Beta Co")
    t = explained(s, Subject("territory", "VIC + NZ"))
    assert t["not_used"] == [
        {
            "territory_strategy_id": uid("ts1-q2"),
            "cse_name": "Kim Lee",
            "quarter": "Q2",
            "why": f"loses the tie-break for CSE 'Kim Lee' to {uid('ts1')} (quarterly; an annual strategy wins)",
        }
    ]
    a = explained(s, Subject("apac"))
    assert [c["client_name"] for c in a["unassigned_clients"]] == ["Beta Co"] and a["contributors"][-1][
        "bu_name"
    ] == "Unassigned"


def test_names_that_match_nothing_name_the_closest():
    s = appendix_a()
    with pytest.raises(SettingsError, match=r"no plan client .* 'alpha healht' in FY2025; closest: 'Alpha Health'"):
        resolve(s.facts(), s.bu_map, Subject("client", "alpha healht"))
    with pytest.raises(SettingsError, match="closest: 'VIC \\+ NZ'"):
        resolve(s.facts(), s.bu_map, Subject("territory", "VIC+NZ"))
    with pytest.raises(SettingsError, match="no business unit .* 'AN'"):
        resolve(s.facts(), s.bu_map, Subject("bu", "AN"))
    s.plan("p-old", "Alpha Health", status="archived")
    with pytest.raises(SettingsError, match=rf"no plan in scope .* '{uid('p-old')}' in FY2025"):
        resolve(s.facts(), s.bu_map, Subject("plan", uid("p-old")))
    typo = uid("p1")[:-1] + ("0" if uid("p1")[-1] != "0" else "1")
    with pytest.raises(SettingsError, match=rf"no plan in scope .* '{typo}' in FY2025; closest: '{uid('p1')}'"):
        resolve(s.facts(), s.bu_map, Subject("plan", typo))
    assert closest("St Vincents Care", ["St Vincent's Care", "Vincent Ltd", "Other"])[0] == "St Vincent's Care"
