"""``compliance-sync explain``: one FY read as a sync reads it, through the backend's read-only :class:`Reader`
(no lock, no ledger row, no temporary table, nothing written), computed by the same rules with provenance for the
subject, and the subject's target rows now against what a sync would write. The explanation itself is built by
:mod:`compliance_sync.domain.explanation` (pure) and rendered by :mod:`compliance_sync.service.explain_text`."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from compliance_sync.backends.port import Backend
from compliance_sync.config.settings import Settings
from compliance_sync.domain import explanation
from compliance_sync.domain.bu_map import BuMap
from compliance_sync.domain.diff import diff_rows
from compliance_sync.domain.explanation import DIFF_LINES, Subject
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.provenance import Trace
from compliance_sync.domain.rules import compute
from compliance_sync.domain.tables import TARGET_BY_NAME
from compliance_sync.service import diff_text as report

log = logging.getLogger(__name__)


def explain(
    backend: Backend, settings: Settings, bu_map: BuMap, fy: FiscalYear, as_of: dt.date, subject: Subject
) -> dict[str, Any]:
    """The explanation of ``subject`` in FY ``fy`` at ``as_of`` (already clamped to the FY end), as one
    JSON-ready dict."""
    with backend.reader(fy, as_of) as reader:
        facts = reader.read_facts()
        scope = explanation.resolve(facts, bu_map, subject)
        comp = compute(facts, settings.thresholds, bu_map, Trace(frozenset([scope.client] if scope.client else ())))
        if scope.client is not None:
            events = reader.read_events([scope.client, *explanation.alias_names(comp, scope.client)])
            out = explanation.explain_client(comp, facts, scope, events, settings.thresholds, bu_map)
        elif subject.kind == "territory":
            out = explanation.explain_territory(comp, scope, bu_map)
        elif subject.kind == "bu":
            out = explanation.explain_bu(comp, scope, bu_map)
        else:
            out = explanation.explain_apac(comp, bu_map)
        table, column, values = explanation.target_keys(scope)
        out["targets"] = compare(
            table, reader.read_rows(table, column, values), explanation.wanted_rows(comp, scope, out)
        )
        out["backend"] = backend.name.value
        out["warnings"] = {code: f.count for code, f in comp.findings.items() if f.count}
        out["backend_warnings"] = list(reader.warnings)
    return out


def compare(table: str, current: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> dict[str, Any]:
    """The target rows now against what a sync would write: in sync, or the dry run's row-level lines."""
    diff, _ = diff_rows(TARGET_BY_NAME[table], current, wanted, DIFF_LINES)
    return {
        "table": table,
        "rows_now": diff.current_count,
        "rows_wanted": len(wanted),
        "in_sync": diff.changes == 0,
        "counts": diff.counts(),
        "lines": report.describe(diff),
    }
