"""The run ledger's row (SPEC §3.4): one per live run, written by the backend in the run's own transaction
(direct) or last (REST), so the planning app can show "last synced" and link it to the Dagster run; and what
the report reads back from it (the previous runs' APAC figures)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from typing import Any

from compliance_sync.domain.tables import LEDGER_COLUMNS


@dataclasses.dataclass
class LedgerRow:
    run_id: str
    fiscal_year: int
    as_of: dt.date
    started_at: dt.datetime
    finished_at: dt.datetime
    backend: str
    mode: str
    status: str  # "succeeded", "failed" or "partly_written" (REST: a write reached the server before the stop)
    clients_processed: int = 0
    clients_skipped: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    rows_unchanged: int = 0
    orphans: int = 0
    territories: int = 0
    business_units: int = 0
    error: str | None = None
    apac_compliance: decimal.Decimal | None = None  # the run's APAC figure (None: not computed)

    def values(self, columns: set[str] | None = None) -> dict[str, Any]:
        """The row as column -> value, limited to the columns the ledger table has."""
        row = dataclasses.asdict(self)
        return {c: row[c] for c in LEDGER_COLUMNS if columns is None or c in columns}


assert tuple(f.name for f in dataclasses.fields(LedgerRow)) == tuple(LEDGER_COLUMNS), (
    "LedgerRow and LEDGER_COLUMNS disagree"
)


# --- reading it back (the report's "change since the previous run") -------------------------------------------
LEDGER_READ_COLUMNS = ("run_id", "as_of", "started_at", "finished_at", "apac_compliance")
NO_LEDGER_FIGURE = (
    "compliance_sync_runs has no column apac_compliance: the report cannot show the change since the previous run "
    "(run `compliance-sync migrate --minimal` to add it)"
)
NO_LEDGER = (
    "compliance_sync_runs does not exist: the report cannot show the change since the previous run "
    "(run `compliance-sync migrate --minimal` to add it)"
)


@dataclasses.dataclass
class LedgerRuns:
    """The FY's latest succeeded live runs, newest first (only the columns the ledger has), and why a figure
    may be missing (an old ledger without ``apac_compliance``, or no ledger at all)."""

    rows: list[dict[str, Any]]
    warning: str | None = None


def readable_columns(columns: set[str] | dict[str, Any]) -> tuple[list[str], str | None]:
    """The read-back columns a ledger has, and the warning when it cannot hold the APAC figure."""
    present = [c for c in LEDGER_READ_COLUMNS if c in columns]
    return present, None if "apac_compliance" in columns else NO_LEDGER_FIGURE
