"""Boundaries where real bugs hide (issue 12): the schedule's grace period (day ``grace_days - 1`` still runs
the previous FY, day ``grace_days`` does not), schedule ticks on the daylight-saving change days of
Australia/Sydney, and x.xx5 percentages rounded half-up through the whole pipeline (rules → COPY → SQL diff
→ numeric(5,2) and jsonb), at requirement, territory, BU and APAC level. Expected values are written out by
hand or computed with plain ``Fraction`` arithmetic.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal
from fractions import Fraction

import dagster as dg
import psycopg
import pytest
import yaml

from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TERRITORY
from compliance_sync_tests.scenario import Scenario

pytest.register_assert_rewrite("compliance_sync_tests.world")
from compliance_sync_tests.world import load, run_cli

pytest_plugins = ["compliance_sync_tests.world"]  # its fixtures: world, world_db, cli_env

SYDNEY = zoneinfo.ZoneInfo("Australia/Sydney")


def settings_with(monkeypatch, **env: str):
    from compliance_sync.config.settings import load_settings

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return load_settings()


# --- the grace period of the schedule -------------------------------------------------------------------------
@pytest.mark.parametrize("grace", [0, 1, 2, 30, 45])
@pytest.mark.parametrize("start_month", [1, 7])
def test_grace_period_boundary(cli_env, monkeypatch, grace, start_month):
    from compliance_sync.definitions.schedules import scheduled_years
    from compliance_sync.domain.fiscal import FiscalYear

    settings = settings_with(
        monkeypatch,
        COMPLIANCE_SYNC_GRACE_DAYS=str(grace),
        COMPLIANCE_SYNC_FY_START_MONTH=str(start_month),
        COMPLIANCE_SYNC_FIRST_FY="2020",
    )
    keys = [str(y) for y in range(2020, 2030)]
    fy = FiscalYear(2026, start_month)
    for day in range(0, grace + 3):
        date = fy.start + dt.timedelta(days=day)  # day 0 is the FY's first day
        want = ["2026", "2025"] if day <= grace - 1 else ["2026"]
        assert scheduled_years(date, settings, keys) == want, (grace, day)
    assert scheduled_years(fy.start - dt.timedelta(days=1), settings, keys) == ["2025"] + (
        ["2024"] if grace > 365 else []
    )


def test_grace_period_boundary_through_the_schedule(cli_env, monkeypatch):
    from compliance_sync.definitions import build_definitions
    from compliance_sync.definitions.schedules import SCHEDULE_NAME

    settings = settings_with(
        monkeypatch,
        COMPLIANCE_SYNC_GRACE_DAYS="30",
        COMPLIANCE_SYNC_FY_START_MONTH="7",
        COMPLIANCE_SYNC_FIRST_FY="2020",
    )
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    repo = defs.get_repository_def()

    def tick(day: dt.date) -> list[str]:
        ctx = dg.build_schedule_context(
            scheduled_execution_time=dt.datetime(day.year, day.month, day.day, 6, tzinfo=SYDNEY), repository_def=repo
        )
        return [r.partition_key for r in schedule.evaluate_tick(ctx).run_requests]

    assert tick(dt.date(2025, 7, 30)) == ["2026", "2025"]  # day 29 = grace_days - 1
    assert tick(dt.date(2025, 7, 31)) == ["2026"]  # day 30 = grace_days


# --- daylight saving in Australia/Sydney ------------------------------------------------------------------------------
DST_ENDS, DST_STARTS = dt.date(2025, 4, 6), dt.date(2025, 10, 5)  # 03:00 -> 02:00 AEST, 02:00 -> 03:00 AEDT


@pytest.mark.parametrize("cron, hour", [("0 6 * * *", 6), ("30 0 * * *", 0), ("30 2 * * *", None)])
@pytest.mark.parametrize("change", [DST_ENDS, DST_STARTS])
def test_daily_ticks_around_a_dst_change_map_to_their_local_date(cli_env, monkeypatch, cron, hour, change):
    from compliance_sync.definitions import build_definitions
    from compliance_sync.definitions.schedules import SCHEDULE_NAME
    from compliance_sync.definitions.tags import AS_OF_TAG

    settings = settings_with(monkeypatch, COMPLIANCE_SYNC_SCHEDULE_CRON=cron, COMPLIANCE_SYNC_FIRST_FY="2020")
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    assert schedule.execution_timezone == "Australia/Sydney"
    repo = defs.get_repository_def()
    minute, hour_of_cron = (int(f) for f in cron.split()[:2])
    seen = []
    for i in range(7):
        day = change - dt.timedelta(days=3) + dt.timedelta(days=i)
        # the tick's instant: the cron's wall time that day (a wall time the change skips falls an hour later)
        when = dt.datetime.combine(day, dt.time(hour_of_cron, minute), SYDNEY).astimezone(dt.UTC).astimezone(SYDNEY)
        local = when.astimezone(SYDNEY)
        if hour is not None:
            assert local.hour == hour, when
        # the tick as Dagster hands it over, and the same instant in UTC: the same local date either way
        for moment in (when, when.astimezone(dt.UTC)):
            ctx = dg.build_schedule_context(scheduled_execution_time=moment, repository_def=repo)
            [request] = schedule.evaluate_tick(ctx).run_requests
            assert request.run_config["ops"]["compliance_sync"]["config"]["as_of"] == local.date().isoformat()
            assert request.tags[AS_OF_TAG] == local.date().isoformat()
            assert request.partition_key == "2025"
        seen.append(local.date())
    assert seen == [
        change - dt.timedelta(days=3) + dt.timedelta(days=i) for i in range(7)
    ]  # one tick a day, none lost or doubled


def test_a_utc_tick_late_in_the_utc_day_is_the_next_local_day(cli_env, monkeypatch):
    from compliance_sync.definitions import build_definitions
    from compliance_sync.definitions.schedules import SCHEDULE_NAME

    settings = settings_with(monkeypatch, COMPLIANCE_SYNC_FIRST_FY="2020", COMPLIANCE_SYNC_FY_START_MONTH="10")
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    # 2025-10-04 19:00 UTC = 2025-10-05 06:00 AEDT: the first DST morning, and day 4 of FY2026 (start month 10)
    ctx = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2025, 10, 4, 19, tzinfo=dt.UTC), repository_def=defs.get_repository_def()
    )
    requests = list(schedule.evaluate_tick(ctx).run_requests)
    assert [r.partition_key for r in requests] == ["2026", "2025"]
    assert {r.run_config["ops"]["compliance_sync"]["config"]["as_of"] for r in requests} == {"2025-10-05"}


# --- x.xx5 rounded half-up through the whole pipeline -----------------------------------------------------------------
# (completed, required, the requirement's percentage): each a client alone in its territory
REQUIREMENT_CASES = [
    (1, 8, "12.50"),
    (3, 8, "37.50"),
    (1, 16, "6.25"),
    (5, 16, "31.25"),
    (1, 32, "3.13"),
    (3, 32, "9.38"),
    (5, 32, "15.63"),
    (7, 32, "21.88"),
    (9, 32, "28.13"),
    (11, 32, "34.38"),
    (1, 160, "0.63"),
    (3, 160, "1.88"),
    (13, 160, "8.13"),
    (1, 40, "2.50"),
    (1, 80, "1.25"),
    (1, 3, "33.33"),
    (2, 3, "66.67"),
    (1, 366, "0.27"),
    (5, 2, "200.00"),
    (0, 7, "0.00"),
    (7, 7, "100.00"),
]
# (completed per client, required per client, the territory's percentage): several clients, one territory
ROLLUP_CASES = [
    ("Roll800", [(1, 366), (0, 366), (0, 68)], "0.13"),  # 1/800 = 0.125
    ("Roll800b", [(5, 366), (0, 366), (0, 68)], "0.63"),  # 5/800 = 0.625
    ("Roll480", [(3, 160), (0, 160), (0, 160)], "0.63"),  # 3/480 = 0.625
    ("Roll96", [(1, 32), (0, 32), (0, 32)], "1.04"),  # 1/96 = 1.0416…
]


def half_up(done: int, required: int) -> Decimal:
    q = Fraction(100 * done, required) * 100 + Fraction(1, 2)
    return Decimal(q.numerator // q.denominator) / 100


def rounding_world() -> tuple[Scenario, dict]:
    s = Scenario(2025, 1, "2025-12-31")
    s.event_type("VISIT")
    rs = sorted({r for _, r, _ in REQUIREMENT_CASES} | {r for _, group, _ in ROLLUP_CASES for _, r in group})
    for r in rs:
        s.tier(f"R{r}")
        s.require(f"R{r}", "VISIT", r)
    bu_map = {"cse": {}, "territory": {}}
    n = 0

    def client(cse: str, c: int, r: int) -> None:
        nonlocal n
        n += 1
        name = f"Client {n:03d}"
        s.period(name, f"R{r}", "2024-01-01", cse=cse)
        s.plan(f"plan {name}", name)
        for k in range(c):
            s.event(f"visit {name} {k}", name, "VISIT", (dt.date(2025, 1, 1) + dt.timedelta(days=k)).isoformat())

    for c, r, _ in REQUIREMENT_CASES:
        cse = f"CSE {c}/{r}"
        s.strategy(f"ts {cse}", cse, f"T {c}/{r}")
        bu_map["cse"][cse] = "ANZ"
        client(cse, c, r)
    for label, group, _ in ROLLUP_CASES:
        s.strategy(f"ts {label}", label, label)
        bu_map["cse"][label] = label  # a BU of its own: the BU's percentage is the territory's
        for c, r in group:
            client(label, c, r)
    return s, bu_map


def test_half_up_percentages_through_the_whole_pipeline(migrated_db, cli_env, capsys, monkeypatch):
    s, bu_map = rounding_world()
    load(migrated_db, s)
    (cli_env / "bu.yaml").write_text(yaml.safe_dump(bu_map))
    monkeypatch.setenv("COMPLIANCE_SYNC_BU_MAP", str(cli_env / "bu.yaml"))
    monkeypatch.setenv("SUPABASE_DB_URL", migrated_db)
    result = run_cli(capsys, "--year", "2025", "--as-of", "2025-12-31")
    assert result.code == 0, result
    with psycopg.connect(migrated_db) as conn:
        req = dict(
            conn.execute(
                f"SELECT segment || ':' || completed_count, compliance_percentage FROM {REQUIREMENTS}"
            ).fetchall()
        )
        terr = {
            r[0]: r[1:]
            for r in conn.execute(f"SELECT cse_name, overall_compliance_percentage, segment_breakdown FROM {TERRITORY}")
        }
        bu = {
            r[0]: r[1:]
            for r in conn.execute(f"SELECT bu_name, overall_compliance_percentage, territory_data FROM {BUSINESS_UNIT}")
        }
        apac, contributions = conn.execute(f"SELECT actual_compliance, bu_contributions FROM {APAC}").fetchone()
    for c, r, want in REQUIREMENT_CASES:
        assert req[f"R{r}:{c}"] == Decimal(want), (c, r)
        pct, breakdown = terr[f"CSE {c}/{r}"]
        rolled = half_up(min(c, r), r)  # the roll-up credits at most what is required, uncapped otherwise
        assert pct == rolled and Decimal(str(breakdown[f"R{r}"]["compliance"])) == rolled, (c, r)
    for label, group, want in ROLLUP_CASES:
        pct, _ = terr[label]
        assert pct == Decimal(want) == half_up(sum(c for c, _ in group), sum(r for _, r in group)), label
        bu_pct, data = bu[label]
        assert bu_pct == Decimal(want) and Decimal(str(data[0]["compliance"])) == Decimal(want)
    everyone = [(min(c, r), r) for c, r, _ in REQUIREMENT_CASES] + [(c, r) for _, g, _ in ROLLUP_CASES for c, r in g]
    assert apac == half_up(sum(c for c, _ in everyone), sum(r for _, r in everyone))
    anz = [(min(c, r), r) for c, r, _ in REQUIREMENT_CASES]
    by_bu = {e["bu_name"]: Decimal(str(e["compliance"])) for e in contributions}
    assert by_bu["ANZ"] == bu["ANZ"][0] == half_up(sum(c for c, _ in anz), sum(r for _, r in anz))
    assert by_bu["Roll800"] == Decimal("0.13")
    again = run_cli(capsys, "--year", "2025", "--as-of", "2025-12-31")  # JSON numbers compare as numbers: no churn
    assert all(t["updated"] == 0 for t in again.summary["targets"].values()), again.summary["targets"]
