"""Planning over the direct path: stage the wanted rows with COPY, compare them with the targets in SQL.

SELECTs and temporary tables only, so a dry run never writes to, locks or fires a trigger on a target. Before
``migrate --minimal`` a target without its unique key is read one row per key, as that migration will leave it.
See ``docs/backends.md``, "The direct path".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from compliance_sync.backends import schema
from compliance_sync.backends.postgres import fragments
from compliance_sync.backends.postgres.connection import SessionBase
from compliance_sync.config.logs import Progress
from compliance_sync.domain.diff import (
    DUPLICATE_EXAMPLES,
    Action,
    DiffLine,
    SyncDiff,
    TargetDiff,
    duplicate_example,
    key_of,
    to_json,
)
from compliance_sync.domain.tables import (
    BUSINESS_UNIT,
    JSONB,
    REQUIREMENTS,
    TARGET_BY_NAME,
    TARGETS,
    NotWanted,
    TargetTable,
)
from compliance_sync.domain.wanted import WantedRows, longest_texts

ACTION_FIELDS = {
    "insert": "inserted",
    "update": "updated",
    "delete": "deleted",
    "orphan": "orphans",
    "unchanged": "unchanged",
}


class PlanPart(SessionBase):
    """``cs_want_<i>`` (the wanted rows) and ``cs_diff_<i>`` (each row's action) per target, and the diff read
    back from them; the writes join the same two tables."""

    def plan(self, wanted: WantedRows, limit: int) -> SyncDiff:
        if self.report is None or self.read_only:
            raise RuntimeError("read_facts() first, in a session that may write: the plan stages the wanted rows")
        schema.check_lengths(self.report.varchar_limits, longest_texts(wanted))
        for t in TARGETS:
            if t.name in self.report.missing_keys:
                self._keep_one_per_key(t)
        self._stage(wanted)
        targets = {}
        for i, t in enumerate(TARGETS):
            self._classify(i, t)
            targets[t.name] = self._target_diff(i, t, limit)
            targets[t.name].key_backed = t.name not in self.report.missing_keys
        self.planned = SyncDiff(self.fy.year, targets)
        return self.planned

    # --- staging: the wanted rows in temporary tables ---------------------------------------------------------
    def _stage_columns(self, target: TargetTable, columns: Sequence[str]) -> sql.Composable:
        """Stage columns typed as the target's (base types: a domain's checks apply when writing)."""
        shown = self.relations[target.name].columns
        return sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(shown[c].shown)) for c in columns)

    def _copy(self, what: str, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        progress = Progress(f"staging {what}")
        n = 0
        try:
            with self.conn.cursor() as cur:
                stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
                )
                with cur.copy(stmt) as copy:
                    for row in rows:
                        copy.write_row(row)
                        n += 1
                        if n % 50_000 == 0:
                            progress.add(50_000)
        except psycopg.Error as exc:
            raise self._fail(exc, f"staging {what}") from None
        progress.finish()
        return n

    def _stage(self, wanted: WantedRows) -> None:
        req = wanted.requirements
        target = TARGET_BY_NAME[REQUIREMENTS]
        client_cols = (
            "client_name",
            "event_type_id",
            "segment",
            "event_type_name",
            "required_count",
            "completed_count",
            "scheduled_count",
            "compliance_percentage",
            "status",
            "next_due_date",
        )
        self._run(
            "staging",
            sql.SQL("CREATE TEMP TABLE cs_plans (plan_id uuid, client_id uuid, client_name text) ON COMMIT DROP"),
        )
        self._run(
            "staging",
            sql.SQL("CREATE TEMP TABLE cs_client_reqs ({}) ON COMMIT DROP").format(
                self._stage_columns(target, client_cols)
            ),
        )
        self._copy(
            "plans",
            "cs_plans",
            ("plan_id", "client_id", "client_name"),
            ((p.plan_id, p.client_id, p.client_name) for p in req.plans),
        )
        self._copy(
            "client requirements",
            "cs_client_reqs",
            client_cols,
            (
                (
                    name,
                    r.event_type_id,
                    req.segments[name],
                    r.event_type_name,
                    r.required,
                    r.completed,
                    r.scheduled,
                    r.percent,
                    r.status,
                    r.next_due,
                )
                for name, reqs in req.by_client.items()
                for r in reqs
            ),
        )
        self._run("staging", "ANALYZE cs_plans")
        self._run("staging", "ANALYZE cs_client_reqs")
        self._event_ids.wait()
        self._run("staging", "ANALYZE cs_event_ids")  # the view's joins are planned from these statistics
        # one row per plan x client requirement (SPEC §4.5), ids from the FY's events (SPEC §4.4): a view, so
        # the rows are never stored twice; the comparison and the insert each join what they need
        self._run(
            "staging",
            sql.SQL(
                "CREATE TEMP VIEW cs_want_{n} AS "
                "SELECT p.plan_id, r.event_type_id, {fy}::int AS fiscal_year, p.client_id, p.client_name, r.segment, "
                "r.event_type_name, r.required_count, r.completed_count, r.scheduled_count, r.compliance_percentage, "
                "r.status, r.next_due_date, coalesce(e.ids, '[]'::jsonb) AS linked_event_ids "
                "FROM cs_plans p JOIN cs_client_reqs r ON r.client_name = p.client_name "
                "LEFT JOIN cs_event_ids e ON e.client_name = p.client_name AND e.event_type_id = r.event_type_id"
            ).format(n=sql.SQL(str(TARGETS.index(target))), fy=sql.Literal(self.fy.year)),
        )
        for i, t in enumerate(TARGETS):
            if t.name == REQUIREMENTS:
                continue
            stage = f"cs_want_{i}"
            self._run(
                "staging",
                sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                    sql.Identifier(stage), self._stage_columns(t, t.columns)
                ),
            )
            self._copy(
                t.name,
                stage,
                t.columns,
                (
                    [to_json(row[c]) if t.types[c] == JSONB else row[c] for c in t.columns]
                    for row in wanted.rows(t.name)
                ),
            )
            if t.not_wanted == NotWanted.RESET:  # SPEC §4.8: a BU row of the FY without territory is reset
                cols = sql.SQL(", ").join(map(sql.Identifier, t.columns))
                values = sql.SQL(", ").join(
                    [sql.Identifier("t", c) for c in t.key]
                    + [sql.Literal(to_json(v) if t.types[c] == JSONB else v) for c, v in t.reset_values.items()]
                )
                self._run(
                    "staging",
                    sql.SQL(
                        "INSERT INTO {stage} ({cols}) SELECT {values} FROM {target} t "
                        "WHERE t.fiscal_year = %(fy)s AND {full} "
                        "AND NOT EXISTS (SELECT 1 FROM {stage} w WHERE {match})"
                    ).format(
                        stage=sql.Identifier(stage),
                        cols=cols,
                        values=values,
                        target=self._current(t),
                        full=fragments.full_key(t, "t"),
                        match=fragments.match(t, "w", "t"),
                    ),
                    {"fy": self.fy.year},
                )
        for i, t in enumerate(TARGETS):
            if t.name != REQUIREMENTS:
                self._run("staging", sql.SQL("ANALYZE {}").format(sql.Identifier(f"cs_want_{i}")))

    # --- comparing inside PostgreSQL --------------------------------------------------------------------------
    def _classify(self, i: int, t: TargetTable) -> None:
        """``cs_diff_i``: every wanted or current row of the FY with its action, key and wanted values."""
        owned_w = sql.SQL(", ").join(sql.Identifier("w", c) for c in t.owned)
        owned_t = sql.SQL(", ").join(sql.Identifier("t", c) for c in t.owned)
        if t.not_wanted == NotWanted.PRUNE:
            stale = sql.SQL("CASE WHEN {} THEN 'orphan' ELSE 'delete' END").format(self._has_foreign(t, "t"))
        else:
            stale = sql.SQL("'unchanged'")
        keys = sql.SQL(", ").join(
            sql.SQL("coalesce({}, {}) AS {}").format(sql.Identifier("w", c), sql.Identifier("t", c), sql.Identifier(c))
            for c in t.key
        )
        self._run(
            f"comparing {t.name}",
            sql.SQL(
                "CREATE TEMP TABLE {diff} ON COMMIT DROP AS SELECT "
                "CASE WHEN t.{k0} IS NULL THEN 'insert' WHEN w.{k0} IS NULL THEN {stale} "
                "WHEN ROW({owned_w}) IS DISTINCT FROM ROW({owned_t}) THEN 'update' ELSE 'unchanged' END "
                "AS action, {keys} "
                "FROM {want} w FULL JOIN (SELECT * FROM {target} t WHERE t.fiscal_year = %(fy)s AND {full}) t "
                "ON {match}"
            ).format(
                diff=sql.Identifier(f"cs_diff_{i}"),
                k0=sql.Identifier(t.key[0]),
                stale=stale,
                owned_w=owned_w,
                owned_t=owned_t,
                keys=keys,
                want=sql.Identifier(f"cs_want_{i}"),
                target=self._current(t),
                full=fragments.full_key(t, "t"),
                match=fragments.match(t, "w", "t"),
            ),
            {"fy": self.fy.year},
            watch=True,
        )
        # the writes join the stage through this table: without statistics PostgreSQL guesses a handful of rows
        self._run(f"comparing {t.name}", sql.SQL("ANALYZE {}").format(sql.Identifier(f"cs_diff_{i}")))

    def _target_diff(self, i: int, t: TargetTable, limit: int) -> TargetDiff:
        diff = TargetDiff(t)
        fy = {"fy": self.fy.year}
        counts = sql.SQL("SELECT action, count(*) FROM {} GROUP BY 1").format(sql.Identifier(f"cs_diff_{i}"))
        for action, n in self._rows(t.name, counts):
            setattr(diff, ACTION_FIELDS[action], n)
        if t.name == REQUIREMENTS:
            completed = sql.SQL("coalesce(sum(t.completed_count) FILTER (WHERE {}), 0)").format(
                fragments.full_key(t, "t")
            )
        else:
            completed = sql.SQL("0")
        if t.name == BUSINESS_UNIT:
            territories = sql.SQL("count(*) FILTER (WHERE t.territory_count > 0)")
        else:
            territories = sql.SQL("0")
        current = sql.SQL(
            "SELECT count(*) FILTER (WHERE {full}), count(*) FILTER (WHERE NOT ({full})), {completed}, {territories} "
            "FROM {target} t WHERE t.fiscal_year = %(fy)s"
        ).format(
            full=fragments.full_key(t, "t"),
            completed=completed,
            territories=territories,
            target=self._current(t),
        )
        diff.current_count, diff.null_keys, diff.current_completed, diff.current_with_territories = self._rows(
            t.name, current, fy
        )[0]
        columns = list(t.columns)
        counted = {
            Action.INSERT: diff.inserted,
            Action.UPDATE: diff.updated,
            Action.DELETE: diff.deleted,
            Action.ORPHAN: diff.orphans,
        }
        for action in (a for a in Action if counted[a]):
            # the first rows in key order from the narrow diff table, then their values: never a sort of every row
            rows = self._rows(
                t.name,
                sql.SQL(
                    "WITH d AS (SELECT {keys} FROM {diff} d WHERE d.action = %(action)s ORDER BY {order} "
                    "LIMIT %(limit)s) "
                    "SELECT {w}, {c} FROM d LEFT JOIN (SELECT * FROM {want} WHERE {k0} IN (SELECT {k0} FROM d)) w "
                    "ON {mw} "
                    "LEFT JOIN (SELECT * FROM {target} WHERE fiscal_year = %(fy)s) c ON {mc} ORDER BY {order}"
                ).format(
                    keys=sql.SQL(", ").join(sql.Identifier("d", k) for k in t.key),
                    w=fragments.select(t, "w", columns),
                    c=fragments.select(t, "c", columns),
                    diff=sql.Identifier(f"cs_diff_{i}"),
                    want=sql.Identifier(f"cs_want_{i}"),
                    mw=fragments.match(t, "w", "d"),
                    target=self._current(t),
                    mc=fragments.match(t, "c", "d"),
                    order=fragments.order(t, "d"),
                    k0=sql.Identifier(t.key[0]),
                ),
                fy | {"action": action.value, "limit": limit},
            )
            for row in rows:
                new = dict(zip(columns, row[: len(columns)]))
                old = dict(zip(columns, row[len(columns) :]))
                has_new, has_old = action in (Action.INSERT, Action.UPDATE), action != Action.INSERT
                diff.lines.append(
                    DiffLine(
                        action, key_of(t, new if has_new else old), old if has_old else None, new if has_new else None
                    )
                )
        if t.name in self.report.missing_keys:
            self._count_duplicates(t, diff)
        return diff

    # --- a dry run before `migrate --minimal`: targets whose key no unique index backs (SPEC §5) -------------
    def _current(self, t: TargetTable) -> sql.Composable:
        """Where the plan reads a target's current rows: the table itself, or, when no unique index backs its
        key, ``cs_current_<i>`` with one row per key (see :meth:`_keep_one_per_key`)."""
        if t.name in self.report.missing_keys:
            return sql.Identifier(f"cs_current_{TARGETS.index(t)}")
        return self._t(t.name)

    def _keep_one_per_key(self, t: TargetTable) -> None:
        """``cs_current_<i>``: the FY's rows of a target without a unique key, one per key: the row
        ``migrate --minimal --dedupe`` keeps (latest ``updated_at``, NULL oldest; then greatest ``id``; then
        greatest ``ctid``), so the dry run shows the diff a live run makes after that migration; rows with a NULL
        key column stay as they are. A temporary view, gone with the dry run's transaction."""
        columns = self.relations[t.name].columns
        order = [
            sql.SQL("{} DESC NULLS LAST").format(sql.Identifier(c))
            for c in ("updated_at", "id")
            if c in columns and c not in t.key
        ]
        keys = sql.SQL(", ").join(map(sql.Identifier, t.key))
        full = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in t.key)
        view = sql.SQL(
            "CREATE TEMP VIEW {view} AS SELECT * FROM (SELECT DISTINCT ON ({keys}) * FROM {target} "
            "WHERE fiscal_year = {fy} AND {full} ORDER BY {keys}, {order}) kept "
            "UNION ALL SELECT * FROM {target} WHERE fiscal_year = {fy} AND NOT ({full})"
        ).format(
            view=sql.Identifier(f"cs_current_{TARGETS.index(t)}"),
            keys=keys,
            target=self._t(t.name),
            fy=sql.Literal(self.fy.year),
            full=full,
            order=sql.SQL(", ").join([*order, sql.SQL("ctid DESC")]),
        )
        self._run(f"comparing {t.name}", view)

    def _count_duplicates(self, t: TargetTable, diff: TargetDiff) -> None:
        """The FY's keys that several rows of ``t`` hold: how many, the surplus rows, the first examples."""
        grouped = sql.SQL(
            "SELECT {select}, count(*) AS n FROM {target} t WHERE t.fiscal_year = %(fy)s AND {full} "
            "GROUP BY {keys} HAVING count(*) > 1"
        ).format(
            select=fragments.select(t, "t", t.key),
            target=self._t(t.name),
            full=fragments.full_key(t, "t"),
            keys=sql.SQL(", ").join(sql.Identifier("t", c) for c in t.key),
        )
        fy = {"fy": self.fy.year}
        totals = sql.SQL("SELECT count(*), coalesce(sum(n - 1), 0)::int FROM ({}) d").format(grouped)
        diff.duplicate_keys, diff.duplicate_rows = self._rows(t.name, totals, fy)[0]
        if diff.duplicate_keys:
            first = sql.SQL("SELECT * FROM ({}) d ORDER BY n DESC, {} LIMIT {}").format(
                grouped, fragments.order(t, "d"), sql.Literal(DUPLICATE_EXAMPLES)
            )
            diff.duplicate_examples = [duplicate_example(t, r[:-1], r[-1]) for r in self._rows(t.name, first, fy)]
