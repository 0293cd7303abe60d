"""Migrations (SPEC §3): the full schema for local use and demos, the minimal one for Supabase.

- :func:`apply_full` runs ``migrations/full.sql``: every table of §3 with realistic extra columns, the
  four target keys as unique indexes, the run ledger. It refuses a database whose §3 tables already
  hold rows unless forced (§7 "Safety rails"): it is for empty databases, not for production.
- :func:`apply_minimal` is what an existing Supabase database needs (§3.3): a unique index behind each
  of the four target keys (recognised by its columns, whatever its name), the run ledger, and a
  ``NOTIFY pgrst, 'reload schema'``. Duplicate keys stop it, unless asked to deduplicate.
- :func:`find_key_index` tells whether a unique index backs a set of columns; the schema check reuses it.

Both migrations take a psycopg 3 connection, run in one transaction (commit at the end, rollback on any
error, so a refusal changes nothing), serialise against each other with a transaction-level advisory
lock, and return human-readable log lines. Both are idempotent.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from compliance_sync.model import SOURCES, TARGETS, DataError, TargetTable

SCHEMA = "public"
MIGRATIONS_DIR = pathlib.Path(__file__).with_name("migrations")
FULL_SQL = MIGRATIONS_DIR / "full.sql"
MINIMAL_SQL = MIGRATIONS_DIR / "minimal.sql"

# The tables of SPEC §3.1 and §3.2 (the ones the safety rails protect). The ledger (§3.4) is not among
# them: it is the job's own bookkeeping and every statement that touches it is idempotent.
SOURCE_TABLES: tuple[str, ...] = tuple(s.name for s in SOURCES)
TARGET_TABLES: tuple[str, ...] = tuple(t.name for t in TARGETS)
SECTION3_TABLES: tuple[str, ...] = SOURCE_TABLES + TARGET_TABLES

LEDGER_TABLE = "compliance_sync_runs"
# Columns of the run ledger, in table order. `id` is a bigserial (the latest run of a FY is the row with
# the greatest started_at); `mode` is 'live' or 'dry_run', `status` 'succeeded' or 'failed'.
LEDGER_COLUMNS: tuple[str, ...] = (
    "id",
    "fiscal_year",
    "as_of",
    "started_at",
    "finished_at",
    "backend",
    "mode",
    "status",
    "clients_processed",
    "clients_skipped",
    "rows_inserted",
    "rows_updated",
    "rows_deleted",
    "rows_unchanged",
    "orphans",
    "territories",
    "business_units",
    "error",
)

KEY_INDEX_SUFFIX = "_compliance_sync_key"
MAX_LISTED = 20  # duplicate keys listed per table in a refusal
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('compliance_sync'), hashtext('migrate'))"

T = TypeVar("T")


def key_index_name(table: str) -> str:
    """The name the migrations give the unique index behind a target key."""
    return f"{table}{KEY_INDEX_SUFFIX}"


# --- small catalog helpers (also used by demo.py) ----------------------------------------------------


def existing_tables(conn: psycopg.Connection, tables: Iterable[str], schema: str = SCHEMA) -> list[str]:
    """Those of ``tables`` that exist (as tables, views, ...) in ``schema``, in the given order."""
    names = list(tables)
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
        """,
        (schema, names),
    ).fetchall()
    found = {r[0] for r in rows}
    return [t for t in names if t in found]


