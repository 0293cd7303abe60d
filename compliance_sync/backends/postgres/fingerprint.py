"""The change sensor's fingerprint of a FY's sources: one count and one order-independent hash sum per table.

Computed in PostgreSQL over the rows the FY reads, so a tick transfers a few numbers, not the rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from psycopg import sql

from compliance_sync.backends.postgres.connection import connect
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.tables import SOURCES

# the rows of each source a FY depends on (a table not named here counts whole)
WHERE = {
    "account_plans": "fiscal_year = %(fy)s",
    "territory_strategies": "fiscal_year = %(fy)s",
    "client_segmentation": (
        "(effective_from <= %(end)s OR effective_from IS NULL) AND (effective_to IS NULL OR effective_to >= %(start)s)"
    ),
    "segmentation_events": (
        "event_date IS NULL OR event_date BETWEEN least(%(start)s, %(from)s) AND greatest(%(end)s, %(to)s)"
    ),
    "segmentation_event_compliance": "year = ANY(ARRAY[%(y0)s, %(y1)s])",
}


def sources_fingerprint(dsn: str, fy: FiscalYear, schema_name: str) -> str:
    """A hash over the FY's rows of every source (order-independent sums of row hashes, and counts)."""
    with connect(dsn) as conn:
        parts = [conn.execute(q, p).fetchone() for q, p in fingerprint_queries(fy, schema_name)]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def fingerprint_queries(fy: FiscalYear, schema_name: str) -> list[tuple[sql.Composable, dict]]:
    years = fy.calendar_years()
    p = {
        "fy": fy.year,
        "start": fy.start,
        "end": fy.end,
        "from": dt.date(years[0], 1, 1),
        "to": dt.date(years[-1], 12, 31),
    }
    p |= {"y0": years[0], "y1": years[-1]}
    out = []
    for s in SOURCES:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in s.columns)
        query = sql.SQL(
            "SELECT count(*), coalesce(sum(hashtextextended(row({cols})::text, 0)), 0) FROM {t} WHERE {w}"
        ).format(cols=cols, t=sql.Identifier(schema_name, s.name), w=sql.SQL(WHERE.get(s.name, "true")))
        out.append((query, p))
    return out
