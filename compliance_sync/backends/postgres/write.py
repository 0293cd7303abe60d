"""Writing over the direct path: the planned diff, the ledger row, one commit; and the record of a failed run.

The inserts, updates and deletes join the plan's stage (``cs_want_<i>``, ``cs_diff_<i>``) in the session's one
transaction, so any failure rolls every target back to the rows it had.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from compliance_sync.backends.postgres import fragments
from compliance_sync.backends.postgres.connection import SessionBase
from compliance_sync.config.secrets import redact
from compliance_sync.domain.diff import SyncDiff
from compliance_sync.domain.ledger import LedgerRow
from compliance_sync.domain.tables import LEDGER_TABLE, TARGETS, TargetTable


class WritePart(SessionBase):
    """:meth:`apply` (the plan's diff, in the plan's transaction) and :meth:`record_failure` (the ledger only)."""

    def apply(self, diff: SyncDiff, run_ts: dt.datetime, ledger: LedgerRow) -> None:
        """Write all four targets and the ledger row in the session's transaction; commit once. Any failure
        rolls the whole transaction back: every target keeps its rows as they were."""
        if self._finished or diff is not self.planned:
            raise RuntimeError("apply() takes the diff this session planned, once")
        self._finished = True
        try:
            for i, t in enumerate(TARGETS):
                self._write_target(i, t, run_ts)
            self._insert_ledger(ledger)
            self._run("committing", "DROP VIEW cs_want_0")  # the temporary tables under it drop at commit
            try:
                self.conn.commit()
            except psycopg.Error as exc:
                raise self._fail(exc, "committing") from None
        except BaseException:
            with contextlib.suppress(Exception):
                self.conn.rollback()
            raise
        self.committed = True

    def record_failure(self, ledger: LedgerRow) -> None:
        self._finished = True
        try:
            if self.conn.closed or self.conn.broken:
                return
            if self.conn.info.transaction_status != TransactionStatus.IDLE:
                self.conn.rollback()
            self._insert_ledger(ledger)
            self.conn.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.conn.rollback()
            self._warn(f"could not record the failed run in {LEDGER_TABLE}: {redact(str(exc))}")

    def _write_target(self, i: int, t: TargetTable, run_ts: dt.datetime) -> None:
        diff, want, target = sql.Identifier(f"cs_diff_{i}"), sql.Identifier(f"cs_want_{i}"), self._t(t.name)
        cols = sql.SQL(", ").join(map(sql.Identifier, t.columns))
        ts = {"ts": run_ts}
        if self.planned.targets[t.name].inserted:
            self._run(
                f"writing {t.name}",
                sql.SQL(
                    "INSERT INTO {target} ({cols}, updated_at) SELECT {wcols}, %(ts)s FROM {want} w "
                    "JOIN {diff} d ON {match} WHERE d.action = 'insert'"
                ).format(
                    target=target,
                    cols=cols,
                    wcols=sql.SQL(", ").join(sql.Identifier("w", c) for c in t.columns),
                    want=want,
                    diff=diff,
                    match=fragments.match(t, "w", "d"),
                ),
                ts,
                watch=True,
            )
        if self.planned.targets[t.name].updated:
            self._run(
                f"writing {t.name}",
                sql.SQL(
                    "UPDATE {target} t SET {sets}, updated_at = %(ts)s FROM {want} w JOIN {diff} d ON {mwd} "
                    "WHERE d.action = 'update' AND {mtw} AND t.fiscal_year = %(fy)s"
                ).format(
                    target=target,
                    sets=sql.SQL(", ").join(sql.SQL("{c} = w.{c}").format(c=sql.Identifier(c)) for c in t.owned),
                    want=want,
                    diff=diff,
                    mwd=fragments.match(t, "w", "d"),
                    mtw=fragments.match(t, "t", "w"),
                ),
                ts | {"fy": self.fy.year},
                watch=True,
            )
        if self.planned.targets[t.name].deleted:
            self._run(
                f"writing {t.name}",
                sql.SQL(
                    "DELETE FROM {target} t USING {diff} d WHERE d.action = 'delete' AND {match} AND NOT {foreign}"
                ).format(
                    target=target, diff=diff, match=fragments.match(t, "t", "d"), foreign=self._has_foreign(t, "t")
                ),
                watch=True,
            )

    def _insert_ledger(self, ledger: LedgerRow) -> None:
        columns = self.report.ledger_columns if self.report else None
        if columns is None:
            return
        values = ledger.values(columns)
        self._run(
            f"writing {LEDGER_TABLE}",
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                self._t(LEDGER_TABLE),
                sql.SQL(", ").join(map(sql.Identifier, values)),
                sql.SQL(", ").join(sql.Placeholder() * len(values)),
            ),
            list(values.values()),
        )