def table_columns(conn: psycopg.Connection, table: str, schema: str = SCHEMA) -> list[str]:
    rows = conn.execute(
        """
        SELECT a.attname FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (schema, table),
    ).fetchall()
    return [r[0] for r in rows]


def row_counts(conn: psycopg.Connection, tables: Iterable[str], schema: str = SCHEMA) -> dict[str, int]:
    """Exact row counts of the given tables that exist (missing tables are left out)."""
    counts: dict[str, int] = {}
    for table in existing_tables(conn, tables, schema):
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        counts[table] = conn.execute(query).fetchone()[0]
    return counts


def populated_tables(conn: psycopg.Connection, tables: Iterable[str] = SECTION3_TABLES) -> dict[str, int]:
    """The tables (of §3 by default) that exist and hold rows, with their row counts."""
    return {t: n for t, n in row_counts(conn, tables).items() if n > 0}


def describe_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{t} ({n:,} row{'s' if n != 1 else ''})" for t, n in counts.items())


def find_key_index(
    conn: psycopg.Connection, table: str, columns: Sequence[str], schema: str = SCHEMA
) -> str | None:
    """The name of a unique index of ``schema.table`` on exactly ``columns`` (in any order), else None.

    Counts: a primary key, a unique constraint or a plain unique index, whatever its name, including one
    with INCLUDE columns. Does not count: a partial index (WHERE ...), an index on expressions, an invalid
    index (a failed CREATE INDEX CONCURRENTLY), a deferrable constraint (none of these can back
    ``INSERT ... ON CONFLICT (columns)``), or an index on a different column set. When several qualify,
    the primary key comes first, then the smallest name.
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


def key_indexes(conn: psycopg.Connection) -> dict[str, str | None]:
    """For each target table: the unique index backing its key (SPEC §3.3), or None when there is none."""
    return {t.name: find_key_index(conn, t.name, t.key) for t in TARGETS}


# --- transactions ------------------------------------------------------------------------------------


def _in_transaction(conn: psycopg.Connection, work: Callable[[], T]) -> T:
    """Run ``work`` in one transaction: commit when it returns, roll back when it raises."""
    if conn.autocommit:
        with conn.transaction():
            return work()
    try:
        result = work()
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return result


# --- the full migration ------------------------------------------------------------------------------


def apply_full(conn: psycopg.Connection, force: bool = False) -> list[str]:
    """Create the whole schema of SPEC §3 (idempotent) and commit. Returns log lines.

    Refuses with :class:`DataError` when a §3 table that already exists holds rows, unless ``force``
    (with ``force``, existing tables and rows are left as they are; only what is missing is created).
    """

    def work() -> list[str]:
        conn.execute(_LOCK_SQL)
        before = set(existing_tables(conn, SECTION3_TABLES + (LEDGER_TABLE,)))
        populated = populated_tables(conn)
        log: list[str] = []
        if populated:
            if not force:
                raise DataError(
                    "refusing the full migration: these tables already hold rows: "
                    f"{describe_counts(populated)}. The full migration is meant for an empty database "
                    "(local use, demos); on an existing database use `compliance-sync migrate --minimal`. "
                    "Run with --force to apply it anyway (it only creates what is missing and never "
                    "deletes rows)."
                )
            log.append(f"--force: tables already holding rows: {describe_counts(populated)}")
        try:
            conn.execute(FULL_SQL.read_text(encoding="utf-8"))
            conn.execute(MINIMAL_SQL.read_text(encoding="utf-8"))  # the ledger and the PostgREST reload
        except (psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
            # only reachable with --force on tables of another shape (or with duplicate keys)
            detail = " ".join(x for x in (exc.diag.message_primary, exc.diag.message_detail) if x) or str(exc)
            raise DataError(
                f"full migration failed on the existing tables: {detail}. For an existing database use "
                "`compliance-sync migrate --minimal` (with --dedupe for duplicate keys)."
            ) from exc
        created = [t for t in SECTION3_TABLES + (LEDGER_TABLE,) if t not in before]
        kept = [t for t in SECTION3_TABLES + (LEDGER_TABLE,) if t in before]
        if created:
            log.append(f"created {len(created)} table(s): {', '.join(created)}")
        if kept:
            log.append(f"already present, left as they are: {', '.join(kept)}")
        for table, index in key_indexes(conn).items():
            if index is None:  # an existing table without the key columns' index and a foreign name taken
                raise DataError(f"{table}: no unique index backs its key after the full migration")
        log.append("full migration applied (schema public); PostgREST asked to reload its schema")
        return log

    return _in_transaction(conn, work)


# --- the minimal migration ---------------------------------------------------------------------------


def _key_text(target: TargetTable) -> str:
    return f"({', '.join(target.key)})"


def _duplicate_keys(conn: psycopg.Connection, target: TargetTable) -> tuple[int, int, list[tuple[Any, ...]]]:
    """(number of duplicated keys, surplus rows, up to MAX_LISTED examples as key values + count).

    Rows with a NULL key column are not duplicates: a unique index accepts them (NULLs are distinct).
    """
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in target.key)
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in target.key)
    grouped = sql.SQL("SELECT {keys}, count(*) AS n FROM {table} WHERE {not_null} GROUP BY {keys} HAVING count(*) > 1").format(
        keys=keys, table=sql.Identifier(SCHEMA, target.name), not_null=not_null
    )
    total_keys, surplus = conn.execute(
        sql.SQL("SELECT count(*), coalesce(sum(n - 1), 0) FROM ({}) AS d").format(grouped)
    ).fetchone()
    examples: list[tuple[Any, ...]] = []
    if total_keys:
        examples = [
            tuple(r)
            for r in conn.execute(
                sql.SQL("{} ORDER BY n DESC, {} LIMIT {}").format(grouped, keys, sql.Literal(MAX_LISTED))
            ).fetchall()
        ]
    return int(total_keys), int(surplus), examples


def _format_key(target: TargetTable, values: Sequence[Any]) -> str:
    return ", ".join(f"{c}={v}" for c, v in zip(target.key, values))


