"""SPEC §2: fiscal-year windows, the FY of a date, partition keys, ``as_of``, FY months and due dates."""

from __future__ import annotations

import collections
import datetime as dt

import pytest

from compliance_sync.domain.fiscal import FiscalYear, due_counts_by_month, due_month, fiscal_year_of, partition_keys

D = dt.date


# --- windows -------------------------------------------------------------------------------------------
def test_calendar_fiscal_year_window():
    fy = FiscalYear(2026)
    assert fy.start_month == 1
    assert fy.start == D(2026, 1, 1)
    assert fy.end == D(2026, 12, 31)
    assert fy.key == "2026"
    assert fy.describe() == "FY2026 (2026-01-01 … 2026-12-31)"


def test_july_fiscal_year_window_matches_spec_example():
    fy = FiscalYear(2026, 7)
    assert fy.start == D(2025, 7, 1)
    assert fy.end == D(2026, 6, 30)
    assert fy.key == "2026"
    assert fy.describe() == "FY2026 (2025-07-01 … 2026-06-30)"


@pytest.mark.parametrize("m", range(1, 13))
def test_every_start_month_window(m):
    fy = FiscalYear(2026, m)
    expected_start = D(2026, 1, 1) if m == 1 else D(2025, m, 1)
    assert fy.start == expected_start
    nxt = FiscalYear(2027, m)
    # ends the day before the next FY starts, and consecutive FYs tile the timeline
    assert fy.end == nxt.start - dt.timedelta(days=1)
    assert fy.end + dt.timedelta(days=1) == nxt.start
    assert FiscalYear(2025, m).end + dt.timedelta(days=1) == fy.start
    # one year long (365 or 366 days)
    assert (fy.end - fy.start).days + 1 in (365, 366)
    # the window is labelled by the year it ends in
    assert fy.end.year == 2026


@pytest.mark.parametrize(
    "year, m, start, end",
    [
        (2024, 3, D(2023, 3, 1), D(2024, 2, 29)),  # leap February closes the FY
        (2025, 3, D(2024, 3, 1), D(2025, 2, 28)),
        (2024, 1, D(2024, 1, 1), D(2024, 12, 31)),
        (2024, 2, D(2023, 2, 1), D(2024, 1, 31)),
        (2024, 12, D(2023, 12, 1), D(2024, 11, 30)),
        (2000, 3, D(1999, 3, 1), D(2000, 2, 29)),  # 2000 is a leap year
        (2100, 3, D(2099, 3, 1), D(2100, 2, 28)),  # 2100 is not
    ],
)
def test_windows_and_leap_years(year, m, start, end):
    fy = FiscalYear(year, m)
    assert (fy.start, fy.end) == (start, end)


def test_leap_year_lengths():
    assert (FiscalYear(2024, 3).end - FiscalYear(2024, 3).start).days + 1 == 366
    assert (FiscalYear(2025, 3).end - FiscalYear(2025, 3).start).days + 1 == 365
    assert (FiscalYear(2024, 1).end - FiscalYear(2024, 1).start).days + 1 == 366


@pytest.mark.parametrize("bad", [0, 13, -1, 100])
def test_invalid_start_month_raises(bad):
    with pytest.raises(ValueError, match="1-12"):
        FiscalYear(2026, bad)
    with pytest.raises(ValueError):
        fiscal_year_of(D(2026, 5, 1), bad)
    with pytest.raises(ValueError):
        partition_keys(2024, D(2026, 5, 1), bad)


# --- the FY of a date ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "day, m, year",
    [
        (D(2026, 1, 1), 1, 2026),
        (D(2026, 12, 31), 1, 2026),
        (D(2025, 12, 31), 1, 2025),
        (D(2025, 6, 30), 7, 2025),
        (D(2025, 7, 1), 7, 2026),
        (D(2026, 6, 30), 7, 2026),
        (D(2026, 7, 1), 7, 2027),
        (D(2024, 2, 29), 3, 2024),
        (D(2024, 3, 1), 3, 2025),
        (D(2025, 11, 30), 12, 2025),
        (D(2025, 12, 1), 12, 2026),
        (D(2025, 1, 31), 2, 2025),
        (D(2025, 2, 1), 2, 2026),
    ],
)
def test_fiscal_year_of_boundaries(day, m, year):
    fy = fiscal_year_of(day, m)
    assert fy == FiscalYear(year, m)
    assert fy.start <= day <= fy.end


