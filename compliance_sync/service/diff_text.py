"""The diff as people read it: each row named by what a person knows (client and event type, territory and
CSE, business unit), its key beside it, and JSON changes shown as what was added, removed or changed inside
them, keys in a stable order. Used for the command line's dry-run lines and Dagster's dry-run table."""

from __future__ import annotations

import decimal
import json
from typing import Any

from compliance_sync.domain.diff import Action, DiffLine, TargetDiff, changed_columns, normalize
from compliance_sync.domain.tables import JSONB, NUMERIC, Kind, TargetTable

MAX_ITEMS = 8  # changes listed inside one JSON value before "… n more"
MAX_TEXT = 120  # characters of one value before it is cut
SYMBOL = {Action.INSERT: "+", Action.UPDATE: "~", Action.DELETE: "-", Action.ORPHAN: "!"}


def _short(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _number(v: Any, percent: bool = False) -> str:
    """Percentages with their two decimals (50.00, not 50), counts as integers."""
    if isinstance(v, bool) or not isinstance(v, (int, float, decimal.Decimal)):
        return str(v)
    d = decimal.Decimal(str(v))
    if percent or (d != d.to_integral_value()):
        return f"{d:.2f}"
    return str(int(d))


def _scalar(kind: Kind, value: Any) -> str:
    if value is None:
        return "null"
    return _short(_number(value, percent=True) if kind == NUMERIC else normalize(kind, value))


def row_label(table: TargetTable, line: DiffLine) -> str:
    row = line.new or line.old or {}
    if table.label == ("fiscal_year",):
        return f"APAC FY{line.key[0]}"
    return " · ".join(_short(row.get(c)) for c in table.label)


def key_text(table: TargetTable, key: tuple) -> str:
    return ", ".join(f"{c}={v}" for c, v in zip(table.key, key))


# --- JSON values ----------------------------------------------------------------------------------------------
def _identity(item: Any) -> Any:
    if isinstance(item, dict):
        if "bu_name" in item:
            return item["bu_name"]
        if "territory" in item:
            return f"{item.get('territory')} / {item.get('cse_name')}"
    return None


def json_changes(old: Any, new: Any) -> list[str]:
    """What changed inside a JSON value, as ``path: old → new``, ``+path …`` and ``-path …`` items."""
    return _changes(normalize(JSONB, old), normalize(JSONB, new), "")


def _changes(old: Any, new: Any, path: str) -> list[str]:
    if old == new:
        return []
    here = path or "value"
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            sub = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(f"+{sub} {_short(_compact(new[k]))}")
            elif k not in new:
                out.append(f"-{sub}")
            else:
                out += _changes(old[k], new[k], sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        ids_old = [_identity(i) for i in old]
        ids_new = [_identity(i) for i in new]
        if None not in ids_old + ids_new and len(set(ids_old)) == len(old) and len(set(ids_new)) == len(new):
            return _changes(dict(zip(map(str, ids_old), old)), dict(zip(map(str, ids_new), new)), path)
        if all(not isinstance(i, (dict, list)) for i in old + new):
            added = [i for i in new if i not in old]
            removed = [i for i in old if i not in new]
            out = [f"+{here}[] {_short(_compact(i))}" for i in added] + [
                f"-{here}[] {_short(_compact(i))}" for i in removed
            ]
            return out or [f"{here}: same items, new order"]
    pct = here.endswith("compliance")
    return [f"{here}: {_short(_compact(old, pct))} → {_short(_compact(new, pct))}"]


def _compact(value: Any, percent: bool = False) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(
            value,
            default=lambda d: int(d) if d == d.to_integral_value() else float(d),
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
        )
    return "null" if value is None else _number(value, percent)


def _capped(items: list[str]) -> str:
    shown = items[:MAX_ITEMS]
    more = f", … {len(items) - MAX_ITEMS} more" if len(items) > MAX_ITEMS else ""
    return ", ".join(shown) + more


def _json_summary(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return f"{len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return f"{len(value)} key{'s' if len(value) != 1 else ''}"
    return _short(value)


def change_text(table: TargetTable, line: DiffLine) -> str:
    """The changes of one row: owned values of an insert, changed columns of an update, why an orphan stays."""
    if line.action == Action.INSERT:
        parts = []
        for c in table.owned:
            kind = table.types[c]
            value = line.new.get(c)
            parts.append(f"{c}={_json_summary(value) if kind == JSONB else _scalar(kind, value)}")
        return "; ".join(parts)
    if line.action == Action.UPDATE:
        parts = []
        for c in changed_columns(table, line.old, line.new):
            kind = table.types[c]
            if kind == JSONB:
                parts.append(f"{c}: {_capped(json_changes(line.old.get(c), line.new.get(c)))}")
            else:
                parts.append(f"{c}: {_scalar(kind, line.old.get(c))} → {_scalar(kind, line.new.get(c))}")
        return "; ".join(parts)
    if line.action == Action.DELETE:
        return "not computed this run; carries nothing the job does not own"
    return "kept: carries data the job does not own"


def describe(diff: TargetDiff) -> list[str]:
    """Text lines of a dry-run report for one target, then how many rows were not listed."""
    t = diff.table
    lines = [
        f"{SYMBOL[line.action]} {t.name} {row_label(t, line)} [{key_text(t, line.key)}] {change_text(t, line)}"
        for line in diff.lines
    ]
    if diff.hidden():
        lines.append(f"  … {diff.hidden():,} more rows of {t.name} not listed")
    return lines


def records(diff: TargetDiff) -> list[dict[str, str]]:
    """The same lines as table records (Dagster's ``MetadataValue.table``)."""
    t = diff.table
    return [
        {
            "action": line.action.value,
            "row": row_label(t, line),
            "key": key_text(t, line.key),
            "changes": change_text(t, line),
        }
        for line in diff.lines
    ]
