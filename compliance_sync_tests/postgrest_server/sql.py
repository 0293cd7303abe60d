"""SQL generation: fragments with their parameters (filter values sent untyped, as PostgREST's ``unknownLiteral``),
WHERE/ORDER/SELECT lists, the JSON payload as a record set, and the response body built in the database (``json_agg``),
as PostgREST's ``Query/SqlFragment.hs`` writes them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .grammar import FTS_OPS, QUANT_SQL, SIMPLE_SQL, Field, Filter, OrderTerm, SelectItem
from .schema_cache import Table


class Frag:
    """SQL text with ``%s`` placeholders and their parameters (text is %-escaped on the way in)."""

    __slots__ = ("sql", "params")

    def __init__(self, sql: str = "", params: Iterable[Any] = ()):
        self.sql = sql
        self.params = list(params)

    def __add__(self, other: Frag | str) -> Frag:
        if isinstance(other, str):
            return Frag(self.sql + other.replace("%", "%%"), self.params)
        return Frag(self.sql + other.sql, self.params + other.params)

    def __radd__(self, other: str) -> Frag:
        return Frag(other.replace("%", "%%") + self.sql, self.params)


def S(text: str) -> Frag:
    return Frag(text.replace("%", "%%"))


def P(value: Any) -> Frag:
    return Frag("%s", [value])


def _join(frags: Iterable[Frag | str], sep: str) -> Frag:
    out = Frag()
    for i, f in enumerate(frags):
        if i:
            out = out + sep
        out = out + f
    return out


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qi(table: Table) -> str:
    return ident(table.schema) + "." + ident(table.name)


def _pg_array_literal(values: list[str]) -> str:
    def esc(v: str) -> str:
        v = v.replace("\x00", "").replace("\\", "\\\\").replace('"', '\\"')
        return '"' + v + '"'

    return "{" + ",".join(esc(v) for v in values) + "}"


def _field_sql(qual: str, field: Field, table: Table | None = None, to_json_if_needed: bool = True) -> Frag:
    base = qual + "." + ident(field.name)
    if not field.json_path:
        return S(base)
    col = table.columns.get(field.name) if table is not None else None
    if to_json_if_needed and not (col is not None and col.data_type in ("json", "jsonb")):
        frag = S("to_jsonb(" + base + ")")
    else:
        frag = S(base)
    for arrow, operand, is_index in field.json_path:
        frag = frag + arrow + P(operand) + ("::int" if is_index else "")
    return frag


def _field_alias(field: Field) -> str:
    for _arrow, operand, is_index in reversed(field.json_path):
        if not is_index:
            return operand
    return field.name


def _filter_sql(qual: str, table: Table, flt: Filter) -> Frag:
    field = _field_sql(qual, flt.field, table)
    op = flt.op
    if op in FTS_OPS:
        col = table.columns.get(flt.field.name)
        if not (col is not None and col.data_type == "tsvector" and not flt.field.json_path):
            field = S("to_tsvector(") + ((P(flt.lang) + ", ") if flt.lang else Frag()) + field + ")"
        lang = (P(flt.lang) + ", ") if flt.lang else Frag()
        expr = field + (" @@ " + FTS_OPS[op] + "(") + lang + P(flt.value) + ")"
    elif op == "in":
        if flt.value == [""]:
            expr = field + " = ANY('{}')"
        else:
            expr = field + " = ANY (" + P(_pg_array_literal(flt.value)) + ")"
    elif op == "is":
        expr = field + (" IS " + flt.value)
    elif op == "isdistinct":
        expr = field + " IS DISTINCT FROM " + P(flt.value)
    elif op in SIMPLE_SQL:
        expr = field + (" " + SIMPLE_SQL[op] + " ") + P(flt.value)
    else:
        value = flt.value.replace("*", "%") if op in ("like", "ilike") else flt.value
        if flt.quant:
            rhs = S(flt.quant.upper() + "(") + P(value) + ")"
        else:
            rhs = P(value)
        expr = field + (" " + QUANT_SQL[op] + " ") + rhs
    return ("NOT " + expr) if flt.negate else expr


def _logic_sql(qual: str, table: Table, node) -> Frag:
    if isinstance(node, Filter):
        return _filter_sql(qual, table, node)
    inner = _join([_logic_sql(qual, table, c) for c in node.children], " AND " if node.op == "and" else " OR ")
    return ("NOT (" if node.negate else "(") + inner + ")"


def where_sql(qual: str, table: Table, filters: list, hidden: bool) -> Frag:
    parts = [_logic_sql(qual, table, f) for f in filters]
    if hidden:
        parts.insert(0, S("false"))
    if not parts:
        return Frag()
    return " WHERE " + _join(parts, " AND ")


def order_sql(qual: str, table: Table, order: list[OrderTerm]) -> Frag:
    if not order:
        return Frag()
    terms = []
    for t in order:
        frag = _field_sql(qual, t.field, table)
        if t.direction:
            frag = frag + (" " + t.direction.upper())
        if t.nulls:
            frag = frag + (" NULLS FIRST" if t.nulls == "nullsfirst" else " NULLS LAST")
        terms.append(frag)
    return " ORDER BY " + _join(terms, ", ")


def select_sql(qual: str, table: Table, items: list[SelectItem], star_columns: list[str] | None = None) -> Frag:
    out = []
    for item in items:
        if item.field is None:
            if star_columns is None:
                out.append(S(qual + ".*"))
            else:
                out.extend(S(qual + "." + ident(c)) for c in star_columns)
            continue
        frag = _field_sql(qual, item.field, table)
        if item.cast:
            frag = "CAST(" + frag + (" AS " + item.cast + ")")
        alias = item.alias
        if alias is None and (item.cast or item.field.json_path):
            alias = _field_alias(item.field)
        if alias is not None:
            frag = frag + (" AS " + ident(alias))
        out.append(frag)
    return _join(out, ", ")


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def body_expr(media: str, alias: str = "_postgrest_t") -> str:
    if media in ("object", "object-stripped"):
        inner = f"json_agg({alias})->0"
        if media == "object-stripped":
            inner = f"json_strip_nulls({inner})"
        return f"coalesce({inner}, 'null'::json)"
    if media == "array-stripped":
        return f"coalesce(json_agg(json_strip_nulls(row_to_json({alias}))), '[]'::json)"
    return f"coalesce(json_agg({alias}), '[]'::json)"
