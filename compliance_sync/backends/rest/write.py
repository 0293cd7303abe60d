"""Writes over REST, in the order that keeps every row old or new without a transaction: upserts first (two chunks
on the wire at once), guarded deletes last, the ledger row after them; and the bookkeeping of what the server
acknowledged and which writes are possibly applied, for a run that stops part way (docs/backends-rest.md).
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import decimal
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from compliance_sync.backends import schema
from compliance_sync.backends.rest.client import MINIMAL, RestClient, quote
from compliance_sync.backends.rest.read import pages
from compliance_sync.config.logs import Progress
from compliance_sync.domain.diff import ChangeSet, SyncDiff, to_json
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.ledger import LedgerRow
from compliance_sync.domain.tables import JSONB, LEDGER_TABLE, NUMERIC, TARGETS, Kind, NotWanted, TargetTable
from compliance_sync.errors import DataError, SyncError

if TYPE_CHECKING:
    from compliance_sync.backends.rest import RestBackend

UPSERT_CHUNK = 1000
UPSERT_IN_FLIGHT = 2  # requests on the wire at once while the next chunk is converted
URL_BUDGET = 6000  # characters of filters per DELETE (Supabase's edge refuses URLs over ~16 KiB)
ON_THE_WIRE = "on the wire when the run was interrupted: possibly applied"


# --- values over JSON -------------------------------------------------------------------------------------------
def _json_row(row: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """A row as PostgREST takes it: numbers as JSON numbers, dates as ISO text, jsonb as JSON."""
    return json.loads(to_json({c: row.get(c) for c in columns}))


def _plain(value: Any) -> Any:
    """A jsonb value with its Decimals as JSON numbers (what :func:`to_json` writes), containers copied."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return value if all(type(v) is str for v in value) else [_plain(v) for v in value]
    return value


_TO_BODY: dict[Kind, Callable[[Any], Any]] = {NUMERIC: float, JSONB: _plain}


def _body_rows(target: TargetTable, rows: Sequence[dict[str, Any]], stamp: str) -> list[dict[str, Any]]:
    """Upsert bodies: the target's columns and ``updated_at``, converted by column type only where JSON needs it
    (numeric and jsonb; dates and uuids are encoded by supabase-py). The same values as :func:`_json_row`,
    without a round trip through JSON text per row."""
    convert = [(c, _TO_BODY.get(target.types[c])) for c in target.columns]
    out = []
    for r in rows:
        body = {c: v if (v := r.get(c)) is None or f is None else f(v) for c, f in convert}
        body["updated_at"] = stamp
        out.append(body)
    return out