@pytest.mark.parametrize("m", range(1, 13))
def test_fiscal_year_of_every_day_lies_in_its_window(m):
    day = D(2023, 1, 1)
    while day <= D(2025, 12, 31):
        fy = fiscal_year_of(day, m)
        assert fy.start <= day <= fy.end, (day, m, fy)
        assert fy.start_month == m
        day += dt.timedelta(days=1)


def test_fiscal_year_of_default_is_calendar_year():
    assert fiscal_year_of(D(2025, 7, 15)) == FiscalYear(2025, 1)


# --- partition keys ---------------------------------------------------------------------------------------
def test_partition_keys_calendar_year():
    assert partition_keys(2024, D(2025, 3, 1)) == ["2024", "2025", "2026"]
    assert partition_keys(2024, D(2025, 12, 31)) == ["2024", "2025", "2026"]
    assert partition_keys(2024, D(2026, 1, 1)) == ["2024", "2025", "2026", "2027"]


def test_partition_keys_july_start():
    # 2025-06-30 is in FY2025 (m=7); 2025-07-01 is in FY2026
    assert partition_keys(2024, D(2025, 6, 30), 7) == ["2024", "2025", "2026"]
    assert partition_keys(2024, D(2025, 7, 1), 7) == ["2024", "2025", "2026", "2027"]


def test_partition_keys_first_year_setting():
    assert partition_keys(2026, D(2026, 5, 1)) == ["2026", "2027"]
    assert partition_keys(2020, D(2021, 1, 1))[0] == "2020"
    assert partition_keys(2020, D(2021, 1, 1))[-1] == "2022"
    assert all(isinstance(k, str) for k in partition_keys(2024, D(2025, 1, 1)))


# --- as_of ----------------------------------------------------------------------------------------------
def test_as_of_is_min_of_reference_and_fy_end():
    fy = FiscalYear(2025)
    assert fy.as_of(D(2025, 6, 30)) == D(2025, 6, 30)
    assert fy.as_of(D(2025, 12, 31)) == D(2025, 12, 31)
    assert fy.as_of(D(2026, 1, 1)) == D(2025, 12, 31)
    assert fy.as_of(D(2030, 5, 5)) == D(2025, 12, 31)


def test_as_of_before_fy_start_is_allowed():
    fy = FiscalYear(2026, 7)
    assert fy.as_of(D(2025, 6, 30)) == D(2025, 6, 30)
    assert fy.as_of(D(2020, 1, 1)) == D(2020, 1, 1)
    assert fy.as_of(D(2026, 7, 1)) == D(2026, 6, 30)


# --- FY months -------------------------------------------------------------------------------------------
def test_months_calendar_year():
    fy = FiscalYear(2024)
    assert [fy.month_label(j) for j in range(1, 13)] == [f"2024-{m:02d}" for m in range(1, 13)]
    assert fy.month_start(1) == D(2024, 1, 1)
    assert fy.month_end(1) == D(2024, 1, 31)
    assert fy.month_end(2) == D(2024, 2, 29)
    assert fy.month_end(4) == D(2024, 4, 30)
    assert fy.month_end(12) == D(2024, 12, 31)


def test_months_july_start_cross_the_year():
    fy = FiscalYear(2026, 7)
    labels = [fy.month_label(j) for j in range(1, 13)]
    assert labels == [
        "2025-07",
        "2025-08",
        "2025-09",
        "2025-10",
        "2025-11",
        "2025-12",
        "2026-01",
        "2026-02",
        "2026-03",
        "2026-04",
        "2026-05",
        "2026-06",
    ]
    assert fy.month_start(6) == D(2025, 12, 1)
    assert fy.month_start(7) == D(2026, 1, 1)
    assert fy.month_end(6) == D(2025, 12, 31)
    assert fy.month_end(8) == D(2026, 2, 28)
    assert fy.month_end(12) == D(2026, 6, 30) == fy.end


