"""The report's tables, built from one FY's :class:`~compliance_sync.domain.rules.Computation` (pure: no I/O, no
Dagster). Every figure is read from the computation (the clients' figures and the wanted rows a sync writes);
nothing is recomputed beside the rules, so the report shows what a sync writes.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from compliance_sync.domain.bu_map import RESERVED_BU
from compliance_sync.domain.findings import Finding
from compliance_sync.domain.rules import Client, Computation
from compliance_sync.domain.thresholds import Status

# Worst first: a client's status is the worst of its requirements' (critical and at_risk as SPEC §4.6 flags them).
STATUS_ORDER = (Status.CRITICAL.value, Status.AT_RISK.value, Status.COMPLIANT.value, Status.EXCEEDED.value)
NO_REQUIREMENT = "no requirement"
STATUS_LABELS = {
    "critical": "Critical",
    "at_risk": "At risk",
    "compliant": "Compliant",
    "exceeded": "Exceeded",
    NO_REQUIREMENT: "No requirement",
}
MAX_WARNING_EXAMPLES = 5


@dataclasses.dataclass(frozen=True)
class Previous:
    """The APAC figure of an earlier live run of the FY, from the run ledger."""

    figure: decimal.Decimal
    run_id: str | None
    finished_at: dt.datetime | None
    as_of: dt.date | None

    def describe(self, tz: dt.tzinfo | None = None) -> str:
        when = self.finished_at or self.as_of
        if isinstance(when, dt.datetime):
            when = (
                when.astimezone(tz or dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC).astimezone(tz or dt.UTC)
            )
            stamp = when.strftime("%Y-%m-%d %H:%M %Z")
        else:
            stamp = str(when or "an earlier run")
        return f"the run of {stamp}" + (f" (as_of {self.as_of})" if self.as_of else "")


@dataclasses.dataclass
class ReportTables:
    """One FY's report: the headline figures and one pandas table per section (the XLSX sheets, in order)."""

    fiscal_year: int
    window: tuple[dt.date, dt.date]
    as_of: dt.date
    generated_at: dt.datetime
    apac: decimal.Decimal | None
    clients: int
    below: int
    previous: Previous | None
    change: decimal.Decimal | None
    ledger_note: str | None
    in_sync: bool | None  # the targets hold these figures (None: unknown)
    summary: pd.DataFrame
    business_units: pd.DataFrame
    territories: pd.DataFrame
    statuses: pd.DataFrame
    below_compliance: pd.DataFrame
    pace: pd.DataFrame
    warnings: pd.DataFrame
    targets: pd.DataFrame

    def sheets(self) -> dict[str, pd.DataFrame]:
        """Sheet name -> table, in the page's order (sheet names at most 31 characters)."""
        return {
            "Summary": self.summary,
            "Business units": self.business_units,
            "Territories": self.territories,
            "Statuses": self.statuses,
            "Below compliance": self.below_compliance,
            "Pace": self.pace,
            "Warnings": self.warnings,
            "Targets": self.targets,
        }


def _decimal(value: Any) -> decimal.Decimal | None:
    if value is None:
        return None
    return (
        value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value)).quantize(decimal.Decimal("0.01"))
    )


def _when(value: Any) -> Any:
    """Ledger timestamps and dates as Python values (REST hands them over as ISO text)."""
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value) if "T" in value or " " in value else dt.date.fromisoformat(value)
    return value


def previous_run(
    rows: Iterable[Mapping[str, Any]], current: decimal.Decimal | None, in_sync: bool | None
) -> Previous | None:
    """The run to compare the APAC figure with, among the ledger's succeeded live runs of the FY (newest first).

    When the targets already hold the computed figures and the newest run recorded exactly this figure, that
    run produced what the report shows: the comparison is with the run before it. Otherwise (a report ahead of
    the next sync) it is with the newest run, whose figures the targets hold now."""
    known = [r for r in rows if r.get("apac_compliance") is not None]
    if in_sync and known and _decimal(known[0]["apac_compliance"]) == current:
        known = known[1:]
    if not known:
        return None
    r = known[0]
    return Previous(
        _decimal(r["apac_compliance"]),
        r.get("run_id"),
        _when(r.get("finished_at") or r.get("started_at")),
        _when(r.get("as_of")),
    )


def client_status(c: Client) -> str:
    """The worst status among the client's requirements (``no requirement`` when it has none)."""
    seen = {r.status for r in c.requirements}
    return next((s for s in STATUS_ORDER if s in seen), NO_REQUIREMENT)


def _territory_of(comp: Computation) -> dict[str, tuple[str | None, str | None]]:
    """client -> (territory, strategy id) of the used strategy it belongs to."""
    return {c.name: (t.strategy.territory, sid) for sid, t in comp.territories.items() for c in t.members}


