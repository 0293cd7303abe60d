"""One FY's report from the sync's own code: a dry run of :func:`compliance_sync.service.sync.run_fiscal_year` (SELECTs
and temporary tables only: no target row, no ledger row written), then the run ledger's previous APAC figure.
Used by ``compliance-sync report`` and the ``compliance_report`` asset.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import pathlib
import uuid

from compliance_sync.backends import Backend
from compliance_sync.config.settings import Settings
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.errors import ConnectionFailure, DataError, ExitCode, SettingsError, SyncError
from compliance_sync.service import summary
from compliance_sync.service.fy_report.tables import ReportTables, build_tables

log = logging.getLogger(__name__)

DEFAULT_DIR = pathlib.Path(".compliance_sync") / "reports"


def default_name(fy: FiscalYear) -> str:
    return f"compliance_report_FY{fy.year}.html"


def report_dir(settings: Settings) -> pathlib.Path:
    """``COMPLIANCE_SYNC_REPORT_DIR``, else ``$DAGSTER_HOME/reports`` when set, else ``.compliance_sync/reports``."""
    if settings.report_dir:
        return pathlib.Path(settings.report_dir).expanduser()
    home = os.environ.get("DAGSTER_HOME")
    return pathlib.Path(home) / "reports" if home else DEFAULT_DIR


@dataclasses.dataclass
class Report:
    tables: ReportTables
    warnings: list[str]  # what the dry run and the ledger read noticed (a missing ledger column, ...)


def _stop(message: str, code: ExitCode) -> SyncError:
    kind = {ExitCode.USAGE: SettingsError, ExitCode.CONNECTION: ConnectionFailure}.get(code, DataError)
    return kind(message)


def produce(
    settings: Settings, backend: Backend, fy: FiscalYear, reference: dt.date, trigger: str = "report"
) -> Report:
    """Compute the FY as a dry run does and build the report's tables; a stop raises its :class:`SyncError`."""
    from compliance_sync.service.sync import Mode, Outcome, RunOptions, run_fiscal_year

    run_id = f"{trigger}-{uuid.uuid4()}"
    outcome = Outcome(fy, fy.as_of(reference), Mode.DRY_RUN, backend.name.value, run_id)
    run_fiscal_year(
        backend, settings, settings.bu_map(), outcome, RunOptions(Mode.DRY_RUN, diff_limit=0, run_id=run_id)
    )
    if outcome.error or outcome.comp is None:
        raise _stop(outcome.error or "the computation produced nothing", outcome.exit_code)
    ledger = backend.ledger_runs(fy)
    if ledger.warning:
        log.warning(ledger.warning)
    tables = build_tables(
        outcome.comp,
        generated_at=dt.datetime.now(settings.tz),
        findings=summary.findings(outcome),
        backend_warnings=[w for w in outcome.backend_warnings if w != ledger.warning],
        targets={name: t.counts() for name, t in outcome.diff.targets.items()} if outcome.diff else None,
        ledger_rows=ledger.rows,
        ledger_note=ledger.warning,
    )
    return Report(tables, [*outcome.backend_warnings, *([ledger.warning] if ledger.warning else [])])


def write(settings: Settings, tables: ReportTables, out: str | os.PathLike, name: str = "--out") -> pathlib.Path:
    """Write the report (format by extension), the charts marking the configured at-risk and compliant thresholds."""
    from compliance_sync.service.fy_report import output

    t = settings.thresholds
    return output.write_report(tables, out, (float(t.at_risk_from), float(t.compliant_from)), name=name)


def markdown_summary(tables: ReportTables) -> str:
    """A few lines for the Dagster UI: the APAC figure, its change, the BUs, the clients below compliance."""
    apac = "–" if tables.apac is None else f"{tables.apac} %"
    change = (
        f"{'+' if tables.change > 0 else ''}{tables.change} pts since "
        f"{tables.previous.describe(tables.generated_at.tzinfo)}"
        if tables.change is not None and tables.previous is not None
        else tables.ledger_note or "no earlier run in the ledger"
    )
    lines = [
        f"**FY{tables.fiscal_year}** ({tables.window[0]} … {tables.window[1]}), as_of {tables.as_of}",
        "",
        f"- APAC compliance: **{apac}** ({change})",
        f"- clients: {tables.clients}, below compliance: {tables.below}",
    ]
    for row in tables.business_units.itertuples(index=False):
        pct = "–" if row[1] is None else f"{row[1]} %"
        lines.append(f"- {row[0]}: {pct}, {row[2]} clients, {row[3]} below")
    if not tables.warnings.empty:
        lines.append(
            "- data-quality warnings: "
            + ", ".join(f"{w} ({n})" for w, n in zip(tables.warnings["Warning"], tables.warnings["Count"]))
        )
    return "\n".join(lines)
