"""SPEC §4 steps 3 and 4: required counts per client (frequencies, exclusions) and the event counts they are
scored against, with the findings about unknown or impossible rows."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

from compliance_sync.domain.facts import EventCounts, Facts, Period
from compliance_sync.domain.findings import Findings, WarningCode
from compliance_sync.domain.provenance import ExclusionNote, RequirementNote, TierFrequency
from compliance_sync.errors import DataError

MAX_FREQUENCY = 366


# --- step 3: requirements -----------------------------------------------------------------------------------
def frequency_table(
    facts: Facts, tiers: dict[str, str | None], codes: dict[str, str], found: Findings
) -> dict[str, dict[str, int]]:
    """tier_id -> {event_type_id: frequency}; null counts as 0, negative is reported and counts as 0,
    above 366 is an error naming the tier and the event type."""
    table: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for row in facts.requirements:
        freq = 0 if row.frequency is None else int(row.frequency)
        tier_label = tiers.get(row.tier_id) or row.tier_id
        type_label = codes.get(row.event_type_id) or row.event_type_id
        if freq > MAX_FREQUENCY:
            raise DataError(
                f"tier_event_requirements.frequency = {freq} for tier {tier_label!s} and event type "
                f"{type_label!s} is above {MAX_FREQUENCY} (events per year)"
            )
        if freq < 0:
            found.add(WarningCode.NEGATIVE_FREQUENCY, f"tier {tier_label}, event type {type_label}: frequency {freq}")
            freq = 0
        if row.tier_id is not None and row.event_type_id is not None:
            table[row.tier_id][row.event_type_id] = max(freq, table[row.tier_id].get(row.event_type_id, 0))
    return table


def exclusion_applies(reason: str | None) -> bool:
    """An exclusion removes its pair unless ``lower(reason)`` contains 'greyed out' (null or empty removes it)."""
    return reason is None or "greyed out" not in reason.lower()


def excluded_pairs(facts: Facts) -> set[tuple[str | None, str | None]]:
    """Pairs removed by ``client_event_exclusions`` unless ``lower(reason)`` contains 'greyed out'."""
    return {(row.client_name, row.event_type_id) for row in facts.exclusions or () if exclusion_applies(row.reason)}


def max_frequency(tier_ids: Iterable[str], type_id: str, freq: dict[str, dict[str, int]]) -> int:
    """``MAX(frequency)`` of one event type over the given tiers (0 when none requires it)."""
    return max((freq.get(tier, {}).get(type_id, 0) for tier in tier_ids), default=0)


def required_counts(
    tier_ids: frozenset[str], active: dict[str, str | None], freq: dict[str, dict[str, int]]
) -> tuple[tuple[str, str | None, int], ...]:
    """``required = MAX(frequency)`` over the tiers of all the client's periods, keeping ``> 0``:
    (event type id, event name, required), in event type id order. Clients share tier sets, so
    :func:`compute` asks once per set."""
    return tuple(
        (type_id, name, required)
        for type_id, name in active.items()
        if (required := max_frequency(tier_ids, type_id, freq)) > 0
    )


def requirement_notes(
    client: str,
    periods: list[Period],
    tiers: dict[str, str | None],
    facts: Facts,
    active: dict[str, str | None],
    freq: dict[str, dict[str, int]],
    needs: Sequence[tuple[str, str | None, int]],
) -> list[RequirementNote]:
    """The provenance of one client's step 3 (for ``explain``): per event type any of its tiers lists, each valid
    period's frequency, the maximum (:func:`max_frequency`, as :func:`required_counts` takes it), the exclusion
    rows and whether they apply; ``required`` is what the computation kept (``needs``)."""
    kept = {type_id: r for type_id, _, r in needs}
    names = {t.id: t.event_name for t in facts.event_types}
    rows = collections.defaultdict(list)
    for row in facts.exclusions or ():
        if row.client_name == client:
            rows[row.event_type_id].append(ExclusionNote(row.reason, exclusion_applies(row.reason)))
    ordered = sorted(periods, key=lambda p: (p.effective_from, p.id))
    listed = {type_id for p in ordered for type_id in freq.get(p.tier_id, {})} | set(rows) | set(kept)
    notes = []
    for type_id in sorted(t for t in listed if t is not None):
        sources = tuple(
            TierFrequency(
                p.id,
                p.tier_id,
                tiers.get(p.tier_id),
                p.effective_from,
                p.effective_to,
                max_frequency((p.tier_id,), type_id, freq),
            )
            for p in ordered
        )
        maximum = max_frequency({p.tier_id for p in ordered}, type_id, freq)
        notes.append(
            RequirementNote(
                type_id,
                names.get(type_id),
                type_id in active,
                sources,
                maximum,
                tuple(rows.get(type_id, ())),
                kept.get(type_id, 0),
            )
        )
    return notes


def without_exclusions(
    client: str, needs: Sequence[tuple[str, str | None, int]], excluded: set
) -> Sequence[tuple[str, str | None, int]]:
    """The client's requirements less its exclusions (``client_event_exclusions``)."""
    return [n for n in needs if (client, n[0]) not in excluded] if excluded else needs


# --- step 4: counting ---------------------------------------------------------------------------------------
def index_events(
    facts: Facts, codes: dict[str, str], known_clients: set[str], segmented: set[str], found: Findings
) -> dict[tuple, EventCounts]:
    """Event counts per (client, event type); events of unknown types or clients, and completed-but-future
    events of the clients being computed, reported."""
    index: dict[tuple, EventCounts] = {}
    for e in facts.event_counts:
        if e.event_type_id is None or e.event_type_id not in codes:
            n = sum(e.completed) + sum(e.scheduled)
            kind = "a null event type" if e.event_type_id is None else f"unknown event type {e.event_type_id}"
            found.add(WarningCode.UNKNOWN_EVENTS, f"{n} event(s) of client {e.client_name!r} with {kind}")
            continue
        if e.client_name not in known_clients:
            n = sum(e.completed) + sum(e.scheduled)
            found.add(
                WarningCode.UNKNOWN_EVENTS,
                f"{n} event(s) of unknown client {e.client_name!r} ({codes[e.event_type_id]})",
            )
            continue
        if e.completed_future and e.client_name in segmented:
            found.add(
                WarningCode.COMPLETED_FUTURE_EVENTS,
                f"{e.client_name}: {e.completed_future} {codes[e.event_type_id]} event(s) "
                "completed but dated after as_of",
            )
        index[(e.client_name, e.event_type_id)] = e
    return index
