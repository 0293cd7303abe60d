"""SPEC §4.5's arithmetic: integer percentages (exact half-up to hundredths), the status of one requirement
through the thresholds, due dates and due counts per FY month; also the order of nullable text the steps
share. Integer arithmetic only, so a figure is the same as PostgreSQL's."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
from collections.abc import Iterable
from typing import Any

from compliance_sync.domain.fiscal import FiscalYear, due_counts_by_month, due_month
from compliance_sync.domain.thresholds import Thresholds

ZERO_MONTHS = (0,) * 12


# --- arithmetic of SPEC §4.5 --------------------------------------------------------------------------------
def pct_hundredths(completed: int, required: int, cap: bool = True) -> int:
    """``floor((20000*c + r) / (2*r))``: exact half-up rounding to hundredths of a percent."""
    value = (20000 * completed + required) // (2 * required)
    return min(value, 20000) if cap else value


@functools.lru_cache(maxsize=65536)
def as_percent(hundredths: int) -> decimal.Decimal:
    return decimal.Decimal(hundredths).scaleb(-2)


def requirement_percent(completed: int, required: int) -> decimal.Decimal:
    return as_percent(pct_hundredths(completed, required, cap=True))


def rollup_percent(credited: int, required: int) -> decimal.Decimal:
    """Step 6: the uncapped formula on credited / required totals; 100.00 when nothing is required."""
    return as_percent(10000 if required == 0 else pct_hundredths(credited, required, cap=False))


def next_due_date(fy: FiscalYear, completed: int, required: int) -> dt.date | None:
    """The due date of the (c+1)-th required event: the last day of FY month ceil(12k/r); None when done."""
    return None if completed >= required else fy.month_end(due_month(completed + 1, required))


@functools.cache
def due_counts(required: int) -> tuple[int, ...]:
    return tuple(due_counts_by_month(required))


# --- one requirement's figures (steps 5 and 6 ask) ----------------------------------------------------------
def score(
    fy: FiscalYear, thresholds: Thresholds, completed: int, required: int
) -> tuple[decimal.Decimal, str, dt.date | None]:
    """SPEC §4.5 for one (completed, required): percentage, status, next due date."""
    return (
        requirement_percent(completed, required),
        thresholds.status(completed, required).value,
        next_due_date(fy, completed, required),
    )


def month_sums(rows: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    """Element-wise sum of twelve-month tuples."""
    return tuple(map(sum, zip(ZERO_MONTHS, *rows)))


def text_key(value: Any) -> str:
    return "" if value is None else str(value)
