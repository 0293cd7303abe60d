"""Fiscal years (SPEC §2): windows, the FY containing a date, partition keys, ``as_of``, due dates."""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import functools


@dataclasses.dataclass(frozen=True)
class FiscalYear:
    """FY ``year`` for a start month ``start_month`` (1 = calendar year).

    FY N starts on ``m/1`` of year N when m = 1, otherwise on ``m/1`` of year N-1, and ends the day before
    the next FY starts. Example, m = 7: FY2026 = 2025-07-01 … 2026-06-30.
    """

    year: int
    start_month: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.start_month <= 12:
            raise ValueError(f"fiscal_year_start_month must be 1-12, got {self.start_month}")

    @property
    def start(self) -> dt.date:
        return dt.date(self.year if self.start_month == 1 else self.year - 1, self.start_month, 1)

    @property
    def end(self) -> dt.date:
        return FiscalYear(self.year + 1, self.start_month).start - dt.timedelta(days=1)

    @property
    def key(self) -> str:
        return str(self.year)

    def month_start(self, j: int) -> dt.date:
        """First day of FY month j (1-12)."""
        index = self.start.month - 1 + (j - 1)
        return dt.date(self.start.year + index // 12, index % 12 + 1, 1)

    def month_end(self, j: int) -> dt.date:
        first = self.month_start(j)
        return first.replace(day=calendar.monthrange(first.year, first.month)[1])

    def month_label(self, j: int) -> str:
        return _month_label(self.year, self.start_month, j)

    def month_of(self, day: dt.date) -> int:
        """FY month (1-12) of a date inside the window."""
        return (day.year - self.start.year) * 12 + day.month - self.start.month + 1

    def calendar_years(self) -> list[int]:
        """The calendar years that overlap the FY (one or two)."""
        return sorted({self.start.year, self.end.year})

    def as_of(self, reference_date: dt.date) -> dt.date:
        """``min(reference_date, FY end)``; a date before the FY start is allowed (nothing completed yet)."""
        return min(reference_date, self.end)

    def describe(self) -> str:
        return f"FY{self.year} ({self.start.isoformat()} … {self.end.isoformat()})"


def fiscal_year_of(day: dt.date, start_month: int = 1) -> FiscalYear:
    """The FY containing ``day``."""
    year = day.year if (start_month == 1 or day.month < start_month) else day.year + 1
    return FiscalYear(year, start_month)


def partition_keys(first_fiscal_year: int, today: dt.date, start_month: int = 1) -> list[str]:
    """From ``first_fiscal_year`` to the FY containing today plus one."""
    last = fiscal_year_of(today, start_month).year + 1
    return [str(y) for y in range(first_fiscal_year, last + 1)]


def due_month(k: int, required: int) -> int:
    """FY month (1-12) in which the k-th of ``required`` events falls due: ceil(12*k/r)."""
    return -((-12 * k) // required)


def due_counts_by_month(required: int) -> list[int]:
    """How many due dates fall in each FY month: floor(j*r/12) - floor((j-1)*r/12)."""
    return [(j * required) // 12 - ((j - 1) * required) // 12 for j in range(1, 13)]


@functools.lru_cache(maxsize=4096)
def _month_label(year: int, start_month: int, j: int) -> str:
    """``YYYY-MM`` of FY month j: asked for every territory's twelve months."""
    return FiscalYear(year, start_month).month_start(j).strftime("%Y-%m")
