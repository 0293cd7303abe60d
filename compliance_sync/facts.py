"""Facts built on the client from raw rows: the same facts the PostgreSQL adapter builds in SQL.

Used by backends that cannot aggregate on the server (the REST API pages raw rows) and by the tests,
which describe a situation as table rows and must see exactly what the database path would hand over.
"""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any, Iterable, Mapping

import pandas as pd

from compliance_sync.fiscal import FiscalYear
from compliance_sync.model import FACT_COLUMNS, Facts, empty_frame


def _frame(name: str, rows: Iterable[Mapping[str, Any]] | None) -> pd.DataFrame:
    rows = list(rows or [])
    if not rows:
        return empty_frame(name)
    columns = FACT_COLUMNS[name]
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=list(columns), dtype=object)


def aggregate_events(
    events: Iterable[Mapping[str, Any]], fy: FiscalYear, as_of: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Raw ``segmentation_events`` rows -> (event_facts, undated_events, calendar_completed)."""
    groups: dict[tuple, dict[str, Any]] = {}
    ids: dict[tuple, list[tuple]] = collections.defaultdict(list)
    undated = []
    calendar: collections.Counter = collections.Counter()
    years = set(fy.calendar_years())
    for e in events:
        day = e.get("event_date")
        if day is None:
            undated.append({"id": str(e["id"]), "client_name": e.get("client_name")})
            continue
        type_id = None if e.get("event_type_id") is None else str(e["event_type_id"]).lower()
        done = e.get("completed") is True
        if done and day.year in years:
            calendar[(e.get("client_name"), type_id, day.year)] += 1
        if not fy.start <= day <= fy.end:
            continue
        key = (e.get("client_name"), type_id, fy.month_of(day))
        g = groups.setdefault(
            key,
            {"client_name": key[0], "event_type_id": key[1], "fy_month": key[2], "completed": 0, "scheduled": 0, "completed_future": 0},
        )
        if done and day <= as_of:
            g["completed"] += 1
        else:
            g["scheduled"] += 1
            if done:
                g["completed_future"] += 1
        ids[key].append((day, str(e["id"]).lower()))
    for key, g in groups.items():
        g["event_ids"] = [i for _, i in sorted(ids[key])]
    cal = [
        {"client_name": c, "event_type_id": t, "year": y, "completed": n} for (c, t, y), n in sorted(calendar.items(), key=str)
    ]
    return _frame("event_facts", groups.values()), _frame("undated_events", undated), _frame("calendar_completed", cal)


def overlaps(period: Mapping[str, Any], fy: FiscalYear) -> bool:
    start, end = period.get("effective_from"), period.get("effective_to")
    return start is not None and start <= fy.end and (end is None or end >= fy.start)


def facts_from_rows(
    fy: FiscalYear,
    as_of: dt.date,
    *,
    plans: Iterable[Mapping[str, Any]] = (),
    periods: Iterable[Mapping[str, Any]] = (),
    tiers: Iterable[Mapping[str, Any]] = (),
    event_types: Iterable[Mapping[str, Any]] = (),
    requirements: Iterable[Mapping[str, Any]] = (),
    strategies: Iterable[Mapping[str, Any]] = (),
    exclusions: Iterable[Mapping[str, Any]] | None = (),
    events: Iterable[Mapping[str, Any]] = (),
    compliance_cache: Iterable[Mapping[str, Any]] = (),
) -> Facts:
    """Whole-table rows (as dicts of column -> value) filtered to the FY the way the SQL adapter does."""
    plans = [p for p in plans if p.get("fiscal_year") == fy.year]
    periods = [p for p in periods if overlaps(p, fy)]
    strategies = [s for s in strategies if s.get("fiscal_year") == fy.year]
    years = set(fy.calendar_years())
    cache = [c for c in compliance_cache if c.get("year") in years]
    event_facts, undated, calendar = aggregate_events(events, fy, as_of)
    return Facts(
        fiscal_year=fy.year,
        start=fy.start,
        end=fy.end,
        as_of=as_of,
        plans=_frame("plans", plans),
        periods=_frame("periods", periods),
        tiers=_frame("tiers", tiers),
        event_types=_frame("event_types", event_types),
        requirements=_frame("requirements", requirements),
        strategies=_frame("strategies", strategies),
        exclusions=None if exclusions is None else _frame("exclusions", exclusions),
        event_facts=event_facts,
        undated_events=undated,
        compliance_cache=_frame("compliance_cache", cache),
        calendar_completed=calendar,
    )