def test_month_end_leap_february_in_march_fy():
    fy = FiscalYear(2024, 3)
    assert fy.month_label(12) == "2024-02"
    assert fy.month_end(12) == D(2024, 2, 29) == fy.end
    assert FiscalYear(2025, 3).month_end(12) == D(2025, 2, 28)


@pytest.mark.parametrize("m", range(1, 13))
def test_month_of_round_trips(m):
    fy = FiscalYear(2026, m)
    assert fy.month_of(fy.start) == 1
    assert fy.month_of(fy.end) == 12
    assert fy.month_start(1) == fy.start
    assert fy.month_end(12) == fy.end
    for j in range(1, 13):
        assert fy.month_of(fy.month_start(j)) == j
        assert fy.month_of(fy.month_end(j)) == j
        if j < 12:
            assert fy.month_end(j) + dt.timedelta(days=1) == fy.month_start(j + 1)
    labels = [fy.month_label(j) for j in range(1, 13)]
    assert len(set(labels)) == 12 and labels == sorted(labels)


def test_month_of_specific_dates():
    fy = FiscalYear(2026, 7)
    assert fy.month_of(D(2025, 7, 15)) == 1
    assert fy.month_of(D(2025, 12, 31)) == 6
    assert fy.month_of(D(2026, 1, 1)) == 7
    assert fy.month_of(D(2026, 6, 30)) == 12
    assert FiscalYear(2025).month_of(D(2025, 8, 15)) == 8


def test_calendar_years():
    assert FiscalYear(2025).calendar_years() == [2025]
    assert FiscalYear(2026, 7).calendar_years() == [2025, 2026]
    assert FiscalYear(2024, 3).calendar_years() == [2023, 2024]
    assert FiscalYear(2024, 12).calendar_years() == [2023, 2024]


# --- due dates ------------------------------------------------------------------------------------------
def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@pytest.mark.parametrize(
    "r, months", [(1, [12]), (2, [6, 12]), (3, [4, 8, 12]), (4, [3, 6, 9, 12]), (12, list(range(1, 13)))]
)
def test_due_month_small_cases(r, months):
    assert [due_month(k, r) for k in range(1, r + 1)] == months


def test_due_month_appendix_a():
    # SLA_REVIEW r=4, c=2 -> k=3 due in month 9; INSIGHT_TP r=12, c=7 -> month 8; HEALTH_CHECK r=3, c=1 -> month 8
    assert due_month(3, 4) == 9
    assert due_month(8, 12) == 8
    assert due_month(2, 3) == 8
    assert due_counts_by_month(4) == [0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1]
    assert due_counts_by_month(3) == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert due_counts_by_month(12) == [1] * 12
    assert due_counts_by_month(24) == [2] * 12
    # Appendix A monthly_capacity.required (r = 4, 12 and 3), Jan…Dec
    total = [a + b + c for a, b, c in zip(due_counts_by_month(4), due_counts_by_month(12), due_counts_by_month(3))]
    assert total == [1, 1, 2, 2, 1, 2, 1, 2, 2, 1, 1, 3]


def test_due_counts_examples():
    # floor(j*5/12) - floor((j-1)*5/12)
    assert due_counts_by_month(5) == [0, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1]
    assert due_counts_by_month(1) == [0] * 11 + [1]
    assert due_counts_by_month(13) == [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]
    assert due_counts_by_month(366) == [30, 31, 30, 31, 30, 31, 30, 31, 30, 31, 30, 31]
    assert due_counts_by_month(0) == [0] * 12


@pytest.mark.parametrize("r", range(1, 367))
def test_due_month_and_counts_agree(r):
    months = [due_month(k, r) for k in range(1, r + 1)]
    assert months == [_ceil_div(12 * k, r) for k in range(1, r + 1)]
    assert all(1 <= j <= 12 for j in months)
    assert months == sorted(months)
    assert months[-1] == 12
    counts = due_counts_by_month(r)
    assert len(counts) == 12
    assert sum(counts) == r
    assert counts == [(j * r) // 12 - ((j - 1) * r) // 12 for j in range(1, 13)]
    tally = collections.Counter(months)
    assert counts == [tally.get(j, 0) for j in range(1, 13)]
