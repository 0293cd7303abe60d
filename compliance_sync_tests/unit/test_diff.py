"""SPEC §5: the diff (inserts, updates with old values, unchanged, deletes vs orphans, BU reset, APAC kept),
normalisation, the guards and the dry-run description. Pure: hand-built rows, no database."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from decimal import Decimal

import pandas as pd  # only to check that pandas' missing values compare as missing
import pytest

from compliance_sync.domain.diff import Action, SyncDiff, changed_columns, diff_rows, key_of, normalize, to_json
from compliance_sync.domain.guards import blocking, find_guards
from compliance_sync.domain.tables import (
    APAC,
    BUSINESS_UNIT,
    DATE,
    INT,
    JSONB,
    NUMERIC,
    REQUIRED_NONEMPTY,
    REQUIREMENTS,
    TARGET_BY_NAME,
    TARGETS,
    TERRITORY,
    TEXT,
    UUID,
)
from compliance_sync.errors import DataError
from compliance_sync.service import diff_text as report
from compliance_sync_tests.scenario import apac_row, bu_row

REQ_T = TARGET_BY_NAME[REQUIREMENTS]
TER_T = TARGET_BY_NAME[TERRITORY]
BU_T = TARGET_BY_NAME[BUSINESS_UNIT]
APAC_T = TARGET_BY_NAME[APAC]

PLAN1 = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
PLAN2 = "7a2b3c4d-5e6f-4071-8b9c-0d1e2f3a4b5c"
TYPE1 = "8b3c4d5e-6f70-4182-9cad-1e2f3a4b5c6d"
TYPE2 = "9c4d5e6f-7081-4293-adbe-2f3a4b5c6d7e"
TS1 = "a1b2c3d4-e5f6-4789-8abc-def012345678"
TS2 = "b2c3d4e5-f607-489a-9bcd-ef0123456789"
EV1 = "c3d4e5f6-0718-49ab-acde-f01234567890"
EV2 = "d4e5f607-1829-4abc-bdef-012345678901"


# --- builders ---------------------------------------------------------------------------------------------
def req_row(plan=PLAN1, etype=TYPE1, fy=2025, **over):
    row = {
        "plan_id": plan,
        "event_type_id": etype,
        "fiscal_year": fy,
        "client_id": None,
        "client_name": "Alpha Health",
        "segment": "Collaboration",
        "event_type_name": "Sla Review",
        "required_count": 4,
        "completed_count": 2,
        "scheduled_count": 2,
        "compliance_percentage": Decimal("50.00"),
        "status": "at_risk",
        "next_due_date": dt.date(2025, 9, 30),
        "linked_event_ids": [EV1, EV2],
    }
    row.update(over)
    return row


def ter_row(sid=TS1, fy=2025, **over):
    row = {
        "territory_strategy_id": sid,
        "fiscal_year": fy,
        "territory": "VIC + NZ",
        "cse_name": "Kim Lee",
        "total_clients": 1,
        "total_required_events": 19,
        "total_completed_events": 10,
        "overall_compliance_percentage": Decimal("52.63"),
        "clients_at_risk": 0,
        "clients_critical": 1,
        "segment_breakdown": {
            "Collaboration": {"clients": 1, "total_required": 19, "total_completed": 10, "compliance": Decimal("52.63")}
        },
        "monthly_capacity": {f"2025-{m:02d}": {"required": 1, "completed": 0, "scheduled": 0} for m in range(1, 13)},
    }
    row.update(over)
    return row


def wanted(table, rows):
    return [copy.deepcopy(r) for r in rows]


def current(table, rows, foreign=None):
    """Current rows: key + owned + has_foreign (default False for every row)."""
    foreign = foreign or [False] * len(rows)
    return [dict(copy.deepcopy(r), has_foreign=f) for r, f in zip(rows, foreign)]


class RowUpdate:
    """An update as the tests read it: the key, the changed columns with their old values, the new row."""

    def __init__(self, table, line):
        self.key = line.key
        self.changed = tuple(changed_columns(table, line.old, line.new))
        self.old = {c: line.old[c] for c in self.changed}
        self.new = line.new


class Diff:
    """One target's diff, every row listed (limit above any test's size)."""

    def __init__(self, table, cur, want):
        self.target, self.changeset = diff_rows(table, cur, want, limit=10_000)
        lines = self.target.lines
        self.inserts = [line.new for line in lines if line.action == Action.INSERT]
        self.updates = [RowUpdate(table, line) for line in lines if line.action == Action.UPDATE]
        self.deletes = [line.key for line in lines if line.action == Action.DELETE]
        self.orphans = [line.key for line in lines if line.action == Action.ORPHAN]
        self.unchanged = self.target.unchanged
        self.current_count = self.target.current_count
        self.changes = self.target.changes
        self.name = self.target.name

    def counts(self):
        return self.target.counts()


def diff_target(table, cur, want):
    return Diff(table, cur, want)


def iter_changed_rows(d):
    return d.changeset.upserts


class All:
    def __init__(self, fiscal_year, cur, want, counts, fraction=0.5):
        self.parts = {t.name: Diff(t, cur[t.name], want[t.name]) for t in TARGETS}
        self.sync = SyncDiff(fiscal_year, {n: d.target for n, d in self.parts.items()})
        self.guards = find_guards(
            self.sync, counts, events_in_window=1, territories=0, business_units=0, max_prune_fraction=fraction
        )
        self.fiscal_year = fiscal_year
        self.targets = self.parts
        self.changes = self.sync.changes


def diff_all(fiscal_year, cur, want, counts, fraction=0.5):
    return All(fiscal_year, cur, want, counts, fraction)


def blocking_guards(d, allow_mass_prune):
    return blocking(d.guards, allow_mass_prune)


def guards(targets, counts, fraction):
    parts = {t.name: Diff(t, [], []).target for t in TARGETS} | {n: d.target for n, d in targets.items()}
    return find_guards(SyncDiff(2025, parts), counts, 1, 0, 0, fraction)


def describe(d):
    return report.describe(d.target)


def full_counts(**over):
    counts = {name: 10 for name in REQUIRED_NONEMPTY}
    counts.update(over)
    return counts


def empty_current():
    return {t.name: current(t, []) for t in TARGETS}


def empty_wanted():
    return {t.name: wanted(t, []) for t in TARGETS}


# --- normalisation -----------------------------------------------------------------------------------------
def test_normalize_numeric_forms_compare_equal():
    assert normalize(NUMERIC, Decimal("52.6")) == normalize(NUMERIC, 52.60)
    assert normalize(NUMERIC, Decimal("50.00")) == normalize(NUMERIC, 50)
    assert normalize(NUMERIC, Decimal("0.00")) == normalize(NUMERIC, 0)
    assert normalize(NUMERIC, "52.63") == normalize(NUMERIC, Decimal("52.630"))
    assert normalize(NUMERIC, Decimal("52.63")) != normalize(NUMERIC, Decimal("52.64"))


def test_normalize_nulls():
    for kind in (UUID, TEXT, INT, NUMERIC, JSONB, DATE):
        assert normalize(kind, None) is None
        assert normalize(kind, float("nan")) is None
    assert normalize(INT, pd.NA) is None
    assert normalize(DATE, pd.NaT) is None


def test_normalize_uuid_case_and_type():
    upper = PLAN1.upper()
    assert normalize(UUID, upper) == PLAN1
    assert normalize(UUID, uuid.UUID(PLAN1)) == PLAN1


def test_normalize_int_and_date():
    assert normalize(INT, 5.0) == 5
    assert normalize(INT, "7") == 7
    assert normalize(DATE, pd.Timestamp("2025-09-30")) == dt.date(2025, 9, 30)
    assert normalize(DATE, dt.datetime(2025, 9, 30, 0, 0)) == dt.date(2025, 9, 30)
    assert normalize(DATE, dt.date(2025, 9, 30)) == dt.date(2025, 9, 30)


def test_normalize_json_numbers_and_strings():
    a = {"x": [{"compliance": Decimal("52.60"), "clients": 1}]}
    b = '{"x": [{"compliance": 52.6, "clients": 1.0}]}'
    assert normalize(JSONB, a) == normalize(JSONB, b)
    assert normalize(JSONB, [1, 2]) != normalize(JSONB, [2, 1])  # arrays keep their order
    assert normalize(JSONB, {"a": 1, "b": 2}) == normalize(JSONB, {"b": 2, "a": 1})
    assert normalize(JSONB, "[]") == normalize(JSONB, []) == []
    assert normalize(JSONB, {"c": Decimal("52.63")}) != normalize(JSONB, {"c": 52.64})
    assert normalize(JSONB, [EV1, EV2]) == [EV1, EV2]


def test_normalize_json_single_null_element_is_not_sql_null():
    assert normalize(JSONB, [None]) == [None]
    assert normalize(JSONB, [None]) != normalize(JSONB, None)


def test_to_json_decimals_are_numbers():
    assert to_json([{"compliance": Decimal("52.63"), "n": 1}]) == '[{"compliance":52.63,"n":1}]'
    assert to_json({"Zürich": 1}) == '{"Zürich":1}'


def test_key_of_normalises():
    assert key_of(REQ_T, req_row(plan=PLAN1.upper(), etype=TYPE1.upper())) == (PLAN1, TYPE1, 2025)
    assert key_of(APAC_T, apac_row()) == (2025,)
    assert key_of(BU_T, bu_row("SEA")) == ("SEA", 2025)


# --- inserts, updates, unchanged ---------------------------------------------------------------------------
def test_insert_into_empty_table():
    rows = [req_row(), req_row(etype=TYPE2, event_type_name="Insight Tp")]
    d = diff_target(REQ_T, current(REQ_T, []), wanted(REQ_T, rows))
    assert d.counts() == {"inserted": 2, "updated": 0, "deleted": 0, "orphans": 0, "unchanged": 0}
    assert d.current_count == 0
    assert d.inserts == rows
    assert d.changes == 2
    assert list(iter_changed_rows(d)) == rows


def test_identical_rows_are_unchanged():
    rows = [req_row(), req_row(plan=PLAN2)]
    d = diff_target(REQ_T, current(REQ_T, rows), wanted(REQ_T, rows))
    assert d.counts() == {"inserted": 0, "updated": 0, "deleted": 0, "orphans": 0, "unchanged": 2}
    assert d.changes == 0
    assert d.current_count == 2
    assert list(iter_changed_rows(d)) == []


def test_update_records_exact_changed_columns_and_old_values():
    old = req_row()
    new = req_row(
        completed_count=3,
        scheduled_count=1,
        compliance_percentage=Decimal("75.00"),
        next_due_date=dt.date(2025, 12, 31),
    )
    d = diff_target(REQ_T, current(REQ_T, [old]), wanted(REQ_T, [new]))
    assert d.counts()["updated"] == 1 and d.counts()["unchanged"] == 0 and not d.inserts
    (up,) = d.updates
    assert isinstance(up, RowUpdate)
    assert up.key == (PLAN1, TYPE1, 2025)
    assert up.changed == ("completed_count", "scheduled_count", "compliance_percentage", "next_due_date")
    assert up.old == {
        "completed_count": 2,
        "scheduled_count": 2,
        "compliance_percentage": Decimal("50.00"),
        "next_due_date": dt.date(2025, 9, 30),
    }
    assert up.new == new  # the whole wanted row
    assert list(iter_changed_rows(d)) == [new]


def test_update_status_and_json_columns():
    old = req_row()
    new = req_row(status="critical", linked_event_ids=[EV2, EV1])
    (up,) = diff_target(REQ_T, current(REQ_T, [old]), wanted(REQ_T, [new])).updates
    assert up.changed == ("status", "linked_event_ids")
    assert up.old == {"status": "at_risk", "linked_event_ids": [EV1, EV2]}


def test_update_null_to_value():
    old = req_row(next_due_date=None, client_id=None)
    new = req_row(next_due_date=dt.date(2025, 3, 31), client_id=PLAN2)
    (up,) = diff_target(REQ_T, current(REQ_T, [old]), wanted(REQ_T, [new])).updates
    assert up.old == {"client_id": None, "next_due_date": None}


def test_unchanged_after_normalisation_requirements():
    # what a database hands back vs what the rules compute
    old = req_row(
        plan=PLAN1.upper(),
        etype=TYPE1.upper(),
        compliance_percentage=50.0,
        next_due_date=pd.Timestamp("2025-09-30"),
        linked_event_ids=f'["{EV1}", "{EV2}"]',
        client_id=PLAN2.upper(),
    )
    new = req_row(client_id=PLAN2)
    d = diff_target(REQ_T, current(REQ_T, [old]), wanted(REQ_T, [new]))
    assert d.counts() == {"inserted": 0, "updated": 0, "deleted": 0, "orphans": 0, "unchanged": 1}


def test_unchanged_after_normalisation_json_numbers():
    old = ter_row(
        overall_compliance_percentage=52.63,
        segment_breakdown=(
            '{"Collaboration": {"clients": 1, "total_required": 19, "total_completed": 10, "compliance": 52.630}}'
        ),
    )
    new = ter_row()
    d = diff_target(TER_T, current(TER_T, [old]), wanted(TER_T, [new]))
    assert d.unchanged == 1 and not d.updates

    old_bu = bu_row(
        overall_compliance_percentage=Decimal("52.6"),
        territory_data=[{"territory": "VIC + NZ", "cse_name": "Kim Lee", "clients": 1, "compliance": 52.60}],
    )
    new_bu = bu_row(
        overall_compliance_percentage=Decimal("52.60"),
        territory_data=[{"territory": "VIC + NZ", "cse_name": "Kim Lee", "clients": 1, "compliance": Decimal("52.6")}],
    )
    d = diff_target(BU_T, current(BU_T, [old_bu]), wanted(BU_T, [new_bu]))
    assert d.unchanged == 1 and not d.updates

    old_apac = apac_row(
        actual_compliance=50, bu_contributions=[{"bu_name": "ANZ", "compliance": 50, "clients": 1, "clients_below": 1}]
    )
    new_apac = apac_row(
        actual_compliance=Decimal("50.00"),
        bu_contributions=[{"bu_name": "ANZ", "compliance": Decimal("50.00"), "clients": 1, "clients_below": 1}],
    )
    d = diff_target(APAC_T, current(APAC_T, [old_apac]), wanted(APAC_T, [new_apac]))
    assert d.unchanged == 1 and not d.updates


def test_json_change_inside_nested_value_is_an_update():
    old = ter_row()
    new = ter_row()
    new["monthly_capacity"]["2025-03"]["completed"] = 1
    (up,) = diff_target(TER_T, current(TER_T, [old]), wanted(TER_T, [new])).updates
    assert up.changed == ("monthly_capacity",)
    assert up.old["monthly_capacity"]["2025-03"]["completed"] == 0


def test_key_match_ignores_uuid_case():
    old = req_row(plan=PLAN1.upper())
    d = diff_target(REQ_T, current(REQ_T, [old]), wanted(REQ_T, [req_row(completed_count=3)]))
    assert not d.inserts and not d.deletes
    assert len(d.updates) == 1 and d.updates[0].key == (PLAN1, TYPE1, 2025)


def test_mixed_insert_update_unchanged_delete():
    cur = [req_row(), req_row(plan=PLAN2), req_row(etype=TYPE2)]
    want = [req_row(), req_row(plan=PLAN2, completed_count=3), req_row(plan=PLAN2, etype=TYPE2)]
    d = diff_target(REQ_T, current(REQ_T, cur), wanted(REQ_T, want))
    assert d.counts() == {"inserted": 1, "updated": 1, "deleted": 1, "orphans": 0, "unchanged": 1}
    assert d.inserts[0]["plan_id"] == PLAN2 and d.inserts[0]["event_type_id"] == TYPE2
    assert d.updates[0].key == (PLAN2, TYPE1, 2025)
    assert d.deletes == [(PLAN1, TYPE2, 2025)]
    assert d.current_count == 3
    assert d.changes == 3


# --- deletes, orphans, reset, keep ------------------------------------------------------------------------
def test_delete_versus_orphan():
    cur = [req_row(), req_row(plan=PLAN2), req_row(etype=TYPE2)]
    d = diff_target(REQ_T, current(REQ_T, cur, foreign=[False, True, False]), wanted(REQ_T, [req_row()]))
    assert sorted(d.deletes) == [(PLAN1, TYPE2, 2025)]
    assert d.orphans == [(PLAN2, TYPE1, 2025)]
    assert d.unchanged == 1
    assert d.counts() == {"inserted": 0, "updated": 0, "deleted": 1, "orphans": 1, "unchanged": 1}
    assert d.changes == 1  # an orphan is not a change


def test_territory_orphan_and_delete():
    cur = [ter_row(TS1), ter_row(TS2)]
    d = diff_target(TER_T, current(TER_T, cur, foreign=[True, False]), wanted(TER_T, []))
    assert d.orphans == [(TS1, 2025)]
    assert d.deletes == [(TS2, 2025)]


def test_has_foreign_missing_column_means_deletable():
    cur = [{k: v for k, v in row.items() if k != "has_foreign"} for row in current(REQ_T, [req_row()])]
    d = diff_target(REQ_T, cur, wanted(REQ_T, []))
    assert d.deletes == [(PLAN1, TYPE1, 2025)] and not d.orphans


def test_bu_not_wanted_is_reset():
    cur = [
        bu_row("ANZ"),
        bu_row("SEA", overall_compliance_percentage=Decimal("70.00"), clients_below_compliance=2, territory_count=2),
    ]
    d = diff_target(BU_T, current(BU_T, cur), wanted(BU_T, [bu_row("ANZ")]))
    assert not d.deletes and not d.orphans and not d.inserts
    assert d.unchanged == 1
    (up,) = d.updates
    assert up.key == ("SEA", 2025)
    assert up.new == {
        "bu_name": "SEA",
        "fiscal_year": 2025,
        "overall_compliance_percentage": None,
        "clients_below_compliance": 0,
        "territory_count": 0,
        "territory_data": [],
    }
    assert up.changed == (
        "overall_compliance_percentage",
        "clients_below_compliance",
        "territory_count",
        "territory_data",
    )
    assert up.old["overall_compliance_percentage"] == Decimal("70.00")
    assert up.old["clients_below_compliance"] == 2
    assert up.old["territory_count"] == 2


def test_bu_partially_reset_only_changes_what_differs():
    cur = [bu_row("SEA", overall_compliance_percentage=None, clients_below_compliance=0, territory_count=1)]
    (up,) = diff_target(BU_T, current(BU_T, cur), wanted(BU_T, [])).updates
    assert up.changed == ("territory_count", "territory_data")


def test_bu_already_reset_is_unchanged():
    reset = bu_row(
        "SEA", overall_compliance_percentage=None, clients_below_compliance=0, territory_count=0, territory_data=[]
    )
    d = diff_target(BU_T, current(BU_T, [reset]), wanted(BU_T, []))
    assert d.counts() == {"inserted": 0, "updated": 0, "deleted": 0, "orphans": 0, "unchanged": 1}


def test_bu_already_reset_as_the_database_returns_it_is_unchanged():
    # NULL numeric as NaN, jsonb as a JSON string
    cur = [
        {
            "bu_name": "SEA",
            "fiscal_year": 2025,
            "overall_compliance_percentage": float("nan"),
            "clients_below_compliance": 0,
            "territory_count": 0,
            "territory_data": "[]",
            "has_foreign": True,
        }
    ]
    d = diff_target(BU_T, cur, wanted(BU_T, []))
    assert d.unchanged == 1 and not d.updates and not d.deletes and not d.orphans


def test_apac_not_wanted_is_kept():
    cur = [apac_row(2025)]
    d = diff_target(APAC_T, current(APAC_T, cur), wanted(APAC_T, []))
    assert d.counts() == {"inserted": 0, "updated": 0, "deleted": 0, "orphans": 0, "unchanged": 1}


@pytest.mark.parametrize("table, row", [(REQ_T, req_row()), (TER_T, ter_row()), (BU_T, bu_row()), (APAC_T, apac_row())])
def test_duplicate_wanted_key_raises(table, row):
    with pytest.raises(DataError, match=table.name):
        diff_target(table, current(table, []), wanted(table, [row, row]))


def test_duplicate_wanted_key_differing_only_in_uuid_case_raises():
    rows = [req_row(), req_row(plan=PLAN1.upper(), completed_count=3)]
    with pytest.raises(DataError, match="duplicate key"):
        diff_target(REQ_T, current(REQ_T, []), wanted(REQ_T, rows))


# --- guards -------------------------------------------------------------------------------------------------
def test_no_guards_when_sources_are_present_and_nothing_is_pruned():
    d = diff_all(2025, empty_current(), empty_wanted(), full_counts())
    assert d.guards == []
    assert d.fiscal_year == 2025
    assert set(d.targets) == {t.name for t in TARGETS}
    assert d.changes == 0


@pytest.mark.parametrize("source", REQUIRED_NONEMPTY)
def test_empty_required_source_guard(source):
    d = diff_all(2025, empty_current(), empty_wanted(), full_counts(**{source: 0}))
    assert [(g.code, g.table) for g in d.guards] == [("empty_source", source)]
    assert source in d.guards[0].message
    assert blocking_guards(d, allow_mass_prune=False) == d.guards
    assert blocking_guards(d, allow_mass_prune=True) == d.guards  # never overridable


def test_missing_source_count_counts_as_empty():
    counts = full_counts()
    del counts["segmentation_tiers"]
    d = diff_all(2025, empty_current(), empty_wanted(), counts)
    assert [(g.code, g.table) for g in d.guards] == [("empty_source", "segmentation_tiers")]


def test_all_sources_empty_guards_each():
    d = diff_all(2025, empty_current(), empty_wanted(), {})
    assert sorted(g.table for g in d.guards if g.code == "empty_source") == sorted(REQUIRED_NONEMPTY)


def test_other_sources_empty_is_no_guard():
    counts = full_counts(segmentation_events=0, territory_strategies=0, segmentation_event_types=0)
    assert diff_all(2025, empty_current(), empty_wanted(), counts).guards == []


def _requirements_rows(n):
    return [req_row(plan=str(uuid.UUID(int=i + 1)), etype=TYPE1) for i in range(n)]


def _diff_with_deletes(total, deleted, fraction=0.5):
    cur = _requirements_rows(total)
    cur_frames = empty_current()
    cur_frames[REQUIREMENTS] = current(REQ_T, cur)
    want = empty_wanted()
    want[REQUIREMENTS] = wanted(REQ_T, cur[deleted:])
    return diff_all(2025, cur_frames, want, full_counts(), fraction)


def test_exactly_half_deleted_does_not_trigger():
    d = _diff_with_deletes(100, 50)
    assert len(d.targets[REQUIREMENTS].deletes) == 50
    assert d.guards == []
    d = _diff_with_deletes(4, 2)
    assert d.guards == []


def test_more_than_half_deleted_triggers_mass_prune():
    d = _diff_with_deletes(100, 51)
    (g,) = d.guards
    assert g.code == "mass_prune"
    assert g.table == REQUIREMENTS
    assert REQUIREMENTS in g.message
    assert "51 of 100" in g.message
    assert "--allow-mass-prune" in g.message


def test_deleting_the_only_row_is_a_mass_prune():
    d = _diff_with_deletes(1, 1)
    assert [(g.code, g.table) for g in d.guards] == [("mass_prune", REQUIREMENTS)]
    assert "1 of 1" in d.guards[0].message


def test_max_prune_fraction_is_respected():
    assert _diff_with_deletes(10, 2, fraction=0.2).guards == []
    (g,) = _diff_with_deletes(10, 3, fraction=0.2).guards
    assert "3 of 10" in g.message
    assert _diff_with_deletes(10, 10, fraction=1.0).guards == []
    assert [g.code for g in _diff_with_deletes(10, 1, fraction=0.0).guards] == ["mass_prune"]


def test_orphans_do_not_count_towards_mass_prune():
    rows = _requirements_rows(4)
    cur_frames = empty_current()
    cur_frames[REQUIREMENTS] = current(REQ_T, rows, foreign=[True, True, True, False])
    d = diff_all(2025, cur_frames, empty_wanted(), full_counts())
    assert len(d.targets[REQUIREMENTS].orphans) == 3
    assert len(d.targets[REQUIREMENTS].deletes) == 1
    assert d.guards == []  # 1 of 4 deleted


def test_territory_mass_prune_names_that_table():
    cur_frames = empty_current()
    cur_frames[TERRITORY] = current(TER_T, [ter_row(TS1), ter_row(TS2)])
    want = empty_wanted()
    d = diff_all(2025, cur_frames, want, full_counts())
    (g,) = d.guards
    assert (g.code, g.table) == ("mass_prune", TERRITORY)
    assert "2 of 2" in g.message and TERRITORY in g.message


def test_bu_reset_is_not_a_prune():
    cur_frames = empty_current()
    cur_frames[BUSINESS_UNIT] = current(BU_T, [bu_row("ANZ"), bu_row("SEA")])
    d = diff_all(2025, cur_frames, empty_wanted(), full_counts())
    assert d.guards == []
    assert len(d.targets[BUSINESS_UNIT].updates) == 2


def test_blocking_guards_allow_mass_prune():
    cur = _requirements_rows(10)
    cur_frames = empty_current()
    cur_frames[REQUIREMENTS] = current(REQ_T, cur)
    d = diff_all(2025, cur_frames, empty_wanted(), full_counts(account_plans=0))
    codes = sorted(g.code for g in d.guards)
    assert codes == ["empty_source", "mass_prune"]
    assert sorted(g.code for g in blocking_guards(d, allow_mass_prune=False)) == ["empty_source", "mass_prune"]
    allowed = blocking_guards(d, allow_mass_prune=True)
    assert [(g.code, g.table) for g in allowed] == [("empty_source", "account_plans")]


def test_guards_function_directly():
    t = diff_target(REQ_T, current(REQ_T, _requirements_rows(3)), wanted(REQ_T, []))
    found = guards({REQUIREMENTS: t}, full_counts(), 0.5)
    assert [(g.code, g.table) for g in found] == [("mass_prune", REQUIREMENTS)]
    assert "3 of 3" in found[0].message


# --- describe ------------------------------------------------------------------------------------------------
def test_describe_lines():
    cur = [req_row(), req_row(plan=PLAN2), req_row(etype=TYPE2)]
    want = [
        req_row(status="critical", completed_count=1, compliance_percentage=Decimal("25.00")),
        req_row(plan=PLAN2, etype=TYPE2),
    ]
    d = diff_target(REQ_T, current(REQ_T, cur, foreign=[False, True, False]), wanted(REQ_T, want))
    lines = describe(d)
    text = "\n".join(lines)
    [insert] = [line for line in lines if line.startswith("+ ")]
    assert insert.startswith(
        f"+ {REQUIREMENTS} Alpha Health · Sla Review "
        f"[plan_id={PLAN2}, event_type_id={TYPE2}, fiscal_year=2025] client_id="
    )
    assert "linked_event_ids=2 items" in insert  # JSON columns summarised in the one-line insert
    update_line = next(line for line in lines if line.startswith("~"))
    assert f"[plan_id={PLAN1}, event_type_id={TYPE1}, fiscal_year=2025]" in update_line
    assert "completed_count: 2 → 1" in update_line
    assert "compliance_percentage: 50.00 → 25.00" in update_line
    assert "status: at_risk → critical" in update_line
    assert (
        f"- {REQUIREMENTS} Alpha Health · Sla Review [plan_id={PLAN1}, event_type_id={TYPE2}, fiscal_year=2025]" in text
    )
    assert (
        f"! {REQUIREMENTS} Alpha Health · Sla Review [plan_id={PLAN2}, event_type_id={TYPE1}, fiscal_year=2025] kept"
        in text
    )


def test_describe_null_and_json_values():
    cur = [bu_row("SEA")]
    d = diff_target(BU_T, current(BU_T, cur), wanted(BU_T, []))
    (line,) = describe(d)
    assert line.startswith(f"~ {BUSINESS_UNIT} SEA [bu_name=SEA, fiscal_year=2025] ")
    assert "overall_compliance_percentage: 52.63 → null" in line
    assert "territory_count: 1 → 0" in line
    assert "territory_data: -VIC + NZ / Kim Lee" in line  # the entry that went, named


def test_describe_json_changes_inside_values():
    old, new = ter_row(), ter_row()
    new["monthly_capacity"]["2025-03"]["completed"] = 2
    new["segment_breakdown"]["Leverage"] = {
        "clients": 1,
        "total_required": 2,
        "total_completed": 1,
        "compliance": Decimal("50.00"),
    }
    (line,) = describe(diff_target(TER_T, current(TER_T, [old]), wanted(TER_T, [new])))
    assert "monthly_capacity: 2025-03.completed: 0 → 2" in line
    assert '+Leverage {"clients":1,"compliance":50,"total_completed":1,"total_required":2}' in line
    old, new = req_row(), req_row(linked_event_ids=[EV2, EV1])
    (line,) = describe(diff_target(REQ_T, current(REQ_T, [old]), wanted(REQ_T, [new])))
    assert "linked_event_ids: value: same items, new order" in line


def test_describe_limit_and_hidden_count():
    rows = _requirements_rows(25)
    t, _ = diff_rows(REQ_T, current(REQ_T, []), wanted(REQ_T, rows), limit=20)
    lines = report.describe(t)
    assert sum(1 for line in lines if line.startswith("+")) == 20
    assert lines[-1] == f"  … 5 more rows of {REQUIREMENTS} not listed"
    # the first rows in key order (C collation), whatever order they came in
    listed = [line.split("plan_id=")[1].split(",")[0] for line in lines if line.startswith("+")]
    assert listed == sorted(r["plan_id"] for r in rows)[:20]


def test_describe_nothing_to_say():
    rows = [req_row()]
    assert describe(diff_target(REQ_T, current(REQ_T, rows), wanted(REQ_T, rows))) == []


def test_sync_diff_changes_sum_over_targets():
    cur_frames = empty_current()
    cur_frames[BUSINESS_UNIT] = current(BU_T, [bu_row("SEA")])
    want = empty_wanted()
    want[REQUIREMENTS] = wanted(REQ_T, [req_row()])
    want[APAC] = wanted(APAC_T, [apac_row()])
    d = diff_all(2025, cur_frames, want, full_counts())
    assert d.targets[REQUIREMENTS].counts()["inserted"] == 1
    assert d.targets[APAC].counts()["inserted"] == 1
    assert d.targets[BUSINESS_UNIT].counts()["updated"] == 1
    assert d.changes == 3
    assert d.targets[REQUIREMENTS].name == REQUIREMENTS