def _dedupe(conn: psycopg.Connection, target: TargetTable, columns: list[str]) -> list[str]:
    """Keep, per duplicated key, the row with the latest updated_at (NULL oldest; ties: greatest id,
    then greatest ctid); delete the others. Returns log lines naming what was deleted."""
    order: list[sql.Composable] = []
    if "updated_at" in columns:
        order.append(sql.SQL("updated_at DESC NULLS LAST"))
    if "id" in columns and "id" not in target.key:
        order.append(sql.SQL("id DESC NULLS LAST"))
    order.append(sql.SQL("ctid DESC"))
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in target.key)
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in target.key)
    returning = sql.SQL(", ").join(
        [sql.SQL("d.{}").format(sql.Identifier(c)) for c in target.key]
        + ([sql.SQL("d.id::text")] if "id" in columns and "id" not in target.key else [sql.SQL("d.ctid::text")])
    )
    query = sql.SQL(
        """
        DELETE FROM {table} AS d
        USING (
            SELECT ctid AS row_ctid,
                   row_number() OVER (PARTITION BY {keys} ORDER BY {order}) AS rn
            FROM {table}
            WHERE {not_null}
        ) AS r
        WHERE d.ctid = r.row_ctid AND r.rn > 1
        RETURNING {returning}
        """
    ).format(
        table=sql.Identifier(SCHEMA, target.name),
        keys=keys,
        order=sql.SQL(", ").join(order),
        not_null=not_null,
        returning=returning,
    )
    deleted = conn.execute(query).fetchall()
    label = "id" if "id" in columns and "id" not in target.key else "ctid"
    log = [f"{target.name}: --dedupe deleted {len(deleted)} duplicate row(s), keeping per key the latest updated_at"]
    for row in deleted[:MAX_LISTED]:
        log.append(f"  deleted {label} {row[-1]} ({_format_key(target, row[:-1])})")
    if len(deleted) > MAX_LISTED:
        log.append(f"  ... and {len(deleted) - MAX_LISTED} more")
    return log


def apply_minimal(conn: psycopg.Connection, dedupe: bool = False) -> list[str]:
    """Back the four target keys with unique indexes, add the run ledger, reload PostgREST; commit.

    For each target whose key has no unique index (see :func:`find_key_index`): duplicate keys stop the
    migration with a :class:`DataError` listing them (nothing is changed), unless ``dedupe``, which keeps
    the row with the latest ``updated_at`` per key and deletes the others; then
    ``CREATE UNIQUE INDEX IF NOT EXISTS <table>_compliance_sync_key``. A missing target table or key
    column is a :class:`DataError`. Idempotent. Returns log lines.
    """

    def work() -> list[str]:
        conn.execute(_LOCK_SQL)
        log: list[str] = []
        missing = [t.name for t in TARGETS if t.name not in existing_tables(conn, [t.name])]
        if missing:
            raise DataError(
                f"minimal migration: target table(s) missing in schema {SCHEMA}: {', '.join(missing)}. "
                "The minimal migration only adds indexes and the run ledger to existing planning tables; "
                "create the tables first (for a local or demo database: `compliance-sync migrate`)."
            )
        columns: dict[str, list[str]] = {}
        for target in TARGETS:
            columns[target.name] = table_columns(conn, target.name)
            absent = [c for c in target.key if c not in columns[target.name]]
            if absent:
                raise DataError(f"minimal migration: {target.name} has no column {', '.join(absent)} (key {_key_text(target)})")

        to_create: list[tuple[TargetTable, int]] = []
        problems: list[str] = []
        for target in TARGETS:
            index = find_key_index(conn, target.name, target.key)
            if index is not None:
                log.append(f"{target.name}: key {_key_text(target)} already backed by unique index {index}")
                continue
            # Block writers (readers go on) until the index exists, so no duplicate sneaks in meanwhile.
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(SCHEMA, target.name)))
            n_keys, surplus, examples = _duplicate_keys(conn, target)
            if n_keys and not dedupe:
                lines = [f"{target.name} {_key_text(target)}: {n_keys:,} duplicated key(s), {surplus:,} surplus row(s)"]
                lines += [f"    {_format_key(target, ex[:-1])}: {ex[-1]} rows" for ex in examples]
                if n_keys > len(examples):
                    lines.append(f"    ... and {n_keys - len(examples):,} more duplicated key(s)")
                problems.append("\n".join(lines))
            to_create.append((target, n_keys))

        if problems:
            raise DataError(
                "minimal migration stopped: duplicate keys prevent the unique indexes (nothing was changed):\n  "
                + "\n  ".join(problems)
                + "\nResolve them by hand, or run `compliance-sync migrate --minimal --dedupe` to keep, per key, "
                "the row with the latest updated_at and delete the others."
            )

        for target, n_keys in to_create:
            if n_keys:
                log += _dedupe(conn, target, columns[target.name])
            name = key_index_name(target.name)
            conn.execute(
                sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    sql.Identifier(name),
                    sql.Identifier(SCHEMA, target.name),
                    sql.SQL(", ").join(sql.Identifier(c) for c in target.key),
                )
            )
            if find_key_index(conn, target.name, target.key) is None:
                raise DataError(
                    f"minimal migration: {target.name}: an index named {name} already exists but does not "
                    f"back the key {_key_text(target)}; drop or rename it and run again"
                )
            log.append(f"{target.name}: created unique index {name} on {_key_text(target)}")

        ledger_existed = bool(existing_tables(conn, [LEDGER_TABLE]))
        conn.execute(MINIMAL_SQL.read_text(encoding="utf-8"))
        log.append(f"{LEDGER_TABLE}: {'already present' if ledger_existed else 'created'}")
        log.append("NOTIFY pgrst, 'reload schema' sent (delivered at commit)")
        return log

    return _in_transaction(conn, work)
