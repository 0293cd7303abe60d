"""The backend port: what the sync needs from a place that holds the tables, and nothing more.

Two adapters implement it: :mod:`.postgres` (a direct connection: one lock, one transaction) and
:mod:`.rest` (Supabase's REST API: no transactions, so upserts first and deletes last); a third,
:mod:`.memory`, holds the tables as Python rows for tests of the service. The rules, the
diff's presentation, the guards, the invariants and the Dagster assets use only these protocols.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from compliance_sync.domain.diff import SyncDiff
from compliance_sync.domain.facts import Facts, RawEvent
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.ledger import LedgerRow, LedgerRuns
from compliance_sync.domain.wanted import WantedRows


class BackendKind(enum.StrEnum):
    """Where the tables are read and written: a direct PostgreSQL connection or Supabase's REST API."""

    POSTGRES = "postgres"
    REST = "rest"
    MEMORY = "memory"  # rows in Python (backends/memory.py): tests of the service; never chosen by settings


class Session(Protocol):
    """One FY's run against the tables: read, plan, then apply or record a failure; closed on exit."""

    warnings: list[str]  # what the backend noticed that the run carries on past (a missing ledger, ...)
    committed: bool  # every planned change is written
    partly_written: bool  # some changes are written, not all (REST only; every row old or new, none missing)
    keys_required: bool  # True (a live run): a target key without a unique index stops read_facts (SPEC §3.3);
    # False (a dry run): it is reported in the diff (TargetDiff.key_backed, duplicates) and rows match on the key

    def written_so_far(self) -> dict | None:
        """When partly written: ``{"acknowledged": {target: {"upserted": n, "deleted": n}}, "unknown": [{"table",
        "request", "rows", "why"}]}`` (REST); None for a backend that writes all or nothing."""
        ...

    def read_facts(self) -> Facts:
        """Check the schema, then read the rule-neutral facts of the FY."""
        ...

    def plan(self, wanted: WantedRows, limit: int) -> SyncDiff:
        """Compare the wanted rows with the targets' current rows of the FY (each backend its own way),
        keeping the first ``limit`` rows of each action for the report. Writes nothing to a target."""
        ...

    def apply(self, diff: SyncDiff, run_ts: dt.datetime, ledger: LedgerRow) -> None:
        """Write the planned changes and the ledger row (``updated_at = run_ts`` on every changed row)."""
        ...

    def record_failure(self, ledger: LedgerRow) -> None:
        """Best effort: record a stopped live run in the ledger; never raises, never touches a target."""
        ...


class Reader(Protocol):
    """A read-only look at one FY (``explain``): SELECTs (REST: GETs) only; no lock, no ledger row, no temporary
    table, nothing written. Reads the same facts a sync of the FY reads."""

    warnings: list[str]

    def read_facts(self) -> Facts:
        """Check the schema (not the unique keys: nothing is written), then read the facts of the FY."""
        ...

    def read_events(self, client_names: Sequence[str]) -> list[RawEvent]:
        """Every ``segmentation_events`` row logged under one of ``client_names`` (any date)."""
        ...

    def read_rows(self, table: str, column: str | None, values: Sequence[Any]) -> list[dict[str, Any]]:
        """The FY's current rows of a target whose ``column`` is one of ``values`` (every row of the FY when
        ``column`` is None): key and owned columns, and ``has_foreign`` (a column the job does not own is set)."""
        ...


class Backend(Protocol):
    name: BackendKind
    atomic: bool  # True: all four targets change in one transaction; False: upserts first, deletes last

    def session(self, fy: FiscalYear, as_of: dt.date) -> AbstractContextManager[Session]: ...

    def reader(self, fy: FiscalYear, as_of: dt.date) -> AbstractContextManager[Reader]:
        """A read-only session of the FY (see :class:`Reader`)."""
        ...

    def fingerprint(self, fy: FiscalYear) -> str:
        """A short text that changes when the FY's source rows change (for the change-driven sensor)."""
        ...

    def describe(self) -> str:
        """Where the data lives, safe to show (no user, password or key)."""
        ...

    def ledger_runs(self, fy: FiscalYear, limit: int = 5) -> LedgerRuns:
        """The FY's latest succeeded live runs in the run ledger, newest first (read-only; for the report)."""
        ...
