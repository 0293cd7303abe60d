"""An independent, deliberately naive oracle for SPEC §4, written from the SPEC text alone.

It shares no code with the package (no import of ``compliance_sync``): loops over plain dicts, integer
arithmetic, no pandas. Input: the raw rows of the source tables of SPEC §3.1 (``{table: [row dict]}``,
uuids as ``str`` or ``uuid.UUID``, dates as ``datetime.date``, timestamps as ``datetime.datetime``), the
fiscal year, the start month, the run's reference date, the thresholds and the BU map. Output: the rows
the four targets of SPEC §3.2 must hold for that FY, each with its key and owned columns only
(``updated_at`` is the writer's). Percentages are ``decimal.Decimal`` with two places; JSON numbers for
percentages are ``Decimal`` too; uuids are lowercase ``str``.

Choices where the SPEC leaves room (each written down):
- uuid order is the order of the 128-bit value (PostgreSQL's uuid order = lowercase hex text order).
- a (client, event type) pair is excluded when at least one of its exclusion rows has a reason that does
  not contain "greyed out" (lower-cased); rows whose reason does contain it exclude nothing.
- a requirement row of a tier for an event type that is not active, or unknown, is ignored; a tier with no
  requirement row for a type contributes frequency 0.
- ``monthly_capacity.completed/scheduled`` count the step-4 events, i.e. events of the client's
  requirements (after exclusions), by the month of ``event_date``.
- a strategy whose ``cse_name`` is null never matches a client (null CSE = unassigned).
- "annual" = quarter is null or empty after trimming spaces (SQL ``trim``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

REQUIREMENTS = "account_plan_event_requirements"
TERRITORY = "territory_compliance_summary"
BUSINESS_UNIT = "business_unit_planning"
APAC = "apac_planning_goals"

UNASSIGNED = "Unassigned"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# --- small helpers ----------------------------------------------------------------------------------
def uid(value: Any) -> str | None:
    """A uuid as lowercase text (None stays None)."""
    if value is None:
        return None
    return str(uuid.UUID(str(value)))


def uuid_key(value: Any) -> int:
    return uuid.UUID(str(value)).int


def fy_window(year: int, start_month: int) -> tuple[dt.date, dt.date]:
    def start_of(n: int) -> dt.date:
        return dt.date(n if start_month == 1 else n - 1, start_month, 1)

    return start_of(year), start_of(year + 1) - dt.timedelta(days=1)


def fy_month_first_day(start: dt.date, j: int) -> dt.date:
    """First day of FY month j (1..12)."""
    y, m = start.year, start.month + j - 1
    while m > 12:
        y, m = y + 1, m - 12
    return dt.date(y, m, 1)


def fy_month_last_day(start: dt.date, j: int) -> dt.date:
    first = fy_month_first_day(start, j)
    return dt.date(first.year, first.month, calendar.monthrange(first.year, first.month)[1])


def ceil_div(a: int, b: int) -> int:
    q = a // b
    if q * b != a:
        q += 1
    return q


def hundredths(c: int, r: int, cap: bool) -> int:
    """floor((20000*c + r) / (2*r)), capped at 20000 when ``cap``."""
    v = (20000 * c + r) // (2 * r)
    if cap and v > 20000:
        v = 20000
    return v


def as_decimal(h: int) -> Decimal:
    """Hundredths as a two-place Decimal, built from integers only."""
    sign = "-" if h < 0 else ""
    h = abs(h)
    return Decimal(f"{sign}{h // 100}.{h % 100:02d}")


def requirement_pct(c: int, r: int) -> Decimal:
    return as_decimal(hundredths(c, r, cap=True))


def aggregate_pct(credited: int, required: int) -> Decimal:
    """Step-6 pct: the formula without cap, 100.00 when nothing is required."""
    if required == 0:
        return Decimal("100.00")
    return as_decimal(hundredths(credited, required, cap=False))


def status_of(c: int, r: int, thresholds: tuple[int, int, int]) -> str:
    at_risk_from, compliant_from, exceeded_from = thresholds
    if 100 * c >= exceeded_from * r:
        return "exceeded"
    if 100 * c >= compliant_from * r:
        return "compliant"
    if 100 * c >= at_risk_from * r:
        return "at_risk"
    return "critical"


def not_archived(status: Any) -> bool:
    # status IS DISTINCT FROM 'archived'
    return status is None or status != "archived"


# --- the oracle -------------------------------------------------------------------------------------
def compute(
    tables: dict[str, list[dict[str, Any]]],
    fiscal_year: int,
    start_month: int,
    reference_date: dt.date,
    thresholds: tuple[int, int, int] = (50, 80, 100),
    bu_cse: dict[str, str] | None = None,
    bu_territory: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The expected rows of the four targets. Returns ``{table: [row]}`` plus ``"clients"`` (per-client
    figures, for debugging) and ``"skipped"`` (client names without a valid period)."""
    bu_cse = bu_cse or {}
    bu_territory = bu_territory or {}
    FY = fiscal_year
    start, end = fy_window(FY, start_month)
    as_of = min(reference_date, end)

    def rows(name: str) -> list[dict[str, Any]]:
        return tables.get(name) or []

    tier_name = {uid(t["id"]): t["tier_name"] for t in rows("segmentation_tiers")}
    active_types = {uid(t["id"]): t for t in rows("segmentation_event_types") if t.get("is_active") is True}

    # frequency per (tier, type); null -> 0; negative -> 0
    freq: dict[tuple[str, str], int] = {}
    for req in rows("tier_event_requirements"):
        if req["tier_id"] is None or req["event_type_id"] is None:
            continue
        f = req["frequency"]
        if f is None or f < 0:
            f = 0
        if f > 366:
            raise ValueError(f"frequency {f} above 366 for tier {req['tier_id']} type {req['event_type_id']}")
        freq[(uid(req["tier_id"]), uid(req["event_type_id"]))] = f

    # step 1: plans in scope and clients
    plans = [p for p in rows("account_plans") if p["fiscal_year"] == FY and not_archived(p["status"])]
    client_names: list[str] = []
    for p in plans:
        if p["client_name"] not in client_names:
            client_names.append(p["client_name"])

    # step 2: valid periods overlapping the FY
    periods_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in rows("client_segmentation"):
        if s["tier_id"] is None or uid(s["tier_id"]) not in tier_name:
            continue
        if s["effective_from"] is None:  # ignored (and reported by the product)
            continue
        if s["effective_to"] is not None and s["effective_to"] < s["effective_from"]:
            continue
        overlaps = s["effective_from"] <= end and (s["effective_to"] is None or s["effective_to"] >= start)
        if overlaps:
            periods_of[s["client_name"]].append(s)

    # exclusions (pairs removed)
    excluded: set[tuple[str, str]] = set()
    for x in rows("client_event_exclusions"):
        reason = x.get("reason")
        if reason is not None and "greyed out" in reason.lower():
            continue
        if x["event_type_id"] is None:
            continue
        excluded.add((x["client_name"], uid(x["event_type_id"])))

    # events in the window, by (client, type)
    events_of: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in rows("segmentation_events"):
        if e["event_date"] is None or e["event_type_id"] is None:
            continue
        if not (start <= e["event_date"] <= end):
            continue
        events_of[(e["client_name"], uid(e["event_type_id"]))].append(e)

    def month_index(d: dt.date) -> int:
        return (d.year - start.year) * 12 + d.month - start.month + 1

    clients: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for name in client_names:
        periods = periods_of.get(name, [])
        if not periods:
            skipped.append(name)
            continue
        latest = max(periods, key=lambda s: (s["effective_from"], uuid_key(s["id"])))
        tiers = {uid(s["tier_id"]) for s in periods}
        # step 3: requirements
        reqs = []
        for type_id, t in active_types.items():
            r = max(freq.get((tier, type_id), 0) for tier in tiers)
            if r <= 0:
                continue
            if (name, type_id) in excluded:
                continue
            # step 4: counting
            evs = sorted(events_of.get((name, type_id), []), key=lambda e: (e["event_date"], uuid_key(e["id"])))
            completed_events = [e for e in evs if e["completed"] is True and e["event_date"] <= as_of]
            c = len(completed_events)
            scheduled_events = [e for e in evs if not (e["completed"] is True and e["event_date"] <= as_of)]
            # step 5
            if c >= r:
                next_due = None
            else:
                next_due = fy_month_last_day(start, ceil_div(12 * (c + 1), r))
            due_by_month = [0] * 13
            for k in range(1, r + 1):
                due_by_month[ceil_div(12 * k, r)] += 1
            reqs.append(
                {
                    "event_type_id": type_id,
                    "event_type_name": t["event_name"],
                    "required": r,
                    "completed": c,
                    "scheduled": len(scheduled_events),
                    "pct": requirement_pct(c, r),
                    "status": status_of(c, r, thresholds),
                    "next_due_date": next_due,
                    "linked": [uid(e["id"]) for e in evs],
                    "due_by_month": due_by_month,
                    "completed_months": [month_index(e["event_date"]) for e in completed_events],
                    "scheduled_months": [month_index(e["event_date"]) for e in scheduled_events],
                }
            )
        # step 6
        required_total = sum(q["required"] for q in reqs)
        credited_total = sum(min(q["completed"], q["required"]) for q in reqs)
        critical = any(q["status"] == "critical" for q in reqs)
        at_risk = (not critical) and any(q["status"] == "at_risk" for q in reqs)
        clients[name] = {
            "segment": tier_name[uid(latest["tier_id"])],
            "cse_name": latest["cse_name"],
            "client_uuid": uid(latest["client_uuid"]),
            "reqs": reqs,
            "required_total": required_total,
            "credited_total": credited_total,
            "pct": aggregate_pct(credited_total, required_total),
            "critical": critical,
            "at_risk": at_risk,
        }

    # step 5 rows: one per plan in scope x client requirement
    req_rows = []
    for p in plans:
        cl = clients.get(p["client_name"])
        if cl is None:
            continue
        client_id = uid(p["client_id"]) if p["client_id"] is not None else cl["client_uuid"]
        for q in cl["reqs"]:
            req_rows.append(
                {
                    "plan_id": uid(p["id"]),
                    "event_type_id": q["event_type_id"],
                    "fiscal_year": FY,
                    "client_id": client_id,
                    "client_name": p["client_name"],
                    "segment": cl["segment"],
                    "event_type_name": q["event_type_name"],
                    "required_count": q["required"],
                    "completed_count": q["completed"],
                    "scheduled_count": q["scheduled"],
                    "compliance_percentage": q["pct"],
                    "status": q["status"],
                    "next_due_date": q["next_due_date"],
                    "linked_event_ids": q["linked"],
                }
            )

    # step 7: used strategy per CSE
    candidates: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in rows("territory_strategies"):
        if s["fiscal_year"] != FY or not not_archived(s["status"]):
            continue
        if s["cse_name"] is None:
            continue
        candidates[s["cse_name"]].append(s)

    def strategy_rank(s: dict[str, Any]):
        q = s["quarter"]
        annual = q is None or q.strip(" ") == ""
        upd = s["updated_at"]
        # sort ascending: annual first, latest updated_at first (null last), smallest id first
        return (
            0 if annual else 1,
            0 if upd is not None else 1,
            -(upd - EPOCH) if upd is not None else dt.timedelta(0),
            uuid_key(s["id"]),
        )

    used = {cse: min(lst, key=strategy_rank) for cse, lst in candidates.items()}

    def pct_over(members: Iterable[dict[str, Any]]) -> Decimal:
        members = list(members)
        return aggregate_pct(sum(m["credited_total"] for m in members), sum(m["required_total"] for m in members))

    territory_rows = []
    territory_of_client: dict[str, dict[str, Any]] = {}
    terr_clients: dict[str, list[str]] = defaultdict(list)  # strategy id -> client names
    for name, cl in clients.items():
        cse = cl["cse_name"]
        if cse is not None and cse in used:
            terr_clients[uid(used[cse]["id"])].append(name)
    for s in used.values():
        sid = uid(s["id"])
        members_names = terr_clients.get(sid, [])
        if not members_names:
            continue
        members = [clients[n] for n in members_names]
        seg: dict[str, dict[str, Any]] = {}
        for m in members:
            b = seg.setdefault(m["segment"], {"clients": 0, "total_required": 0, "total_completed": 0})
            b["clients"] += 1
            b["total_required"] += m["required_total"]
            b["total_completed"] += m["credited_total"]
        for b in seg.values():
            b["compliance"] = aggregate_pct(b["total_completed"], b["total_required"])
        cap = {}
        for j in range(1, 13):
            label = fy_month_first_day(start, j).strftime("%Y-%m")
            cap[label] = {
                "required": sum(q["due_by_month"][j] for m in members for q in m["reqs"]),
                "completed": sum(q["completed_months"].count(j) for m in members for q in m["reqs"]),
                "scheduled": sum(q["scheduled_months"].count(j) for m in members for q in m["reqs"]),
            }
        row = {
            "territory_strategy_id": sid,
            "fiscal_year": FY,
            "territory": s["territory"],
            "cse_name": s["cse_name"],
            "total_clients": len(members),
            "total_required_events": sum(m["required_total"] for m in members),
            "total_completed_events": sum(m["credited_total"] for m in members),
            "overall_compliance_percentage": pct_over(members),
            "clients_at_risk": sum(1 for m in members if m["at_risk"]),
            "clients_critical": sum(1 for m in members if m["critical"]),
            "segment_breakdown": seg,
            "monthly_capacity": cap,
        }
        territory_rows.append(row)
        for n in members_names:
            territory_of_client[n] = row

    # step 8: business units
    def bu_of(row: dict[str, Any]) -> str | None:
        if row["cse_name"] in bu_cse:
            return bu_cse[row["cse_name"]]
        if row["territory"] is not None and row["territory"] in bu_territory:
            return bu_territory[row["territory"]]
        return None

    bu_terr: dict[str, list[dict[str, Any]]] = defaultdict(list)
    bu_of_client: dict[str, str] = {}
    for row in territory_rows:
        bu = bu_of(row)
        if bu is None:
            continue
        bu_terr[bu].append(row)
    for name in clients:
        row = territory_of_client.get(name)
        if row is not None and bu_of(row) is not None:
            bu_of_client[name] = bu_of(row)

    def below(m: dict[str, Any]) -> bool:
        return m["at_risk"] or m["critical"]

    bu_rows = []
    for bu in sorted(bu_terr):
        members = [clients[n] for n, b in bu_of_client.items() if b == bu]
        trows = sorted(
            bu_terr[bu],
            key=lambda r: (r["territory"] or "", r["cse_name"] or "", uuid_key(r["territory_strategy_id"])),
        )
        bu_rows.append(
            {
                "bu_name": bu,
                "fiscal_year": FY,
                "overall_compliance_percentage": pct_over(members),
                "clients_below_compliance": sum(1 for m in members if below(m)),
                "territory_count": len(trows),
                "territory_data": [
                    {
                        "territory": r["territory"],
                        "cse_name": r["cse_name"],
                        "clients": r["total_clients"],
                        "compliance": r["overall_compliance_percentage"],
                    }
                    for r in trows
                ],
            }
        )

    # step 9: APAC
    everyone = list(clients.values())
    contributions = []
    for bu in sorted(bu_terr):
        members = [clients[n] for n, b in bu_of_client.items() if b == bu]
        contributions.append(
            {
                "bu_name": bu,
                "compliance": pct_over(members),
                "clients": len(members),
                "clients_below": sum(1 for m in members if below(m)),
            }
        )
    unassigned = [cl for n, cl in clients.items() if n not in bu_of_client]
    if unassigned:
        contributions.append(
            {
                "bu_name": UNASSIGNED,
                "compliance": pct_over(unassigned),
                "clients": len(unassigned),
                "clients_below": sum(1 for m in unassigned if below(m)),
            }
        )
    apac_rows = [
        {
            "fiscal_year": FY,
            "actual_compliance": pct_over(everyone) if everyone else None,
            "below_compliance_accounts": sum(1 for m in everyone if below(m)),
            "bu_contributions": contributions,
        }
    ]

    return {
        REQUIREMENTS: req_rows,
        TERRITORY: territory_rows,
        BUSINESS_UNIT: bu_rows,
        APAC: apac_rows,
        "clients": clients,
        "skipped": skipped,
        "window": (start, end, as_of),
    }


KEYS = {
    REQUIREMENTS: ("plan_id", "event_type_id", "fiscal_year"),
    TERRITORY: ("territory_strategy_id", "fiscal_year"),
    BUSINESS_UNIT: ("bu_name", "fiscal_year"),
    APAC: ("fiscal_year",),
}
OWNED = {
    REQUIREMENTS: (
        "client_id",
        "client_name",
        "segment",
        "event_type_name",
        "required_count",
        "completed_count",
        "scheduled_count",
        "compliance_percentage",
        "status",
        "next_due_date",
        "linked_event_ids",
    ),
    TERRITORY: (
        "territory",
        "cse_name",
        "total_clients",
        "total_required_events",
        "total_completed_events",
        "overall_compliance_percentage",
        "clients_at_risk",
        "clients_critical",
        "segment_breakdown",
        "monthly_capacity",
    ),
    BUSINESS_UNIT: ("overall_compliance_percentage", "clients_below_compliance", "territory_count", "territory_data"),
    APAC: ("actual_compliance", "below_compliance_accounts", "bu_contributions"),
}
