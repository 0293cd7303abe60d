"""The pure-SQL baseline (``benchmarks/pure_sql.sql``) against SPEC Appendix A, the independent oracle and the product.

(a) Appendix A, built with plain INSERTs, every number of its tables.
(b) The random cases of ``test_oracle.make_case``: the baseline writes exactly what ``oracle.compute`` expects,
    a second run changes nothing, and after the data changed (``perturb``) the update / delete / orphan /
    BU-reset paths write exactly the expected rows, with the run's ``updated_at`` on changed and new rows only.
(c) The demo data, FY2025 and FY2026: the product's command line and the baseline, each started from the same
    initial targets, write identical rows; the baseline over the product's output (and over its own) changes
    nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from benchmarks.pure_sql import TARGETS, fy_window, load_bu_map, run_pure_sql
from compliance_sync_tests.integration.test_oracle import (
    JSON_COLUMNS,
    UUID_COLUMNS,
    differences,
    expected_for,
    insert_tables,
    make_case,
    read_targets,
    same,
    second_state,
)
from compliance_sync_tests.oracle import APAC, BUSINESS_UNIT, KEYS, OWNED, REQUIREMENTS, TERRITORY
from compliance_sync_tests.scenario import APPENDIX_A_CAPACITY

D = Decimal
TS1 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
TS2 = dt.datetime(2030, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
EXAMPLE_BU_MAP = pathlib.Path(__file__).resolve().parents[2] / "compliance_sync" / "bu_map.example.yaml"
ZERO = {"inserted": 0, "updated": 0, "deleted": 0}


# --- helpers ------------------------------------------------------------------------------------------------
def run_case(url: str, case: dict[str, Any], run_ts: dt.datetime | None = None) -> dict[str, Any]:
    return run_pure_sql(
        url,
        case["fiscal_year"],
        case["as_of"],
        case["start_month"],
        case["thresholds"],
        {"cse": case["bu_cse"], "territory": case["bu_territory"]},
        run_ts,
    )


def stamps(url: str, fy: int) -> dict[str, dict[tuple, dt.datetime | None]]:
    """Key -> updated_at of the FY's rows of every target."""
    out = {}
    with psycopg.connect(url) as conn:
        for t in TARGETS:
            cols = ", ".join(f"{k}::text" if k in UUID_COLUMNS else k for k in KEYS[t])
            rows = conn.execute(f"SELECT {cols}, updated_at FROM {t} WHERE fiscal_year = %s", (fy,)).fetchall()
            out[t] = {tuple(r[:-1]): r[-1] for r in rows}
    return out


def changed_keys(before: dict[tuple, dict], after: dict[tuple, dict], table: str) -> set[tuple]:
    return {k for k in before.keys() & after.keys() if any(not same(before[k][c], after[k][c]) for c in OWNED[table])}


def check_counts_and_stamps(
    table_before: dict[str, dict],
    table_after: dict[str, dict],
    stamps_before: dict[str, dict],
    stamps_after: dict[str, dict],
    counts: dict[str, dict[str, int]],
    ts: dt.datetime,
    label: str,
) -> None:
    """The reported counts are the real row changes; new and changed rows carry ``ts``, the others their old stamp."""
    for t in TARGETS:
        b, a = table_before[t], table_after[t]
        inserted, deleted = a.keys() - b.keys(), b.keys() - a.keys()
        updated = changed_keys(b, a, t)
        assert counts[t] == {"inserted": len(inserted), "updated": len(updated), "deleted": len(deleted)}, (label, t)
        for k, stamp in stamps_after[t].items():
            if k in inserted or k in updated:
                assert stamp == ts, (label, t, k, "new or changed row without the run's updated_at")
            else:
                assert stamp == stamps_before[t][k], (label, t, k, "unchanged row rewritten")


def assert_matches_oracle(url: str, case: dict[str, Any], expected: dict[str, Any], label: str) -> dict:
    actual = read_targets(url, case["fiscal_year"])
    problems = differences(expected, actual)
    assert not problems, (
        f"{label} (FY{case['fiscal_year']}, m={case['start_month']}, as_of {case['as_of']}, "
        f"thresholds {case['thresholds']}):\n" + "\n".join(problems[:30])
    )
    return actual


