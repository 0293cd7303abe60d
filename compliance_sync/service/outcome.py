"""What one fiscal year's run learned, as a record: the computation, the diff, the checks, what was written, the
error. Rendering it (the summary, the ledger row, texts) is :mod:`compliance_sync.service.summary`'s."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any

from compliance_sync.domain.diff import SyncDiff
from compliance_sync.domain.findings import Findings
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.guards import Guard
from compliance_sync.domain.rules import Computation
from compliance_sync.errors import ExitCode


class Mode(enum.StrEnum):
    LIVE = "live"
    DRY_RUN = "dry_run"


class RunStatus(enum.StrEnum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"
    DRY_RUN = "dry_run"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PARTLY_WRITTEN = "partly_written"  # REST: a write reached the server before a failure or an interrupt


@dataclasses.dataclass
class Outcome:
    """Everything one run learned; :func:`compliance_sync.service.sync.run_fiscal_year` fills it in as it goes."""

    fy: FiscalYear
    as_of: dt.date
    mode: Mode
    backend: str
    run_id: str
    started_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))
    comp: Computation | None = None
    diff: SyncDiff | None = None
    invariants: Findings | None = None
    guards: list[Guard] = dataclasses.field(default_factory=list)  # every guard found
    stopping: list[Guard] = dataclasses.field(default_factory=list)  # those that stop (or would stop) a live run
    backend_warnings: list[str] = dataclasses.field(default_factory=list)
    source_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    written: bool = False
    partly_written: bool = False  # REST only: a write reached the server before the stop (a rerun converges)
    partial: dict[str, Any] | None = None  # then: the rows acknowledged per target and the writes of unknown outcome
    error: str | None = None
    exit_code: ExitCode = ExitCode.OK

    @property
    def status(self) -> RunStatus:
        if self.partly_written and not self.written:  # failed or interrupted after a write reached the server
            return RunStatus.PARTLY_WRITTEN
        if self.exit_code == ExitCode.INTERRUPTED:
            return RunStatus.INTERRUPTED
        if self.error:
            return RunStatus.FAILED
        if self.mode == Mode.DRY_RUN:
            return RunStatus.DRY_RUN
        return RunStatus.WRITTEN if self.written and self.diff and self.diff.changes else RunStatus.UNCHANGED
