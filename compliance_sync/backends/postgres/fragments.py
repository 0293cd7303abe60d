"""SQL fragments over a target's key and columns, shared by the reads, the plan and the writes.

Pure builders of :mod:`psycopg.sql` pieces (no connection), so the three parts of a session compose the same
joins, orders and casts.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from compliance_sync.domain.tables import INT, UUID, TargetTable


def match(t: TargetTable, a: str, b: str) -> sql.Composable:
    """``a`` and ``b`` hold the same key."""
    return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(a, c), sql.Identifier(b, c)) for c in t.key)


def full_key(t: TargetTable, alias: str) -> sql.Composable:
    """No key column of ``alias`` is null."""
    return sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(alias, c)) for c in t.key)


def has_foreign(columns: Sequence[str], alias: str) -> sql.Composable:
    """True when the row carries a non-null column the job does not own (SPEC §5); ``num_nonnulls``
    takes at most 100 arguments, so long column lists are split."""
    if not columns:
        return sql.SQL("false")
    chunks = [columns[i : i + 90] for i in range(0, len(columns), 90)]
    return sql.SQL("({})").format(
        sql.SQL(" OR ").join(
            sql.SQL("num_nonnulls({}) > 0").format(sql.SQL(", ").join(sql.Identifier(alias, c) for c in chunk))
            for chunk in chunks
        )
    )


def order(t: TargetTable, alias: str) -> sql.Composable:
    """The key order every listing uses: text keys byte-wise (``COLLATE "C"``), integers as numbers."""
    return sql.SQL(", ").join(
        sql.SQL('{}::text COLLATE "C"').format(sql.Identifier(alias, c))
        if t.types[c] != INT
        else sql.Identifier(alias, c)
        for c in t.key
    )


def select(t: TargetTable, alias: str, columns: Sequence[str]) -> sql.Composable:
    """``columns`` of ``alias``, UUIDs as text."""
    return sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(alias, c)) if t.types[c] == UUID else sql.Identifier(alias, c)
        for c in columns
    )
