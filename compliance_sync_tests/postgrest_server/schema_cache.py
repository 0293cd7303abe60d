"""The schema cache: tables, columns, keys and comments of the exposed schema, read from the catalogs as PostgREST's
``SchemaCache.hs`` reads them, so routing, payload typing and OpenAPI see what PostgREST would."""

from __future__ import annotations

import dataclasses

import psycopg

from .constants import EXPOSED_SCHEMA


@dataclasses.dataclass
class Column:
    name: str
    description: str | None
    nullable: bool
    data_type: str  # format_type without typmod for pg_catalog types (OpenAPI "format")
    nominal_type: str  # format_type with typmod (used to read the JSON payload)
    max_length: int | None
    default: str | None
    enum: list[str]


@dataclasses.dataclass
class Table:
    schema: str
    name: str
    description: str | None
    is_view: bool
    insertable: bool
    updatable: bool
    deletable: bool
    pk_cols: list[str]
    columns: dict[str, Column]


@dataclasses.dataclass
class SchemaCache:
    tables: dict[str, Table]
    fks: dict[tuple[str, str], tuple[str, str]]  # (table, column) -> (foreign table, foreign column), single-column FKs
    schema_description: str | None


_TABLES_SQL = """
SELECT c.oid::bigint, n.nspname, c.relname, d.description,
       c.relkind IN ('v','m') AS is_view,
       (c.relkind IN ('r','p') OR (c.relkind IN ('v','f')
            AND (pg_relation_is_updatable(c.oid::regclass, TRUE) & 8) = 8)),
       (c.relkind IN ('r','p') OR (c.relkind IN ('v','f')
            AND (pg_relation_is_updatable(c.oid::regclass, TRUE) & 4) = 4)),
       (c.relkind IN ('r','p') OR (c.relkind IN ('v','f')
            AND (pg_relation_is_updatable(c.oid::regclass, TRUE) & 16) = 16)),
       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attname)
                 FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (k.conkey)
                 WHERE k.conrelid = c.oid AND k.contype = 'p' AND NOT a.attisdropped), '{}')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_description d ON d.objoid = c.oid AND d.objsubid = 0 AND d.classoid = 'pg_class'::regclass
WHERE c.relkind IN ('v','r','m','f','p') AND n.nspname = %(schema)s AND NOT c.relispartition
ORDER BY c.relname
"""

_COLUMNS_SQL = """
SELECT a.attrelid::bigint, a.attname::text, d.description,
       CASE
         WHEN t.typbasetype != 0 AND ad.adbin IS NULL THEN pg_get_expr(t.typdefaultbin, 0)
         WHEN a.attidentity = 'd' THEN format('nextval(%%L)',
              pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname))
         WHEN a.attgenerated = 's' THEN NULL
         ELSE pg_get_expr(ad.adbin, ad.adrelid)::text
       END AS column_default,
       NOT (a.attnotnull OR (t.typtype = 'd' AND t.typnotnull)) AS is_nullable,
       CASE
         WHEN t.typtype = 'd' THEN
           CASE WHEN bt.typnamespace = 'pg_catalog'::regnamespace THEN format_type(bt.oid, NULL::integer)
                ELSE format_type(a.atttypid, a.atttypmod) END
         ELSE
           CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN format_type(a.atttypid, NULL::integer)
                ELSE format_type(a.atttypid, a.atttypmod) END
       END::text AS data_type,
       format_type(a.atttypid, a.atttypmod)::text AS nominal_data_type,
       information_schema._pg_char_max_length(information_schema._pg_truetypid(a.*, t.*),
                                              information_schema._pg_truetypmod(a.*, t.*))::integer,
       coalesce((SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e
                 WHERE e.enumtypid = coalesce(bt.oid, t.oid)), '{}')
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
LEFT JOIN pg_description d ON d.objoid = a.attrelid AND d.objsubid = a.attnum AND d.classoid = 'pg_class'::regclass
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('v','r','m','f','p') AND n.nspname = %(schema)s
ORDER BY a.attrelid, a.attnum
"""

_FKS_SQL = """
SELECT c.relname::text, a.attname::text, fc.relname::text, fa.attname::text
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class fc ON fc.oid = k.confrelid
JOIN pg_namespace fn ON fn.oid = fc.relnamespace
JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
JOIN pg_attribute fa ON fa.attrelid = k.confrelid AND fa.attnum = k.confkey[1]
WHERE k.contype = 'f' AND cardinality(k.conkey) = 1 AND n.nspname = %(schema)s AND fn.nspname = %(schema)s
ORDER BY c.relname, a.attname, k.conname
"""


def load_schema_cache(conn: psycopg.Connection, schema: str = EXPOSED_SCHEMA) -> SchemaCache:
    params = {"schema": schema}
    with conn.cursor() as cur:
        cur.execute(_TABLES_SQL, params)
        by_oid: dict[int, Table] = {}
        for oid, nsp, name, desc, is_view, ins, upd, dele, pks in cur.fetchall():
            by_oid[oid] = Table(nsp, name, desc, is_view, ins, upd, dele, list(pks), {})
        cur.execute(_COLUMNS_SQL, params)
        for relid, name, desc, default, nullable, data_type, nominal, max_len, enum in cur.fetchall():
            tbl = by_oid.get(relid)
            if tbl is not None:
                tbl.columns[name] = Column(name, desc, nullable, data_type, nominal, max_len, default, list(enum))
        cur.execute(_FKS_SQL, params)
        fks: dict[tuple[str, str], tuple[str, str]] = {}
        for tname, col, ftname, fcol in cur.fetchall():
            fks.setdefault((tname, col), (ftname, fcol))
        cur.execute("SELECT pg_catalog.obj_description(%(schema)s::regnamespace, 'pg_namespace')", params)
        row = cur.fetchone()
    conn.rollback()
    return SchemaCache({t.name: t for t in by_oid.values()}, fks, row[0] if row else None)
