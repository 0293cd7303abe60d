"""Requirement statuses and the thresholds that separate them (SPEC §4.5): values and the status rule.

Pure: no configuration, no I/O. :mod:`compliance_sync.config.settings` parses ``COMPLIANCE_SYNC_THRESHOLDS`` into
a :class:`Thresholds`; the rules and the invariants take one as an argument.
"""

from __future__ import annotations

import dataclasses
import enum
from fractions import Fraction


class Status(enum.StrEnum):
    """A requirement's status (SPEC §4.5), from the exact ratio of completed to required."""

    CRITICAL = "critical"
    AT_RISK = "at_risk"
    COMPLIANT = "compliant"
    EXCEEDED = "exceeded"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Status thresholds in percent: ``(at_risk_from, compliant_from, exceeded_from)``, strictly increasing."""

    at_risk_from: Fraction = Fraction(50)
    compliant_from: Fraction = Fraction(80)
    exceeded_from: Fraction = Fraction(100)

    @classmethod
    def parse(cls, text: str) -> Thresholds:
        """``"50,80,100"`` (exact decimals); a ``ValueError`` saying what is wrong otherwise."""
        usage = f"must be three numbers 'at_risk,compliant,exceeded' in percent, got {text!r}"
        try:
            values = [Fraction(p.strip()) for p in str(text).split(",")]
        except (ValueError, ZeroDivisionError):
            raise ValueError(usage) from None
        if len(values) != 3:
            raise ValueError(usage)
        if not (0 <= values[0] < values[1] < values[2]):
            raise ValueError(f"must be increasing and non-negative (e.g. 50,80,100), got {text!r}")
        return cls(*values)

    def status(self, completed: int, required: int) -> Status:
        """SPEC §4.5, from the exact ratio: ``100*c >= t*r`` with ``t = n/d`` is ``100*c*d >= n*r``."""
        done = 100 * completed
        for cut, status in (
            (self.exceeded_from, Status.EXCEEDED),
            (self.compliant_from, Status.COMPLIANT),
            (self.at_risk_from, Status.AT_RISK),
        ):
            if done * cut.denominator >= cut.numerator * required:
                return status
        return Status.CRITICAL

    def text(self) -> str:
        return ",".join(f"{float(v):g}" for v in (self.at_risk_from, self.compliant_from, self.exceeded_from))
