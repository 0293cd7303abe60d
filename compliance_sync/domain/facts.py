"""The facts of one fiscal year (the port's read side): rule-neutral rows the rules consume.

A backend hands the rules these, whatever it reads from: the direct PostgreSQL backend builds them in SQL (events
aggregated on the server), :func:`facts_from_rows` builds the same facts on the client from raw rows (the REST and
in-memory backends, the tests). Values are plain Python: uuids as lower-case ``str``, dates as ``datetime.date``.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from compliance_sync.domain.fiscal import FiscalYear


class Plan(NamedTuple):
    id: str
    client_id: str | None
    client_name: str | None
    status: str | None


class Period(NamedTuple):
    id: str
    client_name: str | None
    tier_id: str | None
    cse_name: str | None
    client_uuid: str | None
    effective_from: dt.date | None
    effective_to: dt.date | None


class Tier(NamedTuple):
    id: str
    tier_name: str | None


class EventType(NamedTuple):
    id: str
    event_name: str | None
    event_code: str | None
    is_active: bool | None


class Frequency(NamedTuple):
    tier_id: str | None
    event_type_id: str | None
    frequency: int | None


class Strategy(NamedTuple):
    id: str
    cse_name: str | None
    territory: str | None
    quarter: str | None
    status: str | None
    updated_at: dt.datetime | str | None  # "infinity" / "-infinity" as text (no datetime holds them)


class Exclusion(NamedTuple):
    client_name: str | None
    event_type_id: str | None
    reason: str | None


class EventCounts(NamedTuple):
    """The events of one (client, event type) dated in the FY window, counted per FY month (index 0-11).

    completed: ``completed IS TRUE AND event_date <= as_of``; scheduled: the rest; completed_future:
    ``completed IS TRUE AND event_date > as_of`` (a subset of scheduled, reported)."""

    client_name: str | None
    event_type_id: str | None
    completed: tuple[int, ...]
    scheduled: tuple[int, ...]
    completed_future: int


class RawEvent(NamedTuple):
    """One ``segmentation_events`` row as read for ``explain`` (the few clients it explains; never for a sync)."""

    id: str
    client_name: str | None
    event_type_id: str | None
    event_date: dt.date | None
    completed: bool | None


class UndatedEvent(NamedTuple):
    id: str
    client_name: str | None


class CacheRow(NamedTuple):
    client_name: str | None
    event_type_id: str | None
    year: int | None
    actual_count: int | None


class CalendarCount(NamedTuple):
    """Completed events (``completed IS TRUE``, any date in the calendar year) of a (client, type, year) that
    the compliance cache holds for a calendar year overlapping the FY: what the drift check compares."""

    client_name: str | None
    event_type_id: str | None
    year: int
    completed: int


@dataclasses.dataclass
class Facts:
    """Everything the rules need for one FY. ``exclusions`` is None when the table does not exist.

    ``event_ids`` (ids of each (client, type)'s events in the window, ordered by ``event_date``, then id) is
    filled only by client-side builders: the direct backend keeps ids in PostgreSQL until it writes them.
    """

    fy: FiscalYear
    as_of: dt.date
    plans: list[Plan]
    periods: list[Period]
    tiers: list[Tier]
    event_types: list[EventType]
    requirements: list[Frequency]
    strategies: list[Strategy]
    exclusions: list[Exclusion] | None
    event_counts: list[EventCounts]
    undated_events: list[UndatedEvent]
    compliance_cache: list[CacheRow]
    calendar_completed: list[CalendarCount]
    event_ids: dict[tuple[str | None, str | None], list[str]] | None = None

    @property
    def events_in_window(self) -> int:
        return sum(sum(e.completed) + sum(e.scheduled) for e in self.event_counts)

    def source_counts(self) -> dict[str, int]:
        """Rows read per source table for this FY (recorded as Dagster observations; the guards use them)."""
        counts = {
            "account_plans": len(self.plans),
            "client_segmentation": len(self.periods),
            "segmentation_tiers": len(self.tiers),
            "segmentation_event_types": len(self.event_types),
            "tier_event_requirements": len(self.requirements),
            "territory_strategies": len(self.strategies),
            "segmentation_events": self.events_in_window + len(self.undated_events),
            "segmentation_event_compliance": len(self.compliance_cache),
        }
        if self.exclusions is not None:
            counts["client_event_exclusions"] = len(self.exclusions)
        return counts


# --- building facts on the client --------------------------------------------------------------------------
def uid(value: Any) -> str | None:
    return None if value is None else str(value).lower()


def as_date(value: Any) -> dt.date | None:
    if value is None or type(value) is dt.date:
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    return value


class EventAggregator:
    """Raw ``segmentation_events`` rows in, page by page; event counts, ids, undated events and calendar-year
    counts out. Keeps per (client, type) counters and id lists, never the raw rows."""

    def __init__(self, fy: FiscalYear, as_of: dt.date) -> None:
        self.fy, self.as_of = fy, as_of
        self._years = set(fy.calendar_years())
        self._completed: dict[tuple, list[int]] = {}
        self._scheduled: dict[tuple, list[int]] = {}
        self._future: collections.Counter = collections.Counter()
        self._ids: dict[tuple, list[tuple[dt.date, str]]] = collections.defaultdict(list)
        self._calendar: collections.Counter = collections.Counter()
        self.undated: list[UndatedEvent] = []

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        fy, as_of = self.fy, self.as_of
        for e in rows:
            day = as_date(e.get("event_date"))
            if day is None:
                self.undated.append(UndatedEvent(uid(e["id"]), e.get("client_name")))
                continue
            key = (e.get("client_name"), uid(e.get("event_type_id")))
            done = e.get("completed") is True
            if done and day.year in self._years and None not in key:  # matched to cache rows by equality, as in SQL
                self._calendar[key + (day.year,)] += 1
            if not fy.start <= day <= fy.end:
                continue
            month = fy.month_of(day) - 1
            if key not in self._completed:
                self._completed[key] = [0] * 12
                self._scheduled[key] = [0] * 12
            if done and day <= as_of:
                self._completed[key][month] += 1
            else:
                self._scheduled[key][month] += 1
                if done:
                    self._future[key] += 1
            self._ids[key].append((day, uid(e["id"])))

    def event_counts(self) -> list[EventCounts]:
        return [
            EventCounts(k[0], k[1], tuple(self._completed[k]), tuple(self._scheduled[k]), self._future[k])
            for k in self._completed
        ]

    def event_ids(self) -> dict[tuple, list[str]]:
        return {k: [i for _, i in sorted(v)] for k, v in self._ids.items()}

    def calendar_completed(self, keys: set[tuple] | None = None) -> list[CalendarCount]:
        """Per (client, type, year); only the given keys (the compliance cache's) when given."""
        return [
            CalendarCount(c, t, y, n) for (c, t, y), n in self._calendar.items() if keys is None or (c, t, y) in keys
        ]


def overlaps(period: Mapping[str, Any], fy: FiscalYear) -> bool:
    """The period may overlap the FY; one with a null start is kept too, for the rules to report it."""
    start, end = as_date(period.get("effective_from")), as_date(period.get("effective_to"))
    return (start is None or start <= fy.end) and (end is None or end >= fy.start)


def _rows(
    kind: type, rows: Iterable[Mapping[str, Any]], uuids: tuple[str, ...] = (), dates: tuple[str, ...] = ()
) -> list:
    out = []
    for r in rows:
        values = {f: r.get(f) for f in kind._fields}
        for f in uuids:
            values[f] = uid(values[f])
        for f in dates:
            values[f] = as_date(values[f])
        out.append(kind(**values))
    return out


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
    events: Iterable[Mapping[str, Any]] | EventAggregator = (),
    compliance_cache: Iterable[Mapping[str, Any]] = (),
    prefiltered: bool = False,
) -> Facts:
    """Facts from table rows (dicts of column -> value), filtered to the FY the way the SQL backend filters
    (``prefiltered``: the rows were already filtered on the server, as the REST backend asks for)."""
    if not prefiltered:
        plans = [p for p in plans if p.get("fiscal_year") == fy.year and p.get("status") != "archived"]
        periods = [p for p in periods if overlaps(p, fy)]
        strategies = [s for s in strategies if s.get("fiscal_year") == fy.year and s.get("status") != "archived"]
        years = set(fy.calendar_years())
        compliance_cache = [c for c in compliance_cache if c.get("year") in years]
    if isinstance(events, EventAggregator):
        aggregator = events
    else:
        aggregator = EventAggregator(fy, as_of)
        aggregator.add(events)
    cache_rows = _rows(CacheRow, compliance_cache, uuids=("event_type_id",))
    return Facts(
        fy=fy,
        as_of=as_of,
        plans=_rows(Plan, plans, uuids=("id", "client_id")),
        periods=_rows(
            Period, periods, uuids=("id", "tier_id", "client_uuid"), dates=("effective_from", "effective_to")
        ),
        tiers=_rows(Tier, tiers, uuids=("id",)),
        event_types=_rows(EventType, event_types, uuids=("id",)),
        requirements=_rows(Frequency, requirements, uuids=("tier_id", "event_type_id")),
        strategies=_rows(Strategy, strategies, uuids=("id",)),
        exclusions=None if exclusions is None else _rows(Exclusion, exclusions, uuids=("event_type_id",)),
        event_counts=aggregator.event_counts(),
        undated_events=aggregator.undated,
        compliance_cache=cache_rows,
        calendar_completed=aggregator.calendar_completed(
            {(c.client_name, c.event_type_id, c.year) for c in cache_rows}
        ),
        event_ids=aggregator.event_ids(),
    )
