"""The request grammar: the query string (filters, logic trees, ``select``, ``order``, ``limit``/``offset``,
``columns``, ``on_conflict``; a transcription of PostgREST's Parsec grammar in ``ApiRequest/QueryParams.hs``) and the
``Prefer`` headers (``ApiRequest/Preferences.hs``), parsed into plain values the SQL builder reads."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from .errors import ApiError


class _ParseFail(Exception):
    def __init__(self, pos: int, found: str | None, expecting: str):
        super().__init__(expecting)
        self.pos, self.found, self.expecting = pos, found, expecting


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    json_path: tuple = ()  # ((arrow, operand, is_index), ...)


@dataclasses.dataclass
class Filter:
    field: Field
    negate: bool
    op: str  # eq gt ... in is isdistinct fts plfts phfts wfts neq cs ...
    value: Any  # str, list[str] (in), str isval (is)
    quant: str | None = None  # any/all
    lang: str | None = None  # fts language


@dataclasses.dataclass
class Logic:
    negate: bool
    op: str  # and / or
    children: list  # of Logic | Filter


@dataclasses.dataclass
class OrderTerm:
    field: Field
    direction: str | None
    nulls: str | None


@dataclasses.dataclass
class SelectItem:
    field: Field | None  # None: *
    alias: str | None = None
    cast: str | None = None


_QUANT_OPS = [
    ("eq", "="),
    ("gte", ">="),
    ("gt", ">"),
    ("lte", "<="),
    ("lt", "<"),
    ("like", "like"),
    ("ilike", "ilike"),
    ("match", "~"),
    ("imatch", "~*"),
]
_SIMPLE_OPS = [
    ("neq", "<>"),
    ("cs", "@>"),
    ("cd", "<@"),
    ("ov", "&&"),
    ("sl", "<<"),
    ("sr", ">>"),
    ("nxr", "&<"),
    ("nxl", "&>"),
    ("adj", "-|-"),
]
QUANT_SQL = dict(_QUANT_OPS)
SIMPLE_SQL = dict(_SIMPLE_OPS)
FTS_OPS = {"fts": "to_tsquery", "plfts": "plainto_tsquery", "phfts": "phraseto_tsquery", "wfts": "websearch_to_tsquery"}
_IS_VALS = [("null", "NULL"), ("not_null", "NOT NULL"), ("true", "TRUE"), ("false", "FALSE"), ("unknown", "UNKNOWN")]


class _Cursor:
    def __init__(self, text: str):
        self.s = text
        self.i = 0

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.s[j] if j < len(self.s) else None

    def at(self, lit: str) -> bool:
        return self.s.startswith(lit, self.i)

    def fail(self, expecting: str):
        raise _ParseFail(self.i, self.peek(), expecting)

    def expect(self, ch: str, what: str | None = None):
        if self.peek() != ch:
            self.fail(what or f'"{ch}"')
        self.i += 1

    def ws(self):
        while self.peek() in (" ", "\t"):
            self.i += 1


def _is_ident_char(c: str | None) -> bool:
    return c is not None and (c.isalpha() or "0" <= c <= "9" or c in "_ $")


def _p_identifier(cur: _Cursor) -> str:
    start = cur.i
    while _is_ident_char(cur.peek()):
        cur.i += 1
    if cur.i == start:
        cur.fail("field name (* or [a..z0..9_$])")
    return cur.s[start : cur.i].strip()


def _sep_by_dash(cur: _Cursor, ident: Callable[[_Cursor], str]) -> str:
    parts = [ident(cur)]
    while cur.peek() == "-" and cur.peek(1) != ">":
        cur.i += 1
        parts.append(ident(cur))
    return "-".join(parts)


def _p_quoted(cur: _Cursor) -> str:
    cur.expect('"')
    out = []
    while True:
        c = cur.peek()
        if c is None:
            cur.fail('"\\"" (closing quote)')
        if c == '"':
            cur.i += 1
            return "".join(out)
        if c == "\\":
            if cur.peek(1) is None:
                cur.i += 1
                cur.fail("any character")
            out.append(cur.peek(1))
            cur.i += 2
        else:
            out.append(c)
            cur.i += 1


def _p_field_name(cur: _Cursor) -> str:
    if cur.peek() == '"':
        return _p_quoted(cur)
    return _sep_by_dash(cur, _p_identifier)


def _p_json_key_identifier(cur: _Cursor) -> str:
    start = cur.i
    while cur.peek() is not None and cur.peek() not in "(-:.,>)":
        cur.i += 1
    if cur.i == start:
        cur.fail("any non reserved character different from: .,>()")
    return cur.s[start : cur.i].strip()


def _p_json_path(cur: _Cursor) -> tuple:
    path = []
    while True:
        if cur.at("->>"):
            arrow = "->>"
        elif cur.at("->"):
            arrow = "->"
        else:
            return tuple(path)
        cur.i += len(arrow)
        save = cur.i
        # an index: optional '-' then digits, followed by '->', '::', '.', ',' or the end
        j = cur.i
        if cur.peek() == "-":
            j += 1
        k = j
        while k < len(cur.s) and "0" <= cur.s[k] <= "9":
            k += 1
        rest = cur.s[k:]
        if k > j and (rest == "" or rest.startswith(("->", "::", ".", ","))):
            sign = "-" if cur.peek() == "-" else "+"
            cur.i = k
            path.append((arrow, sign + cur.s[j:k], True))
            continue
        cur.i = save
        key = _p_quoted(cur) if cur.peek() == '"' else _sep_by_dash(cur, _p_json_key_identifier)
        path.append((arrow, key, False))


def _p_field(cur: _Cursor) -> Field:
    cur.ws()
    name = _p_field_name(cur)
    path = _p_json_path(cur)
    cur.ws()
    return Field(name, path)


def _p_list_val(cur: _Cursor) -> list[str]:
    cur.ws()
    cur.expect("(")
    cur.ws()
    items = [_p_list_element(cur)]
    while cur.peek() == ",":
        cur.i += 1
        items.append(_p_list_element(cur))
    cur.ws()
    cur.expect(")", '")" or ","')
    cur.ws()
    return items


def _p_list_element(cur: _Cursor) -> str:
    if cur.peek() == '"':
        save = cur.i
        try:
            value = _p_quoted(cur)
            if cur.peek() is None or cur.peek() in ",)":
                return value
        except _ParseFail:
            pass
        cur.i = save
    start = cur.i
    while cur.peek() is not None and cur.peek() not in ",)":
        cur.i += 1
    return cur.s[start : cur.i]


def _p_rest(cur: _Cursor) -> str:
    value = cur.s[cur.i :]
    cur.i = len(cur.s)
    return value


def _p_logic_single_val(cur: _Cursor) -> str:
    if cur.peek() == '"':
        save = cur.i
        try:
            value = _p_quoted(cur)
            if cur.peek() is None or cur.peek() in ",)":
                return value
        except _ParseFail:
            pass
        cur.i = save
    if cur.peek() == "{":
        end = cur.i + 1
        while end < len(cur.s) and cur.s[end] not in "{}":
            end += 1
        if end < len(cur.s) and cur.s[end] == "}":
            value = cur.s[cur.i : end + 1]
            cur.i = end + 1
            return value
    start = cur.i
    while cur.peek() is not None and cur.peek() not in ",)":
        cur.i += 1
    return cur.s[start : cur.i]


def _p_op_expr(cur: _Cursor, field: Field, single_val: Callable[[_Cursor], str]) -> Filter:
    negate = False
    if cur.at("not."):
        cur.i += 4
        negate = True
    if cur.at("in."):
        cur.i += 3
        return Filter(field, negate, "in", _p_list_val(cur))
    if cur.at("is."):
        cur.i += 3
        low = cur.s[cur.i :].lower()
        for word, sql in _IS_VALS:
            if low.startswith(word):
                cur.i += len(word)
                return Filter(field, negate, "is", sql)
        cur.fail("isVal: (null, not_null, true, false, unknown)")
    if cur.at("isdistinct."):
        cur.i += len("isdistinct.")
        return Filter(field, negate, "isdistinct", single_val(cur))
    for name in ("fts", "plfts", "phfts", "wfts"):
        if cur.at(name):
            save = cur.i
            cur.i += len(name)
            lang = None
            if cur.peek() == "(":
                cur.i += 1
                try:
                    lang = _p_identifier(cur)
                    cur.expect(")")
                except _ParseFail:
                    cur.i = save
                    break
            if cur.peek() == ".":
                cur.i += 1
                return Filter(field, negate, name, single_val(cur), lang=lang)
            cur.i = save
            break
    for name, _sql in _SIMPLE_OPS:
        if cur.at(name + "."):
            cur.i += len(name) + 1
            return Filter(field, negate, name, single_val(cur))
    for name, _sql in _QUANT_OPS:
        if cur.at(name):
            cur.i += len(name)
            quant = None
            if cur.at("(any)"):
                quant, cur.i = "any", cur.i + 5
            elif cur.at("(all)"):
                quant, cur.i = "all", cur.i + 5
            cur.expect(".", "delimiter (.)")
            return Filter(field, negate, name, single_val(cur), quant=quant)
    cur.fail('"not" or operator (eq, gt, ...)')
    raise AssertionError  # unreachable


def _p_logic_tree(cur: _Cursor):
    save = cur.i
    try:
        field = _p_field(cur)
        cur.expect(".", "delimiter (.)")
        return _p_op_expr(cur, field, _p_logic_single_val)
    except _ParseFail:
        cur.i = save
    negate = False
    if cur.at("not."):
        cur.i += 4
        negate = True
    if cur.at("and"):
        op, cur.i = "and", cur.i + 3
    elif cur.at("or"):
        op, cur.i = "or", cur.i + 2
    else:
        cur.fail("logic operator (and, or)")
    cur.ws()
    cur.expect("(")
    cur.ws()
    children = [_p_logic_tree(cur)]
    while True:
        cur.ws()
        if cur.peek() != ",":
            break
        cur.i += 1
        cur.ws()
        children.append(_p_logic_tree(cur))
    cur.ws()
    cur.expect(")", '")" or ","')
    cur.ws()
    return Logic(negate, op, children)


def _p_order(cur: _Cursor) -> list[OrderTerm]:
    terms = []
    while True:
        cur.ws()
        field = _p_field(cur)
        direction = nulls = None
        if cur.at(".asc"):
            direction, cur.i = "asc", cur.i + 4
        elif cur.at(".desc"):
            direction, cur.i = "desc", cur.i + 5
        if cur.at(".nullsfirst"):
            nulls, cur.i = "nullsfirst", cur.i + 11
        elif cur.at(".nullslast"):
            nulls, cur.i = "nullslast", cur.i + 10
        if not (cur.peek() is None or cur.peek() == ","):
            cur.fail('"," or end of input')
        cur.ws()
        terms.append(OrderTerm(field, direction, nulls))
        if cur.peek() == ",":
            cur.i += 1
            continue
        return terms


def _p_columns(cur: _Cursor) -> list[str]:
    cols = [_p_field_name(cur)]
    while True:
        save = cur.i
        cur.ws()
        if cur.peek() != ",":
            cur.i = save
            return cols
        cur.i += 1
        cur.ws()
        cols.append(_p_field_name(cur))


class EmbedRequested(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _p_select(cur: _Cursor) -> list[SelectItem]:
    items: list[SelectItem] = []
    first = True
    while True:
        cur.ws()
        if first and cur.peek() is None:
            return items
        first = False
        items.append(_p_select_item(cur))
        cur.ws()
        if cur.peek() == ",":
            cur.i += 1
            continue
        return items


def _select_end(cur: _Cursor) -> bool:
    return cur.peek() is None or cur.peek() in ",)"


def _p_select_item(cur: _Cursor) -> SelectItem:
    cur.ws()
    start = cur.i
    if cur.at("..."):
        cur.i += 3
        raise EmbedRequested(_p_field_name(cur))
    if cur.peek() == "*":
        cur.i += 1
        cur.ws()
        if _select_end(cur):
            return SelectItem(None)
        cur.i = start
    # an embedding looks like [alias:]name[!hint][!inner](...)
    save = cur.i
    try:
        alias = None
        name = _p_field_name(cur)
        if cur.peek() == ":" and cur.peek(1) != ":":
            cur.i += 1
            alias, name = name, _p_field_name(cur)
        while cur.peek() == "!":
            cur.i += 1
            _p_field_name(cur)
        if cur.peek() == "(" and name != "count":
            raise EmbedRequested(name)
    except _ParseFail:
        pass
    cur.i = save
    alias = None
    probe = cur.i
    try:
        candidate = _p_field_name(cur)
        if cur.peek() == ":" and cur.peek(1) != ":":
            cur.i += 1
            alias = candidate
        else:
            cur.i = probe
    except _ParseFail:
        cur.i = probe
    if cur.at("count()"):
        raise ApiError(400, "PGRST123", "Use of aggregate functions is not allowed")
    field = _p_field(cur)
    cast = None
    if cur.at("::"):
        cur.i += 2
        cast = _p_identifier(cur)
    if cur.peek() == "." and re.match(r"\.(sum|avg|count|max|min)\(\)", cur.s[cur.i :]):
        raise ApiError(400, "PGRST123", "Use of aggregate functions is not allowed")
    cur.ws()
    if not _select_end(cur):
        cur.fail('"," or end of input')
    return SelectItem(field, alias, cast)


def _parse(label: str, text: str, fn: Callable[[_Cursor], Any], source: str | None = None) -> Any:
    cur = _Cursor(text if source is None else source)
    try:
        return fn(cur)
    except _ParseFail as e:
        found = "end of input" if e.found is None else f'"{e.found}"'
        raise ApiError(
            400,
            "PGRST100",
            f'"failed to parse {label} ({text})" (line 1, column {e.pos + 1})',
            f"unexpected {found} expecting {e.expecting}",
        ) from None


def _p_tree_path(cur: _Cursor) -> tuple[list[str], Field]:
    names = [_p_field_name(cur)]
    while cur.peek() == ".":
        cur.i += 1
        names.append(_p_field_name(cur))
    path = _p_json_path(cur)
    return names[:-1], Field(names[-1], path)


def _not_embedded(name: str) -> ApiError:
    return ApiError(
        400,
        "PGRST108",
        f"'{name}' is not an embedded resource in this request",
        None,
        f"Verify that '{name}' is included in the 'select' query parameter.",
    )


INT_RE = re.compile(r"^\s*-?\d+\s*$")
_RESERVED = ("select", "columns", "on_conflict")
_RESERVED_EMBEDDABLE = ("order", "limit", "offset", "and", "or")


@dataclasses.dataclass
class QueryParams:
    raw: list[tuple[str, str]]
    select: list[SelectItem]
    filters: list  # Filter | Logic, all ANDed
    order: list[OrderTerm]
    limit: int | None
    offset: int | None
    columns: list[str] | None
    on_conflict: list[str] | None
    canonical: str


def parse_query(raw_query: str) -> QueryParams:
    """``QueryParams.parse``: form-decoded (``+`` is a space), reserved names, filters, logic trees, order, ranges."""
    pairs = [(k, v) for k, v in urllib.parse.parse_qsl(raw_query, keep_blank_values=True) if k != "apikey"]
    canonical = urllib.parse.urlencode(sorted(pairs, key=lambda kv: kv[0]), quote_via=urllib.parse.quote, safe="")
    select_text = "*"
    columns = on_conflict = None
    order: list[OrderTerm] = []
    filters: list = []
    limit = offset = None
    for key, value in pairs:
        last = key.split(".")[-1]
        if key == "select":
            select_text = value
        elif key == "columns":
            columns = _parse("columns parameter", value, _p_columns)
        elif key == "on_conflict":
            on_conflict = _parse("on_conflict parameter", value, _p_columns)
        elif last in ("and", "or"):
            names = _parse("logic path", key, _p_logic_path)
            embed = [n for n in names[:-1] if n != "not"]
            if embed:
                raise _not_embedded(embed[0])
            op = ("not." if "not" in names[:-1] else "") + last
            # PostgREST parses "or(...)" / "not.or(...)": the operator is glued to the value
            filters.append(_parse("logic tree", value, _p_logic_tree, source=op + value))
        elif last == "order":
            path = _parse("tree path", key, lambda c: _p_tree_path(c))[0]
            if path:
                raise _not_embedded(path[0])
            order = _parse("order", value, _p_order)
        elif last in ("limit", "offset"):
            path = key.split(".")[:-1]
            if path:
                raise _not_embedded(path[0])
            n = int(value) if INT_RE.match(value) else None  # Haskell readMaybe: anything else is ignored
            if last == "limit":
                limit = n
            else:
                offset = n
        else:
            path, field = _parse("tree path", key, _p_tree_path)
            if path:
                raise _not_embedded(path[0])
            filters.append(_parse("filter", value, lambda c, f=field: _p_op_expr(c, f, _p_rest)))
    select = _parse("select parameter", select_text, _p_select)
    if not select:
        select = [SelectItem(None)]
    return QueryParams(pairs, select, filters, order, limit, offset, columns, on_conflict, canonical)


def _p_logic_path(cur: _Cursor) -> list[str]:
    names = [_p_field_name(cur)]
    while cur.peek() == ".":
        cur.i += 1
        names.append(_p_field_name(cur))
    return names


@dataclasses.dataclass
class Prefs:
    resolution: str | None = None
    representation: str | None = None
    count: str | None = None
    missing: str | None = None
    handling: str | None = None
    timezone: str | None = None
    max_affected: int | None = None
    tx: str | None = None
    invalid: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def parse(cls, values: list[str]) -> Prefs:
        """Preferences.fromHeaders: comma-separated, several headers, the first value of each kind wins."""
        prefs = cls()
        kinds = {
            "resolution=merge-duplicates": ("resolution", "merge-duplicates"),
            "resolution=ignore-duplicates": ("resolution", "ignore-duplicates"),
            "return=representation": ("representation", "representation"),
            "return=minimal": ("representation", "minimal"),
            "return=headers-only": ("representation", "headers-only"),
            "count=exact": ("count", "exact"),
            "count=planned": ("count", "planned"),
            "count=estimated": ("count", "estimated"),
            "missing=default": ("missing", "default"),
            "missing=null": ("missing", "null"),
            "handling=strict": ("handling", "strict"),
            "handling=lenient": ("handling", "lenient"),
            "tx=commit": ("tx", "commit"),
            "tx=rollback": ("tx", "rollback"),
        }
        for header in values:
            for raw in header.split(","):
                p = raw.strip()
                if p in kinds:
                    attr, val = kinds[p]
                    if getattr(prefs, attr) is None:
                        setattr(prefs, attr, val)
                elif p.startswith("timezone="):
                    if prefs.timezone is None:
                        prefs.timezone = p[len("timezone=") :]
                elif p.startswith("max-affected="):
                    if prefs.max_affected is None and INT_RE.match(p[len("max-affected=") :]):
                        prefs.max_affected = int(p[len("max-affected=") :])
                else:
                    prefs.invalid.append(p)
        return prefs

    def applied(self, *, resolution=False, missing=False, representation=False, max_affected=False) -> str | None:
        vals = []
        if resolution and self.resolution:
            vals.append("resolution=" + self.resolution)
        if missing and self.missing:
            vals.append("missing=" + self.missing)
        if representation and self.representation:
            vals.append("return=" + self.representation)
        if self.count:
            vals.append("count=" + self.count)
        if self.handling:
            vals.append("handling=" + self.handling)
        if self.timezone:
            vals.append("timezone=" + self.timezone)
        if max_affected and self.handling == "strict" and self.max_affected is not None:
            vals.append(f"max-affected={self.max_affected}")
        return ", ".join(vals) if vals else None