class Writing:
    """The session's writes and what they are known to have done (a mixin of
    :class:`~compliance_sync.backends.rest.RestSession`, which holds the counters; uses its ``_warn`` and
    :class:`~compliance_sync.backends.rest.read.Reading`'s ``_keyset``)."""

    backend: RestBackend
    client: RestClient
    fy: FiscalYear
    committed: bool
    report: schema.SchemaReport | None
    acknowledged: dict[str, dict[str, int]]
    new_rows: dict[str, int]
    unknown: list[dict[str, Any]]
    _on_wire: dict[int, dict[str, Any]]
    _wire_lock: threading.Lock
    _recording_failure: bool
    _changes: dict[str, ChangeSet]
    _planned: SyncDiff | None

    # --- what was written ----------------------------------------------------------------------------------------
    @property
    def partly_written(self) -> bool:
        """A write reached the server: a row acknowledged, or a request whose outcome is unknown."""
        return any(n for counts in self.acknowledged.values() for n in counts.values()) or bool(
            self.unknown or self._on_wire
        )

    def written_so_far(self) -> dict[str, Any]:
        """What the server acknowledged per target, and the writes whose outcome is unknown (a request still on
        the wire at an interrupt is possibly applied)."""
        with self._wire_lock:
            on_wire = [dict(w, why=ON_THE_WIRE) for w in self._on_wire.values()]
        return {
            "acknowledged": {name: dict(counts) for name, counts in self.acknowledged.items()},
            "inserted": dict(self.new_rows),  # of the rows upserted, the inserts (the ledger row's counts)
            "unknown": [dict(w) for w in self.unknown] + on_wire,
        }

    def _write(self, what: str, table: str, request: str, rows: int, fn: Callable[[], Any]) -> Any:
        """One write request, remembered while it is on the wire; a failure that leaves its outcome unknown
        (or an interrupt while it is out) is recorded as possibly applied."""
        entry = {"table": table, "request": request, "rows": rows}
        token = object()
        with self._wire_lock:
            self._on_wire[id(token)] = entry
        try:
            return self.client.call(what, fn)
        except SyncError as exc:
            if exc.why_unknown:
                self.unknown.append(entry | {"why": f"{exc.why_unknown}: possibly applied"})
            raise
        except BaseException:  # Ctrl-C, SIGTERM (call() turns every Exception into a SyncError): the request is out
            self.unknown.append(entry | {"why": ON_THE_WIRE})
            raise
        finally:
            with self._wire_lock:
                self._on_wire.pop(id(token), None)

    # --- upserts, then deletes -----------------------------------------------------------------------------------
    def _upsert(self, target: TargetTable, rows: list[dict[str, Any]], is_new: list[bool], stamp: str) -> None:
        """Idempotent chunks on the unique key (a retried chunk writes the same values again), pipelined: while
        PostgreSQL upserts one chunk (disjoint keys: the requests never wait for each other), the next is converted
        and sent; at most ``UPSERT_IN_FLIGHT`` requests at a time. A failed chunk stops the run: nothing is sent
        after the failure is seen (the one other request already on the wire may land; a rerun converges)."""
        table, on_conflict = target.name, ",".join(target.key)
        progress = Progress(f"writing {table}")

        def send(chunk: list[dict[str, Any]], new: int) -> int:
            upsert = self.client.rest.from_(table).upsert
            self._write(
                f"writing {table}",
                table,
                "upsert",
                len(chunk),
                lambda: upsert(chunk, on_conflict=on_conflict, returning=MINIMAL).execute(),
            )
            with self._wire_lock:
                self.acknowledged[table]["upserted"] += len(chunk)
                self.new_rows[table] += new
            return len(chunk)

        with concurrent.futures.ThreadPoolExecutor(
            UPSERT_IN_FLIGHT, thread_name_prefix="compliance_sync-upsert"
        ) as wire:
            in_flight: collections.deque[concurrent.futures.Future[int]] = collections.deque()
            try:
                for i in range(0, len(rows), UPSERT_CHUNK):
                    chunk = _body_rows(target, rows[i : i + UPSERT_CHUNK], stamp)
                    while len(in_flight) >= UPSERT_IN_FLIGHT:
                        progress.add(in_flight.popleft().result())
                    in_flight.append(wire.submit(send, chunk, sum(is_new[i : i + UPSERT_CHUNK])))
                while in_flight:
                    progress.add(in_flight.popleft().result())
            finally:
                for queued in in_flight:
                    queued.cancel()  # not yet sent: never sent
        progress.finish()

    def _key_terms(self, target: TargetTable, rows: list[dict[str, Any]]) -> Iterator[str]:
        """``or=(…)`` terms matching the rows' keys (within the FY), in batches that keep URLs short (Supabase's
        edge refuses URLs over ~16 KiB; a key is a few uuids, never a long ``in.(…)`` list)."""
        batch: list[str] = []
        size = 0
        for row in rows:
            term = f"and({','.join(f'{c}.eq.{quote(row[c])}' for c in target.key if c != 'fiscal_year')})"
            if batch and size + len(term) > URL_BUDGET:
                yield ",".join(batch)
                batch, size = [], 0
            batch.append(term)
            size += len(term) + 1
        if batch:
            yield ",".join(batch)

    def _delete(self, target: TargetTable, rows: list[dict[str, Any]]) -> int:
        """Delete stale rows, each only while every column the job does not own is still null (a note a planner
        adds after the read is never deleted). Returns how many of ``rows`` are still there afterwards: rows
        that gained such data after the read, now orphans."""
        from postgrest.types import CountMethod

        foreign = self.report.foreign_columns[target.name]
        deleted = 0
        for terms in self._key_terms(target, rows):

            def send(terms: str = terms) -> Any:
                builder = (
                    self.client.rest.from_(target.name)
                    .delete(count=CountMethod.exact, returning=MINIMAL)
                    .eq("fiscal_year", str(self.fy.year))
                )
                for c in foreign:
                    builder = builder.is_(c, "null")
                return builder.or_(terms).execute()

            planned = terms.count("and(")
            response = self._write(f"deleting from {target.name}", target.name, "delete", planned, send)
            done = response.count if response.count is not None else planned
            self.acknowledged[target.name]["deleted"] += done
            deleted += done
        if deleted >= len(rows):
            return 0
        # fewer deleted than planned: a row gained data the job does not own since the read (kept, an orphan
        # now), or another run deleted it first; only the rows still there count as orphans
        kept = 0
        for terms in self._key_terms(target, rows):
            filters = {"fiscal_year": f"eq.{self.fy.year}", "or": f"({terms})"}
            found = pages(self.client, target.name, list(target.key), filters, self._keyset(target.name))
            kept += sum(len(page) for page in found)
        return kept

    def _kept_as_orphans(self, target: TargetTable, kept: int, ledger: LedgerRow) -> None:
        """Count rows the delete kept (they gained data the job does not own after the read) as orphans."""
        diff = self._planned.targets[target.name]
        diff.deleted -= kept
        diff.orphans += kept
        ledger.rows_deleted -= kept
        ledger.orphans += kept
        self._warn(
            f"{target.name}: {kept} stale row(s) gained data the job does not own after they were read "
            "(a planner's note?); kept as orphans, not deleted"
        )

    # --- the ledger row, last --------------------------------------------------------------------------------------
    def _write_ledger(self, ledger: LedgerRow, retry: bool = True) -> None:
        """Last, and idempotent: upserted on the run's id (a retried POST adds no second row)."""
        columns = self.report.ledger_columns if self.report else None
        if not columns:
            return
        values = ledger.values(columns)
        row = _json_row(values, list(values))
        table = self.client.rest.from_
        if "run_id" in row:
            try:
                self._ledger_call(
                    lambda: table(LEDGER_TABLE).upsert([row], on_conflict="run_id", returning=MINIMAL).execute(), retry
                )
                return
            except DataError as exc:
                if "42P10" not in str(exc):
                    raise
                self._warn(
                    f"{LEDGER_TABLE}.run_id has no unique index: a retried ledger write may add a second row "
                    "(run `compliance-sync migrate --minimal`)"
                )
        self._ledger_call(lambda: table(LEDGER_TABLE).insert([row], returning=MINIMAL).execute(), retry)

    def _ledger_call(self, fn: Callable[[], Any], retry: bool) -> None:
        """The ledger row of a run that is writing is reported like a target's write (its outcome may be
        unknown); a failed run's ledger row, written after the stop, is best effort."""
        if self._recording_failure:
            self.client.call(f"writing {LEDGER_TABLE}", fn, retry)
        else:
            self._write(f"writing {LEDGER_TABLE}", LEDGER_TABLE, "insert", 1, fn)

    def apply(self, diff: SyncDiff, run_ts: dt.datetime, ledger: LedgerRow) -> None:
        if diff is not self._planned or self.committed:
            raise RuntimeError("apply() takes the diff this session planned, once")
        stamp = run_ts.isoformat()
        for t in TARGETS:  # upserts first, every target
            if self._changes[t.name].upserts:
                self._upsert(t, self._changes[t.name].upserts, self._changes[t.name].new, stamp)
        for t in TARGETS:  # stale rows last
            if t.not_wanted == NotWanted.PRUNE and self._changes[t.name].deletes:
                kept = self._delete(t, self._changes[t.name].deletes)
                if kept:
                    self._kept_as_orphans(t, kept, ledger)
        self._write_ledger(ledger)
        self.committed = True

    def record_failure(self, ledger: LedgerRow) -> None:
        """Best effort: one attempt when the run stopped because the API was unreachable (no second round
        of retries before the error is shown)."""
        self._recording_failure = True
        try:
            self._write_ledger(ledger, retry=not self.client.unreachable)
        except SyncError as exc:
            self._warn(f"could not record the failed run in {LEDGER_TABLE}: {exc}")
