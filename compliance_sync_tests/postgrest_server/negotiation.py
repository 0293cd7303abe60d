"""Content negotiation and ranges: the ``Accept`` header's media types (JSON array, singular object, stripped nulls),
their Content-Type, and row ranges with ``Content-Range`` (``RangeQuery.hs``)."""

from __future__ import annotations

from .errors import JSON_CT, ApiError

OBJECT_MT = "application/vnd.pgrst.object+json"


def parse_accept(value: str | None) -> list[str]:
    """Media types of an Accept header, best first (q-values honoured, stable)."""
    if not value:
        return ["*/*"]
    entries = []
    for idx, part in enumerate(value.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        mt = pieces[0].lower()
        if not mt:
            continue
        q = 1.0
        params = []
        for p in pieces[1:]:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
            elif p:
                params.append(p.replace(" ", "").lower())
        if q <= 0:
            continue
        entries.append((-q, idx, mt + "".join(";" + p for p in params)))
    entries.sort()
    return [e[2] for e in entries]


def negotiate(accept: str | None) -> str:
    """'json', 'object', 'object-stripped' or 'array-stripped'; 406 PGRST107 otherwise."""
    for mt in parse_accept(accept):
        base = mt.split(";")[0]
        stripped = "nulls=stripped" in mt
        if base in ("*/*", "application/json", "application/*"):
            return "json"
        if base in (OBJECT_MT, "application/vnd.pgrst.object"):
            return "object-stripped" if stripped else "object"
        if base == "application/vnd.pgrst.array+json":
            return "array-stripped" if stripped else "json"
    raise ApiError(406, "PGRST107", "None of these media types are available: " + (accept or ""))


def content_type(media: str) -> str:
    if media == "object":
        return OBJECT_MT + "; charset=utf-8"
    if media == "object-stripped":
        return OBJECT_MT + ";nulls=stripped; charset=utf-8"
    if media == "array-stripped":
        return "application/vnd.pgrst.array+json;nulls=stripped; charset=utf-8"
    return JSON_CT


def content_range(lower: int, upper: int, total: int | None) -> str:
    """RangeQuery.contentRangeH."""
    range_str = f"{lower}-{upper}" if total != 0 and lower <= upper else "*"
    return range_str + "/" + ("*" if total is None else str(total))


class Range:
    """Ranges over row numbers: [lower, upper] with upper None for open (Data.Ranged, NonnegRange)."""

    def __init__(self, lower: int = 0, upper: int | None = None):
        self.lower, self.upper = lower, upper

    def intersect(self, other: Range) -> Range:
        ups = [u for u in (self.upper, other.upper) if u is not None]
        return Range(max(self.lower, other.lower), min(ups) if ups else None)

    @property
    def empty(self) -> bool:
        return self.upper is not None and self.upper < self.lower

    @property
    def limit(self) -> int | None:
        return None if self.upper is None else self.upper - self.lower + 1