def check_seed(seed: int, url: str) -> None:
    case = make_case(seed)
    fy = case["fiscal_year"]
    insert_tables(url, case["tables"])
    empty = {t: {} for t in TARGETS}
    result = run_case(url, case, TS1)
    after = assert_matches_oracle(url, case, expected_for(case), f"seed {seed}")
    check_counts_and_stamps(empty, after, empty, stamps(url, fy), result["targets"], TS1, f"seed {seed}")

    again = run_case(url, case, TS2)  # a second run over unchanged data changes nothing
    assert again["targets"] == {t: ZERO for t in TARGETS}, f"seed {seed}: second run changed {again['targets']}"
    assert all(s == TS1 for t in TARGETS for s in stamps(url, fy)[t].values()), f"seed {seed}: second run rewrote rows"


def check_two_phases(seed: int, url: str) -> None:
    """test_oracle.check_two_phases with the baseline: planners' notes, perturbed data, orphans, BU resets, pruning."""
    first = make_case(seed)
    fy = first["fiscal_year"]
    insert_tables(url, first["tables"])
    before = expected_for(first)
    run_case(url, first, TS1)
    assert_matches_oracle(url, first, before, f"seed {seed}, first run")

    second, expected, noted = second_state(url, first, before, seed)

    table_before, stamps_before = read_targets(url, fy), stamps(url, fy)
    result = run_case(url, second, TS2)
    table_after = assert_matches_oracle(url, second, expected, f"seed {seed}, after the data changed")
    check_counts_and_stamps(
        table_before, table_after, stamps_before, stamps(url, fy), result["targets"], TS2, f"seed {seed}"
    )
    with psycopg.connect(url) as conn:
        for t in (REQUIREMENTS, TERRITORY):
            cols = ", ".join(f"{k}::text" if k in UUID_COLUMNS else k for k in KEYS[t])
            kept = {tuple(r) for r in conn.execute(f"SELECT {cols} FROM {t} WHERE notes = 'keep me'").fetchall()}
            assert kept == noted[t], f"seed {seed}: {t} lost or gained notes"

    again = run_case(url, second, dt.datetime(2031, 1, 1, tzinfo=dt.UTC))
    assert again["targets"] == {t: ZERO for t in TARGETS}, f"seed {seed}: third run changed {again['targets']}"


