"""Demo and scale data: a realistic, deterministic APAC dataset in the tables of SPEC §3.

``load_demo_data(conn)`` fills an empty, migrated database in one transaction (COPY), with the data-quality cases
the job reports; the same arguments give the same rows and ids. What it generates and why: docs/architecture.md,
"Demo data"."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import ROUND_HALF_UP, Decimal

import psycopg
from psycopg import sql

from compliance_sync.backends.catalog import SCHEMA, existing_tables
from compliance_sync.backends.postgres.migrate import describe_counts, populated_tables
from compliance_sync.domain.tables import SECTION3_TABLES, SOURCES, TARGETS
from compliance_sync.errors import DataError

SOURCE_TABLES = tuple(s.name for s in SOURCES)
TARGET_TABLES = tuple(t.name for t in TARGETS)


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    clients: int = 60
    seed: int = 7
    plans_per_client: int = 1
    events_scale: float = 1.0
    # The "today" of the dataset: events on or before it may be completed, later ones are scheduled.
    today: dt.date = dt.date(2026, 11, 20)
    fiscal_years: tuple[int, ...] = (2024, 2025, 2026)
    event_years: tuple[int, ...] = (2024, 2025, 2026)  # events from 2024-01-01 to 2026-12-31
    cache_years: tuple[int, ...] = (2024, 2025)
    segmentation_from: dt.date = dt.date(2023, 1, 1)


# `demo --ui` runs the change sensor at a short interval so an edit of the demo data syncs within a minute
CHANGE_SENSOR_INTERVAL_S = 30
UI_SENSOR_ENV = {
    "COMPLIANCE_SYNC_CHANGE_SENSOR": "true",
    "COMPLIANCE_SYNC_CHANGE_SENSOR_INTERVAL": str(CHANGE_SENSOR_INTERVAL_S),
}
UI_SENSOR_NOTE = (
    f"the change sensor (compliance_sync_on_change) looks at the sources every {CHANGE_SENSOR_INTERVAL_S} s: its first "
    "tick records a baseline (no run); "
    "after that, an edit of a watched fiscal year's sources requests a run of that year"
)
DEMO_DEFAULTS = DemoSettings()
# The scale benchmark: 10,000 clients, 20,000 plans in FY2026 (60,000 over FY2024-2026 minus late
# onboardings), ~2,000,000 events. See the module docstring for what events_scale does to the mix.
SCALE_DEMO = DemoSettings(clients=10_000, plans_per_client=2, events_scale=3.5)

# --- reference data ----------------------------------------------------------------------------------

TIERS: tuple[tuple[str, int, str], ...] = (
    ("Giant", 1, "Largest, most strategic clients"),
    ("Collaboration", 2, "Large clients in an active partnership"),
    ("Leverage", 3, "Mid-size clients with growth potential"),
    ("Maintain", 4, "Stable clients, steady engagement"),
    ("Nurture", 5, "Small or new clients"),
    ("Sleeping Giant", 6, "Large clients with low engagement"),
)
TIER_SHARE = {"Giant": 8, "Collaboration": 15, "Leverage": 25, "Maintain": 25, "Nurture": 17, "Sleeping Giant": 10}
# Mid-year tier moves go one step along this ladder (Sleeping Giant wakes up to Giant or drops to Leverage).
TIER_LADDER = ("Nurture", "Maintain", "Leverage", "Collaboration", "Giant")


def _rows(table: str) -> tuple[tuple[str, ...], ...]:
    """A ``|``-separated text table (one row per line) as tuples of stripped cells."""
    return tuple(tuple(cell.strip() for cell in line.split("|")) for line in table.strip().splitlines())


# code | name | category | active (the retired type is inactive: never required)
EVENT_TYPES: tuple[tuple[str, str, str, bool], ...] = tuple(
    (code, name, category, active == "active")
    for code, name, category, active in _rows("""
    PGL_ENGAGE   | President / Group Leader Engagement | Executive  | active
    EVP_ENGAGE   | EVP Engagement                      | Executive  | active
    STRAT_OPS    | Strategic Ops Plan Meeting          | Planning   | active
    SAT_PLAN     | Satisfaction Action Plan            | Planning   | active
    SLA_REVIEW   | SLA / Service Review Meeting        | Service    | active
    CE_ONSITE    | CE On-Site Attendance               | Service    | active
    INSIGHT_TP   | Insight Touch Point                 | Engagement | active
    HEALTH_CHECK | Health Check                        | Service    | active
    RELEASE_PLAN | Upcoming Release Planning           | Product    | active
    WHITESPACE   | Whitespace Demo                     | Product    | active
    CLIENT_FORUM | APAC Client Forum                   | Community  | active
    UPDATE_360   | Updating Client 360                 | Engagement | active
    QBR_LEGACY   | Quarterly Business Review (retired) | Planning   | retired
