"""The command line against an independent oracle of SPEC §4 (``oracle.py``), over a real database.

Each seed builds a small, nasty random dataset (tier changes mid-year, invalid periods, archived and
null-status plans and strategies, events on the FY boundaries, completed-after-as_of events, exclusions
with every kind of reason, a BU map with a CSE override and an unmapped territory, a random FY start
month and as_of), inserts it into a fresh database, runs ``compliance_sync.entrypoints.cli.main`` live and compares the
four targets of that FY, column by column, with what the oracle computed from the same rows. A second
identical run must change nothing.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import random
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import yaml

from compliance_sync.entrypoints import cli
from compliance_sync_tests import oracle
from compliance_sync_tests.oracle import APAC, BUSINESS_UNIT, KEYS, OWNED, REQUIREMENTS, TERRITORY
from compliance_sync_tests.scenario import APPENDIX_A_CAPACITY

TARGETS = (REQUIREMENTS, TERRITORY, BUSINESS_UNIT, APAC)

SOURCE_COLUMNS = {
    "account_plans": ("id", "client_id", "client_name", "fiscal_year", "status"),
    "client_segmentation": (
        "id",
        "client_name",
        "tier_id",
        "cse_name",
        "client_uuid",
        "effective_from",
        "effective_to",
    ),
    "segmentation_tiers": ("id", "tier_name"),
    "segmentation_event_types": ("id", "event_name", "event_code", "is_active"),
    "tier_event_requirements": ("tier_id", "event_type_id", "frequency"),
    "segmentation_events": ("id", "client_name", "event_type_id", "event_date", "completed"),
    "segmentation_event_compliance": (
        "client_name",
        "event_type_id",
        "year",
        "expected_count",
        "actual_count",
        "compliance_percentage",
        "status",
    ),
    "territory_strategies": ("id", "cse_name", "territory", "fiscal_year", "quarter", "status", "updated_at"),
    "client_event_exclusions": ("client_name", "event_type_id", "reason"),
}

TIER_NAMES = ["Giant", "Collaboration", "Leverage", "Maintain", "Nurture", "Sleeping Giant"]
TYPE_NAMES = ["SLA Review", "Insight Touchpoint", "Health Check", "Exec Briefing", "QBR", "Roadmap Session"]
CLIENT_NAMES = [
    "Alpha Health",
    "Beta Bank",
    "Gamma Gov",
    "Delta Telco",
    "Epsilon Energy",
    "Zeta Mining",
    "Eta Retail",
    "Theta Uni",
    "Iota Insurance",
    "Kappa Logistics",
]
CSE_NAMES = ["Kim Lee", "kim lee", "Raj Patel", "Ana Souza ", "Zoë Chen", "Ben O'Neil"]
TERRITORIES = ["VIC + NZ", "Singapore", "Ärea Norte", "apac north", "Zeta Coast", "Hong Kong", "NSW + ACT"]
BUS = ["ANZ", "SEA", "Greater China", "anz Pacific"]
THRESHOLDS = [(50, 80, 100), (50, 80, 100), (50, 80, 100), (30, 60, 90), (60, 90, 120), (25, 50, 75)]
REASONS = [
    None,
    "",
    "Greyed out",
    "GREYED OUT x",
    "not relevant",
    "greyed-out",
    "was Greyed Out in 2024",
    "greyed  out",
]
DUPLICATE_EXCLUSIONS = True  # several rows for one pair: any reason without 'greyed out' removes it
FIXED_UPDATES = [
    dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.UTC),
    dt.datetime(2025, 1, 15, 0, 0, tzinfo=dt.UTC),
    dt.datetime(2025, 1, 15, 0, 0, 0, 1, tzinfo=dt.UTC),
]


# --- random datasets ------------------------------------------------------------------------------------
def make_case(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def day_between(a: dt.date, b: dt.date) -> dt.date:
        return a + dt.timedelta(days=rng.randint(0, (b - a).days))

    start_month = rng.randint(1, 12)
    fy = rng.randint(2021, 2026)
    start, end = oracle.fy_window(fy, start_month)
    thresholds = rng.choice(THRESHOLDS)

    # as_of: inside, before, after the FY, or on its edges
    kind = rng.choice(["inside"] * 4 + ["after", "after", "end", "end", "before", "start", "start-1"])
    as_of = {
        "inside": day_between(start, end),
        "before": start - dt.timedelta(days=rng.randint(1, 90)),
        "after": end + dt.timedelta(days=rng.randint(1, 400)),
        "start": start,
        "end": end,
        "start-1": start - dt.timedelta(days=1),
    }[kind]

    # tiers, event types, requirements
    tiers = [{"id": new_id(), "tier_name": n} for n in rng.sample(TIER_NAMES, rng.randint(2, 3))]
    types = []
    for i, n in enumerate(rng.sample(TYPE_NAMES, rng.randint(3, 5))):
        active = rng.choices([True, False, None], weights=[8, 1, 1])[0]
        types.append({"id": new_id(), "event_name": n, "event_code": f"CODE_{i}_{seed}", "is_active": active})
    if all(t["is_active"] is not True for t in types):
        types[0]["is_active"] = True
    reqs = []
    for t in tiers:
        for et in types:
            if rng.random() < 0.85:
                f = rng.choices(
                    [rng.randint(0, 4), rng.randint(0, 14), None, -rng.randint(1, 3), rng.choice([25, 100, 365, 366])],
                    weights=[50, 30, 10, 10, 2],
                )[0]
                reqs.append({"tier_id": t["id"], "event_type_id": et["id"], "frequency": f})
    if rng.random() < 0.3:  # a requirement of an unknown tier and one of an unknown type
        reqs.append({"tier_id": new_id(), "event_type_id": types[0]["id"], "frequency": rng.randint(1, 14)})
        reqs.append({"tier_id": tiers[0]["id"], "event_type_id": new_id(), "frequency": rng.randint(1, 14)})
    if not reqs:
        reqs.append({"tier_id": tiers[0]["id"], "event_type_id": types[0]["id"], "frequency": 3})

    # CSEs, strategies, BU map
    cses = rng.sample(CSE_NAMES, rng.randint(2, 4))
    territories = rng.sample(TERRITORIES, rng.randint(3, 5))
    strategies = []
    for cse in cses:
        if rng.random() < 0.2:
            continue  # a CSE without strategy
        for _ in range(rng.randint(1, 3)):
            strategies.append(
                {
                    "id": new_id(),
                    "cse_name": cse,
                    "territory": rng.choice(territories),
                    "fiscal_year": rng.choices([fy, fy - 1, fy + 1], weights=[8, 1, 1])[0],
                    "quarter": rng.choice([None, None, "", "  ", "Q1", "Q3", "Q2"]),
                    "status": rng.choice(["draft", "approved", "active", None, "archived"]),
                    "updated_at": rng.choice(FIXED_UPDATES + [None, None]),
                }
            )
    if rng.random() < 0.3:  # a strategy without CSE
        strategies.append(
            {
                "id": new_id(),
                "cse_name": None,
                "territory": rng.choice(territories),
                "fiscal_year": fy,
                "quarter": None,
                "status": "approved",
                "updated_at": None,
            }
        )
    unmapped = territories[-1]
    bu_territory = {t: rng.choice(BUS) for t in territories if t != unmapped}
    bu_cse = {rng.choice(cses): rng.choice(BUS)}

    # clients: periods, plans, events, exclusions
    n_clients = rng.randint(3, 8)
    names = rng.sample(CLIENT_NAMES, n_clients)
    periods, plans, events, exclusions, cache = [], [], [], [], []
    shared_uuid = new_id()
    active_ids = [t["id"] for t in types]

    for idx, name in enumerate(names):
        client_cse = rng.choices(cses + [None], weights=[4] * len(cses) + [1])[0]
        client_uuid = rng.choices([new_id(), None, shared_uuid], weights=[6, 2, 1])[0]

        def period(frm: dt.date, to: dt.date | None, tier: str | None = None, cse: Any = "same") -> dict:
            return {
                "id": new_id(),
                "client_name": name,
                "tier_id": tier if tier is not None else rng.choice(tiers)["id"],
                "cse_name": client_cse if cse == "same" else cse,
                "client_uuid": client_uuid,
                "effective_from": frm,
                "effective_to": to,
            }

        scheme = rng.choice(["single", "change", "change", "boundary", "invalid_only", "tie"])
        if idx == 0 and scheme == "invalid_only":
            scheme = "single"
        mine = []
        if scheme == "single":
            mine.append(
                period(
                    day_between(start - dt.timedelta(days=500), end), rng.choice([None, end + dt.timedelta(days=100)])
                )
            )
        elif scheme == "change":  # a mid-year tier change, sometimes with a CSE change
            m = day_between(start + dt.timedelta(days=1), end)
            mine.append(period(start - dt.timedelta(days=rng.randint(0, 400)), m - dt.timedelta(days=1)))
            cse2 = rng.choice(["same", rng.choice(cses), None])
            mine.append(period(m, rng.choice([None, None, end, end + dt.timedelta(days=30)]), cse=cse2))
        elif scheme == "boundary":  # ends the day before the FY, then starts on its last day
            mine.append(period(start - dt.timedelta(days=200), start - dt.timedelta(days=1)))
            mine.append(period(end, rng.choice([None, end])))
            if rng.random() < 0.5:
                mine.append(period(end + dt.timedelta(days=1), None))  # after the FY: ignored
        elif scheme == "tie":  # two periods starting the same day: the greatest id wins
            d = day_between(start - dt.timedelta(days=100), end)
            mine.append(period(d, None))
            mine.append(period(d, None, cse=rng.choice(["same", rng.choice(cses)])))
        else:  # invalid_only: the client is skipped
            pass
        # invalid periods (ignored, whatever their dates)
        for _ in range(rng.choice([0, 0, 1, 2]) if scheme != "invalid_only" else rng.randint(1, 2)):
            bad = rng.choice(["null", "unknown", "inverted"])
            p = period(day_between(start, end), None)  # often later than the valid ones
            if bad == "null":
                p["tier_id"] = None
            elif bad == "unknown":
                p["tier_id"] = new_id()
            else:
                p["effective_to"] = p["effective_from"] - dt.timedelta(days=rng.randint(1, 30))
            mine.append(p)
        periods.extend(mine)

        # plans
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            plans.append(
                {
                    "id": new_id(),
                    "client_id": rng.choice([None, new_id(), client_uuid]),
                    "client_name": name,
                    "fiscal_year": rng.choices([fy, fy - 1, fy + 1], weights=[8, 1, 1])[0],
                    "status": rng.choice(["draft", "approved", "submitted", "in_review", None, "archived"]),
                }
            )

        # events: around the FY boundaries and as_of, ties on dates, every completed value
        special = [
            start,
            end,
            start - dt.timedelta(days=1),
            end + dt.timedelta(days=1),
            as_of,
            as_of + dt.timedelta(days=1),
        ]
        for et in types:
            for _ in range(rng.choice([0, 1, 2, 3, 4, 5, 6, rng.randint(7, 16)])):
                d = rng.choice(special + [day_between(start, end)] * 4)
                events.append(
                    {
                        "id": new_id(),
                        "client_name": name,
                        "event_type_id": et["id"],
                        "event_date": d,
                        "completed": rng.choices([True, False, None], weights=[6, 2, 1])[0],
                    }
                )
        if rng.random() < 0.5:
            events.append(
                {
                    "id": new_id(),
                    "client_name": name,
                    "event_type_id": rng.choice(active_ids),
                    "event_date": None,
                    "completed": True,
                }
            )
        if rng.random() < 0.3:
            events.append(
                {
                    "id": new_id(),
                    "client_name": name,
                    "event_type_id": rng.choice([None, new_id()]),
                    "event_date": day_between(start, end),
                    "completed": True,
                }
            )
        if rng.random() < 0.3:  # a name that matches only when case or spaces are ignored
            events.append(
                {
                    "id": new_id(),
                    "client_name": rng.choice([name.lower(), name + " ", name.upper()]),
                    "event_type_id": rng.choice(active_ids),
                    "event_date": day_between(start, end),
                    "completed": True,
                }
            )

        # exclusions: at most one per pair (several rows for one pair are sometimes added below)
        for et in rng.sample(types, rng.choice([0, 0, 1, 2])):
            exclusions.append({"client_name": name, "event_type_id": et["id"], "reason": rng.choice(REASONS)})
        if DUPLICATE_EXCLUSIONS and rng.random() < 0.3:
            et = rng.choice(types)
            for _ in range(2):
                exclusions.append({"client_name": name, "event_type_id": et["id"], "reason": rng.choice(REASONS)})

        # the segmentation system's cache (only the drift check reads it)
        if rng.random() < 0.5:
            et = rng.choice(types)
            cache.append(
                {
                    "client_name": name,
                    "event_type_id": et["id"],
                    "year": end.year,
                    "expected_count": 4,
                    "actual_count": rng.randint(0, 5),
                    "compliance_percentage": Decimal("25.00"),
                    "status": "critical",
                }
            )

    # a plan whose client has no segmentation, and one whose name differs only in case
    if rng.random() < 0.5:
        plans.append(
            {"id": new_id(), "client_id": None, "client_name": "Ghost Co", "fiscal_year": fy, "status": "approved"}
        )
    if rng.random() < 0.3:
        plans.append(
            {"id": new_id(), "client_id": None, "client_name": names[0].lower(), "fiscal_year": fy, "status": None}
        )
    # the guards: the first client has a plan in scope for the FY (and a valid period, see above)
    plans.append({"id": new_id(), "client_id": None, "client_name": names[0], "fiscal_year": fy, "status": "approved"})
    # events of an unknown client
    if rng.random() < 0.3:
        events.append(
            {
                "id": new_id(),
                "client_name": "Nobody Ltd",
                "event_type_id": active_ids[0],
                "event_date": start,
                "completed": True,
            }
        )

    tables = {
        "account_plans": plans,
        "client_segmentation": periods,
        "segmentation_tiers": tiers,
        "segmentation_event_types": types,
        "tier_event_requirements": reqs,
        "segmentation_events": events,
        "segmentation_event_compliance": cache,
        "territory_strategies": strategies,
        "client_event_exclusions": exclusions,
    }
    return {
        "seed": seed,
        "tables": tables,
        "fiscal_year": fy,
        "start_month": start_month,
        "as_of": as_of,
        "thresholds": thresholds,
        "bu_cse": bu_cse,
        "bu_territory": bu_territory,
    }


# --- database helpers -------------------------------------------------------------------------------------
def insert_tables(url: str, tables: dict[str, list[dict[str, Any]]]) -> None:
    with psycopg.connect(url) as conn:
        for name, rows in tables.items():
            if not rows:
                continue
            cols = SOURCE_COLUMNS[name]
            sql = f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
            with conn.cursor() as cur:
                cur.executemany(sql, [tuple(r[c] for c in cols) for r in rows])


JSON_COLUMNS = {"linked_event_ids", "segment_breakdown", "monthly_capacity", "territory_data", "bu_contributions"}
UUID_COLUMNS = {"plan_id", "event_type_id", "client_id", "territory_strategy_id"}


def read_targets(url: str, fy: int) -> dict[str, dict[tuple, dict[str, Any]]]:
    out: dict[str, dict[tuple, dict[str, Any]]] = {}
    with psycopg.connect(url) as conn:
        for t in TARGETS:
            cols = KEYS[t] + OWNED[t]
            select = ", ".join(f"{c}::text" if c in JSON_COLUMNS or c in UUID_COLUMNS else c for c in cols)
            total = conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            rows = conn.execute(f"SELECT {select} FROM {t} WHERE fiscal_year = %s", (fy,)).fetchall()
            assert total == len(rows), f"{t}: rows written outside FY{fy}"
            table = {}
            for values in rows:
                row = dict(zip(cols, values))
                for c in JSON_COLUMNS & row.keys():
                    if row[c] is not None:
                        row[c] = json.loads(row[c], parse_float=Decimal)
                key = tuple(row[k] for k in KEYS[t])
                assert key not in table, f"{t}: duplicate key {key}"
                table[key] = row
            out[t] = table
    return out


def expected_by_key(expected: dict[str, Any]) -> dict[str, dict[tuple, dict[str, Any]]]:
    return {t: {tuple(r[k] for k in KEYS[t]): r for r in expected[t]} for t in TARGETS}


def same(a: Any, b: Any) -> bool:
    """Equality with JSON numbers compared as numbers, but never bool vs number, lists in order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, Decimal)) and isinstance(b, (int, Decimal)):
        return Decimal(a) == Decimal(b)
    return type(a) is type(b) and a == b


