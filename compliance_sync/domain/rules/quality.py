"""SPEC §6 data-quality findings across tables: name mismatches, possible aliases, compliance-cache drift and
undated events. They report; no figure changes."""

from __future__ import annotations

import collections

from compliance_sync.domain.facts import Facts
from compliance_sync.domain.findings import Findings, WarningCode
from compliance_sync.domain.provenance import Trace, possible_aliases
from compliance_sync.domain.rules.arithmetic import text_key


def _fold(name: str) -> str:
    """A name with case and whitespace ignored (for the name-mismatch warning only)."""
    return "".join(str(name).split()).casefold()


# --- data quality across tables -----------------------------------------------------------------------------
def check_names(facts: Facts, plan_clients: set[str], found: Findings) -> None:
    seg_names = {p.client_name for p in facts.periods if p.client_name is not None}
    folded: dict[str, set[str]] = collections.defaultdict(set)
    for n in seg_names:
        folded[_fold(n)].add(n)
    others = plan_clients | {e.client_name for e in facts.event_counts if e.client_name}
    for name in sorted(others - seg_names):
        matches = folded.get(_fold(name))
        if matches:
            found.add(
                WarningCode.NAME_MISMATCHES,
                f"{name!r} matches {sorted(matches)!r} only when case or spaces are ignored",
            )
    by_uuid: dict[str, set[str]] = collections.defaultdict(set)
    for p in facts.periods:
        if p.client_uuid is not None and p.client_name is not None:
            by_uuid[p.client_uuid].add(p.client_name)
    for uuid, names in sorted(by_uuid.items()):
        if len(names) > 1:
            found.add(WarningCode.NAME_MISMATCHES, f"client_uuid {uuid} is shared by different names {sorted(names)!r}")


def check_aliases(facts: Facts, plan_clients: set[str], found: Findings, trace: Trace | None = None) -> None:
    """SPEC §6 ``possible_alias``: event client names (in the FY window) that are not plan clients but nearly
    match one; reported with both names and the event count, never matched, no figure changes."""
    events: collections.Counter = collections.Counter()
    for e in facts.event_counts:
        if e.client_name is not None and e.client_name not in plan_clients:
            events[e.client_name] += sum(e.completed) + sum(e.scheduled)
    pairs = possible_aliases(events, plan_clients)
    for name, plan, n in pairs:
        found.add(
            WarningCode.POSSIBLE_ALIAS,
            f"{n} event(s) logged under {name!r} may belong to plan client {plan!r} (not counted)",
        )
    if trace is not None:
        trace.aliases = pairs


def check_cache_drift(facts: Facts, codes: dict[str, str], found: Findings) -> None:
    actual = {(r.client_name, r.event_type_id, r.year): r.completed for r in facts.calendar_completed}
    for r in sorted(
        facts.compliance_cache, key=lambda r: (text_key(r.client_name), text_key(r.event_type_id), r.year or 0)
    ):
        key = (r.client_name, r.event_type_id, r.year)
        real = actual.get(key, 0)
        if r.actual_count is None or int(r.actual_count) != real:
            found.add(
                WarningCode.COMPLIANCE_CACHE_DRIFT,
                f"{r.client_name} {codes.get(r.event_type_id) or r.event_type_id} {r.year}: "
                f"cache says {r.actual_count}, events say {real}",
            )


def report_undated(facts: Facts, found: Findings) -> None:
    for e in sorted(facts.undated_events, key=lambda e: e.id):
        found.add(WarningCode.UNDATED_EVENTS, f"event {e.id} of {e.client_name!r} has no event_date")
