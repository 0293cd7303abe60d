"""SPEC §6 findings: the warnings a run carries on past and the errors that stop it, with a total and
up to twenty examples each. One catalogue of codes, whichever step produces them."""

from __future__ import annotations

import dataclasses
import enum

MAX_EXAMPLES = 20


class Severity(enum.StrEnum):
    WARN = "WARN"
    ERROR = "ERROR"


# Warnings of SPEC §6, one Dagster check each: code -> description. The rules produce all but the last
# two, which come from comparing wanted rows with the targets (the diff).
WARNINGS: dict[str, str] = {
    "invalid_segment_periods": "Segment periods ignored: null or unknown tier_id (or a tier without a name), "
    "a null effective_from, or effective_to before effective_from",
    "overlapping_segment_periods": "Clients with overlapping segment periods within the FY, or several open ones",
    "clients_without_segmentation": "Plans whose client has no valid segment period in the FY, or no client_name (skipped)",
    "negative_frequency": "tier_event_requirements rows with a negative frequency (treated as 0)",
    "undated_events": "Events with a null event_date (ignored)",
    "unknown_events": "Events of an unknown (or null) event type or of an unknown client (ignored)",
    "completed_future_events": "Events marked completed but dated after as_of (counted as scheduled)",
    "unmapped_territories": "Territories the BU map does not map (left out of business-unit rows)",
    "clients_without_strategy": "Clients whose CSE has no territory strategy this FY (unassigned: APAC only)",
    "unused_strategies": "Territory strategies without clients, or losing the per-CSE tie-break",
    "name_mismatches": "Names that match only when case or spaces are ignored; different names sharing a client_uuid",
    "compliance_cache_drift": "segmentation_event_compliance disagrees with the events of that calendar year",
    "orphans": "Target rows the run did not compute but kept because they carry data the job does not own",
    "null_key_rows": "Target rows of the FY with a NULL key column: never matched, updated or deleted",
}
RULE_WARNINGS = tuple(code for code in WARNINGS if code not in ("orphans", "null_key_rows"))


@dataclasses.dataclass
class Finding:
    """A warning (the run carries on) or an error (it stops); ``count`` is the total."""

    code: str
    severity: Severity
    description: str
    count: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    def add(self, example: str, n: int = 1) -> None:
        self.count += n
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def summary(self) -> str:
        return f"{self.code}: {self.count} — {self.description}" + (f"; e.g. {'; '.join(self.examples[:3])}" if self.examples else "")


class Findings(dict):
    """code -> :class:`Finding`, pre-filled with a catalogue so that every check always has a result."""

    def __init__(self, catalogue: dict[str, str], severity: Severity) -> None:
        super().__init__({code: Finding(code, severity, text) for code, text in catalogue.items()})

    def add(self, code: str, example: str) -> None:
        self[code].add(example)

    def found(self) -> list[Finding]:
        return [f for f in self.values() if f.count]