def differences(expected: dict[str, Any], actual: dict[str, dict[tuple, dict[str, Any]]]) -> list[str]:
    exp = expected_by_key(expected)
    problems = []
    for t in TARGETS:
        missing = sorted(set(exp[t]) - set(actual[t]), key=str)
        extra = sorted(set(actual[t]) - set(exp[t]), key=str)
        for k in missing:
            problems.append(f"{t} {k}: expected, not written: {exp[t][k]}")
        for k in extra:
            problems.append(f"{t} {k}: written, not expected: {actual[t][k]}")
        for k in sorted(set(exp[t]) & set(actual[t]), key=str):
            for c in OWNED[t]:
                if not same(exp[t][k][c], actual[t][k][c]):
                    problems.append(f"{t} {k} {c}: expected {exp[t][k][c]!r}, got {actual[t][k][c]!r}")
    return problems


# --- running the command line ------------------------------------------------------------------------------
@pytest.fixture
def cli_env(migrated_db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if (var.startswith("COMPLIANCE_SYNC_") and var != "COMPLIANCE_SYNC_TEST_DATABASE_URL") or var in (
            "NEXT_PUBLIC_SUPABASE_URL",
            "SUPABASE_SERVICE_ROLE_KEY",
            "DAGSTER_HOME",
        ):
            monkeypatch.delenv(var)
    monkeypatch.setenv("SUPABASE_DB_URL", migrated_db)
    monkeypatch.setenv("COMPLIANCE_SYNC_FIRST_FY", "2015")
    return migrated_db


def run_cli(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    try:
        summary = json.loads(out.out) if out.out.strip() else None
    except json.JSONDecodeError:
        summary = None
    return code, summary, out.out + out.err


def expected_for(case: dict[str, Any]) -> dict[str, Any]:
    return oracle.compute(
        case["tables"],
        case["fiscal_year"],
        case["start_month"],
        case["as_of"],
        case["thresholds"],
        case["bu_cse"],
        case["bu_territory"],
    )


def configure(case: dict[str, Any], tmp_path, monkeypatch) -> tuple[str, ...]:
    bu_map = tmp_path / "bu_map.yaml"
    bu_map.write_text(yaml.safe_dump({"cse": case["bu_cse"], "territory": case["bu_territory"]}, allow_unicode=True))
    monkeypatch.setenv("COMPLIANCE_SYNC_BU_MAP", str(bu_map))
    monkeypatch.setenv("COMPLIANCE_SYNC_FY_START_MONTH", str(case["start_month"]))
    monkeypatch.setenv("COMPLIANCE_SYNC_THRESHOLDS", ",".join(map(str, case["thresholds"])))
    return ("--year", str(case["fiscal_year"]), "--as-of", case["as_of"].isoformat(), "--json")


def run_and_compare(case: dict[str, Any], url: str, tmp_path, monkeypatch, capsys, expected, *extra: str) -> None:
    seed = case["seed"]
    args = configure(case, tmp_path, monkeypatch)
    code, summary, text = run_cli(capsys, *args, *extra)
    assert code == 0, f"seed {seed}: exit {code}\n{text[-3000:]}"
    problems = differences(expected, read_targets(url, case["fiscal_year"]))
    assert not problems, (
        f"seed {seed} (FY{case['fiscal_year']}, m={case['start_month']}, as_of {case['as_of']}):\n"
        + "\n".join(problems[:30])
    )

    code, summary, text = run_cli(capsys, *args)
    assert code == 0, f"seed {seed}: second run exit {code}\n{text[-3000:]}"
    assert summary is not None, text[-3000:]
    for name, counts in summary["targets"].items():
        assert counts["inserted"] == counts["updated"] == counts["deleted"] == 0, (
            f"seed {seed}: second run changed {name}: {counts}"
        )


def check_seed(seed: int, url: str, tmp_path, monkeypatch, capsys) -> None:
    case = make_case(seed)
    insert_tables(url, case["tables"])
    run_and_compare(case, url, tmp_path, monkeypatch, capsys, expected_for(case))


def perturb(case: dict[str, Any]) -> dict[str, Any]:
    """The same FY a day later: events completed or moved, plans archived or revived, strategies and the
    BU map changed, a new as_of. The last plan (the guard's) stays as it is."""
    rng = random.Random(case["seed"] * 7919 + 1)
    new = copy.deepcopy(case)
    t = new["tables"]
    start, end = oracle.fy_window(case["fiscal_year"], case["start_month"])
    for e in t["segmentation_events"]:
        if rng.random() < 0.2:
            e["completed"] = rng.choice([True, False, None])
        if rng.random() < 0.1 and e["event_date"] is not None:
            e["event_date"] += dt.timedelta(days=rng.randint(-40, 40))
    for p in t["account_plans"][:-1]:
        if rng.random() < 0.25:
            p["status"] = "approved" if p["status"] == "archived" else "archived"
    tier_ids = [x["id"] for x in t["segmentation_tiers"]]
    for s in t["client_segmentation"]:
        if rng.random() < 0.1 and s["tier_id"] in tier_ids:
            s["tier_id"] = rng.choice(tier_ids)
    for s in t["territory_strategies"]:
        if rng.random() < 0.3:
            s["status"] = rng.choice(["approved", "archived", None])
        if rng.random() < 0.3:
            s["quarter"] = rng.choice([None, "Q2", " "])
    for r in t["tier_event_requirements"]:
        if rng.random() < 0.1:
            r["frequency"] = rng.randint(0, 6)
    new["bu_territory"] = {k: rng.choice(BUS) for k in case["bu_territory"] if rng.random() < 0.8}
    new["bu_cse"] = dict(case["bu_cse"]) if rng.random() < 0.5 else {}
    new["as_of"] = start + dt.timedelta(days=rng.randint(-30, (end - start).days + 30))
    return new


def second_state(
    url: str, first: dict[str, Any], before: dict[str, Any], seed: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, set[tuple]]]:
    """After a first run: planners' notes on some target rows (such a row is never deleted, an orphan when no
    longer computed, SPEC §5), then perturbed sources. Returns the second case, the targets expected after its
    run (noted rows kept; a BU row left without territories reset, SPEC §4.8) and the noted keys per target."""
    rng = random.Random(seed)
    noted: dict[str, set[tuple]] = {}
    with psycopg.connect(url) as conn:
        for t in (REQUIREMENTS, TERRITORY):
            rows = [tuple(r[k] for k in KEYS[t]) for r in before[t]]
            noted[t] = {k for k in rows if rng.random() < 0.3}
            where = " AND ".join(f"{k} = %s" for k in KEYS[t])
            for k in noted[t]:
                conn.execute(f"UPDATE {t} SET notes = 'keep me' WHERE {where}", k)
    second = perturb(first)
    replace_sources(url, second["tables"])
    expected = expected_for(second)
    for t in (REQUIREMENTS, TERRITORY):
        computed = {tuple(r[k] for k in KEYS[t]) for r in expected[t]}
        expected[t] += [r for r in before[t] if tuple(r[k] for k in KEYS[t]) in noted[t] - computed]
    now = {r["bu_name"] for r in expected[BUSINESS_UNIT]}
    for r in before[BUSINESS_UNIT]:
        if r["bu_name"] not in now:
            expected[BUSINESS_UNIT].append(
                {
                    "bu_name": r["bu_name"],
                    "fiscal_year": r["fiscal_year"],
                    "overall_compliance_percentage": None,
                    "clients_below_compliance": 0,
                    "territory_count": 0,
                    "territory_data": [],
                }
            )
    return second, expected, noted


def replace_sources(url: str, tables: dict[str, list[dict[str, Any]]]) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE " + ", ".join(SOURCE_COLUMNS))
    insert_tables(url, tables)


def check_two_phases(seed: int, url: str, tmp_path, monkeypatch, capsys) -> None:
    first = make_case(seed)
    insert_tables(url, first["tables"])
    before = expected_for(first)
    run_and_compare(first, url, tmp_path, monkeypatch, capsys, before)

    second, expected, noted = second_state(url, first, before, seed)
    # rows no longer computed carry nothing the job does not own: deleted (§5), hence --allow-mass-prune
    run_and_compare(second, url, tmp_path, monkeypatch, capsys, expected, "--allow-mass-prune")
    with psycopg.connect(url) as conn:
        for t in (REQUIREMENTS, TERRITORY):
            cols = ", ".join(f"{k}::text" if k in UUID_COLUMNS else k for k in KEYS[t])
            kept = {tuple(r) for r in conn.execute(f"SELECT {cols} FROM {t} WHERE notes = 'keep me'").fetchall()}
            assert kept == noted[t], f"seed {seed}: {t} lost or gained notes"


# Known disagreements with the package (seed -> reason), marked xfail(strict=True); none found so far.
XFAIL: dict[int, str] = {}


def seeds(values):
    return [pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=XFAIL[s])) if s in XFAIL else s for s in values]


