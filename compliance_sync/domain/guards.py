"""The guards of SPEC §5: a live run writes nothing when the numbers look like a read that hid rows.

Computed once, from the facts' row counts and the diff (both backends return the same diff), so the CLI,
Dagster's check and a dry run's report all see the same guards.
"""

from __future__ import annotations

import dataclasses
import enum

from compliance_sync.domain.diff import SyncDiff
from compliance_sync.domain.tables import BUSINESS_UNIT, EVENTS, REQUIRED_NONEMPTY, REQUIREMENTS


class GuardCode(enum.StrEnum):
    EMPTY_SOURCE = "empty_source"
    MASS_PRUNE = "mass_prune"
    EVENTS_COLLAPSE = "events_collapse"
    BU_MAP_COLLAPSE = "bu_map_collapse"
    MISSING_KEY = "missing_key"  # no unique index backs a target's key: only a dry run gets this far (SPEC §5)


MIGRATE = "compliance-sync migrate --minimal"


def next_command(backend: str, diff: SyncDiff) -> str | None:
    """The command that gives a live run what it needs (SPEC §3.3), or None when it needs nothing: over a
    direct connection the minimal migration (with ``--dedupe`` when keys are duplicated); over REST, where the
    job has no database connection, its SQL for Supabase's SQL editor."""
    needs = [t for t in diff.targets.values() if not t.key_backed]
    if not needs:
        return None
    dedupe = " --dedupe" if any(t.duplicate_keys for t in needs) else ""
    return f"{MIGRATE}{dedupe} --print-sql" if backend == "rest" else f"{MIGRATE}{dedupe}"


def how_to_run(command: str) -> str:
    if command.endswith("--print-sql"):
        return f"`{command}` and paste its output into Supabase's SQL editor"
    return f"`{command}`"


# Guards that `--allow-mass-prune` (run config allow_mass_prune) lifts: an intended mass change. An empty
# required source is never lifted: there is nothing to compute from.
OVERRIDABLE = {GuardCode.MASS_PRUNE, GuardCode.EVENTS_COLLAPSE, GuardCode.BU_MAP_COLLAPSE}
OVERRIDE_HINT = "rerun with --allow-mass-prune (run config allow_mass_prune) if that is intended"


@dataclasses.dataclass(frozen=True)
class Guard:
    code: GuardCode
    table: str
    message: str


def find_guards(
    diff: SyncDiff,
    source_counts: dict[str, int],
    events_in_window: int,
    territories: int,
    business_units: int,
    max_prune_fraction: float,
    backend: str = "postgres",
) -> list[Guard]:
    found: list[Guard] = []
    command = next_command(backend, diff)
    for t in diff.targets.values():
        if not t.key_backed:
            duplicates = (
                f"; {t.duplicate_keys} key(s) of the fiscal year are held by several rows "
                f"({t.duplicate_rows} surplus row(s), e.g. {t.duplicate_examples[0]}; "
                "compared through the row --dedupe keeps)"
                if t.duplicate_keys
                else ""
            )
            key = ", ".join(t.table.key)
            message = f"{t.name} has no unique index on ({key}){duplicates}: run {how_to_run(command)}"
            found.append(Guard(GuardCode.MISSING_KEY, t.name, message))
    for name in REQUIRED_NONEMPTY:
        if source_counts.get(name, 0) == 0:
            found.append(
                Guard(
                    GuardCode.EMPTY_SOURCE,
                    name,
                    f"{name} returned no rows for this fiscal year; "
                    "a live run writes nothing (wrong key or row-level security?)",
                )
            )
    for t in diff.targets.values():
        if t.deleted and t.deleted > max_prune_fraction * t.current_count:
            found.append(
                Guard(
                    GuardCode.MASS_PRUNE,
                    t.name,
                    f"{t.name}: the run would delete {t.deleted} of {t.current_count} rows of the fiscal year "
                    f"(more than max_prune_fraction={max_prune_fraction:g}); {OVERRIDE_HINT}",
                )
            )
    recorded = diff.targets[REQUIREMENTS].current_completed
    if events_in_window == 0 and recorded > 0:
        found.append(
            Guard(
                GuardCode.EVENTS_COLLAPSE,
                EVENTS,
                f"{EVENTS} returned no event in the fiscal year's window "
                f"while {REQUIREMENTS} records {recorded} completed "
                f"events for it (row-level security hiding the events?); {OVERRIDE_HINT}",
            )
        )
    bu = diff.targets[BUSINESS_UNIT]
    if territories > 0 and business_units == 0 and bu.current_with_territories > 0:
        found.append(
            Guard(
                GuardCode.BU_MAP_COLLAPSE,
                BUSINESS_UNIT,
                f"the BU map maps none of the fiscal year's {territories} territories "
                f"while {bu.current_with_territories} "
                f"{BUSINESS_UNIT} rows of it have territories (wrong COMPLIANCE_SYNC_BU_MAP?); {OVERRIDE_HINT}",
            )
        )
    return found


def blocking(guards: list[Guard], allow_mass_prune: bool) -> list[Guard]:
    return [g for g in guards if not (allow_mass_prune and g.code in OVERRIDABLE)]
