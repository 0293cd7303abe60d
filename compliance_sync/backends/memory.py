"""A backend holding the tables as Python rows: the port's third adapter, for tests of the service.

It reads facts from raw rows through :func:`compliance_sync.domain.facts.facts_from_rows`, plans with the shared
pure diff (:func:`compliance_sync.domain.diff.diff_rows`, as the REST backend does), applies by changing its rows
and records runs in an in-memory ledger. :class:`Faults` injects what real databases do at the worst
moment: a concurrent change (a serialization failure) on given attempts, a data error at apply, an
interrupt part-way through the writes. Atomic by default (like the direct connection: a stop leaves the
rows as they were); ``atomic=False`` writes row by row like REST (upserts first, deletes last).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from compliance_sync.backends.port import BackendKind
from compliance_sync.domain.diff import ChangeSet, SyncDiff, diff_rows, key_of
from compliance_sync.domain.facts import Facts, facts_from_rows
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.ledger import LedgerRow
from compliance_sync.domain.tables import (
    EXCLUSIONS,
    JOB_META_COLUMNS,
    LEDGER_TABLE,
    SOURCES,
    TARGETS,
    NotWanted,
    TargetTable,
)
from compliance_sync.domain.wanted import WantedRows
from compliance_sync.errors import ConcurrentChange, DataError

Rows = list[dict[str, Any]]


@dataclasses.dataclass
class Faults:
    """What goes wrong, and when. Attempts count the sessions the backend opened, from 1."""

    concurrent_change_on: frozenset[int] = frozenset()  # attempts whose apply meets a serialization failure
    data_error_at_apply: str | None = None  # every apply stops with this DataError before writing
    interrupt_after_writes: int | None = None  # Ctrl-C after this many row writes (0: before the first)
    interrupt_after_commit: bool = False  # Ctrl-C just after everything is written


class MemoryBackend:
    """The tables as ``{table name: [row dicts]}``: the sources of SPEC §3, the four targets, the ledger."""

    name = BackendKind.MEMORY

    def __init__(
        self,
        tables: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
        *,
        atomic: bool = True,
        faults: Faults | None = None,
    ) -> None:
        self.tables: dict[str, Rows] = {name: [dict(r) for r in rows] for name, rows in (tables or {}).items()}
        for name in (*(t.name for t in TARGETS), LEDGER_TABLE):
            self.tables.setdefault(name, [])
        self.atomic = atomic
        self.faults = faults or Faults()
        self.attempts = 0
        self.calls: list[str] = []  # what the service asked for, in order: read_facts, plan, apply, record_failure

    @property
    def ledger(self) -> Rows:
        return self.tables[LEDGER_TABLE]

    def rows(self, table: str, fiscal_year: int | None = None) -> Rows:
        return [r for r in self.tables.get(table, []) if fiscal_year is None or r.get("fiscal_year") == fiscal_year]

    @contextlib.contextmanager
    def session(self, fy: FiscalYear, as_of: dt.date) -> Iterator[MemorySession]:
        self.attempts += 1
        yield MemorySession(self, fy, as_of, self.attempts)

    def fingerprint(self, fy: FiscalYear) -> str:
        source = {s.name: self.tables.get(s.name, []) for s in SOURCES}
        return hashlib.sha256(repr(sorted((k, repr(v)) for k, v in source.items())).encode()).hexdigest()[:16]

    def describe(self) -> str:
        return "in memory"


class MemorySession:
    """One FY's run against the backend's rows (the port's :class:`~compliance_sync.backends.port.Session`)."""

    def __init__(self, backend: MemoryBackend, fy: FiscalYear, as_of: dt.date, attempt: int) -> None:
        self.backend, self.fy, self.as_of, self.attempt = backend, fy, as_of, attempt
        self.warnings: list[str] = []
        self.committed = False
        self.partly_written = False
        self.keys_required = True
        self.acknowledged = {t.name: {"upserted": 0, "deleted": 0} for t in TARGETS}  # row by row: each write lands
        self.inserted = {t.name: 0 for t in TARGETS}
        self._planned: SyncDiff | None = None
        self._changes: dict[str, ChangeSet] = {}

    def read_facts(self) -> Facts:
        self.backend.calls.append("read_facts")
        t = self.backend.tables
        return facts_from_rows(
            self.fy,
            self.as_of,
            plans=t.get("account_plans", []),
            periods=t.get("client_segmentation", []),
            tiers=t.get("segmentation_tiers", []),
            event_types=t.get("segmentation_event_types", []),
            requirements=t.get("tier_event_requirements", []),
            strategies=t.get("territory_strategies", []),
            exclusions=t.get(EXCLUSIONS),
            events=t.get("segmentation_events", []),
            compliance_cache=t.get("segmentation_event_compliance", []),
        )

    def _current(self, target: TargetTable) -> Rows:
        """The FY's rows with ``has_foreign``: a column the job does not own holds a value."""
        owned = set(target.columns) | set(JOB_META_COLUMNS)
        return [
            r | {"has_foreign": any(v is not None for c, v in r.items() if c not in owned)}
            for r in self.backend.rows(target.name, self.fy.year)
        ]

    def plan(self, wanted: WantedRows, limit: int) -> SyncDiff:
        self.backend.calls.append("plan")
        targets = {}
        for t in TARGETS:
            targets[t.name], self._changes[t.name] = diff_rows(t, self._current(t), wanted.rows(t.name), limit)
        self._planned = SyncDiff(self.fy.year, targets)
        return self._planned

    def apply(self, diff: SyncDiff, run_ts: dt.datetime, ledger: LedgerRow) -> None:
        self.backend.calls.append("apply")
        if diff is not self._planned or self.committed:
            raise RuntimeError("apply() takes the diff this session planned, once")
        faults = self.backend.faults
        if self.attempt in faults.concurrent_change_on:
            raise ConcurrentChange("could not serialize access due to concurrent update (a planner edited a row)")
        if faults.data_error_at_apply:
            raise DataError(faults.data_error_at_apply)
        tables = copy.deepcopy(self.backend.tables) if self.backend.atomic else self.backend.tables
        writes = 0

        def wrote() -> None:
            nonlocal writes
            if faults.interrupt_after_writes is not None and writes >= faults.interrupt_after_writes:
                raise KeyboardInterrupt
            writes += 1
            self.partly_written = not self.backend.atomic

        for t in TARGETS:  # upserts first, every target
            by_key = {key_of(t, r): r for r in tables[t.name] if r.get("fiscal_year") == self.fy.year}
            for row in self._changes[t.name].upserts:
                wrote()
                values = {c: row.get(c) for c in t.columns} | {"updated_at": run_ts}
                current = by_key.get(key_of(t, row))
                if current is None:
                    tables[t.name].append(values)
                    by_key[key_of(t, row)] = values
                    self.inserted[t.name] += 1
                else:
                    current.update(values)
                self.acknowledged[t.name]["upserted"] += 1
        for t in TARGETS:  # stale rows last
            if t.not_wanted != NotWanted.PRUNE:
                continue
            for row in self._changes[t.name].deletes:
                wrote()
                key = key_of(t, row)
                tables[t.name][:] = [
                    r for r in tables[t.name] if r.get("fiscal_year") != self.fy.year or key_of(t, r) != key
                ]
                self.acknowledged[t.name]["deleted"] += 1
        tables[LEDGER_TABLE].append(ledger.values())
        if self.backend.atomic:
            self.backend.tables = tables  # the commit
        self.committed = True
        if faults.interrupt_after_commit:
            raise KeyboardInterrupt

    def written_so_far(self) -> dict | None:
        """Atomic: nothing to report (all or nothing). Row by row: every write counted was applied."""
        if self.backend.atomic:
            return None
        return {"acknowledged": copy.deepcopy(self.acknowledged), "inserted": dict(self.inserted), "unknown": []}

    def record_failure(self, ledger: LedgerRow) -> None:
        self.backend.calls.append("record_failure")
        self.backend.ledger.append(ledger.values())