@pytest.mark.parametrize("seed", seeds(range(25)))
def test_cli_matches_oracle(seed, cli_env, tmp_path, monkeypatch, capsys):
    check_seed(seed, cli_env, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("seed", seeds(range(25, 225)))
def test_cli_matches_oracle_sweep(seed, cli_env, tmp_path, monkeypatch, capsys):
    check_seed(seed, cli_env, tmp_path, monkeypatch, capsys)


def test_frequency_above_366_is_an_error(cli_env, tmp_path, monkeypatch, capsys):
    """SPEC §4 step 3 / §6: a frequency above 366 stops the run before any write, naming tier and type."""
    case = make_case(3)
    tiers = {t["id"]: t["tier_name"] for t in case["tables"]["segmentation_tiers"]}
    types = {t["id"]: t for t in case["tables"]["segmentation_event_types"]}
    req = next(
        r for r in case["tables"]["tier_event_requirements"] if r["tier_id"] in tiers and r["event_type_id"] in types
    )
    req["frequency"] = 367
    insert_tables(cli_env, case["tables"])
    bu_map = tmp_path / "bu_map.yaml"
    bu_map.write_text(yaml.safe_dump({"cse": case["bu_cse"], "territory": case["bu_territory"]}, allow_unicode=True))
    monkeypatch.setenv("COMPLIANCE_SYNC_BU_MAP", str(bu_map))
    monkeypatch.setenv("COMPLIANCE_SYNC_FY_START_MONTH", str(case["start_month"]))
    code, summary, text = run_cli(
        capsys, "--year", str(case["fiscal_year"]), "--as-of", case["as_of"].isoformat(), "--json"
    )
    assert code == 3, text[-2000:]
    message = summary["error"] if summary and summary.get("error") else text
    assert "367" in message or "366" in message, message
    assert tiers[req["tier_id"]] in message or req["tier_id"] in message, message
    et = types[req["event_type_id"]]
    assert any(v in message for v in (et["event_name"], et["event_code"], et["id"])), message
    assert all(not rows for rows in read_targets(cli_env, case["fiscal_year"]).values())


@pytest.mark.parametrize("seed", seeds(range(1000, 1008)))
def test_cli_matches_oracle_after_the_data_changed(seed, cli_env, tmp_path, monkeypatch, capsys):
    check_two_phases(seed, cli_env, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("seed", seeds(range(1008, 1068)))
def test_cli_matches_oracle_after_the_data_changed_sweep(seed, cli_env, tmp_path, monkeypatch, capsys):
    check_two_phases(seed, cli_env, tmp_path, monkeypatch, capsys)


def test_generator_is_deterministic():
    assert make_case(7) == make_case(7)
    assert make_case(7) != make_case(8)


# --- the oracle alone: SPEC Appendix A --------------------------------------------------------------------------
def test_oracle_reproduces_appendix_a():
    ids = iter(uuid.UUID(int=i, version=4) for i in range(1, 1000))

    def nid() -> str:
        return str(next(ids))

    d = dt.date
    leverage, collab = nid(), nid()
    sla, insight, health = nid(), nid(), nid()
    p1, ts1 = nid(), nid()
    a = [nid() for _ in range(4)]
    b = [nid() for _ in range(7)]
    c1 = nid()
    tables = {
        "segmentation_tiers": [{"id": leverage, "tier_name": "Leverage"}, {"id": collab, "tier_name": "Collaboration"}],
        "segmentation_event_types": [
            {"id": sla, "event_name": "SLA_REVIEW", "event_code": "SLA_REVIEW", "is_active": True},
            {"id": insight, "event_name": "INSIGHT_TP", "event_code": "INSIGHT_TP", "is_active": True},
            {"id": health, "event_name": "HEALTH_CHECK", "event_code": "HEALTH_CHECK", "is_active": True},
        ],
        "tier_event_requirements": [
            {"tier_id": leverage, "event_type_id": sla, "frequency": 2},
            {"tier_id": collab, "event_type_id": sla, "frequency": 4},
            {"tier_id": leverage, "event_type_id": insight, "frequency": 4},
            {"tier_id": collab, "event_type_id": insight, "frequency": 12},
            {"tier_id": leverage, "event_type_id": health, "frequency": 0},
            {"tier_id": collab, "event_type_id": health, "frequency": 3},
        ],
        "client_segmentation": [
            {
                "id": nid(),
                "client_name": "Alpha Health",
                "tier_id": leverage,
                "cse_name": "Kim Lee",
                "client_uuid": None,
                "effective_from": d(2023, 1, 1),
                "effective_to": d(2025, 3, 31),
            },
            {
                "id": nid(),
                "client_name": "Alpha Health",
                "tier_id": collab,
                "cse_name": "Kim Lee",
                "client_uuid": None,
                "effective_from": d(2025, 4, 1),
                "effective_to": None,
            },
        ],
        "account_plans": [
            {"id": p1, "client_id": None, "client_name": "Alpha Health", "fiscal_year": 2025, "status": "approved"}
        ],
        "territory_strategies": [
            {
                "id": ts1,
                "cse_name": "Kim Lee",
                "territory": "VIC + NZ",
                "fiscal_year": 2025,
                "quarter": None,
                "status": "approved",
                "updated_at": None,
            }
        ],
        "segmentation_events": (
            [
                {
                    "id": a[0],
                    "client_name": "Alpha Health",
                    "event_type_id": sla,
                    "event_date": d(2025, 2, 10),
                    "completed": True,
                },
                {
                    "id": a[1],
                    "client_name": "Alpha Health",
                    "event_type_id": sla,
                    "event_date": d(2025, 5, 20),
                    "completed": True,
                },
                {
                    "id": a[2],
                    "client_name": "Alpha Health",
                    "event_type_id": sla,
                    "event_date": d(2025, 7, 10),
                    "completed": True,
                },
                {
                    "id": a[3],
                    "client_name": "Alpha Health",
                    "event_type_id": sla,
                    "event_date": d(2025, 8, 15),
                    "completed": False,
                },
            ]
            + [
                {
                    "id": b[i],
                    "client_name": "Alpha Health",
                    "event_type_id": insight,
                    "event_date": d(2025, i + 1, 15),
                    "completed": True,
                }
                for i in range(6)
            ]
            + [
                {
                    "id": b[6],
                    "client_name": "Alpha Health",
                    "event_type_id": insight,
                    "event_date": d(2025, 6, 25),
                    "completed": True,
                },
                {
                    "id": c1,
                    "client_name": "Alpha Health",
                    "event_type_id": health,
                    "event_date": d(2025, 3, 3),
                    "completed": True,
                },
            ]
        ),
        "client_event_exclusions": [],
    }
    out = oracle.compute(tables, 2025, 1, d(2025, 6, 30), (50, 80, 100), {}, {"VIC + NZ": "ANZ"})
    D = Decimal

    reqs = {r["event_type_name"]: r for r in out[REQUIREMENTS]}
    assert set(reqs) == {"SLA_REVIEW", "INSIGHT_TP", "HEALTH_CHECK"}
    table = {
        "SLA_REVIEW": (4, 2, 2, D("50.00"), "at_risk", d(2025, 9, 30), a),
        "INSIGHT_TP": (12, 7, 0, D("58.33"), "at_risk", d(2025, 8, 31), b),
        "HEALTH_CHECK": (3, 1, 0, D("33.33"), "critical", d(2025, 8, 31), [c1]),
    }
    for name, (r, c, s, pct, status, due, linked) in table.items():
        row = reqs[name]
        assert (row["required_count"], row["completed_count"], row["scheduled_count"]) == (r, c, s)
        assert row["compliance_percentage"] == pct and str(row["compliance_percentage"]) == str(pct)
        assert row["status"] == status and row["next_due_date"] == due and row["linked_event_ids"] == linked
        assert row["plan_id"] == p1 and row["segment"] == "Collaboration" and row["fiscal_year"] == 2025
        assert row["client_name"] == "Alpha Health" and row["client_id"] is None

    [terr] = out[TERRITORY]
    assert terr["territory_strategy_id"] == ts1 and terr["territory"] == "VIC + NZ" and terr["cse_name"] == "Kim Lee"
    assert (terr["total_clients"], terr["total_required_events"], terr["total_completed_events"]) == (1, 19, 10)
    assert terr["overall_compliance_percentage"] == D("52.63")
    assert (terr["clients_at_risk"], terr["clients_critical"]) == (0, 1)
    assert terr["segment_breakdown"] == {
        "Collaboration": {"clients": 1, "total_required": 19, "total_completed": 10, "compliance": D("52.63")}
    }
    capacity = APPENDIX_A_CAPACITY
    assert list(terr["monthly_capacity"]) == [f"2025-{m:02d}" for m in range(1, 13)]
    assert [tuple(v.values()) for v in terr["monthly_capacity"].values()] == capacity

    [bu] = out[BUSINESS_UNIT]
    assert bu == {
        "bu_name": "ANZ",
        "fiscal_year": 2025,
        "overall_compliance_percentage": D("52.63"),
        "clients_below_compliance": 1,
        "territory_count": 1,
        "territory_data": [{"territory": "VIC + NZ", "cse_name": "Kim Lee", "clients": 1, "compliance": D("52.63")}],
    }
    [apac] = out[APAC]
    assert apac == {
        "fiscal_year": 2025,
        "actual_compliance": D("52.63"),
        "below_compliance_accounts": 1,
        "bu_contributions": [{"bu_name": "ANZ", "compliance": D("52.63"), "clients": 1, "clients_below": 1}],
    }


def test_oracle_arithmetic_edges():
    D = Decimal
    assert (
        oracle.requirement_pct(9999, 20000) == D("50.00") and oracle.status_of(9999, 20000, (50, 80, 100)) == "critical"
    )
    assert oracle.requirement_pct(1, 32) == D("3.13")  # 3.125 rounds half up
    assert oracle.requirement_pct(5, 2) == D("200.00")  # capped
    assert oracle.aggregate_pct(0, 0) == D("100.00")
    assert oracle.fy_window(2026, 7) == (dt.date(2025, 7, 1), dt.date(2026, 6, 30))
    assert oracle.fy_window(2026, 1) == (dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    # FY month j holds floor(j*r/12) - floor((j-1)*r/12) due dates
    for r in range(1, 40):
        counts = [0] * 13
        for k in range(1, r + 1):
            counts[oracle.ceil_div(12 * k, r)] += 1
        assert counts[1:] == [j * r // 12 - (j - 1) * r // 12 for j in range(1, 13)]
