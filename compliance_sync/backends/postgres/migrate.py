"""Migrations (SPEC §3, §3.3): :func:`apply_full` for empty local and demo databases, :func:`apply_minimal` for an
existing Supabase database (the four target keys as unique indexes, the run ledger), :func:`minimal_sql_script`
(the minimal one as a script, for a database reached over REST). Both ``apply_*`` run in one transaction behind
an advisory lock and are idempotent; the SQL lives in ``compliance_sync/migrations/``. See ``docs/backends.md``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from compliance_sync.backends.catalog import (
    SCHEMA,
    WRITABLE,
    existing_tables,
    find_key_index,
    relations,
    row_counts,
    table_columns,
)
from compliance_sync.domain.tables import LEDGER_TABLE, SECTION3_TABLES, TARGETS, TargetTable
from compliance_sync.errors import DataError

MIGRATIONS_DIR = pathlib.Path(__file__).parents[2] / "migrations"  # compliance_sync/migrations
FULL_SQL = MIGRATIONS_DIR / "full.sql"
MINIMAL_SQL = MIGRATIONS_DIR / "minimal.sql"
KEY_INDEX_SUFFIX = "_compliance_sync_key"
MAX_LISTED = 20  # duplicate keys listed per table in a refusal
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('compliance_sync'), hashtext('migrate'))"


def key_index_name(table: str) -> str:
    """The name the migrations give the unique index behind a target key."""
    return f"{table}{KEY_INDEX_SUFFIX}"


def populated_tables(conn: psycopg.Connection, tables: Iterable[str] = SECTION3_TABLES) -> dict[str, int]:
    """The tables (of §3 by default) that exist and hold rows, with their row counts."""
    return {t: n for t, n in row_counts(conn, tables).items() if n > 0}


def describe_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{t} ({n:,} row{'s' if n != 1 else ''})" for t, n in counts.items())


def key_indexes(conn: psycopg.Connection) -> dict[str, str | None]:
    """For each target table: the unique index backing its key (SPEC §3.3), or None when there is none."""
    return {t.name: find_key_index(conn, t.name, t.key) for t in TARGETS}


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

    with conn.transaction():
        return work()


# --- the minimal migration ---------------------------------------------------------------------------


def _key_text(target: TargetTable) -> str:
    return f"({', '.join(target.key)})"


def _duplicate_keys(conn: psycopg.Connection, target: TargetTable) -> tuple[int, int, list[tuple[Any, ...]]]:
    """(number of duplicated keys, surplus rows, up to MAX_LISTED examples as key values + count).

    Rows with a NULL key column are not duplicates: a unique index accepts them (NULLs are distinct).
    """
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in target.key)
    not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in target.key)
    grouped = sql.SQL(
        "SELECT {keys}, count(*) AS n FROM {table} WHERE {not_null} GROUP BY {keys} HAVING count(*) > 1"
    ).format(keys=keys, table=sql.Identifier(SCHEMA, target.name), not_null=not_null)
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

    with conn.transaction():
        conn.execute(_LOCK_SQL)
        columns = _check_targets(conn)
        log, to_create = _indexes_to_create(conn, dedupe)
        log += _create_indexes(conn, to_create, columns)
        ledger_existed = bool(existing_tables(conn, [LEDGER_TABLE]))
        conn.execute(MINIMAL_SQL.read_text(encoding="utf-8"))
        log.append(f"{LEDGER_TABLE}: {'already present' if ledger_existed else 'created'}")
        log.append("NOTIFY pgrst, 'reload schema' sent (delivered at commit)")
        return log


def _check_targets(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Every target exists, is a table and has its key columns; returns each target's columns."""
    missing = [t.name for t in TARGETS if t.name not in existing_tables(conn, [t.name])]
    if missing:
        raise DataError(
            f"minimal migration: target table(s) missing in schema {SCHEMA}: {', '.join(missing)}. "
            "The minimal migration only adds indexes and the run ledger to existing planning tables; "
            "create the tables first (for a local or demo database: `compliance-sync migrate`)."
        )
    rels = relations(conn, [t.name for t in TARGETS])
    not_tables = [f"{name} is a {rel.kind_name}" for name, rel in rels.items() if rel.kind not in WRITABLE]
    if not_tables:
        raise DataError(
            f"minimal migration: {'; '.join(not_tables)}, not a table: a unique index can only be created on a "
            "table, and the job writes tables. Replace it with a table of the same columns (the full "
            "migration's definition is in compliance_sync/migrations/full.sql), then run the minimal migration again."
        )
    columns: dict[str, list[str]] = {}
    for target in TARGETS:
        columns[target.name] = table_columns(conn, target.name)
        absent = [c for c in target.key if c not in columns[target.name]]
        if absent:
            raise DataError(
                f"minimal migration: {target.name} has no column {', '.join(absent)} (key {_key_text(target)})"
            )
    return columns


