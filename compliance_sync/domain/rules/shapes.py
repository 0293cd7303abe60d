"""The shapes between the steps: a scored client (steps 2-6) and a territory (step 7)."""

from __future__ import annotations

import dataclasses
import decimal

from compliance_sync.domain.facts import Strategy
from compliance_sync.domain.rules.arithmetic import rollup_percent
from compliance_sync.domain.wanted import ClientRequirement


@dataclasses.dataclass(slots=True)
class Client:
    """A client of step 1 with a valid segment period (step 2) and its figures (steps 3-6)."""

    name: str
    segment: str
    cse_name: str | None
    client_uuid: str | None
    requirements: list[ClientRequirement]
    completed_by_month: tuple[int, ...]  # the client's step-4 events, over its required types
    scheduled_by_month: tuple[int, ...]
    due_by_month: tuple[int, ...]
    required_total: int
    credited_total: int
    is_critical: bool
    is_at_risk: bool

    @property
    def below(self) -> bool:
        return self.is_critical or self.is_at_risk

    @property
    def percent(self) -> decimal.Decimal:
        return rollup_percent(self.credited_total, self.required_total)


@dataclasses.dataclass
class Territory:
    """Step 7: the used strategy of a CSE and its clients."""

    strategy: Strategy
    members: list[Client]
