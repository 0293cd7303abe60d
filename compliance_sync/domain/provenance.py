"""Where SPEC §4's figures come from: what the rule functions record, when asked, beside the values they compute
(the segment periods considered and ignored, each period's tier frequency and the maximum taken, the exclusions,
the strategy tie-break), and the near-miss client names of SPEC §6 (``possible_alias``).

Pure: no I/O. A sync passes no :class:`Trace` to :func:`compliance_sync.domain.rules.compute`, so nothing here runs on
its hot path; ``explain`` passes one naming the few clients it explains.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import datetime as dt
import itertools
import unicodedata
from collections.abc import Iterable, Mapping

from compliance_sync.domain.facts import Period, Strategy

ALIAS_MIN_CHARS = 6  # shorter normalised names are never reported as possible aliases (too many false hits)


@dataclasses.dataclass(frozen=True)
class PeriodNote:
    """A segment period of the client overlapping the FY; ``ignored`` says why it does not count (None: it does)."""

    period: Period
    tier_name: str | None
    ignored: str | None = None


@dataclasses.dataclass(frozen=True)
class TierFrequency:
    """One valid period's tier and its frequency for one event type (``tier_event_requirements``)."""

    period_id: str
    tier_id: str
    tier_name: str | None
    effective_from: dt.date | None
    effective_to: dt.date | None
    frequency: int


@dataclasses.dataclass(frozen=True)
class ExclusionNote:
    """A ``client_event_exclusions`` row of the client and type; ``applies``: it removes the requirement."""

    reason: str | None
    applies: bool


@dataclasses.dataclass(frozen=True)
class RequirementNote:
    """SPEC §4.3 for one (client, event type): the frequencies considered, their maximum, the exclusions, and the
    requirement that results (0: not required, excluded, or the type is inactive)."""

    event_type_id: str
    event_type_name: str | None
    active: bool
    sources: tuple[TierFrequency, ...]
    maximum: int
    exclusions: tuple[ExclusionNote, ...]
    required: int


@dataclasses.dataclass
class Trace:
    """The provenance the rules record for ``clients`` (None: every client) while they compute."""

    clients: frozenset[str] | None = None
    periods: dict[str, list[PeriodNote]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))
    latest: dict[str, Period] = dataclasses.field(default_factory=dict)
    requirements: dict[str, list[RequirementNote]] = dataclasses.field(default_factory=dict)
    strategies: dict[str, list[Strategy]] = dataclasses.field(default_factory=dict)  # per CSE, tie-break order
    aliases: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)  # (event name, plan client, events)

    def wants(self, client: str | None) -> bool:
        return client is not None and (self.clients is None or client in self.clients)


# --- near-miss client names (SPEC §6, possible_alias) --------------------------------------------------------------
def normalise_name(name: str) -> str:
    """Case-folded, accents removed (NFKD, combining marks dropped), letters and digits only."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", name.casefold()) if ch.isalnum())


def possible_aliases(event_names: Mapping[str, int], plan_clients: Iterable[str]) -> list[tuple[str, str, int]]:
    """``(event client name, plan client name, events)`` for every event name (not a plan client) whose normalised
    form equals, starts with, or is contained in a plan client's normalised form, or the reverse; both forms of
    at least :data:`ALIAS_MIN_CHARS` characters. Works on distinct names, never pairs of them: plan names are
    indexed by their first characters (a plan name inside the event name is found from the event name's own
    substrings) and joined into one text searched for the event name (an event name inside a plan name)."""
    plans = set(plan_clients)
    candidates = {name: n for name, n in event_names.items() if name is not None and name not in plans}
    if not candidates:
        return []
    k = ALIAS_MIN_CHARS
    by_norm: dict[str, list[str]] = collections.defaultdict(list)
    for name in plans:
        if len(norm := normalise_name(name)) >= k:
            by_norm[norm].append(name)
    norms = sorted(by_norm)
    by_prefix: dict[str, list[str]] = collections.defaultdict(list)
    for norm in norms:
        by_prefix[norm[:k]].append(norm)
    joined = "\x00".join(norms)  # letters and digits only: a match never spans two names
    starts = list(itertools.accumulate((len(n) + 1 for n in norms[:-1]), initial=0))
    out = []
    for name in sorted(candidates):
        norm = normalise_name(name)
        if len(norm) < k:
            continue
        found = set()
        at = joined.find(norm)
        while at != -1:  # the event name inside a plan name (or equal to it)
            i = bisect.bisect_right(starts, at) - 1
            found.add(norms[i])
            at = joined.find(norm, starts[i] + len(norms[i]) + 1)
        for i in range(len(norm) - k + 1):  # a plan name inside the event name
            found.update(p for p in by_prefix.get(norm[i : i + k], ()) if norm.startswith(p, i))
        for plan in sorted(c for p in found for c in by_norm[p]):
            out.append((name, plan, candidates[name]))
    return out
