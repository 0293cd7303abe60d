"""The per-FY report's tables and page, built from the rules' computation without a database: SPEC Appendix A's
figures land in the right cells, the previous run is chosen from the ledger's rows, and names from the data
stay text in the page (escaped) and in the charts."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest

from compliance_sync.domain.bu_map import BuMap
from compliance_sync.service.fy_report import output
from compliance_sync.service.fy_report.tables import build_tables, previous_run
from compliance_sync_tests.scenario import Scenario, appendix_a

NOW = dt.datetime(2025, 7, 1, 9, 0, tzinfo=dt.UTC)
IN_SYNC = {"apac_planning_goals": {"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 1, "orphans": 0}}
BEHIND = {"apac_planning_goals": {"inserted": 0, "updated": 1, "deleted": 0, "unchanged": 0, "orphans": 0}}

# a reference to something outside the page: src= / href= / url() / @import pointing at a network location
NETWORK_REFERENCE = re.compile(
    r"""(?:\b(?:src|href|xlink:href|action|poster)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|url\(\s*["']?\s*(?:https?:)?//|@import""",
    re.I,
)


@pytest.fixture(scope="module")
def appendix():
    return appendix_a().compute()


def test_appendix_a_headline_and_tables(appendix):
    t = build_tables(appendix, generated_at=NOW, targets=IN_SYNC)
    assert (t.fiscal_year, t.as_of, t.apac, t.clients, t.below) == (2025, dt.date(2025, 6, 30), Decimal("52.63"), 1, 1)
    assert t.in_sync is True and t.previous is None and t.change is None
    assert t.business_units.to_dict("records") == [
        {
            "Business unit": "ANZ",
            "Compliance %": Decimal("52.63"),
            "Clients": 1,
            "Below compliance": 1,
            "Territories": 1,
        }
    ]
    assert t.territories.to_dict("records") == [
        {
            "Business unit": "ANZ",
            "Territory": "VIC + NZ",
            "CSE": "Kim Lee",
            "Clients": 1,
            "Required": 19,
            "Completed": 10,
            "Compliance %": Decimal("52.63"),
            "At risk": 0,
            "Critical": 1,
        }
    ]
    statuses = {r["Status"]: (r["Clients"], r["Requirements"]) for r in t.statuses.to_dict("records")}
    assert statuses == {"Critical": (1, 1), "At risk": (0, 2), "Compliant": (0, 0), "Exceeded": (0, 0)}


def test_appendix_a_client_below_compliance_and_what_it_misses(appendix):
    [row] = build_tables(appendix, generated_at=NOW).below_compliance.to_dict("records")
    assert {
        k: row[k]
        for k in (
            "Client",
            "CSE",
            "Segment",
            "Territory",
            "Business unit",
            "Status",
            "Required",
            "Credited",
            "Shortfall",
        )
    } == {
        "Client": "Alpha Health",
        "CSE": "Kim Lee",
        "Segment": "Collaboration",
        "Territory": "VIC + NZ",
        "Business unit": "ANZ",
        "Status": "Critical",
        "Required": 19,
        "Credited": 10,
        "Shortfall": 9,
    }
    assert row["Compliance %"] == Decimal("52.63")
    assert {k: v for k, v in row.items() if k.startswith("Missing: ")} == {
        "Missing: Sla Review": 2,
        "Missing: Insight Tp": 5,
        "Missing: Health Check": 2,
    }
    assert sorted(row["Missing events"].split("; ")) == [
        "Health Check: 2 missing (1 of 3)",
        "Insight Tp: 5 missing (7 of 12)",
        "Sla Review: 2 missing (2 of 4)",
    ]


def test_appendix_a_pace_up_to_as_of(appendix):
    pace = build_tables(appendix, generated_at=NOW).pace
    assert list(pace["Month"]) == ["2025-01", "2025-02", "2025-03", "2025-04", "2025-05", "2025-06"]  # as_of 2025-06-30
    assert list(pace["Due"]) == [1, 1, 2, 2, 1, 2]  # Appendix A's monthly_capacity, Jan…Jun
    assert list(pace["Completed"]) == [1, 2, 2, 1, 2, 2]
    assert list(pace["Due to date"]) == [1, 2, 4, 6, 7, 9] and list(pace["Completed to date"]) == [1, 3, 5, 6, 8, 10]
    assert set(pace["Business unit"]) == {"ANZ"}


def test_pace_is_empty_before_the_fiscal_year_starts():
    s = appendix_a()
    s.as_of = dt.date(2024, 12, 31)
    assert build_tables(s.compute(), generated_at=NOW).pace.empty


def test_the_run_warnings_with_examples(appendix):
    warnings = build_tables(
        appendix, generated_at=NOW, backend_warnings=["compliance_sync_runs has no column apac_compliance"]
    ).warnings
    rows = {r["Warning"]: r for r in warnings.to_dict("records")}
    assert rows["completed_future_events"]["Count"] == 1  # a3: completed, dated after as_of
    assert "Alpha Health" in rows["completed_future_events"]["Examples"]
    assert rows["backend"]["What"] == "compliance_sync_runs has no column apac_compliance"


def test_clients_below_compliance_by_shortfall_then_percentage():
    s = Scenario(2025, 1, "2025-12-31")
    s.tier("Leverage")
    s.event_type("SLA_REVIEW")
    s.require("Leverage", "SLA_REVIEW", 10)
    s.strategy("ts1", "Kim Lee", "VIC + NZ")
    for name, done in (("Small gap", 7), ("Big gap", 1), ("Mid gap", 4), ("On track", 9)):
        s.period(name, "Leverage", "2024-01-01")
        s.plan(f"p-{name}", name)
        for i in range(done):
            s.event(f"{name}-{i}", name, "SLA_REVIEW", f"2025-0{i + 1}-01")
    below = build_tables(s.compute(), generated_at=NOW).below_compliance
    assert list(below["Client"]) == ["Big gap", "Mid gap", "Small gap"]  # 9, 6, 3 missing; "On track" is compliant
    assert list(below["Shortfall"]) == [9, 6, 3]


def test_previous_run_skips_the_run_that_wrote_these_figures():
    rows = [
        {
            "run_id": "r3",
            "apac_compliance": Decimal("52.63"),
            "finished_at": dt.datetime(2025, 7, 1, tzinfo=dt.UTC),
            "as_of": dt.date(2025, 6, 30),
        },
        {
            "run_id": "r2",
            "apac_compliance": None,
            "finished_at": dt.datetime(2025, 6, 30, tzinfo=dt.UTC),
        },  # recorded before the column existed
        {
            "run_id": "r1",
            "apac_compliance": "50.1",
            "finished_at": "2025-06-29T06:00:00+00:00",
            "as_of": "2025-06-29",
        },  # as REST returns it
    ]
    current = Decimal("52.63")
    assert previous_run(rows, current, in_sync=True).run_id == "r1"  # r3 wrote what the targets hold
    assert previous_run(rows, current, in_sync=True).figure == Decimal("50.10")
    assert previous_run(rows, current, in_sync=False).run_id == "r3"  # a report ahead of the next sync
    assert previous_run(rows, Decimal("60.00"), in_sync=True).run_id == "r3"
    assert previous_run(rows[:2], current, in_sync=True) is None
    assert previous_run([], current, in_sync=None) is None


def test_change_since_the_previous_run_in_the_page(appendix):
    ledger = [
        {
            "run_id": "r1",
            "apac_compliance": Decimal("50.00"),
            "finished_at": dt.datetime(2025, 6, 1, 6, 0, tzinfo=dt.UTC),
            "as_of": dt.date(2025, 5, 31),
        }
    ]
    t = build_tables(appendix, generated_at=NOW, targets=BEHIND, ledger_rows=ledger)
    assert t.change == Decimal("2.63") and t.previous.figure == Decimal("50.00")
    html = output.render_html(t)
    assert re.search(r'id="apac-change">\+2\.63 pts<', html)
    assert "from 50.00 %, the run of 2025-06-01 06:00 UTC (as_of 2025-05-31)" in html


def test_the_page_is_self_contained_and_shows_the_apac_figure(appendix):
    html = output.render_html(build_tables(appendix, generated_at=NOW, targets=IN_SYNC))
    assert re.search(r'<div class="figure" id="apac-figure" data-value="52\.63">52\.63 %</div>', html)
    assert html.count("<svg") == 3  # business units, statuses, pace
    assert not NETWORK_REFERENCE.search(html)
    assert "<script" not in html and "<link" not in html and "<img" not in html


def test_names_from_the_data_are_escaped_in_the_page_and_drawn_literally_in_the_charts():
    hostile = """<script>alert("x")</script> & 'Co'"""
    s = Scenario(2025, 1, "2025-06-30")
    s.tier("Leverage")
    s.event_type("SLA_REVIEW")
    s.require("Leverage", "SLA_REVIEW", 4)
    s.period(hostile, "Leverage", "2024-01-01", cse='O"Brien <CSE>')
    s.plan("p1", hostile)
    s.strategy("ts1", 'O"Brien <CSE>', "T&T <east>")
    s.bu_map = BuMap({}, {"T&T <east>": "A$B <BU> & $x$"})  # a $ would start mathtext in matplotlib
    t = build_tables(s.compute(), generated_at=NOW)
    assert list(t.below_compliance["Client"]) == [hostile]
    html = output.render_html(t)
    assert "<script>" not in html and hostile not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;Co&#39;" in html
    assert "O&#34;Brien &lt;CSE&gt;" in html and "T&amp;T &lt;east&gt;" in html and "A$B &lt;BU&gt; &amp; $x$" in html
    assert html.count("<svg") == 3


def test_unknown_extension_is_refused_naming_the_flag(appendix, tmp_path):
    from compliance_sync.errors import SettingsError

    with pytest.raises(SettingsError, match=r"--out must end in \.html, \.xlsx or \.csv, got '.*report\.pdf'"):
        output.write_report(build_tables(appendix, generated_at=NOW), tmp_path / "report.pdf")
    assert list(tmp_path.iterdir()) == []