def _indexes_to_create(conn: psycopg.Connection, dedupe: bool) -> tuple[list[str], list[tuple[TargetTable, int]]]:
    """The targets whose key has no unique index yet, with their number of duplicated keys (locked against
    writers until the index exists); duplicates without ``dedupe`` stop the migration, listing them."""
    log: list[str] = []
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
    return log, to_create


def _create_indexes(
    conn: psycopg.Connection, to_create: list[tuple[TargetTable, int]], columns: dict[str, list[str]]
) -> list[str]:
    log: list[str] = []
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
    return log


# --- the minimal migration as a script, for Supabase's SQL editor (REST-only users) ---------------------------


def minimal_sql_script(dedupe: bool = False) -> str:
    """What :func:`apply_minimal` does, as one SQL script to paste into Supabase's SQL editor: each key gets a
    unique index unless one already backs it (whatever its name), then the ledger and the PostgREST reload.
    Duplicate keys make the script stop with PostgreSQL's unique-violation error, naming the key; the
    commented query under each block lists them. With ``dedupe``, the script first deletes them as
    ``apply_minimal(dedupe=True)`` does (per key the latest updated_at, then greatest id, then ctid, is kept)."""
    flags = "--minimal --dedupe --print-sql" if dedupe else "--minimal --print-sql"
    parts = [
        "-- compliance_sync: the minimal migration (SPEC §3.3, §3.4), for Supabase's SQL editor.",
        f"-- Generated by `compliance-sync migrate {flags}`. Idempotent: run it again at will.",
        "BEGIN;",
    ]
    for t in TARGETS:
        cols = ", ".join(t.key)
        where = " AND ".join(f"{c} IS NOT NULL" for c in t.key)
        removal = (
            [
                # the kept row's order, as _dedupe's: updated_at and id when the table has them, then ctid
                "        SELECT string_agg(quote_ident(column_name::text) || ' DESC NULLS LAST, ', ''"
                " ORDER BY column_name DESC) INTO keep_order",
                f"          FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '{t.name}'",
                "           AND column_name IN ('updated_at', 'id');",
                f"        EXECUTE 'DELETE FROM public.{t.name} d USING (SELECT ctid AS row_ctid, "
                f"row_number() OVER (PARTITION BY {cols} ORDER BY '",
                f"            || coalesce(keep_order, '') || 'ctid DESC) AS rn FROM public.{t.name} WHERE {where}) r "
                "WHERE d.ctid = r.row_ctid AND r.rn > 1';",
                "        GET DIAGNOSTICS removed = ROW_COUNT;",
                f"        RAISE NOTICE '{t.name}: --dedupe deleted % duplicate row(s), "
                "keeping per key the latest updated_at', removed;",
            ]
            if dedupe
            else []
        )
        parts += [
            f"-- {t.name} ({cols}); duplicates{' (deleted below)' if dedupe else ', if the index fails'}:",
            f"--   SELECT {cols}, count(*) FROM public.{t.name} WHERE {where} GROUP BY {cols} HAVING count(*) > 1;",
            "DO $$",
            *(["DECLARE", "    keep_order text;", "    removed bigint;"] if dedupe else []),
            "BEGIN",
            "    IF NOT EXISTS (",
            "        SELECT 1 FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace",
            f"         WHERE n.nspname = 'public' AND c.relname = '{t.name}' "
            "AND x.indisunique AND x.indisvalid AND x.indimmediate",
            "           AND x.indpred IS NULL AND x.indexprs IS NULL",
            f"           AND x.indnkeyatts = {len(t.key)}",
            "           AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) "
            "FROM unnest((x.indkey::int2[])[0:x.indnkeyatts - 1]) AS k(attnum)",
            "                JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum)",
            f"               = ARRAY[{', '.join(repr(c) for c in sorted(t.key))}]::text[]",
            "    ) THEN",
            *removal,
            f"        CREATE UNIQUE INDEX {key_index_name(t.name)} ON public.{t.name} ({cols});",
            "    END IF;",
            "END",
            "$$;",
        ]
    parts += [MINIMAL_SQL.read_text(encoding="utf-8").strip(), "COMMIT;"]
    return "\n".join(parts)