# --- (a) SPEC Appendix A ------------------------------------------------------------------------------------
def nid(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


APPENDIX_A_SQL = """
INSERT INTO segmentation_tiers (id, tier_name) VALUES ('{lev}', 'Leverage'), ('{col}', 'Collaboration');
INSERT INTO segmentation_event_types (id, event_name, event_code, is_active) VALUES
    ('{sla}', 'SLA_REVIEW', 'SLA_REVIEW', true), ('{ins}', 'INSIGHT_TP', 'INSIGHT_TP', true),
    ('{hc}', 'HEALTH_CHECK', 'HEALTH_CHECK', true);
INSERT INTO tier_event_requirements (tier_id, event_type_id, frequency) VALUES
    ('{lev}', '{sla}', 2), ('{col}', '{sla}', 4), ('{lev}', '{ins}', 4), ('{col}', '{ins}', 12),
    ('{lev}', '{hc}', 0), ('{col}', '{hc}', 3);
INSERT INTO client_segmentation (id, client_name, tier_id, cse_name, effective_from, effective_to) VALUES
    ('{s1}', 'Alpha Health', '{lev}', 'Kim Lee', '2023-01-01', '2025-03-31'),
    ('{s2}', 'Alpha Health', '{col}', 'Kim Lee', '2025-04-01', NULL);
INSERT INTO account_plans (id, client_id, client_name, fiscal_year, status)
    VALUES ('{p1}', NULL, 'Alpha Health', 2025, 'approved');
INSERT INTO territory_strategies (id, cse_name, territory, fiscal_year, quarter, status, updated_at)
    VALUES ('{ts1}', 'Kim Lee', 'VIC + NZ', 2025, NULL, 'approved', NULL);
INSERT INTO segmentation_events (id, client_name, event_type_id, event_date, completed) VALUES
    ('{a0}', 'Alpha Health', '{sla}', '2025-02-10', true), ('{a1}', 'Alpha Health', '{sla}', '2025-05-20', true),
    ('{a2}', 'Alpha Health', '{sla}', '2025-07-10', true), ('{a3}', 'Alpha Health', '{sla}', '2025-08-15', false),
    ('{b0}', 'Alpha Health', '{ins}', '2025-01-15', true), ('{b1}', 'Alpha Health', '{ins}', '2025-02-15', true),
    ('{b2}', 'Alpha Health', '{ins}', '2025-03-15', true), ('{b3}', 'Alpha Health', '{ins}', '2025-04-15', true),
    ('{b4}', 'Alpha Health', '{ins}', '2025-05-15', true), ('{b5}', 'Alpha Health', '{ins}', '2025-06-15', true),
    ('{b6}', 'Alpha Health', '{ins}', '2025-06-25', true), ('{c1}', 'Alpha Health', '{hc}', '2025-03-03', true);
"""


def appendix_a_ids() -> dict[str, str]:
    names = (
        ["lev", "col", "sla", "ins", "hc", "s1", "s2", "p1", "ts1", "c1"]
        + [f"a{i}" for i in range(4)]
        + [f"b{i}" for i in range(7)]
    )
    return {name: nid(i + 1) for i, name in enumerate(names)}


def load_appendix_a(url: str) -> dict[str, str]:
    ids = appendix_a_ids()
    with psycopg.connect(url) as conn:
        conn.execute(APPENDIX_A_SQL.format(**ids))
    return ids


def run_appendix_a(url: str, run_ts: dt.datetime = TS1) -> dict[str, Any]:
    return run_pure_sql(url, 2025, dt.date(2025, 6, 30), 1, (50, 80, 100), {"territory": {"VIC + NZ": "ANZ"}}, run_ts)


def assert_appendix_a(url: str, ids: dict[str, str]) -> None:
    t = read_targets(url, 2025)
    reqs = {r["event_type_name"]: r for r in t[REQUIREMENTS].values()}
    assert set(reqs) == {"SLA_REVIEW", "INSIGHT_TP", "HEALTH_CHECK"}
    table = {
        "SLA_REVIEW": ("sla", 4, 2, 2, "50.00", "at_risk", dt.date(2025, 9, 30), [f"a{i}" for i in range(4)]),
        "INSIGHT_TP": ("ins", 12, 7, 0, "58.33", "at_risk", dt.date(2025, 8, 31), [f"b{i}" for i in range(7)]),
        "HEALTH_CHECK": ("hc", 3, 1, 0, "33.33", "critical", dt.date(2025, 8, 31), ["c1"]),
    }
    for name, (type_key, r, c, s, pct, status, due, linked) in table.items():
        row = reqs[name]
        assert (row["plan_id"], row["event_type_id"], row["fiscal_year"]) == (ids["p1"], ids[type_key], 2025)
        assert (row["required_count"], row["completed_count"], row["scheduled_count"]) == (r, c, s), name
        assert row["compliance_percentage"] == D(pct) and str(row["compliance_percentage"]) == pct, name
        assert (row["status"], row["next_due_date"]) == (status, due), name
        assert row["linked_event_ids"] == [ids[x] for x in linked], name
        assert (row["client_name"], row["segment"], row["client_id"]) == ("Alpha Health", "Collaboration", None)

    [terr] = t[TERRITORY].values()
    assert (terr["territory_strategy_id"], terr["territory"], terr["cse_name"]) == (ids["ts1"], "VIC + NZ", "Kim Lee")
    assert (terr["total_clients"], terr["total_required_events"], terr["total_completed_events"]) == (1, 19, 10)
    assert terr["overall_compliance_percentage"] == D("52.63")
    assert (terr["clients_at_risk"], terr["clients_critical"]) == (0, 1)
    assert terr["segment_breakdown"] == {
        "Collaboration": {"clients": 1, "total_required": 19, "total_completed": 10, "compliance": D("52.63")}
    }
    capacity = APPENDIX_A_CAPACITY
    assert sorted(terr["monthly_capacity"]) == [f"2025-{m:02d}" for m in range(1, 13)]
    assert [
        tuple(terr["monthly_capacity"][f"2025-{m:02d}"][k] for k in ("required", "completed", "scheduled"))
        for m in range(1, 13)
    ] == capacity
    assert all(set(v) == {"required", "completed", "scheduled"} for v in terr["monthly_capacity"].values())

    [bu] = t[BUSINESS_UNIT].values()
    assert bu == {
        "bu_name": "ANZ",
        "fiscal_year": 2025,
        "overall_compliance_percentage": D("52.63"),
        "clients_below_compliance": 1,
        "territory_count": 1,
        "territory_data": [{"territory": "VIC + NZ", "cse_name": "Kim Lee", "clients": 1, "compliance": D("52.63")}],
    }
    [apac] = t[APAC].values()
    assert apac == {
        "fiscal_year": 2025,
        "actual_compliance": D("52.63"),
        "below_compliance_accounts": 1,
        "bu_contributions": [{"bu_name": "ANZ", "compliance": D("52.63"), "clients": 1, "clients_below": 1}],
    }
    with psycopg.connect(url) as conn:  # JSON percentages carry their two decimals
        text = conn.execute("SELECT bu_contributions::text FROM apac_planning_goals").fetchone()[0]
    assert '"compliance": 52.63' in text


def test_appendix_a(migrated_db):
    ids = load_appendix_a(migrated_db)
    result = run_appendix_a(migrated_db)
    assert result["window"] == {"start": "2025-01-01", "end": "2025-12-31", "as_of": "2025-06-30"}
    assert result["targets"] == {
        REQUIREMENTS: {"inserted": 3, "updated": 0, "deleted": 0},
        TERRITORY: {"inserted": 1, "updated": 0, "deleted": 0},
        BUSINESS_UNIT: {"inserted": 1, "updated": 0, "deleted": 0},
        APAC: {"inserted": 1, "updated": 0, "deleted": 0},
    }
    assert_appendix_a(migrated_db, ids)
    assert all(s == TS1 for t in TARGETS for s in stamps(migrated_db, 2025)[t].values())
    assert run_appendix_a(migrated_db, TS2)["targets"] == {t: ZERO for t in TARGETS}
    assert all(s == TS1 for t in TARGETS for s in stamps(migrated_db, 2025)[t].values())


def test_appendix_a_without_the_exclusions_table(migrated_db):
    """client_event_exclusions is optional (SPEC §3.1): the runner stands in an empty table."""
    with psycopg.connect(migrated_db) as conn:
        conn.execute("DROP TABLE client_event_exclusions")
    ids = load_appendix_a(migrated_db)
    run_appendix_a(migrated_db)
    assert_appendix_a(migrated_db, ids)


def test_appendix_a_through_a_connection_and_the_command_line(migrated_db, tmp_path, capsys):
    from benchmarks import pure_sql

    ids = load_appendix_a(migrated_db)
    with psycopg.connect(migrated_db) as conn:  # a caller's connection: committed when the block exits
        result = run_pure_sql(conn, 2025, dt.date(2025, 6, 30), bu_map={"territory": {"VIC + NZ": "ANZ"}}, run_ts=TS1)
    assert result["targets"][REQUIREMENTS]["inserted"] == 3
    assert_appendix_a(migrated_db, ids)
    bu_map = tmp_path / "bu.yaml"
    bu_map.write_text('territory:\n  "VIC + NZ": ANZ\n')
    with psycopg.connect(migrated_db) as conn:  # a changed row: one update per target
        conn.execute("UPDATE segmentation_events SET completed = true WHERE id = %s", (ids["a3"],))
        conn.execute("UPDATE segmentation_events SET event_date = '2025-06-01' WHERE id = %s", (ids["a3"],))
    code = pure_sql.main(
        ["--database-url", migrated_db, "--year", "2025", "--as-of", "2025-06-30", "--bu-map", str(bu_map)]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip())
    assert summary["targets"] == {t: {"inserted": 0, "updated": 1, "deleted": 0} for t in TARGETS}
    assert summary["seconds"] > 0
    sla = {r["event_type_name"]: r for r in read_targets(migrated_db, 2025)[REQUIREMENTS].values()}["SLA_REVIEW"]
    assert (sla["completed_count"], sla["scheduled_count"], sla["linked_event_ids"][-1]) == (3, 1, ids["a2"])
    assert load_bu_map(bu_map) == {"cse": {}, "territory": {"VIC + NZ": "ANZ"}}


def test_rows_with_a_null_key_and_other_years_are_never_touched(migrated_db):
    load_appendix_a(migrated_db)
    with psycopg.connect(migrated_db) as conn:
        conn.execute("ALTER TABLE account_plan_event_requirements ALTER COLUMN plan_id DROP NOT NULL")
        conn.execute("ALTER TABLE territory_compliance_summary ALTER COLUMN territory_strategy_id DROP NOT NULL")
        conn.execute("ALTER TABLE business_unit_planning ALTER COLUMN bu_name DROP NOT NULL")
        conn.execute(
            f"INSERT INTO account_plan_event_requirements (plan_id, event_type_id, fiscal_year, status) "
            f"VALUES (NULL, '{nid(3)}', 2025, 'x')"
        )
        conn.execute(
            "INSERT INTO territory_compliance_summary (territory_strategy_id, fiscal_year, total_clients) "
            "VALUES (NULL, 2025, 7)"
        )
        conn.execute(
            "INSERT INTO business_unit_planning (bu_name, fiscal_year, territory_count) VALUES (NULL, 2025, 7)"
        )
        conn.execute(
            "INSERT INTO business_unit_planning (bu_name, fiscal_year, territory_count) VALUES ('SEA', 2024, 7)"
        )
        conn.execute(
            f"INSERT INTO account_plan_event_requirements (plan_id, event_type_id, fiscal_year) "
            f"VALUES ('{nid(900)}', '{nid(3)}', 2024)"
        )
        before = conn.execute(
            "SELECT (SELECT jsonb_agg(to_jsonb(x) ORDER BY x.id) FROM account_plan_event_requirements x "
            "WHERE plan_id IS NULL OR fiscal_year <> 2025),"
            " (SELECT jsonb_agg(to_jsonb(x)) FROM territory_compliance_summary x WHERE territory_strategy_id IS NULL),"
            " (SELECT jsonb_agg(to_jsonb(x) ORDER BY x.id) FROM business_unit_planning x "
            "WHERE bu_name IS NULL OR fiscal_year <> 2025)"
        ).fetchone()
    result = run_appendix_a(migrated_db)
    assert result["targets"][REQUIREMENTS] == {"inserted": 3, "updated": 0, "deleted": 0}
    assert result["targets"][TERRITORY] == {"inserted": 1, "updated": 0, "deleted": 0}
    assert result["targets"][BUSINESS_UNIT] == {"inserted": 1, "updated": 0, "deleted": 0}
    with psycopg.connect(migrated_db) as conn:
        after = conn.execute(
            "SELECT (SELECT jsonb_agg(to_jsonb(x) ORDER BY x.id) FROM account_plan_event_requirements x "
            "WHERE plan_id IS NULL OR fiscal_year <> 2025),"
            " (SELECT jsonb_agg(to_jsonb(x)) FROM territory_compliance_summary x WHERE territory_strategy_id IS NULL),"
            " (SELECT jsonb_agg(to_jsonb(x) ORDER BY x.id) FROM business_unit_planning x "
            "WHERE bu_name IS NULL OR fiscal_year <> 2025)"
        ).fetchone()
    assert after == before


def test_frequency_above_366_is_an_error(migrated_db):
    ids = load_appendix_a(migrated_db)
    with psycopg.connect(migrated_db) as conn:
        conn.execute(
            "UPDATE tier_event_requirements SET frequency = 367 WHERE tier_id = %s AND event_type_id = %s",
            (ids["col"], ids["hc"]),
        )
    with pytest.raises(psycopg.Error) as info:
        run_appendix_a(migrated_db)
    message = str(info.value)
    assert "367" in message and "Collaboration" in message and "HEALTH_CHECK" in message
    assert all(not rows for rows in read_targets(migrated_db, 2025).values())


def test_fy_window():
    assert fy_window(2026, 7) == (dt.date(2025, 7, 1), dt.date(2026, 6, 30))
    assert fy_window(2026, 1) == (dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    assert fy_window(2026, 12) == (dt.date(2025, 12, 1), dt.date(2026, 11, 30))
    with pytest.raises(ValueError):
        fy_window(2026, 13)


# --- (b) the independent oracle on random cases ---------------------------------------------------------------
@pytest.mark.parametrize("seed", range(15))
def test_baseline_matches_oracle(seed, migrated_db):
    check_seed(seed, migrated_db)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(15, 165))
def test_baseline_matches_oracle_sweep(seed, migrated_db):
    check_seed(seed, migrated_db)


@pytest.mark.parametrize("seed", range(1000, 1006))
def test_baseline_matches_oracle_after_the_data_changed(seed, migrated_db):
    check_two_phases(seed, migrated_db)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1006, 1056))
