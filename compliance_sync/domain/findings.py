"""SPEC §6 findings: the warnings a run carries on past and the errors that stop it, with a total and
up to twenty examples each. One catalogue of codes, whichever step produces them."""

from __future__ import annotations

import dataclasses
import enum

MAX_EXAMPLES = 20


class Severity(enum.StrEnum):
    WARN = "WARN"
    ERROR = "ERROR"


class WarningCode(enum.StrEnum):
    """The warnings of SPEC §6: each one Dagster check's name and a key of the summary's ``warnings``."""

    INVALID_SEGMENT_PERIODS = "invalid_segment_periods"
    OVERLAPPING_SEGMENT_PERIODS = "overlapping_segment_periods"
    CLIENTS_WITHOUT_SEGMENTATION = "clients_without_segmentation"
    NEGATIVE_FREQUENCY = "negative_frequency"
    UNDATED_EVENTS = "undated_events"
    UNKNOWN_EVENTS = "unknown_events"
    COMPLETED_FUTURE_EVENTS = "completed_future_events"
    UNMAPPED_TERRITORIES = "unmapped_territories"
    CLIENTS_WITHOUT_STRATEGY = "clients_without_strategy"
    UNUSED_STRATEGIES = "unused_strategies"
    NAME_MISMATCHES = "name_mismatches"
    POSSIBLE_ALIAS = "possible_alias"
    COMPLIANCE_CACHE_DRIFT = "compliance_cache_drift"
    ORPHANS = "orphans"
    NULL_KEY_ROWS = "null_key_rows"


# code -> description. The rules produce all but the diff's, which come from comparing wanted rows with the
# targets' current rows.
WARNINGS: dict[WarningCode, str] = {
    WarningCode.INVALID_SEGMENT_PERIODS: "Segment periods ignored: null or unknown tier_id (or a tier without a name), "
    "a null effective_from, or effective_to before effective_from",
    WarningCode.OVERLAPPING_SEGMENT_PERIODS: "Clients with overlapping segment periods within the FY, "
    "or several open ones",
    WarningCode.CLIENTS_WITHOUT_SEGMENTATION: "Plans whose client has no valid segment period in the FY, "
    "or no client_name (skipped)",
    WarningCode.NEGATIVE_FREQUENCY: "tier_event_requirements rows with a negative frequency (treated as 0)",
    WarningCode.UNDATED_EVENTS: "Events with a null event_date (ignored)",
    WarningCode.UNKNOWN_EVENTS: "Events of an unknown (or null) event type or of an unknown client (ignored)",
    WarningCode.COMPLETED_FUTURE_EVENTS: "Events marked completed but dated after as_of (counted as scheduled)",
    WarningCode.UNMAPPED_TERRITORIES: "Territories the BU map does not map (left out of business-unit rows)",
    WarningCode.CLIENTS_WITHOUT_STRATEGY: "Clients whose CSE has no territory strategy this FY (unassigned: APAC only)",
    WarningCode.UNUSED_STRATEGIES: "Territory strategies without clients, or losing the per-CSE tie-break",
    WarningCode.NAME_MISMATCHES: "Names that match only when case or spaces are ignored; "
    "different names sharing a client_uuid",
    WarningCode.POSSIBLE_ALIAS: "Event client names that are not plan clients but nearly match one (normalised: case, "
    "accents and punctuation ignored; one contains the other): not counted, never matched automatically",
    WarningCode.COMPLIANCE_CACHE_DRIFT: "segmentation_event_compliance disagrees with the events of that calendar year",
    WarningCode.ORPHANS: "Target rows the run did not compute but kept because they carry data the job does not own",
    WarningCode.NULL_KEY_ROWS: "Target rows of the FY with a NULL key column: never matched, updated or deleted",
}
DIFF_WARNINGS = (WarningCode.ORPHANS, WarningCode.NULL_KEY_ROWS)  # counted per target by the diff
RULE_WARNINGS = tuple(code for code in WARNINGS if code not in DIFF_WARNINGS)


@dataclasses.dataclass
class Finding:
    """A warning (the run carries on) or an error (it stops); ``count`` is the total."""

    code: str
    severity: Severity
    description: str
    count: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.code = str(self.code)  # a plain string wherever it goes (JSON, Dagster's check names)

    def add(self, example: str, n: int = 1) -> None:
        self.count += n
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def summary(self) -> str:
        examples = f"; e.g. {'; '.join(self.examples[:3])}" if self.examples else ""
        return f"{self.code}: {self.count} — {self.description}{examples}"


class Findings(dict):
    """code -> :class:`Finding`, pre-filled with a catalogue so that every check always has a result."""

    def __init__(self, catalogue: dict[str, str], severity: Severity) -> None:
        super().__init__({code: Finding(code, severity, text) for code, text in catalogue.items()})

    def add(self, code: str, example: str) -> None:
        self[code].add(example)

    def found(self) -> list[Finding]:
        return [f for f in self.values() if f.count]