""")
)
CODES = tuple(e[0] for e in EVENT_TYPES)

# Required events per year, per tier and event type (in the order of EVENT_TYPES).
REQUIREMENTS: dict[str, tuple[int, ...]] = {
    #                 PGL EVP STR SAT SLA CE  INS HC  REL WS  FOR 360 QBR
    "Giant": (2, 1, 4, 2, 4, 4, 12, 4, 4, 2, 1, 12, 4),
    "Collaboration": (1, 1, 2, 2, 4, 2, 12, 2, 4, 2, 1, 8, 4),
    "Leverage": (1, 0, 2, 1, 2, 2, 6, 2, 2, 1, 1, 4, 2),
    "Maintain": (0, 0, 1, 1, 2, 1, 4, 1, 1, 1, 1, 4, 0),
    "Nurture": (0, 0, 0, 1, 1, 0, 2, 1, 0, 1, 1, 2, 0),
    "Sleeping Giant": (1, 1, 2, 2, 2, 2, 4, 2, 2, 2, 1, 4, 0),
}

# CSE, territory, business unit. The territory -> BU map is bu_map.example.yaml.
BASE_CSES: tuple[tuple[str, str, str], ...] = _rows("""
    Kim Lee      | VIC + NZ              | ANZ
    Olivia Brown | NSW + ACT             | ANZ
    Jack Wilson  | QLD + WA              | ANZ
    Mia Taylor   | SA + NT + TAS         | ANZ
    Wei Ling Tan | Singapore             | SEA
    Ahmad Rahman | Malaysia              | SEA
    Maria Santos | Philippines + Vietnam | SEA
    Priya Sharma | Strategic Accounts    | SEA
    Chen Wei     | Hong Kong             | Greater China
    Lin Mei-Hua  | Taiwan                | Greater China
    Zhang Hao    | Mainland China        | Greater China
