"""Reads over REST: every table paged by keyset on its primary key, the FY's facts built from the pages, the
targets' current rows for the plan, and the narrow reads ``explain`` makes.

Keyset paging (``pk=gt.<last>&order=pk.asc&limit=n``) until an empty page means a server row cap below the page
size truncates nothing, with no offsets, exact counts or long ``in.(…)`` lists.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from compliance_sync.backends import schema
from compliance_sync.backends.rest.catalog import describe
from compliance_sync.backends.rest.client import RestClient, quote
from compliance_sync.config.logs import Progress
from compliance_sync.domain.facts import EventAggregator, Facts, RawEvent, as_date, facts_from_rows, uid
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.tables import EVENTS, EXCLUSIONS, SOURCE_BY_NAME, TARGET_BY_NAME, TARGETS, TargetTable

if TYPE_CHECKING:
    from compliance_sync.backends.rest import RestBackend


def pages(
    client: RestClient, table: str, columns: Sequence[str], filters: dict[str, str], keyset: Sequence[str]
) -> Iterator[list[dict[str, Any]]]:
    """Every row, page by page, by keyset on ``keyset`` (a primary key), until an empty page: a server cap
    below the page size truncates nothing. No offsets, no exact counts, no long ``in.(…)`` lists."""
    select = ",".join(dict.fromkeys([*columns, *keyset]))
    order = ",".join(f"{c}.asc" for c in keyset)  # nulls last (postgrest-py adds .nullslast)
    nullable = client.description.nullable(table, keyset) if client.description else set(keyset)
    last: list[Any] | None = None
    progress = Progress(f"reading {table}")
    while True:
        params = {"select": select, "order": order, "limit": str(client.backend.page_size), **filters}
        if last is not None and len(keyset) == 1 and keyset[0] not in nullable and keyset[0] not in filters:
            params[keyset[0]] = f"gt.{last[0]}"  # the usual case: a primary key
        elif last is not None:
            after = _after(keyset, last, nullable)
            if after is None:  # the last row had the greatest possible key
                break
            params = _with_condition(params, after)
        rows = client.get(table, params)
        if not rows:
            break
        progress.add(len(rows))
        last = [rows[-1].get(c) for c in keyset]
        yield rows
    progress.finish()


def _with_condition(params: dict[str, str], condition: str) -> dict[str, str]:
    """``params`` with a logic-tree condition added beside the other filters (never replacing one of them)."""
    if "or" in params:
        return params | {"or": f"(and(or({params['or'][1:-1]}),{condition}))"}
    return params | {"or": f"({condition})"}


def _after(keyset: Sequence[str], last: Sequence[Any], nullable: set[str] = frozenset()) -> str | None:
    """The keyset condition ``(k1, k2, …) > (v1, v2, …)`` in PostgREST's grammar, in the order of
    ``order=k1.asc.nullslast,…`` (a NULL sorts after every value); None when no key can follow."""

    def eq(col: str, value: Any) -> str:
        return f"{col}.is.null" if value is None else f"{col}.eq.{quote(value)}"

    def gt(col: str, value: Any) -> str | None:
        if value is None:
            return None  # nothing sorts after NULL
        return f"or({col}.gt.{quote(value)},{col}.is.null)" if col in nullable else f"{col}.gt.{quote(value)}"

    terms = []
    for i, col in enumerate(keyset):
        after = gt(col, last[i])
        if after is None:
            continue
        eqs = [eq(keyset[j], last[j]) for j in range(i)]
        terms.append(f"and({','.join(eqs + [after])})" if eqs else after)
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else f"or({','.join(terms)})"


def fy_filters(table: str, fy: FiscalYear) -> dict[str, str]:
    """Server-side filters of a source for the FY, as query parameters."""
    years = fy.calendar_years()
    lo, hi = min(fy.start, dt.date(years[0], 1, 1)), max(fy.end, dt.date(years[-1], 12, 31))
    return {
        "account_plans": {"fiscal_year": f"eq.{fy.year}", "or": "(status.is.null,status.neq.archived)"},
        "territory_strategies": {"fiscal_year": f"eq.{fy.year}", "or": "(status.is.null,status.neq.archived)"},
        # a null effective_from is read too: the rules report it (SPEC §4.2)
        "client_segmentation": {
            "or": f"(and(or(effective_from.is.null,effective_from.lte.{fy.end}),"
            f"or(effective_to.is.null,effective_to.gte.{fy.start})))"
        },
        "segmentation_events": {"or": f"(event_date.is.null,and(event_date.gte.{lo},event_date.lte.{hi}))"},
        "segmentation_event_compliance": {"year": f"in.({','.join(map(str, years))})"},
    }.get(table, {})


def _period(row: dict[str, Any]) -> dict[str, Any]:
    """Infinite dates as PostgREST returns them: -infinity starts before any FY, infinity is open like null."""
    row = dict(row)
    if row.get("effective_from") == "-infinity":
        row["effective_from"] = "0001-01-01"
    if row.get("effective_to") == "infinity":
        row["effective_to"] = None
    elif row.get("effective_to") == "-infinity":
        row["effective_to"] = "0001-01-01"
    return row


class Reading:
    """The session's reads (a mixin of :class:`~compliance_sync.backends.rest.RestSession`; ``read_facts``
    starts with the schema check of :class:`~compliance_sync.backends.rest.catalog.SchemaCheck`)."""

    backend: RestBackend
    client: RestClient
    fy: FiscalYear
    as_of: dt.date
    report: schema.SchemaReport | None
    _event_ids: dict | None

    def _keyset(self, table: str) -> list[str]:
        """The primary key from the API description, else the table's natural key (SPEC lists no id for some)."""
        pk = (self.client.description.pks if self.client.description else {}).get(table) or []
        if pk:
            return pk
        if table in SOURCE_BY_NAME:
            return list(SOURCE_BY_NAME[table].keyset)
        target = next(t for t in TARGETS if t.name == table)
        return list(target.key)

    def _pages(self, table: str, columns: Sequence[str], filters: dict[str, str]) -> Iterator[list[dict[str, Any]]]:
        return pages(self.client, table, columns, filters, self._keyset(table))

    def _read(self, table: str, filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
        source = SOURCE_BY_NAME[table]
        return [row for page in self._pages(table, list(source.columns), filters or {}) for row in page]

    def read_facts(self) -> Facts:
        self.report = self.check_schema()
        fy = self.fy
        aggregator = EventAggregator(fy, self.as_of)
        for page in self._pages(EVENTS, list(SOURCE_BY_NAME[EVENTS].columns), fy_filters(EVENTS, fy)):
            aggregator.add(page)
        facts = facts_from_rows(
            fy,
            self.as_of,
            plans=self._read("account_plans", fy_filters("account_plans", fy)),
            periods=[_period(p) for p in self._read("client_segmentation", fy_filters("client_segmentation", fy))],
            tiers=self._read("segmentation_tiers"),
            event_types=self._read("segmentation_event_types"),
            requirements=self._read("tier_event_requirements"),
            strategies=self._read("territory_strategies", fy_filters("territory_strategies", fy)),
            exclusions=self._read(EXCLUSIONS) if self.report.exclusions_exist else None,
            events=aggregator,
            compliance_cache=self._read(
                "segmentation_event_compliance", fy_filters("segmentation_event_compliance", fy)
            ),
            prefiltered=True,
        )
        self._event_ids = facts.event_ids
        facts.event_ids = None  # the session attaches them when it plans, as the direct backend does in SQL
        return facts

    def _current(self, target: TargetTable) -> list[dict[str, Any]]:
        """The FY's rows of a target (read last), with ``has_foreign``; without a unique key (a dry run), with
        ``updated_at`` and ``id`` too, which tell which of a duplicated key's rows the deduplication keeps."""
        foreign = self.report.foreign_columns[target.name]
        columns = list(target.columns) + foreign
        if target.name in self.report.missing_keys:
            described = describe(self.client).relations[target.name].columns
            columns += [c for c in ("updated_at", "id") if c in described and c not in columns]
        rows = [r for page in self._pages(target.name, columns, {"fiscal_year": f"eq.{self.fy.year}"}) for r in page]
        for r in rows:
            r["has_foreign"] = any(r.get(c) is not None for c in foreign)
        return rows

    # --- reading for explain ---------------------------------------------------------------------------------------
    def read_events(self, client_names: Sequence[str]) -> list[RawEvent]:
        if not client_names:
            return []
        filters = {"client_name": f"in.({','.join(quote(n) for n in client_names)})"}
        rows = [r for page in self._pages(EVENTS, list(SOURCE_BY_NAME[EVENTS].columns), filters) for r in page]
        return [
            RawEvent(
                uid(r["id"]),
                r.get("client_name"),
                uid(r.get("event_type_id")),
                as_date(r.get("event_date")),
                r.get("completed"),
            )
            for r in rows
        ]

    def read_rows(self, table: str, column: str | None, values: Sequence[Any]) -> list[dict[str, Any]]:
        target = TARGET_BY_NAME[table]
        filters = {"fiscal_year": f"eq.{self.fy.year}"}
        if column is not None:
            if not values:
                return []
            filters[column] = f"in.({','.join(quote(v) for v in values)})"
        foreign = self.report.foreign_columns[table]
        rows = [r for page in self._pages(table, list(target.columns) + foreign, filters) for r in page]
        for r in rows:
            r["has_foreign"] = any(r.get(c) is not None for c in foreign)
        return rows