def test_baseline_matches_oracle_after_the_data_changed_sweep(seed, migrated_db):
    check_two_phases(seed, migrated_db)


# --- (c) the product on the demo data --------------------------------------------------------------------------
def snapshot(url: str) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Keys and owned columns of every row of the four targets (all years): JSON parsed with Decimal numbers."""
    out = {}
    with psycopg.connect(url) as conn:
        for t in TARGETS:
            cols = KEYS[t] + OWNED[t]
            select = ", ".join(f"{c}::text" if c in JSON_COLUMNS or c in UUID_COLUMNS else c for c in cols)
            table = {}
            for values in conn.execute(f"SELECT {select} FROM {t}").fetchall():
                row = dict(zip(cols, values))
                for c in JSON_COLUMNS & row.keys():
                    if row[c] is not None:
                        row[c] = json.loads(row[c], parse_float=Decimal)
                key = tuple(row[k] for k in KEYS[t])
                assert key not in table, f"{t}: duplicate key {key}"
                table[key] = row
            out[t] = table
    return out


def snapshot_differences(a: dict[str, dict], b: dict[str, dict]) -> list[str]:
    problems = []
    for t in TARGETS:
        for k in sorted(a[t].keys() - b[t].keys(), key=str):
            problems.append(f"{t} {k}: only in the product's output: {a[t][k]}")
        for k in sorted(b[t].keys() - a[t].keys(), key=str):
            problems.append(f"{t} {k}: only in the baseline's output: {b[t][k]}")
        for k in sorted(a[t].keys() & b[t].keys(), key=str):
            for c in OWNED[t]:
                if not same(a[t][k][c], b[t][k][c]):
                    problems.append(f"{t} {k} {c}: product {a[t][k][c]!r}, baseline {b[t][k][c]!r}")
    return problems


def save_targets(url: str) -> None:
    with psycopg.connect(url) as conn:
        for t in TARGETS:
            conn.execute(f"CREATE TABLE saved_{t} AS SELECT * FROM {t}")


def restore_targets(url: str) -> None:
    with psycopg.connect(url) as conn:
        for t in TARGETS:
            conn.execute(f"DELETE FROM {t}")
            conn.execute(f"INSERT INTO {t} SELECT * FROM saved_{t}")


@pytest.mark.parametrize("year, as_of", [(2025, "2025-06-30"), (2026, "2026-11-20")])
def test_baseline_and_product_write_identical_rows_on_the_demo_data(demo_db, capsys, year, as_of):
    from compliance_sync.entrypoints import cli

    url = demo_db
    bu_map = load_bu_map(EXAMPLE_BU_MAP)
    reference = dt.date.fromisoformat(as_of)
    save_targets(url)  # the demo's own planning rows (BU and APAC rows with targets and notes) are part of the start

    code = cli.main(["--year", str(year), "--as-of", as_of, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.out[-3000:] + out.err[-3000:]
    product_summary = json.loads(out.out)
    by_product = snapshot(url)
    assert by_product[REQUIREMENTS] and by_product[TERRITORY]

    # the baseline over the product's output finds nothing to change
    over_product = run_pure_sql(url, year, reference, bu_map=bu_map)
    assert over_product["targets"] == {t: ZERO for t in TARGETS}, over_product["targets"]

    # from the same start, the baseline writes the same rows, with the same counts
    restore_targets(url)
    result = run_pure_sql(url, year, reference, bu_map=bu_map, run_ts=TS1)
    by_baseline = snapshot(url)
    problems = snapshot_differences(by_product, by_baseline)
    assert not problems, f"FY{year} as_of {as_of}:\n" + "\n".join(problems[:30])
    for t in TARGETS:
        product_counts = {k: product_summary["targets"][t][k] for k in ("inserted", "updated", "deleted")}
        assert product_counts == result["targets"][t], (t, product_counts, result["targets"][t])

    # a second baseline run over its own output changes nothing
    assert run_pure_sql(url, year, reference, bu_map=bu_map, run_ts=TS2)["targets"] == {t: ZERO for t in TARGETS}
