"""Reading a FY's facts over the direct path, and the rows ``explain`` reads.

The events are aggregated in SQL (counts per client, type and month); the ordered event ids stay in PostgreSQL,
in a temporary table built in the background for the plan to join (see ``docs/backends.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from psycopg import sql

from compliance_sync.backends.postgres import fragments
from compliance_sync.backends.postgres.catalog import CatalogPart
from compliance_sync.backends.postgres.connection import Background
from compliance_sync.domain.facts import (
    CacheRow,
    CalendarCount,
    EventCounts,
    EventType,
    Exclusion,
    Facts,
    Frequency,
    Period,
    Plan,
    RawEvent,
    Strategy,
    Tier,
    UndatedEvent,
)
from compliance_sync.domain.tables import EXCLUSIONS, TARGET_BY_NAME, UUID
from compliance_sync.errors import DataError

log = logging.getLogger(__name__)

MONTH_FIELD = 2**29  # the packed month counts of _event_counts


class ReadPart(CatalogPart):
    """The facts of the session's FY (after the schema check), and explain's reads."""

    def read_facts(self) -> Facts:
        self.report = self.check_schema()
        fy, t = self.fy, self._t
        p = {
            "fy": fy.year,
            "start": fy.start,
            "end": fy.end,
            "as_of": self.as_of,
            "sy": fy.start.year,
            "sm": fy.start.month,
        }
        q = sql.SQL

        plans = self._rows(
            "account_plans",
            q(
                "SELECT id::text, client_id::text, client_name, status::text FROM {} "
                "WHERE fiscal_year = %(fy)s AND status::text IS DISTINCT FROM 'archived'"
            ).format(t("account_plans")),
            p,
        )
        periods = self._rows(
            "client_segmentation",
            q(
                # infinite dates: -infinity starts before any FY, infinity is open like null (SPEC §4.2)
                "SELECT id::text, client_name, tier_id::text, cse_name, client_uuid::text, "
                "CASE WHEN effective_from = '-infinity' THEN date '0001-01-01' ELSE effective_from END, "
                "CASE WHEN effective_to = 'infinity' THEN NULL "
                "WHEN effective_to = '-infinity' THEN date '0001-01-01' ELSE effective_to END "
                "FROM {} WHERE (effective_from <= %(end)s OR effective_from IS NULL) "
                "AND (effective_to IS NULL OR effective_to >= %(start)s)"
            ).format(t("client_segmentation")),
            p,
        )
        tiers = self._rows(
            "segmentation_tiers", q("SELECT id::text, tier_name FROM {}").format(t("segmentation_tiers"))
        )
        types = self._rows(
            "segmentation_event_types",
            q("SELECT id::text, event_name, event_code, is_active FROM {}").format(t("segmentation_event_types")),
        )
        freqs = self._rows(
            "tier_event_requirements",
            q("SELECT tier_id::text, event_type_id::text, frequency FROM {}").format(t("tier_event_requirements")),
        )
        strategies = self._rows(
            "territory_strategies",
            q(
                "SELECT id::text, cse_name, territory, quarter, status::text, "
                "CASE WHEN isfinite(updated_at) IS NOT FALSE THEN updated_at END, "
                "CASE WHEN NOT isfinite(updated_at) THEN updated_at::text END FROM {} "
                "WHERE fiscal_year = %(fy)s AND status::text IS DISTINCT FROM 'archived'"
            ).format(t("territory_strategies")),
            p,
        )
        exclusions = None
        if self.report.exclusions_exist:
            rows = self._rows(
                EXCLUSIONS, q("SELECT client_name, event_type_id::text, reason FROM {}").format(t(EXCLUSIONS))
            )
            exclusions = [Exclusion(*r) for r in rows]
        undated = self._rows(
            "segmentation_events",
            q("SELECT id::text, client_name FROM {} WHERE event_date IS NULL").format(t("segmentation_events")),
        )
        years = fy.calendar_years()
        cache = self._rows(
            "segmentation_event_compliance",
            q("SELECT client_name, event_type_id::text, year, actual_count FROM {} WHERE year = ANY(%(years)s)").format(
                t("segmentation_event_compliance")
            ),
            {"years": years},
        )
        # completed events per calendar year, for the (client, type, year) of the cache's rows (the drift check)
        calendar = (
            self._rows(
                "segmentation_events",
                q(
                    "SELECT e.client_name, e.event_type_id::text, extract(year FROM e.event_date)::int, "
                    "count(*)::int FROM {events} e "
                    "JOIN (SELECT DISTINCT client_name, event_type_id, year FROM {cache} "
                    "WHERE year = ANY(%(years)s)) k "
                    "ON k.client_name = e.client_name AND k.event_type_id = e.event_type_id "
                    "AND e.event_date >= make_date(k.year, 1, 1) AND e.event_date < make_date(k.year + 1, 1, 1) "
                    "WHERE e.completed IS TRUE GROUP BY 1, 2, 3"
                ).format(events=t("segmentation_events"), cache=t("segmentation_event_compliance")),
                {"years": years},
            )
            if cache
            else []
        )
        counts = self._event_counts(p)  # last: it starts the ids' aggregation, which holds the connection
        return Facts(
            fy=fy,
            as_of=self.as_of,
            plans=[Plan(*r) for r in plans],
            periods=[Period(*r) for r in periods],
            tiers=[Tier(*r) for r in tiers],
            event_types=[EventType(*r) for r in types],
            requirements=[Frequency(*r) for r in freqs],
            strategies=[Strategy(*r[:5], r[5] if r[6] is None else r[6]) for r in strategies],  # ±infinity as text
            exclusions=exclusions,
            event_counts=counts,
            undated_events=[UndatedEvent(*r) for r in undated],
            compliance_cache=[CacheRow(*r) for r in cache],
            calendar_completed=[CalendarCount(*r) for r in calendar],
        )

    def _event_counts(self, p: dict[str, Any]) -> list[EventCounts]:
        """The FY's events counted in SQL per (client, type) and FY month, one row per (client, type) with its
        non-empty months packed one bigint each, ``month | completed << 4 | scheduled << 34`` (one int8 array per
        row parses faster than text or three arrays). The row's largest count comes along, so a month too full
        for its field (2**29 events) stops the run instead of being read wrong."""
        month = sql.SQL(
            "(extract(year FROM event_date)::int - %(sy)s) * 12 + extract(month FROM event_date)::int - %(sm)s"
        )
        # sorted aggregation for this statement: the inner groups arrive in the outer ones' order, parallel
        # workers sort the FY's events; two hash aggregations over every month are the slower plan here
        hashagg = self._rows("segmentation_events", "SELECT current_setting('enable_hashagg')")[0][0]
        self._run("counting events", "SELECT set_config('enable_hashagg', 'off', true)")
        rows = self._rows(
            "segmentation_events",
            sql.SQL(
                "SELECT client_name, event_type_id::text, array_agg(m::int8 | (c << 4) | (s << 34)), sum(f)::int, "
                "max(greatest(c, s)) FROM ("
                "  SELECT client_name, event_type_id, {month} AS m,"
                "    count(*) FILTER (WHERE completed IS TRUE AND event_date <= %(as_of)s) AS c,"
                "    count(*) FILTER (WHERE NOT (completed IS TRUE AND event_date <= %(as_of)s)) AS s,"
                "    count(*) FILTER (WHERE completed IS TRUE AND event_date > %(as_of)s) AS f"
                "  FROM {events} WHERE event_date BETWEEN %(start)s AND %(end)s GROUP BY 1, 2, 3) AS per_month "
                "GROUP BY client_name, event_type_id"
            ).format(month=month, events=self._t("segmentation_events")),
            p,
        )
        self._run("counting events", "SELECT set_config('enable_hashagg', %s, true)", (hashagg,))
        if self.read_only:
            return self._unpack(rows)
        # SPEC §4.4's ordered ids of each (client, type), aggregated by PostgreSQL while Python parses and computes
        self._event_ids = Background(
            self,
            "aggregating event ids",
            sql.SQL(
                "CREATE TEMP TABLE cs_event_ids ON COMMIT DROP AS "
                "SELECT client_name, event_type_id, to_jsonb(array_agg(id ORDER BY event_date, id)) AS ids "
                "FROM {events} WHERE event_date BETWEEN %(start)s AND %(end)s AND event_type_id IS NOT NULL "
                "GROUP BY 1, 2"
            ).format(events=self._t("segmentation_events")),
            p,
        )
        return self._unpack(rows)

    @staticmethod
    def _unpack(rows: list[tuple]) -> list[EventCounts]:
        out = []
        for client, type_id, months, future, largest in rows:
            if largest >= MONTH_FIELD:
                raise DataError(
                    f"segmentation_events: {largest} events of client {client!r} and event type {type_id} "
                    f"in one month; this tool counts at most {MONTH_FIELD - 1} per month"
                )
            c, s = [0] * 12, [0] * 12
            for v in months:
                m = v & 15
                c[m] = (v >> 4) & 0x3FFFFFFF
                s[m] = v >> 34
            out.append(EventCounts(client, type_id, tuple(c), tuple(s), future))
        return out

    # --- reading for explain (read-only sessions) ---------------------------------------------------------------
    def read_events(self, client_names: Sequence[str]) -> list[RawEvent]:
        rows = self._rows(
            "segmentation_events",
            sql.SQL(
                "SELECT id::text, client_name, event_type_id::text, event_date, completed FROM {} "
                "WHERE client_name = ANY(%s)"
            ).format(self._t("segmentation_events")),
            (list(client_names),),
        )
        return [RawEvent(*r) for r in rows]

    def read_rows(self, table: str, column: str | None, values: Sequence[Any]) -> list[dict[str, Any]]:
        t = TARGET_BY_NAME[table]
        match = sql.SQL("true")
        if column is not None:
            cast = sql.SQL("::uuid[]" if t.types[column] == UUID else "")
            match = sql.SQL("t.{} = ANY(%(values)s{})").format(sql.Identifier(column), cast)
        columns = list(t.columns)
        rows = self._rows(
            table,
            sql.SQL("SELECT {}, {} FROM {} t WHERE t.fiscal_year = %(fy)s AND {}").format(
                fragments.select(t, "t", columns), self._has_foreign(t, "t"), self._t(table), match
            ),
            {"fy": self.fy.year, "values": list(values)},
        )
        return [dict(zip(columns, r[:-1])) | {"has_foreign": r[-1]} for r in rows]
