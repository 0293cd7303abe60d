"""``compliance-sync explain``: one FY read as a sync reads it, through the backend's read-only :class:`Reader`
(no lock, no ledger row, no temporary table, nothing written), computed by the same rules with provenance for the
subject, and the subject's target rows now against what a sync would write. The explanation itself is built by
:mod:`compliance_sync.explanation` (pure) and rendered by :mod:`compliance_sync.explain_text`."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from compliance_sync import explanation
from compliance_sync.backends.port import Backend
from compliance_sync.bu_map import BuMap
from compliance_sync.explanation import Subject
from compliance_sync.fiscal import FiscalYear
from compliance_sync.provenance import Trace
from compliance_sync.rules import compute
from compliance_sync.settings import Settings

log = logging.getLogger(__name__)


def explain(backend: Backend, settings: Settings, bu_map: BuMap, fy: FiscalYear, as_of: dt.date, subject: Subject) -> dict[str, Any]:
    """The explanation of ``subject`` in FY ``fy`` at ``as_of`` (already clamped to the FY end), as one JSON-ready dict."""
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
        out["targets"] = explanation.compare(table, reader.read_rows(table, column, values), explanation.wanted_rows(comp, scope, out))
        out["backend"] = backend.name.value
        out["warnings"] = {code: f.count for code, f in comp.findings.items() if f.count}
        out["backend_warnings"] = list(reader.warnings)
    return out
