"""The direct PostgreSQL backend (psycopg 3): one connection, one lock, one transaction per FY run.

A session (SPEC §5 "No data loss, one consistent picture"):

1. connects (a failure is :class:`~compliance_sync.model.ConnectionFailure`, whose message names only
   ``host:port/dbname``, never the password);
2. takes the session-level advisory lock ``pg_advisory_lock(LOCK_CLASS, FY)`` in autocommit mode, so a
   second run of the same FY waits for the first to finish;
3. starts a ``REPEATABLE READ`` transaction *after* the lock (its snapshot therefore includes what the
   previous holder committed), checks the schema (SPEC §3, §3.3, §6), reads the facts of the FY
   (filters and the event aggregation run on the server) and the FY's current target rows;
4. :meth:`PostgresSession.apply` writes the four targets in that same transaction (COPY into temp tables,
   ``INSERT … ON CONFLICT`` for new and changed rows, ``DELETE … USING`` for rows to prune, guarded again in
   SQL so a row carrying foreign data is never deleted), adds the ledger row, and commits once;
5. on leaving: rollback when nothing was committed (dry run, error), ``pg_advisory_unlock``, close.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import logging
from typing import Any, Callable, Iterable, Iterator, Sequence

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from compliance_sync.diff import SyncDiff, TargetDiff, iter_changed_rows, to_json
from compliance_sync.fiscal import FiscalYear
from compliance_sync.migrate import find_key_index  # the schema check and the migrations agree on "backed"
from compliance_sync.model import (
    BOOL,
    DATE,
    FACT_COLUMNS,
    INT,
    JSONB,
    NUMERIC,
    SOURCES,
    TARGETS,
    TEXT,
    TIMESTAMPTZ,
    UUID,
    ConnectionFailure,
    DataError,
    Facts,
    TargetTable,
)

log = logging.getLogger(__name__)

# First key of the two-int advisory lock: "CSYC" as a 32-bit integer; the second key is the FY.
LOCK_CLASS = 0x43535943

LEDGER_TABLE = "compliance_sync_runs"
# columns of a target that never count as "foreign" data (besides the key and the owned columns)
JOB_META_COLUMNS = ("id", "created_at", "updated_at")

# type family -> (accepted pg_type names, after resolving domains; the name shown in messages)
TYPE_FAMILIES: dict[str, tuple[frozenset[str], str]] = {
    UUID: (frozenset({"uuid"}), "uuid"),
    TEXT: (frozenset({"text", "varchar", "bpchar"}), "text"),
    INT: (frozenset({"int2", "int4", "int8"}), "integer"),
    BOOL: (frozenset({"bool"}), "boolean"),
    DATE: (frozenset({"date"}), "date"),
    NUMERIC: (frozenset({"numeric"}), "numeric"),
    JSONB: (frozenset({"jsonb"}), "jsonb"),
    TIMESTAMPTZ: (frozenset({"timestamptz", "timestamp"}), "timestamp with time zone"),
}

EXCLUSIONS = "client_event_exclusions"
EXCLUSIONS_MISSING = f"{EXCLUSIONS} does not exist: no requirement is excluded"
LEDGER_MISSING = f"{LEDGER_TABLE} does not exist: run not recorded"


# --- connection helpers ------------------------------------------------------------------------------
def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` of a DSN (URL or key=value), never its user or password."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "<unparseable database URL>"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or "?"
    return f"{host}:{port}/{dbname}"


def _secrets_of(dsn: str) -> list[str]:
    out: list[str] = []
    try:
        password = conninfo_to_dict(dsn).get("password")
    except Exception:
        password = None
    if password:
        out.append(str(password))
        from urllib.parse import quote

        out.append(quote(str(password), safe=""))
    return [s for s in out if s]


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _object_frame(rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> pd.DataFrame:
    """A frame of object columns holding the Python values as fetched (no dtype inference)."""
    if not rows:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    data = list(zip(*rows))
    return pd.DataFrame({c: pd.Series(list(v), dtype=object) for c, v in zip(columns, data)})


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, list, dict, tuple)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _converter(kind: str) -> Callable[[Any], Any]:
    """For one column type: a wanted-row value -> the value COPY writes (text format).

    Fast paths for values that already have the plain Python type (the usual case); anything else
    (numpy scalars, NaN / NaT / pd.NA, pandas Timestamps, floats for numerics) is normalised.
    """
    if kind == JSONB:

        def conv(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, str):  # already JSON text (as diff.normalize reads strings)
                return v
            if isinstance(v, (list, dict)):
                return to_json(v)
            return None if _is_missing(v) else to_json(v)

    elif kind == INT:

        def conv(v: Any) -> Any:
            if type(v) is int:
                return v
            return None if _is_missing(v) else int(v)

    elif kind == NUMERIC:

        def conv(v: Any) -> Any:
            if type(v) is decimal.Decimal:
                return v
            return None if _is_missing(v) else decimal.Decimal(str(v))

    elif kind in (UUID, TEXT):

        def conv(v: Any) -> Any:
            if type(v) is str:
                return v
            return None if _is_missing(v) else str(v)

    elif kind == DATE:

        def conv(v: Any) -> Any:
            if type(v) is dt.date:
                return v
            if _is_missing(v):
                return None
            return v.date() if isinstance(v, (dt.datetime, pd.Timestamp)) else v

    elif kind == BOOL:

        def conv(v: Any) -> Any:
            return None if _is_missing(v) else bool(v)

    else:

        def conv(v: Any) -> Any:
            return None if _is_missing(v) else v

    return conv


def _db_rows(rows: Iterable[Any], columns: Sequence[str], kinds: Sequence[str], as_dicts: bool) -> Iterator[list[Any]]:
    convs = [_converter(k) for k in kinds]
    if as_dicts:
        for row in rows:
            yield [f(row.get(c)) for f, c in zip(convs, columns)]
    else:
        for row in rows:
            yield [f(v) for f, v in zip(convs, row)]


# --- the backend -----------------------------------------------------------------------------------------
class PostgresBackend:
    """Direct PostgreSQL (``SUPABASE_DB_URL``): server-side filters and aggregation, one transaction."""

    name = "postgres"

    def __init__(self, dsn: str, schema: str = "public", connect_timeout: int = 10):
        self._dsn = dsn
        self.schema = schema
        self.connect_timeout = connect_timeout
        self.target = describe_dsn(dsn)  # host:port/dbname, safe to show

    def __repr__(self) -> str:  # never the DSN
        return f"PostgresBackend({self.target!r}, schema={self.schema!r})"

    def _connect(self) -> psycopg.Connection:
        try:
            conninfo_to_dict(self._dsn)
        except Exception:
            # the parser's message quotes pieces of the string, which may be the password: show nothing
            raise ConnectionFailure(
                "cannot connect to PostgreSQL: the database URL (SUPABASE_DB_URL) is malformed "
                "(not shown: it may contain the password)"
            ) from None
        secrets = _secrets_of(self._dsn)
        try:
            return psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name="compliance_sync",
                prepare_threshold=None,  # safe behind transaction poolers; every statement runs once anyway
            )
        except psycopg.Error as exc:
            detail = _scrub(str(exc).strip(), secrets)
            raise ConnectionFailure(
                f"cannot connect to PostgreSQL at {self.target}: {detail}"
            ) from None
        except Exception as exc:  # malformed DSN and the like: say nothing about its content
            raise ConnectionFailure(
                f"cannot connect to PostgreSQL at {self.target}: {type(exc).__name__}"
            ) from None

    @contextlib.contextmanager
    def session(self, fy: FiscalYear, as_of: dt.date) -> Iterator["PostgresSession"]:
        conn = self._connect()
        sess = PostgresSession(self, conn, fy, as_of)
        try:
            sess._lock()
            sess._begin()
            sess._check_schema()
            sess._read()
            yield sess
        finally:
            sess._close()


class PostgresSession:
    """One FY run over one connection. ``facts`` and ``current`` are read when the session opens."""

    def __init__(self, backend: PostgresBackend, conn: psycopg.Connection, fy: FiscalYear, as_of: dt.date):
        self.backend = backend
        self.conn = conn
        self.fy = fy
        self.as_of = as_of
        self.schema = backend.schema
        self.facts: Facts | None = None
        self.current: dict[str, pd.DataFrame] = {}
        self.warnings: list[str] = []
        self.written: dict[str, dict[str, int]] = {}  # per target: upserted / deleted (after apply)
        self._secrets = _secrets_of(backend._dsn)
        self._locked = False
        self._committed = False
        self._finished = False  # apply() or record_failure() ran: the read transaction is over
        self._columns: dict[str, dict[str, tuple[str, str]]] = {}  # table -> column -> (base type, shown type)
        self._exclusions_exist = False
        self._ledger_columns: set[str] | None = None

    # --- helpers -----------------------------------------------------------------------------------
    def _t(self, name: str) -> sql.Composable:
        return sql.Identifier(self.schema, name)

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning(message)

    def _fail(self, exc: BaseException, what: str) -> Exception:
        """Translate a psycopg error into the run's error types (messages never carry the DSN)."""
        text = _scrub(str(exc).strip(), self._secrets)
        if isinstance(exc, psycopg.errors.TransactionRollback):
            return DataError(f"{what}: concurrent change ({text}); nothing written, rerun the FY")
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return DataError(f"{what}: statement cancelled ({text}); nothing written")
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return DataError(
                f"{what}: permission denied ({text}); the job's role needs SELECT on the sources and "
                "SELECT, INSERT, UPDATE, DELETE on the four targets"
            )
        if isinstance(exc, psycopg.OperationalError) or self.conn.broken:
            return ConnectionFailure(f"{what}: lost the connection to {self.backend.target}: {text}")
        return DataError(f"{what}: {text}")

    def _fetch(self, query: sql.Composable | str, params: Any, columns: Sequence[str], what: str) -> pd.DataFrame:
        try:
            with self.conn.cursor() as cur:
                cur.execute(query, params)
                rows = cur.fetchall()
        except psycopg.Error as exc:
            raise self._fail(exc, f"reading {what}") from exc
        return _object_frame(rows, columns)

    # --- opening ------------------------------------------------------------------------------------
    def _lock(self) -> None:
        try:
            got = self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, self.fy.year)).fetchone()[0]
            if not got:
                log.info("another compliance_sync run holds the lock of FY%s; waiting for it", self.fy.year)
                self.conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, self.fy.year))
        except psycopg.Error as exc:
            raise self._fail(exc, f"taking the advisory lock of FY{self.fy.year}") from exc
        self._locked = True

    def _begin(self) -> None:
        # the snapshot is taken by the first statement of the transaction, i.e. after the lock
        self.conn.autocommit = False
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ

    def _close(self) -> None:
        conn = self.conn
        try:
            if conn.closed or conn.broken:
                return  # the server releases a dead session's advisory lock itself
            if conn.info.transaction_status != TransactionStatus.IDLE:
                conn.rollback()
            if self._locked:
                conn.autocommit = True
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, self.fy.year))
                self._locked = False
        except Exception as exc:  # closing the connection below releases the lock anyway
            log.warning("closing the PostgreSQL session: %s", _scrub(str(exc), self._secrets))
        finally:
            conn.close()

    # --- schema check (SPEC §3, §3.3, §6) -------------------------------------------------------------
    def _load_catalog(self, tables: Iterable[str]) -> None:
        rows = self.conn.execute(
            """
            SELECT c.relname::text, a.attname::text,
                   CASE WHEN bt.typtype = 'e' THEN 'enum' ELSE bt.typname::text END,
                   format_type(a.atttypid, a.atttypmod)
              FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
              LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              LEFT JOIN pg_type t ON t.oid = a.atttypid
              LEFT JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
             WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
            """,
            (self.schema, list(tables)),
        ).fetchall()
        for table, column, base, shown in rows:
            cols = self._columns.setdefault(table, {})
            if column is not None:
                cols[column] = (base, shown)

    def _check_columns(self, table: str, wanted: dict[str, str], problems: list[str], source: bool = False) -> bool:
        """Every column present with a type of its family. A source's text column may also be an enum
        (labels read as text, e.g. a plan ``status`` enum); targets stay strict, since the job writes them."""
        have = self._columns[table]
        ok = True
        for column, family in wanted.items():
            if column not in have:
                problems.append(f"{table}.{column} is missing")
                ok = False
                continue
            accepted, expected = TYPE_FAMILIES[family]
            base, shown = have[column]
            if base not in accepted and not (source and family == TEXT and base == "enum"):
                problems.append(f"{table}.{column} has type {shown}, expected {expected} (no coercion)")
                ok = False
        return ok

    def _check_schema(self) -> None:
        names = [s.name for s in SOURCES] + [t.name for t in TARGETS] + [LEDGER_TABLE]
        try:
            self._load_catalog(names)
            problems: list[str] = []
            for source in SOURCES:
                if source.name not in self._columns:
                    if source.required:
                        problems.append(f"table {self.schema}.{source.name} does not exist")
                    else:
                        self._warn(EXCLUSIONS_MISSING if source.name == EXCLUSIONS else f"{source.name} does not exist")
                    continue
                self._check_columns(source.name, source.columns, problems, source=True)
                if source.name == EXCLUSIONS:
                    self._exclusions_exist = True
            for target in TARGETS:
                if target.name not in self._columns:
                    problems.append(f"table {self.schema}.{target.name} does not exist")
                    continue
                columns_ok = self._check_columns(target.name, target.types, problems)
                if columns_ok and find_key_index(self.conn, target.name, target.key, self.schema) is None:
                    problems.append(
                        f"{target.name} has no unique index on ({', '.join(target.key)}): "
                        "run `compliance-sync migrate --minimal`"
                    )
            if LEDGER_TABLE in self._columns:
                self._ledger_columns = set(self._columns[LEDGER_TABLE])
            else:
                self._warn(LEDGER_MISSING)
        except psycopg.Error as exc:
            raise self._fail(exc, "checking the schema") from exc
        if problems:
            raise DataError(
                f"the database schema at {self.backend.target} (schema {self.schema}) does not match what "
                "compliance_sync needs: " + "; ".join(problems)
            )

    # --- reading ----------------------------------------------------------------------------------------
    def _read(self) -> None:
        fy, as_of = self.fy, self.as_of
        t = self._t
        p = {"fy": fy.year, "start": fy.start, "end": fy.end, "as_of": as_of}
        cols = FACT_COLUMNS

        plans = self._fetch(
            sql.SQL("SELECT id::text, client_id::text, client_name, status FROM {} WHERE fiscal_year = %(fy)s").format(
                t("account_plans")
            ),
            p,
            cols["plans"],
            "account_plans",
        )
        periods = self._fetch(
            sql.SQL(
                "SELECT id::text, client_name, tier_id::text, cse_name, client_uuid::text, effective_from, effective_to "
                "FROM {} WHERE effective_from <= %(end)s AND (effective_to IS NULL OR effective_to >= %(start)s)"
            ).format(t("client_segmentation")),
            p,
            cols["periods"],
            "client_segmentation",
        )
        tiers = self._fetch(
            sql.SQL("SELECT id::text, tier_name FROM {}").format(t("segmentation_tiers")),
            None,
            cols["tiers"],
            "segmentation_tiers",
        )
        event_types = self._fetch(
            sql.SQL("SELECT id::text, event_name, event_code, is_active FROM {}").format(t("segmentation_event_types")),
            None,
            cols["event_types"],
            "segmentation_event_types",
        )
        requirements = self._fetch(
            sql.SQL("SELECT tier_id::text, event_type_id::text, frequency FROM {}").format(t("tier_event_requirements")),
            None,
            cols["requirements"],
            "tier_event_requirements",
        )
        strategies = self._fetch(
            sql.SQL(
                "SELECT id::text, cse_name, territory, quarter, status, updated_at FROM {} WHERE fiscal_year = %(fy)s"
            ).format(t("territory_strategies")),
            p,
            cols["strategies"],
            "territory_strategies",
        )
        exclusions = None
        if self._exclusions_exist:
            exclusions = self._fetch(
                sql.SQL("SELECT client_name, event_type_id::text, reason FROM {}").format(t(EXCLUSIONS)),
                None,
                cols["exclusions"],
                EXCLUSIONS,
            )
        events = t("segmentation_events")
        event_facts = self._fetch(
            sql.SQL(
                """
                SELECT client_name COLLATE "C",
                       event_type_id::text,
                       (extract(year FROM event_date)::int - %(start_year)s) * 12
                         + extract(month FROM event_date)::int - %(start_month)s + 1 AS fy_month,
                       count(*) FILTER (WHERE completed IS TRUE AND event_date <= %(as_of)s),
                       count(*) FILTER (WHERE NOT (completed IS TRUE AND event_date <= %(as_of)s)),
                       count(*) FILTER (WHERE completed IS TRUE AND event_date > %(as_of)s),
                       string_agg(id::text, ',' ORDER BY event_date, id)
                  FROM {}
                 WHERE event_date BETWEEN %(start)s AND %(end)s
                 GROUP BY 1, event_type_id, 3
                """
            ).format(events),
            p | {"start_year": fy.start.year, "start_month": fy.start.month},
            cols["event_facts"],
            "segmentation_events",
        )
        # ids travel as one comma-separated string per group (uuids hold no comma): ten times faster to
        # fetch and parse than a jsonb or text[] array on ~500,000 groups
        event_facts["event_ids"] = pd.Series([v.split(",") for v in event_facts["event_ids"]], dtype=object)
        undated = self._fetch(
            sql.SQL("SELECT id::text, client_name FROM {} WHERE event_date IS NULL ORDER BY id").format(events),
            None,
            cols["undated_events"],
            "segmentation_events",
        )
        years = fy.calendar_years()
        cache = self._fetch(
            sql.SQL(
                "SELECT client_name, event_type_id::text, year, actual_count FROM {} WHERE year = ANY(%(years)s)"
            ).format(t("segmentation_event_compliance")),
            {"years": years},
            cols["compliance_cache"],
            "segmentation_event_compliance",
        )
        calendar = self._fetch(
            sql.SQL(
                """
                SELECT client_name COLLATE "C", event_type_id::text, extract(year FROM event_date)::int AS year, count(*)
                  FROM {}
                 WHERE completed IS TRUE AND event_date >= %(from)s AND event_date < %(to)s
                 GROUP BY 1, event_type_id, 3
                """
            ).format(events),
            {"from": dt.date(years[0], 1, 1), "to": dt.date(years[-1] + 1, 1, 1)},
            cols["calendar_completed"],
            "segmentation_events",
        )
        self.facts = Facts(
            fiscal_year=fy.year,
            start=fy.start,
            end=fy.end,
            as_of=as_of,
            plans=plans,
            periods=periods,
            tiers=tiers,
            event_types=event_types,
            requirements=requirements,
            strategies=strategies,
            exclusions=exclusions,
            event_facts=event_facts,
            undated_events=undated,
            compliance_cache=cache,
            calendar_completed=calendar,
        )
        self.current = {target.name: self._read_current(target) for target in TARGETS}

    def _foreign_columns(self, target: TargetTable) -> list[str]:
        """Columns of the target the job does not own: anything but key, owned, id, created_at, updated_at."""
        mine = set(target.key + target.owned + JOB_META_COLUMNS)
        return [c for c in self._columns[target.name] if c not in mine]

    def _has_foreign_expr(self, target: TargetTable, alias: str) -> sql.Composable:
        """True when the row carries a non-null column the job does not own (SPEC §5).

        Equivalent to ``jsonb_strip_nulls(to_jsonb(t) - <job columns>) <> '{}'`` but about 15 times
        cheaper on 240,000 rows; the column list comes from the catalog read by the schema check (the
        transaction's snapshot, so no column can appear in between). ``num_nonnulls`` tests each value
        itself (a composite value whose fields are all null still counts as present).
        """
        columns = self._foreign_columns(target)
        if not columns:
            return sql.SQL("false")
        chunks = [columns[i : i + 90] for i in range(0, len(columns), 90)]  # functions take at most 100 args
        return sql.SQL("({})").format(
            sql.SQL(" OR ").join(
                sql.SQL("num_nonnulls({}) > 0").format(sql.SQL(", ").join(sql.Identifier(alias, c) for c in chunk))
                for chunk in chunks
            )
        )

    def _select_expr(self, target: TargetTable, column: str, alias: str = "t") -> sql.Composable:
        ident = sql.Identifier(alias, column)
        if target.types[column] == UUID:
            return sql.SQL("{}::text").format(ident)
        return ident

    def _read_current(self, target: TargetTable) -> pd.DataFrame:
        columns = target.key + target.owned + ("updated_at",)
        query = sql.SQL("SELECT {cols}, {foreign} FROM {table} AS t WHERE t.fiscal_year = %(fy)s").format(
            cols=sql.SQL(", ").join(self._select_expr(target, c) for c in columns),
            foreign=self._has_foreign_expr(target, "t"),
            table=self._t(target.name),
        )
        return self._fetch(query, {"fy": self.fy.year}, columns + ("has_foreign",), target.name)

    # --- writing --------------------------------------------------------------------------------------
    def _temp_table(self, target: TargetTable, columns: Sequence[str], suffix: str) -> sql.Identifier:
        name = sql.Identifier(f"cs_{suffix}_{target.name}"[:63])
        defs = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(self._columns[target.name][c][1])) for c in columns
        )
        self.conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(name, defs))
        return name

    def _copy(self, table: sql.Identifier, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            with cur.copy(
                sql.SQL("COPY {} ({}) FROM STDIN").format(table, sql.SQL(", ").join(map(sql.Identifier, columns)))
            ) as copy:
                for row in rows:
                    copy.write_row(row)

    def _write_target(self, diff: TargetDiff, run_ts: dt.datetime) -> dict[str, int]:
        target = diff.table
        counts = {"upserted": 0, "deleted": 0}
        rows = list(iter_changed_rows(diff))
        if rows:
            columns = target.key + target.owned
            kinds = [target.types[c] for c in columns]
            tmp = self._temp_table(target, columns, "rows")
            self._copy(tmp, columns, _db_rows(rows, columns, kinds, as_dicts=True))
            idents = sql.SQL(", ").join(map(sql.Identifier, columns))
            query = sql.SQL(
                "INSERT INTO {table} ({cols}, updated_at) SELECT {cols}, %(ts)s FROM {tmp} "
                "ON CONFLICT ({key}) DO UPDATE SET {sets}, updated_at = EXCLUDED.updated_at"
            ).format(
                table=self._t(target.name),
                cols=idents,
                tmp=tmp,
                key=sql.SQL(", ").join(map(sql.Identifier, target.key)),
                sets=sql.SQL(", ").join(
                    sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in target.owned
                ),
            )
            counts["upserted"] = self.conn.execute(query, {"ts": run_ts}).rowcount
        if diff.deletes:
            kinds = [target.types[c] for c in target.key]
            tmp = self._temp_table(target, target.key, "del")
            self._copy(tmp, target.key, _db_rows(diff.deletes, target.key, kinds, as_dicts=False))
            query = sql.SQL("DELETE FROM {table} AS t USING {tmp} AS k WHERE {match} AND NOT {foreign}").format(
                table=self._t(target.name),
                tmp=tmp,
                match=sql.SQL(" AND ").join(
                    sql.SQL("{} = {}").format(sql.Identifier("t", c), sql.Identifier("k", c)) for c in target.key
                ),
                foreign=self._has_foreign_expr(target, "t"),
            )
            counts["deleted"] = self.conn.execute(query).rowcount
        return counts

    def _insert_ledger(self, ledger: dict[str, Any]) -> bool:
        if self._ledger_columns is None:
            self._warn(LEDGER_MISSING)
            return False
        columns = [c for c in ledger if c in self._ledger_columns and c != "id"]
        dropped = [c for c in ledger if c not in self._ledger_columns]
        if dropped:
            self._warn(f"{LEDGER_TABLE} has no column(s) {', '.join(dropped)}: not recorded")
        if not columns:
            return False
        self.conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                self._t(LEDGER_TABLE),
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            ),
            [ledger[c] for c in columns],
        )
        return True

    def apply(self, diff: SyncDiff, run_ts: dt.datetime, ledger: dict | None = None) -> None:
        """Write the diff of all four targets and the ledger row in the session's transaction; commit once.

        Any failure rolls the whole transaction back: every target keeps its rows as they were.
        """
        if self._finished:
            raise RuntimeError("this session has already applied a diff (or recorded a failure)")
        if diff.fiscal_year != self.fy.year:
            raise ValueError(f"diff of FY{diff.fiscal_year} applied to a session of FY{self.fy.year}")
        self._finished = True
        step = "writing"
        try:
            for target in TARGETS:
                step = f"writing {target.name}"
                self.written[target.name] = self._write_target(diff.targets[target.name], run_ts)
            if ledger is not None:
                step = f"writing {LEDGER_TABLE}"
                self._insert_ledger(ledger)
            step = "committing"
            self.conn.commit()
        except psycopg.Error as exc:
            with contextlib.suppress(Exception):
                self.conn.rollback()
            raise self._fail(exc, f"{step} failed, nothing written (rolled back)") from exc
        except BaseException:
            with contextlib.suppress(Exception):
                self.conn.rollback()
            raise
        self._committed = True

    def record_failure(self, ledger: dict[str, Any]) -> bool:
        """Best effort: record a failed run in the ledger (own transaction, after rolling back the run's).

        Returns whether a row was written; never raises. The session cannot apply afterwards.
        """
        self._finished = True
        try:
            if self.conn.closed or self.conn.broken:
                return False
            if self.conn.info.transaction_status != TransactionStatus.IDLE:
                self.conn.rollback()
            written = self._insert_ledger(ledger)
            self.conn.commit()
            return written
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.conn.rollback()
            self._warn(f"could not record the failed run in {LEDGER_TABLE}: {_scrub(str(exc), self._secrets)}")
            return False


__all__ = ["LOCK_CLASS", "PostgresBackend", "PostgresSession", "describe_dsn", "find_key_index"]
