"""The run ledger's row (SPEC §3.4): one per live run, written by the backend in the run's own transaction
(direct) or last (REST), so the planning app can show "last synced" and link it to the Dagster run."""

from __future__ import annotations

import dataclasses
import datetime as dt
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

    def values(self, columns: set[str] | None = None) -> dict[str, Any]:
        """The row as column -> value, limited to the columns the ledger table has."""
        row = dataclasses.asdict(self)
        return {c: row[c] for c in LEDGER_COLUMNS if columns is None or c in columns}


assert tuple(f.name for f in dataclasses.fields(LedgerRow)) == tuple(LEDGER_COLUMNS), "LedgerRow and LEDGER_COLUMNS disagree"