""")
BASE_CSE_WEIGHTS = (7, 6, 6, 5, 6, 5, 5, 4, 6, 5, 5)
# The BU mapping the demo needs (what bu_map.example.yaml says): territories, plus one CSE override.
TERRITORY_BU: dict[str, str] = {t: bu for _, t, bu in BASE_CSES if t != "Strategic Accounts"}
CSE_BU: dict[str, str] = {"Priya Sharma": "SEA"}
BUSINESS_UNITS = ("ANZ", "SEA", "Greater China")

_FIRST_NAMES = (
    "Aarav",
    "Aiko",
    "Alex",
    "Amelia",
    "Ananya",
    "Ben",
    "Charlotte",
    "Daniel",
    "Emily",
    "Ethan",
    "Grace",
    "Hana",
    "Isaac",
    "Jun",
    "Kai",
    "Leila",
    "Liam",
    "Lucas",
    "Mei",
    "Nadia",
    "Noah",
    "Nur",
    "Oscar",
    "Ravi",
    "Rina",
    "Ryan",
    "Sakura",
    "Siti",
    "Sophie",
    "Tom",
    "Minh",
    "Yuki",
    "Zara",
    "Hiroshi",
    "Farah",
    "Arjun",
)
_LAST_NAMES = (
    "Anderson",
    "Chan",
    "Chua",
    "Das",
    "Goh",
    "Gupta",
    "Ho",
    "Huang",
    "Ismail",
    "Kaur",
    "Khoo",
    "Kumar",
    "Lim",
    "Martin",
    "Nguyen",
    "Ng",
    "Ong",
    "Park",
    "Patel",
    "Reyes",
    "Roberts",
    "Singh",
    "Smith",
    "Tanaka",
    "Teo",
    "Thompson",
    "Tran",
    "Walker",
    "Wang",
    "Wong",
    "Yap",
    "Yeo",
    "Young",
    "Zhou",
    "Cruz",
    "Baker",
)
_NAME_HEADS = (
    "Alpha",
    "Southern Cross",
    "Harbour City",
    "Pacific",
    "Coral Coast",
    "Eastern",
    "Lion City",
    "Jade",
    "Golden Wattle",
    "Red Lantern",
    "Blue Mountains",
    "Kowloon",
    "Orchid",
    "Silver Fern",
    "Meridian",
    "Tasman",
    "Banyan",
    "Monsoon",
    "Summit",
    "Evergreen",
    "Sunrise",
    "Pearl River",
    "Outback",
    "Lotus",
    "Kestrel",
    "Mekong",
    "Borneo",
    "Great Barrier",
    "Formosa",
    "Victoria Peak",
    "Straits",
    "Kauri",
    "Aurora",
    "Coastal",
    "Highland",
    "Riverstone",
    "Northbridge",
    "Bayview",
    "Crescent",
    "Ironbark",
    "Wattle Grove",
    "Lakeside",
    "Redgum",
    "Koru",
    "Saltwater",
    "Emerald",
    "Sapphire",
    "Phoenix",
)
_NAME_TAILS = (
    "Health",
    "Energy",
    "Logistics",
    "Bank",
    "Insurance",
    "Retail",
    "Telecom",
    "Foods",
    "Airways",
    "Mining",
    "Media",
    "Water",
    "Hospitals",
    "University",
    "Freight",
    "Pharma",
    "Property",
    "Utilities",
    "Capital",
    "Education",
    "Airport",
    "Ports",
    "Rail",
    "Agriculture",
    "Steel",
    "Textiles",
    "Software",
    "Hotels",
    "Shipping",
    "Council",
    "Care",
    "Labs",
)
_SUFFIX_BY_BU = {
    "ANZ": ("", "Group", "Pty Ltd"),
    "SEA": ("", "Group", "Holdings"),
    "Greater China": ("", "Group", "Limited"),
}
# A few fixed names first: exact-name matching must survive apostrophes, diacritics and punctuation.
_FIXED_NAMES = (
    "Alpha Health",
    "St Vincent's Care",
    "Ngā Awa Health Trust",
    "Lion City Logistics",
    "Jade Dragon Insurance (HK)",
)

_NOTES = (
    "Agenda shared in advance",
    "Follow-up actions logged in CRM",
    "Rescheduled at client request",
    "Attended by regional VP",
    "Client raised integration concerns",
)


# --- helpers ---------------------------------------------------------------------------------------


def new_uuid(rng: random.Random) -> str:
    """``str(uuid.UUID(int=rng.getrandbits(128), version=4))``, formatted without building a UUID object."""
    bits = rng.getrandbits(128)
    bits &= ~(0xC000 << 48)
    bits |= 0x8000 << 48
    bits &= ~(0xF000 << 64)
    bits |= 4 << 76
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _rng(seed: int, stream: str) -> random.Random:
    return random.Random(f"compliance_sync.devtools.demo:{seed}:{stream}")


def _stochastic_round(rng: random.Random, x: float) -> int:
    n = math.floor(x)
    return n + (1 if rng.random() < x - n else 0)


def _ts(day: dt.date, hour: int = 9) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


@dataclasses.dataclass
class _Period:
    start: dt.date
    end: dt.date | None
    tier: str
    cse: str | None
    id: str = ""


@dataclasses.dataclass
class _Client:
    index: int
    name: str
    cse: str
    bu: str
    client_uuid: str | None
    periods: list[_Period]
    diligence: float
    p_done: float
    event_seed: int
    onboarded: dt.date
    excluded_code: str | None = None
    exclusion_reason: str | None = None
    excludes: bool = False

    @property
    def segmented(self) -> bool:
        return bool(self.periods)


class _Reference:
    """Ids of tiers and event types (from their own stream: the same for any number of clients)."""

    def __init__(self, seed: int):
        rng = _rng(seed, "reference")
        self.tier_ids = {name: new_uuid(rng) for name, _, _ in TIERS}
        self.type_ids = {code: new_uuid(rng) for code in CODES}


def _cses(n_clients: int, seed: int) -> list[tuple[str, str, str]]:
    cses = list(BASE_CSES)
    wanted = max(len(BASE_CSES), math.ceil(n_clients / 6))
    if wanted > len(cses):
        rng = _rng(seed, "cses")
        names = [f"{first} {last}" for first in _FIRST_NAMES for last in _LAST_NAMES]
        rng.shuffle(names)
        taken = {c[0] for c in cses}
        bases = [c for c in BASE_CSES if c[1] != "Strategic Accounts"]
        i = 0
        while len(cses) < wanted:
            name = names[i % len(names)] + ("" if i < len(names) else f" {i // len(names) + 1}")
            i += 1
            if name in taken:
                continue
            taken.add(name)
            _, territory, bu = bases[len(cses) % len(bases)]
            cses.append((name, territory, bu))
    return cses


def _client_names(n: int, seed: int, bus: Sequence[str]) -> list[str]:
    """Unique client-like names: fixed ones first, then "<head> <tail>" combinations, then the same with
    a BU-flavoured suffix ("Group", "Pty Ltd", "Holdings", "Limited"), then numbered."""
    rng = _rng(seed, "names")
    combos = [f"{h} {t}" for h in _NAME_HEADS for t in _NAME_TAILS]
    rng.shuffle(combos)
    used: set[str] = set()
    names: list[str] = []
    k = 0
    for i in range(n):
        if i < len(_FIXED_NAMES):
            name = _FIXED_NAMES[i]
        else:
            suffixes = _SUFFIX_BY_BU[bus[i]]
            while True:
                base, round_ = combos[k % len(combos)], k // len(combos)
                k += 1
                if round_ < len(suffixes):
                    name = f"{base} {suffixes[round_]}".strip()
                else:
                    name = f"{base} {round_ - len(suffixes) + 2}"
                if name not in used:
                    break
        used.add(name)
        names.append(name)
    return names


def _move_tier(rng: random.Random, tier: str) -> str:
    if tier == "Sleeping Giant":
        return rng.choice(("Giant", "Leverage"))
    i = TIER_LADDER.index(tier)
    return rng.choice([TIER_LADDER[j] for j in (i - 1, i + 1) if 0 <= j < len(TIER_LADDER)])


def _build_clients(s: DemoSettings, cses: list[tuple[str, str, str]]) -> list[_Client]:
    rng = _rng(s.seed, "clients")
    base_weights = list(BASE_CSE_WEIGHTS) + [5] * (len(cses) - len(BASE_CSES))
    # Assign CSEs: the first len(cses) clients round-robin (every CSE gets clients), then weighted.
    assigned = [cses[i] if i < len(cses) else rng.choices(cses, weights=base_weights)[0] for i in range(s.clients)]
    names = _client_names(s.clients, s.seed, [a[2] for a in assigned])
    tiers = [t[0] for t in TIERS]
    weights = [TIER_SHARE[t] for t in tiers]
    cses_by_bu: dict[str, list[str]] = {}
    for name, _territory, bu_name in cses:
        cses_by_bu.setdefault(bu_name, []).append(name)
    clients: list[_Client] = []
    for i in range(s.clients):
        cse, _, bu = assigned[i]
        tier = rng.choices(tiers, weights=weights)[0]
        klass = rng.random()
        if klass < 0.15:
            diligence, p_done = rng.uniform(1.0, 1.15), 0.97
        elif klass < 0.85:
            diligence, p_done = rng.uniform(0.55, 1.0), 0.90
        else:
            diligence, p_done = rng.uniform(0.15, 0.5), 0.75
        if i % 12 == 5:  # onboarded later
            start = dt.date(rng.choice((2024, 2025)), rng.randint(1, 9), 1)
        elif rng.random() < 0.3:
            start = dt.date(2023, rng.randint(2, 12), 1)
        else:
            start = s.segmentation_from
        client_uuid = new_uuid(rng) if i % 10 in (0, 3, 6) else None
        periods = [_Period(start, None, tier, cse)]
        changes = 2 if i % 25 == 7 else 1 if i % 5 == 2 else 0
        for c in range(changes):
            last = periods[-1]
            lo = max(last.start.replace(day=1) + dt.timedelta(days=200), dt.date(2024, 2, 1))
            hi = dt.date(2026, 10, 1) if c == changes - 1 else dt.date(2025, 6, 1)
            if lo >= hi:
                break
            day = lo + dt.timedelta(days=rng.randint(0, (hi - lo).days))
            change = dt.date(day.year, day.month, 1) if day.month not in (1, 12) else dt.date(day.year, 6, 1)
            if change <= last.start:
                break
            new_cse = last.cse
            if rng.random() < 1 / 3:
                new_cse = rng.choice(cses_by_bu[bu])
            last.end = change - dt.timedelta(days=1)
            periods.append(_Period(change, None, _move_tier(rng, last.tier), new_cse))
        if i % 50 == 17:
            periods[-1].cse = None  # CSE left: unassigned
        event_seed = rng.getrandbits(64)
        if i % 40 == 23:
            periods = []  # a new client with plans but no segmentation yet
        clients.append(
            _Client(
                i,
                names[i],
                periods[-1].cse if periods else cse,
                bu,
                client_uuid,
                periods,
                diligence,
                p_done,
                event_seed,
                start,
            )
        )
    for p_client in clients:
        for p in p_client.periods:
            p.id = new_uuid(rng)
    # Exclusions: clients 1, 2, 3 of every 60.
    reasons = {1: "Greyed out - not applicable", 2: None, 3: "Client declined"}
    for c in clients:
        if c.segmented and c.index % 60 in reasons:
            tier = c.periods[-1].tier
            required = [code for code, f, et in zip(CODES, REQUIREMENTS[tier], EVENT_TYPES) if f > 0 and et[3]]
            c.excluded_code = rng.choice(required)
            c.exclusion_reason = reasons[c.index % 60]
            c.excludes = not (c.exclusion_reason and "greyed out" in c.exclusion_reason.lower())
    return clients


# --- table rows -----------------------------------------------------------------------------------------


def _tier_rows(ref: _Reference) -> Iterator[tuple]:
    colors = ("#1f3a93", "#2e86de", "#10ac84", "#f6b93b", "#e58e26", "#8e44ad")
    for (name, level, description), color in zip(TIERS, colors):
        yield (ref.tier_ids[name], name, level, description, color)


def _event_type_rows(ref: _Reference) -> Iterator[tuple]:
    for order, (code, name, category, active) in enumerate(EVENT_TYPES, start=1):
        yield (ref.type_ids[code], name, code, category, active, order)


def _requirement_rows(ref: _Reference, seed: int) -> Iterator[tuple]:
    rng = _rng(seed, "requirements")
    for tier, freqs in REQUIREMENTS.items():
        for code, f in zip(CODES, freqs):
            yield (new_uuid(rng), ref.tier_ids[tier], ref.type_ids[code], f)


def _segmentation_rows(clients: list[_Client], ref: _Reference) -> Iterator[tuple]:
    for c in clients:
        for n, p in enumerate(c.periods):
            reason = None if n == 0 else "Annual segmentation review" if p.start.month in (6, 7) else "Tier change"
            yield (p.id, c.name, ref.tier_ids[p.tier], p.cse, c.client_uuid, p.start, p.end, reason, _ts(p.start))


_PLAN_STATUS = {
    2024: (("approved", 90), ("submitted", 10)),
    2025: (("approved", 75), ("submitted", 15), ("in_review", 10)),
    2026: (("draft", 30), ("submitted", 30), ("in_review", 10), ("revision_requested", 5), ("approved", 25)),
}


def _plan_rows(s: DemoSettings, clients: list[_Client]) -> Iterator[tuple]:
    rng = _rng(s.seed, "plans")
    last_fy = max(s.fiscal_years)
    for c in clients:
        for fy in s.fiscal_years:
            if fy != last_fy and (not c.segmented or c.onboarded.year > fy):
                continue
            statuses = _PLAN_STATUS.get(fy, _PLAN_STATUS[2026] if fy > 2026 else _PLAN_STATUS[2024])
            for k in range(s.plans_per_client):
                status = rng.choices([x[0] for x in statuses], weights=[x[1] for x in statuses])[0]
                if fy != last_fy and k == 0 and c.index % 30 == (11 if fy == s.fiscal_years[0] else 19):
                    status = "archived"
                with_id = c.client_uuid is not None and (fy == last_fy or rng.random() < 0.5)
                created = dt.date(fy - 1, 10, 1) + dt.timedelta(days=rng.randint(0, 75))
                title = f"{c.name} FY{fy} Account Plan" + (f" ({k + 1})" if k else "")
                submitted = _ts(created + dt.timedelta(days=20)) if status != "draft" else None
                approved = _ts(created + dt.timedelta(days=40)) if status in ("approved", "archived") else None
                yield (
                    new_uuid(rng),
                    c.client_uuid if with_id else None,
                    c.name,
                    fy,
                    status,
                    title,
                    c.cse,
                    submitted,
                    approved,
                    _ts(created),
                    _ts(created + dt.timedelta(days=45)),
                )


def _strategy_rows(s: DemoSettings, cses: list[tuple[str, str, str]]) -> Iterator[tuple]:
    rng = _rng(s.seed, "strategies")
    first_fy, last_fy = min(s.fiscal_years), max(s.fiscal_years)
    for n, (cse, territory, _bu) in enumerate(cses):
        for fy in s.fiscal_years:
            late_joiner = n == len(BASE_CSES) - 1 or (n >= len(BASE_CSES) and n % 9 == 8)
            if fy == first_fy and late_joiner:
                continue
            status = "approved" if fy < last_fy else rng.choice(("approved", "approved", "submitted", "draft"))
            annual_updated = _ts(dt.date(fy - 1, 11, 1) + dt.timedelta(days=rng.randint(0, 80)), 10)
            blank = "" if n % 4 == 3 else None
            summary = f"{territory} FY{fy}: grow engagement in the top accounts"
            yield (new_uuid(rng), cse, territory, fy, blank, status, summary, annual_updated)
            # a superseded draft (archived); an older second annual strategy (loses the tie-break)
            earlier = (
                (n % 5 == 2 and fy == 2025, "archived", " (superseded)", 30),
                (n % 7 == 3 and fy == last_fy, "draft", " (first draft)", 20),
            )
            for wanted, state, note, days in earlier:
                if wanted:
                    updated = annual_updated - dt.timedelta(days=days)
                    yield (new_uuid(rng), cse, territory, fy, None, state, summary + note, updated)
            if n % 3 == 1:
                for q in range(1, 5):
                    q_start = dt.date(fy, 3 * q - 2, 1)
                    updated = _ts(q_start - dt.timedelta(days=rng.randint(5, 25)), 11)
                    yield (
                        new_uuid(rng),
                        cse,
                        territory,
                        fy,
                        f"Q{q}",
                        "approved",
                        f"{territory} FY{fy} Q{q} focus",
                        updated,
                    )


def _exclusion_rows(s: DemoSettings, clients: list[_Client], ref: _Reference) -> Iterator[tuple]:
    rng = _rng(s.seed, "exclusions")
    for c in clients:
        if c.excluded_code:
            yield (
                new_uuid(rng),
                c.name,
                ref.type_ids[c.excluded_code],
                c.exclusion_reason,
                c.cse,
                _ts(dt.date(2024, 2, 1)),
            )


class _Calendar:
    """Per year: for each day offset, the weekday-adjusted date (ISO text) and its ordinal."""

    def __init__(self, years: Iterable[int]):
        self.days: dict[int, list[tuple[str, int]]] = {}
        for y in years:
            first, last = dt.date(y, 1, 1), dt.date(y, 12, 31)
            out = []
            for k in range((last - first).days + 1):
                d = first + dt.timedelta(days=k)
                if d.weekday() == 5:
                    d -= dt.timedelta(days=1)
                elif d.weekday() == 6:
                    d = d + dt.timedelta(days=1) if d + dt.timedelta(days=1) <= last else d - dt.timedelta(days=2)
                out.append((d.isoformat(), d.toordinal()))
            self.days[y] = out


def _client_requirements(c: _Client, year: int) -> list[int]:
    """Per event type: the highest frequency among the tiers of the periods overlapping calendar ``year``."""
    lo, hi = dt.date(year, 1, 1), dt.date(year, 12, 31)
    best = [0] * len(CODES)
    for p in c.periods:
        if p.start <= hi and (p.end is None or p.end >= lo):
            best = [max(a, b) for a, b in zip(best, REQUIREMENTS[p.tier])]
    return best


def _event_rows(
    s: DemoSettings, clients: list[_Client], ref: _Reference, cache: dict[tuple[int, int, int], int]
) -> Iterator[tuple]:
    """Events client by client; fills ``cache[(client index, type index, year)] = completed count``."""
    cal = _Calendar(s.event_years)
    today = s.today.toordinal()
    type_ids = [ref.type_ids[code] for code in CODES]
    active = [et[3] for et in EVENT_TYPES]
    legacy_years = {min(s.event_years)}
    scale = s.events_scale
    cache_years = set(s.cache_years)
    for c in clients:
        if not c.segmented:
            continue
        rng = random.Random(c.event_seed)
        name = c.name
        cse = c.cse
        for year in s.event_years:
            days = cal.days[year]
            n_days = len(days)
            first = 0
            if c.onboarded.year > year:
                continue
            if c.onboarded.year == year:
                first = (c.onboarded - dt.date(year, 1, 1)).days
            span = n_days - first
            fraction = span / n_days
            required = _client_requirements(c, year)
            d_year = c.diligence * rng.uniform(0.9, 1.1)
            for t, r in enumerate(required):
                if not active[t] and year not in legacy_years:
                    continue
                if c.excludes and CODES[t] == c.excluded_code:
                    continue
                mean = (r * d_year if r > 0 else (0.3 if active[t] else 0.0)) * scale * fraction
                n = _stochastic_round(rng, mean)
                if n <= 0:
                    continue
                type_id = type_ids[t]
                step = span / n
                done_count = 0
                for k in range(n):
                    iso, ordinal = days[first + min(int((k + rng.uniform(0.1, 0.9)) * step), span - 1)]
                    done = rng.random() < c.p_done and ordinal <= today
                    done_count += done
                    note = _NOTES[rng.randrange(len(_NOTES))] if rng.random() < 0.03 else None
                    yield (new_uuid(rng), name, type_id, iso, done, note, cse)
                if year in cache_years and r > 0 and active[t]:
                    cache[(c.index, t, year)] = done_count
            if year in cache_years:
                for t, r in enumerate(required):
                    if r > 0 and active[t]:
                        cache.setdefault((c.index, t, year), 0)
        # Data-quality quirks the job reports as warnings.
        if c.index % 30 == 13:
            yield (new_uuid(rng), name, type_ids[CODES.index("INSIGHT_TP")], None, False, "Date to be confirmed", cse)
        if c.index % 45 == 22:
            day = cal.days[max(s.event_years) - 1][150][0]
            yield (
                new_uuid(rng),
                name.upper(),
                type_ids[CODES.index("CLIENT_FORUM")],
                day,
                True,
                "Imported from the forum sign-in sheet",
                cse,
            )


def _cache_rows(
    s: DemoSettings, clients: list[_Client], ref: _Reference, cache: dict[tuple[int, int, int], int]
) -> Iterator[tuple]:
    rng = _rng(s.seed, "cache")
    for (ci, t, year), actual in sorted(cache.items()):
        c = clients[ci]
        expected = _client_requirements(c, year)[t]
        stale = rng.random() < 0.05
        if stale:
            actual = max(0, actual + rng.choice((-2, -1, 1, 2)))
        pct = min(Decimal(100 * actual) / Decimal(expected), Decimal("999.99")).quantize(Decimal("0.01"), ROUND_HALF_UP)
        status = "exceeded" if pct >= 100 else "compliant" if pct >= 80 else "at_risk" if pct >= 50 else "critical"
        calculated = _ts(dt.date(year, 12, 31) if not stale else dt.date(year, rng.randint(6, 11), 1), 18)
        yield (new_uuid(rng), c.name, ref.type_ids[CODES[t]], year, expected, actual, pct, status, calculated)


def _bu_rows(s: DemoSettings) -> Iterator[tuple]:
    rng = _rng(s.seed, "planning")
    base = {
        "ANZ": (Decimal("85.00"), 12_500_000),
        "SEA": (Decimal("80.00"), 8_200_000),
        "Greater China": (Decimal("80.00"), 6_400_000),
    }
    last_fy = max(s.fiscal_years)
    for fy in s.fiscal_years:
        growth = Decimal("1.08") ** (fy - min(s.fiscal_years))
        for bu, (target, revenue) in base.items():
            rev_target = (Decimal(revenue) * growth).quantize(Decimal("1"))
            rev_actual = (rev_target * Decimal(rng.uniform(0.9, 1.1))).quantize(Decimal("1")) if fy < last_fy else None
            yield (
                new_uuid(rng),
                bu,
                fy,
                target,
                rev_target,
                rev_actual,
                f"{bu} FY{fy} plan",
                _ts(dt.date(fy - 1, 11, 15)),
            )
    yield (
        new_uuid(rng),
        "Japan",
        last_fy,
        Decimal("75.00"),
        Decimal(1_500_000),
        None,
        "Market entry: no territory yet",
        _ts(dt.date(last_fy - 1, 11, 15)),
    )


def _apac_rows(s: DemoSettings) -> Iterator[tuple]:
    rng = _rng(s.seed, "apac")
    for fy in s.fiscal_years:
        growth = Decimal("1.08") ** (fy - min(s.fiscal_years))
        yield (
            new_uuid(rng),
            fy,
            Decimal("85.00"),
            (Decimal(27_100_000) * growth).quantize(Decimal("1")),
            f"APAC FY{fy} goals",
            _ts(dt.date(fy - 1, 11, 20)),
        )


# --- loading ------------------------------------------------------------------------------------------


def _copy(conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[tuple]) -> int:
    query = sql.SQL("COPY {} ({}) FROM STDIN (FREEZE)").format(
        sql.Identifier(SCHEMA, table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    n = 0
    with conn.cursor() as cur, cur.copy(query) as copy:
        write = copy.write_row
        for row in rows:
            write(row)
            n += 1
    return n


def load_demo_data(
    conn: psycopg.Connection,
    clients: int = DEMO_DEFAULTS.clients,
    force: bool = False,
    seed: int = DEMO_DEFAULTS.seed,
    plans_per_client: int = DEMO_DEFAULTS.plans_per_client,
    events_scale: float = DEMO_DEFAULTS.events_scale,
    *,
    today: dt.date | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Load the demo dataset (see the module docstring) into a migrated database; commit; return the row
    count written per table.

    Refuses with :class:`DataError` when a table of SPEC §3 holds rows, unless ``force`` (then the §3
    source and target tables are truncated first), and when §3 tables are missing (run the full
    migration first). ``today`` (default :data:`DEMO_DEFAULTS`.today, a fixed date) separates completed
    from scheduled events; ``progress`` receives a line per table loaded.
    """
    if clients < 1:
        raise ValueError("clients must be at least 1")
    if plans_per_client < 1:
        raise ValueError("plans_per_client must be at least 1")
    if events_scale < 0:
        raise ValueError("events_scale must not be negative")
    s = dataclasses.replace(
        DEMO_DEFAULTS,
        clients=clients,
        seed=seed,
        plans_per_client=plans_per_client,
        events_scale=events_scale,
        today=today or DEMO_DEFAULTS.today,
    )
    say = progress or (lambda _line: None)

    def work() -> dict[str, int]:
        present = existing_tables(conn, SECTION3_TABLES)
        missing = [t for t in SECTION3_TABLES if t not in present]
        if missing:
            raise DataError(f"demo data: table(s) missing: {', '.join(missing)}; run `compliance-sync migrate` first")
        conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier(SCHEMA, t) for t in SECTION3_TABLES)
            )
        )
        populated = populated_tables(conn)
        if populated and not force:
            raise DataError(
                f"refusing to load demo data: these tables already hold rows: {describe_counts(populated)}. "
                "Run with --force to delete their rows (every table of SPEC §3) and load the demo dataset."
            )
        # Always truncate (the tables are empty unless forced): it lets COPY ... FREEZE skip later
        # hint-bit writes on millions of rows.
        conn.execute(
            sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(sql.Identifier(SCHEMA, t) for t in SOURCE_TABLES + TARGET_TABLES)
            )
        )
        if populated:
            say(f"--force: truncated {describe_counts(populated)}")

        ref = _Reference(s.seed)
        cses = _cses(s.clients, s.seed)
        people = _build_clients(s, cses)
        counts: dict[str, int] = {}
        cache: dict[tuple[int, int, int], int] = {}
        loads: list[tuple[str, tuple[str, ...], Iterable[tuple]]] = [
            ("segmentation_tiers", ("id", "tier_name", "tier_level", "description", "color"), _tier_rows(ref)),
            (
                "segmentation_event_types",
                ("id", "event_name", "event_code", "category", "is_active", "sort_order"),
                _event_type_rows(ref),
            ),
            (
                "tier_event_requirements",
                ("id", "tier_id", "event_type_id", "frequency"),
                _requirement_rows(ref, s.seed),
            ),
            (
                "client_segmentation",
                (
                    "id",
                    "client_name",
                    "tier_id",
                    "cse_name",
                    "client_uuid",
                    "effective_from",
                    "effective_to",
                    "change_reason",
                    "created_at",
                ),
                _segmentation_rows(people, ref),
            ),
            (
                "account_plans",
                (
                    "id",
                    "client_id",
                    "client_name",
                    "fiscal_year",
                    "status",
                    "plan_title",
                    "owner",
                    "submitted_at",
                    "approved_at",
                    "created_at",
                    "updated_at",
                ),
                _plan_rows(s, people),
            ),
            (
                "territory_strategies",
                ("id", "cse_name", "territory", "fiscal_year", "quarter", "status", "strategy_summary", "updated_at"),
                _strategy_rows(s, cses),
            ),
            (
                "client_event_exclusions",
                ("id", "client_name", "event_type_id", "reason", "created_by", "created_at"),
                _exclusion_rows(s, people, ref),
            ),
            (
                "segmentation_events",
                ("id", "client_name", "event_type_id", "event_date", "completed", "notes", "created_by"),
                _event_rows(s, people, ref, cache),
            ),
            # after the events: the cache is filled while they stream
            (
                "segmentation_event_compliance",
                (
                    "id",
                    "client_name",
                    "event_type_id",
                    "year",
                    "expected_count",
                    "actual_count",
                    "compliance_percentage",
                    "status",
                    "last_calculated_at",
                ),
                _cache_rows(s, people, ref, cache),
            ),
            (
                "business_unit_planning",
                (
                    "id",
                    "bu_name",
                    "fiscal_year",
                    "target_compliance",
                    "revenue_target",
                    "revenue_actual",
                    "notes",
                    "created_at",
                ),
                _bu_rows(s),
            ),
            (
                "apac_planning_goals",
                ("id", "fiscal_year", "target_compliance", "revenue_target", "notes", "created_at"),
                _apac_rows(s),
            ),
        ]
        for table, columns, rows in loads:
            counts[table] = _copy(conn, table, columns, rows)
            say(f"{table}: {counts[table]:,} rows")
        for table in counts:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(SCHEMA, table)))
        return counts

    with conn.transaction():
        return work()
