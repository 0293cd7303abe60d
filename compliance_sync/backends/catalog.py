"""What PostgreSQL's catalog says about the tables of SPEC §3: one home for the catalog queries that the
schema check, the migrations and the demo loader share (psycopg 3 connections)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql

from compliance_sync.domain.tables import BOOL, DATE, INT, JSONB, NUMERIC, TEXT, TIMESTAMPTZ, UUID, Kind

SCHEMA = "public"
RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}
WRITABLE = ("r", "p")


@dataclasses.dataclass(frozen=True)
class Column:
    base: str  # pg_type name of the column's type after resolving domains ('enum' for any enum)
    shown: str  # format_type of that base type with the effective typmod, e.g. numeric(5,2)
    not_null: bool


@dataclasses.dataclass(frozen=True)
class Relation:
    name: str
    kind: str  # pg_class.relkind
    columns: dict[str, Column]

    @property
    def kind_name(self) -> str:
        return RELKINDS.get(self.kind, self.kind)


def relations(conn: psycopg.Connection, names: Iterable[str], schema: str = SCHEMA) -> dict[str, Relation]:
    """The named relations that exist in ``schema``, with their columns (domains resolved to base types)."""
    rows = conn.execute(
        """
        SELECT c.relname::text, c.relkind::text, a.attname::text,
               CASE WHEN bt.typtype = 'e' THEN 'enum' ELSE bt.typname::text END,
               format_type(bt.oid, CASE WHEN a.atttypmod <> -1 THEN a.atttypmod ELSE t.typtypmod END),
               a.attnotnull
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
         WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
         ORDER BY c.relname, a.attnum
        """,
        (schema, list(names)),
    ).fetchall()
    found: dict[str, Relation] = {}
    for table, kind, column, base, shown, not_null in rows:
        rel = found.setdefault(table, Relation(table, kind, {}))
        if column is not None:
            rel.columns[column] = Column(base, shown, bool(not_null))
    return found


def existing_tables(conn: psycopg.Connection, tables: Iterable[str], schema: str = SCHEMA) -> list[str]:
    """Those of ``tables`` that exist (as tables, views, ...) in ``schema``, in the given order."""
    names = list(tables)
    found = set(relations(conn, names, schema))
    return [t for t in names if t in found]


def table_columns(conn: psycopg.Connection, table: str, schema: str = SCHEMA) -> list[str]:
    rel = relations(conn, [table], schema).get(table)
    return list(rel.columns) if rel else []


def row_counts(conn: psycopg.Connection, tables: Iterable[str], schema: str = SCHEMA) -> dict[str, int]:
    """Exact row counts of the given tables that exist (missing tables are left out)."""
    return {
        table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()[0]
        for table in existing_tables(conn, tables, schema)
    }


def find_key_index(conn: psycopg.Connection, table: str, columns: Sequence[str], schema: str = SCHEMA) -> str | None:
    """The name of a unique index of ``schema.table`` on exactly ``columns`` (in any order), else None.

    Counts: a primary key, a unique constraint or a plain unique index, whatever its name, including one
    with INCLUDE columns. Does not count: a partial index, an index on expressions, an invalid index, a
    deferrable constraint (none of these can back ``INSERT ... ON CONFLICT (columns)``), or an index on a
    different column set. When several qualify, the primary key comes first, then the smallest name.
    """
    row = conn.execute(
        """
        SELECT i.relname
        FROM pg_index x
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        JOIN pg_class i ON i.oid = x.indexrelid
        WHERE n.nspname = %s AND t.relname = %s
          AND x.indisunique AND x.indisvalid AND x.indimmediate
          AND x.indpred IS NULL AND x.indexprs IS NULL
          AND x.indnkeyatts = cardinality(%s::text[])
          AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
               FROM unnest((x.indkey::int2[])[0:x.indnkeyatts - 1]) AS k(attnum)
               JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum)
              = (SELECT array_agg(c ORDER BY c) FROM unnest(%s::text[]) AS u(c))
        ORDER BY x.indisprimary DESC, i.relname
        LIMIT 1
        """,
        (schema, table, list(columns), list(columns)),
    ).fetchone()
    return row[0] if row else None


def rls_hidden(conn: psycopg.Connection, names: Iterable[str], schema: str = SCHEMA) -> list[str]:
    """Tables with row-level security that the connection's role neither owns (without FORCE) nor bypasses
    (superuser or BYPASSRLS): a read of them returns only the rows a policy lets the role see."""
    rows = conn.execute(
        """
        SELECT c.relname::text
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relrowsecurity
           AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
           AND NOT (pg_has_role(current_user, c.relowner, 'USAGE') AND NOT c.relforcerowsecurity)
         ORDER BY 1
        """,
        (schema, list(names)),
    ).fetchall()
    return [r[0] for r in rows]


# --- which column types hold what the job reads and writes ---------------------------------------------------
READABLE: dict[Kind, frozenset[str]] = {
    UUID: frozenset({"uuid"}),
    TEXT: frozenset({"text", "varchar", "bpchar", "enum"}),
    INT: frozenset({"int2", "int4", "int8"}),
    BOOL: frozenset({"bool"}),
    DATE: frozenset({"date"}),
    NUMERIC: frozenset({"numeric", "int2", "int4", "int8"}),
    JSONB: frozenset({"jsonb"}),
    TIMESTAMPTZ: frozenset({"timestamptz", "timestamp"}),
}
EXPECTED = {
    UUID: "uuid",
    TEXT: "text",
    INT: "integer or bigint",
    BOOL: "boolean",
    DATE: "date",
    NUMERIC: "numeric (unconstrained, or with at least 3 integer digits and 2 decimals, e.g. numeric(5,2))",
    JSONB: "jsonb",
    TIMESTAMPTZ: "timestamp with time zone",
}
_NUMERIC = re.compile(r"numeric\((\d+),(-?\d+)\)")
_VARCHAR = re.compile(r"character varying\((\d+)\)")


def varchar_limit(column: Column) -> int | None:
    m = _VARCHAR.fullmatch(column.shown)
    return int(m.group(1)) if m else None


def read_problem(kind: Kind, column: Column) -> str | None:
    """Why a source column cannot be read as ``kind`` (no coercion: numbers stored as text are refused)."""
    return (
        None if column.base in READABLE[kind] else f"has type {column.shown}, expected {EXPECTED[kind]} (no coercion)"
    )


def write_problem(kind: Kind, column: Column) -> str | None:
    """Why a target column cannot hold every value the job writes exactly (SPEC §6), or None."""
    base = column.base
    if kind == TEXT:
        if base == "bpchar":
            return f"has type {column.shown}, which pads values with spaces; expected text or varchar"
        ok = base in ("text", "varchar")
    elif kind == INT:
        if base == "int2":
            return "has type smallint, too small for the job's counts; expected integer or bigint"
        ok = base in ("int4", "int8")
    elif kind == NUMERIC:
        m = _NUMERIC.fullmatch(column.shown)
        if base == "numeric" and m and (int(m.group(2)) < 2 or int(m.group(1)) - int(m.group(2)) < 3):
            return (
                f"has type {column.shown}, which cannot hold every percentage (0.00 … 200.00) exactly; "
                f"expected {EXPECTED[NUMERIC]}"
            )
        ok = base == "numeric"
    elif kind == TIMESTAMPTZ:
        ok = base == "timestamptz"
    else:
        ok = base == {UUID: "uuid", DATE: "date", JSONB: "jsonb", BOOL: "bool"}[kind]
    return None if ok else f"has type {column.shown}, expected {EXPECTED[kind]} (no coercion)"