def business_unit_table(comp: Computation) -> pd.DataFrame:
    """APAC's ``bu_contributions`` (``Unassigned`` last) with each BU row's territory count."""
    territories = {row["bu_name"]: row["territory_count"] for row in comp.wanted.business_units}
    rows = [
        {
            "Business unit": b["bu_name"],
            "Compliance %": b["compliance"],
            "Clients": b["clients"],
            "Below compliance": b["clients_below"],
            "Territories": territories.get(b["bu_name"], 0),
        }
        for b in comp.wanted.apac[0]["bu_contributions"]
    ]
    return pd.DataFrame(rows, columns=["Business unit", "Compliance %", "Clients", "Below compliance", "Territories"])


def territory_table(comp: Computation) -> pd.DataFrame:
    """The territory rows a sync writes, with the BU each maps to, ordered by BU, territory, CSE."""
    rows = []
    for row in comp.wanted.territories:
        members = comp.territories[row["territory_strategy_id"]].members
        rows.append(
            {
                "Business unit": comp.bu_of_client.get(members[0].name) if members else None,
                "Territory": row["territory"],
                "CSE": row["cse_name"],
                "Clients": row["total_clients"],
                "Required": row["total_required_events"],
                "Completed": row["total_completed_events"],
                "Compliance %": row["overall_compliance_percentage"],
                "At risk": row["clients_at_risk"],
                "Critical": row["clients_critical"],
            }
        )
    rows.sort(
        key=lambda r: (
            r["Business unit"] is None,
            str(r["Business unit"] or ""),
            str(r["Territory"] or ""),
            str(r["CSE"] or ""),
        )
    )
    columns = [
        "Business unit",
        "Territory",
        "CSE",
        "Clients",
        "Required",
        "Completed",
        "Compliance %",
        "At risk",
        "Critical",
    ]
    return pd.DataFrame(rows, columns=columns)


def status_table(comp: Computation) -> pd.DataFrame:
    """How many clients (by their worst requirement) and client requirements (once per client, not per plan)
    are in each status."""
    clients = collections.Counter(client_status(c) for c in comp.clients.values())
    requirements = collections.Counter(r.status for c in comp.clients.values() for r in c.requirements)
    rows = [
        {"Status": STATUS_LABELS[s], "Clients": clients.get(s, 0), "Requirements": requirements.get(s, 0)}
        for s in (*STATUS_ORDER, NO_REQUIREMENT)
        if s != NO_REQUIREMENT or clients.get(s)
    ]
    return pd.DataFrame(rows, columns=["Status", "Clients", "Requirements"])


def missing_events(c: Client) -> dict[str, tuple[int, int, int]]:
    """Event type name -> (missing, completed, required) for each requirement the client is short of, the
    largest gap first."""
    short = [
        ((r.event_type_name or r.event_type_id), (r.required - r.completed, r.completed, r.required))
        for r in c.requirements
        if r.completed < r.required
    ]
    return dict(sorted(short, key=lambda item: (-item[1][0], item[0])))  # the largest gap first


def below_table(comp: Computation) -> pd.DataFrame:
    """The clients at risk or critical, largest shortfall (required - credited events) first, with what they
    miss per event type: as one text column and as one numeric column per event type (for spreadsheets)."""
    where = _territory_of(comp)
    rows, types = [], set()
    for c in comp.clients.values():
        if not c.below:
            continue
        missing = missing_events(c)
        types.update(missing)
        detail = "; ".join(
            f"{name}: {n} missing ({done} of {required})" for name, (n, done, required) in missing.items()
        )
        rows.append(
            {
                "Client": c.name,
                "CSE": c.cse_name,
                "Segment": c.segment,
                "Territory": where.get(c.name, (None, None))[0],
                "Business unit": comp.bu_of_client.get(c.name) or RESERVED_BU,
                "Status": STATUS_LABELS[client_status(c)],
                "Required": c.required_total,
                "Credited": c.credited_total,
                "Compliance %": c.percent,
                "Shortfall": c.required_total - c.credited_total,
                "Missing events": detail,
                **{f"Missing: {name}": n for name, (n, _, _) in missing.items()},
            }
        )
    typed = [f"Missing: {name}" for name in sorted(types)]
    columns = [
        "Client",
        "CSE",
        "Segment",
        "Territory",
        "Business unit",
        "Status",
        "Required",
        "Credited",
        "Compliance %",
        "Shortfall",
        "Missing events",
        *typed,
    ]
    rows.sort(key=lambda r: (-r["Shortfall"], r["Compliance %"], r["Client"]))
    frame = pd.DataFrame(rows, columns=columns)
    for col in typed:
        frame[col] = frame[col].fillna(0).astype(int)
    return frame


