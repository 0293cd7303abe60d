"""The backend port: what the sync needs from a place that holds the tables, and nothing more.

Two adapters implement it: :mod:`.postgres` (a direct connection: one lock, one transaction) and
:mod:`.rest` (Supabase's REST API: no transactions, so upserts first and deletes last). The rules, the
diff's presentation, the guards, the invariants and the Dagster assets use only these protocols.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Protocol

from compliance_sync.diff import SyncDiff
from compliance_sync.facts import Facts
from compliance_sync.fiscal import FiscalYear
from compliance_sync.ledger import LedgerRow, LedgerRuns
from compliance_sync.settings import BackendKind
from compliance_sync.wanted import WantedRows


class Session(Protocol):
    """One FY's run against the tables: read, plan, then apply or record a failure; closed on exit."""

    warnings: list[str]  # what the backend noticed that the run carries on past (a missing ledger, ...)
    committed: bool  # every planned change is written
    partly_written: bool  # some changes are written, not all (REST only; every row old or new, none missing)

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


class Backend(Protocol):
    name: BackendKind
    atomic: bool  # True: all four targets change in one transaction; False: upserts first, deletes last

    def session(self, fy: FiscalYear, as_of: dt.date) -> AbstractContextManager[Session]: ...

    def fingerprint(self, fy: FiscalYear) -> str:
        """A short text that changes when the FY's source rows change (for the change-driven sensor)."""
        ...

    def describe(self) -> str:
        """Where the data lives, safe to show (no user, password or key)."""
        ...

    def ledger_runs(self, fy: FiscalYear, limit: int = 5) -> LedgerRuns:
        """The FY's latest succeeded live runs in the run ledger, newest first (read-only; for the report)."""
        ...