def pace_table(comp: Computation) -> pd.DataFrame:
    """Per business unit (``Unassigned`` last) and FY month up to ``as_of``: due dates and completed events
    (the clients' step-4 events of their required types, by event month), in the month and cumulated."""
    fy, as_of = comp.fy, comp.as_of
    months = 0 if as_of < fy.start else fy.month_of(min(as_of, fy.end))
    groups: dict[str, list[Client]] = collections.defaultdict(list)
    for name, c in comp.clients.items():
        groups[comp.bu_of_client.get(name) or RESERVED_BU].append(c)
    order = sorted(b for b in groups if b != RESERVED_BU) + ([RESERVED_BU] if RESERVED_BU in groups else [])
    rows = []
    for bu in order:
        due_total = done_total = 0
        for j in range(months):
            due = sum(c.due_by_month[j] for c in groups[bu])
            done = sum(c.completed_by_month[j] for c in groups[bu])
            due_total += due
            done_total += done
            rows.append(
                {
                    "Business unit": bu,
                    "Month": fy.month_label(j + 1),
                    "Due": due,
                    "Completed": done,
                    "Due to date": due_total,
                    "Completed to date": done_total,
                }
            )
    return pd.DataFrame(
        rows, columns=["Business unit", "Month", "Due", "Completed", "Due to date", "Completed to date"]
    )


def warning_table(findings: Mapping[str, Finding], backend_warnings: Iterable[str] = ()) -> pd.DataFrame:
    """The run's data-quality warnings (SPEC §6) with their totals and first examples, then the backend's."""
    rows = [
        {
            "Warning": f.code,
            "What": f.description,
            "Count": f.count,
            "Examples": "; ".join(f.examples[:MAX_WARNING_EXAMPLES]),
        }
        for f in findings.values()
        if f.count
    ]
    rows += [{"Warning": "backend", "What": w, "Count": 1, "Examples": ""} for w in backend_warnings]
    return pd.DataFrame(rows, columns=["Warning", "What", "Count", "Examples"])


def target_table(targets: Mapping[str, Mapping[str, int]] | None) -> pd.DataFrame:
    """What a sync would change in each target now (the dry run's counts)."""
    rows = [
        {
            "Target": name,
            "To insert": c.get("inserted", 0),
            "To update": c.get("updated", 0),
            "To delete": c.get("deleted", 0),
            "Unchanged": c.get("unchanged", 0),
            "Orphans": c.get("orphans", 0),
        }
        for name, c in (targets or {}).items()
    ]
    return pd.DataFrame(rows, columns=["Target", "To insert", "To update", "To delete", "Unchanged", "Orphans"])


def build_tables(
    comp: Computation,
    *,
    generated_at: dt.datetime,
    findings: Mapping[str, Finding] | None = None,
    backend_warnings: Iterable[str] = (),
    targets: Mapping[str, Mapping[str, int]] | None = None,
    ledger_rows: Iterable[Mapping[str, Any]] = (),
    ledger_note: str | None = None,
) -> ReportTables:
    """The report of one FY from its computation, the run's findings (default: the rules'), the dry run's
    counts per target (``targets``; None when unknown) and the ledger's succeeded live runs, newest first."""
    apac_row = comp.wanted.apac[0]
    apac = apac_row["actual_compliance"]
    in_sync = (
        None
        if targets is None
        else not any(c.get("inserted") or c.get("updated") or c.get("deleted") for c in targets.values())
    )
    previous = previous_run(ledger_rows, apac, in_sync)
    change = apac - previous.figure if previous is not None and apac is not None else None
    fy = comp.fy
    summary_rows = [
        ("Fiscal year", f"FY{fy.year}"),
        ("Window", f"{fy.start.isoformat()} … {fy.end.isoformat()}"),
        ("as_of", comp.as_of.isoformat()),
        ("APAC compliance %", apac),
        ("Clients", len(comp.clients)),
        ("Below compliance", apac_row["below_compliance_accounts"]),
        ("Previous APAC compliance %", previous.figure if previous else None),
        ("Previous run", previous.describe(generated_at.tzinfo) if previous else ledger_note or "none recorded"),
        ("Change (points)", change),
        (
            "Targets",
            "unknown"
            if in_sync is None
            else "in sync: they hold these figures"
            if in_sync
            else "a sync would change them",
        ),
        ("Generated", generated_at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()),
    ]
    return ReportTables(
        fiscal_year=fy.year,
        window=(fy.start, fy.end),
        as_of=comp.as_of,
        generated_at=generated_at,
        apac=apac,
        clients=len(comp.clients),
        below=apac_row["below_compliance_accounts"],
        previous=previous,
        change=change,
        ledger_note=ledger_note,
        in_sync=in_sync,
        summary=pd.DataFrame(summary_rows, columns=["Item", "Value"]),
        business_units=business_unit_table(comp),
        territories=territory_table(comp),
        statuses=status_table(comp),
        below_compliance=below_table(comp),
        pace=pace_table(comp),
        warnings=warning_table(comp.findings if findings is None else findings, backend_warnings),
        targets=target_table(targets),
    )
