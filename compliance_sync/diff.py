"""The diff of SPEC §5 as data: what a run would insert, update, delete, keep as orphans, leave alone.

Pure: current rows and wanted rows in, a :class:`SyncDiff` out. Live runs apply it, dry runs report it;
minimal writes ("a second run changes nothing") and the dry-run report fall out of the same object.
"""

from __future__ import annotations

import dataclasses
import decimal
import json
from typing import Any, Iterable

import pandas as pd

from compliance_sync.model import (
    DATE,
    INT,
    JSONB,
    NUMERIC,
    REQUIRED_NONEMPTY,
    TARGETS,
    TEXT,
    UUID,
    DataError,
    TargetTable,
    records,
)

Key = tuple


def normalize(kind: str, value: Any) -> Any:
    """One comparable form per column type, so equal values never count as a change."""
    if value is None:
        return None
    if isinstance(value, (list, dict, tuple)):
        return _normalize_json(list(value) if isinstance(value, tuple) else value) if kind == JSONB else value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if kind == UUID:
        return str(value).lower()
    if kind == INT:
        return int(value)
    if kind == NUMERIC:
        return decimal.Decimal(str(value)).normalize()
    if kind == JSONB:
        return _normalize_json(json.loads(value) if isinstance(value, str) else value)
    if kind == DATE:
        return value.date() if hasattr(value, "date") and callable(value.date) else value
    if kind == TEXT:
        return str(value)
    return value


def _normalize_json(value: Any) -> Any:
    # JSON numbers compare as numbers: 52.6 == 52.60, 1 == 1.0
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, decimal.Decimal)):
        return decimal.Decimal(str(value)).normalize()
    if isinstance(value, dict):
        return {str(k): _normalize_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize_json(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: Decimals become JSON numbers with their two decimals."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: Any) -> str:
    return json.dumps(value, default=json_default, ensure_ascii=False, separators=(",", ":"))


@dataclasses.dataclass
class RowUpdate:
    key: Key
    old: dict[str, Any]  # the changed owned columns, current values
    new: dict[str, Any]  # the whole wanted row (key + owned columns)

    @property
    def changed(self) -> tuple[str, ...]:
        return tuple(self.old)


@dataclasses.dataclass
class TargetDiff:
    table: TargetTable
    inserts: list[dict[str, Any]]  # whole wanted rows (key + owned columns)
    updates: list[RowUpdate]
    deletes: list[Key]  # keys of rows to delete (they carry nothing the job does not own)
    orphans: list[Key]  # keys of rows not computed that carry foreign data: kept as they are
    unchanged: int
    current_count: int  # rows of the FY before the run

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def changes(self) -> int:
        return len(self.inserts) + len(self.updates) + len(self.deletes)

    def counts(self) -> dict[str, int]:
        return {
            "inserted": len(self.inserts),
            "updated": len(self.updates),
            "deleted": len(self.deletes),
            "orphans": len(self.orphans),
            "unchanged": self.unchanged,
        }


@dataclasses.dataclass
class Guard:
    """A SPEC §5 guard that would stop a live run."""

    code: str  # "empty_source" or "mass_prune"
    table: str
    message: str


@dataclasses.dataclass
class SyncDiff:
    fiscal_year: int
    targets: dict[str, TargetDiff]
    guards: list[Guard]

    @property
    def changes(self) -> int:
        return sum(t.changes for t in self.targets.values())


def _key_part(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == UUID:
        return str(value).lower()
    if kind == INT:
        return int(value)
    return value


def key_of(table: TargetTable, row: dict[str, Any]) -> Key:
    """The row's key in a comparable form (uuids lower-case text, integers as int)."""
    return tuple(_key_part(table.types[c], row[c]) for c in table.key)


def _changed(table: TargetTable, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The owned columns whose values differ, with their current values. Plain equality settles most
    cells; only unequal ones are normalised (52.6 vs Decimal('52.60'), uuid case, JSON numbers)."""
    changed = {}
    for c in table.owned:
        a, b = old.get(c), new.get(c)
        if a is b or (type(a) is type(b) and a == b):
            continue
        if normalize(table.types[c], a) != normalize(table.types[c], b):
            changed[c] = a
    return changed


def diff_target(
    table: TargetTable,
    current: pd.DataFrame | list[dict[str, Any]],
    wanted: pd.DataFrame | list[dict[str, Any]],
) -> TargetDiff:
    """Compare on the owned columns. ``current`` carries key + owned columns + ``has_foreign``
    (any column other than key, id, created_at, updated_at and the owned ones is non-null)."""
    cur_rows = records(current)
    want_rows = records(wanted)
    by_key: dict[Key, dict[str, Any]] = {}
    for row in cur_rows:
        by_key[key_of(table, row)] = row
    inserts: list[dict[str, Any]] = []
    updates: list[RowUpdate] = []
    unchanged = 0
    seen: set[Key] = set()
    for row in want_rows:
        k = key_of(table, row)
        if k in seen:
            raise DataError(f"{table.name}: duplicate key {k} among the rows about to be written")
        seen.add(k)
        old = by_key.get(k)
        if old is None:
            inserts.append(row)
            continue
        changed = _changed(table, old, row)
        if changed:
            updates.append(RowUpdate(k, changed, row))
        else:
            unchanged += 1
    deletes: list[Key] = []
    orphans: list[Key] = []
    for k, old in by_key.items():
        if k in seen:
            continue
        if table.not_wanted == "prune":
            (orphans if bool(old.get("has_foreign")) else deletes).append(k)
        elif table.not_wanted == "reset":
            new = {c: old[c] for c in table.key} | dict(table.reset_values)
            changed = _changed(table, old, new)
            if changed:
                updates.append(RowUpdate(k, changed, new))
            else:
                unchanged += 1
        else:
            unchanged += 1
    return TargetDiff(table, inserts, updates, deletes, orphans, unchanged, len(cur_rows))


def diff_all(
    fiscal_year: int,
    current: dict[str, pd.DataFrame | list[dict[str, Any]]],
    wanted: dict[str, pd.DataFrame | list[dict[str, Any]]],
    source_counts: dict[str, int],
    max_prune_fraction: float = 0.5,
) -> SyncDiff:
    """The diff of all four targets plus the guards a live run must respect."""
    targets = {t.name: diff_target(t, current[t.name], wanted[t.name]) for t in TARGETS}
    return SyncDiff(fiscal_year, targets, guards(targets, source_counts, max_prune_fraction))


def guards(
    targets: dict[str, TargetDiff], source_counts: dict[str, int], max_prune_fraction: float
) -> list[Guard]:
    found: list[Guard] = []
    for name in REQUIRED_NONEMPTY:
        if source_counts.get(name, 0) == 0:
            found.append(
                Guard(
                    "empty_source",
                    name,
                    f"{name} returned no rows for this fiscal year; a live run writes nothing "
                    "(wrong key or row-level security?)",
                )
            )
    for diff in targets.values():
        n = len(diff.deletes)
        if n and n > max_prune_fraction * diff.current_count:
            found.append(
                Guard(
                    "mass_prune",
                    diff.name,
                    f"{diff.name}: the run would delete {n} of {diff.current_count} rows of the fiscal year "
                    f"(more than max_prune_fraction={max_prune_fraction:g}); rerun with --allow-mass-prune "
                    "(run config allow_mass_prune) if that is intended",
                )
            )
    return found


def blocking_guards(diff: SyncDiff, allow_mass_prune: bool) -> list[Guard]:
    return [g for g in diff.guards if not (allow_mass_prune and g.code == "mass_prune")]


def _fmt(value: Any) -> str:
    if isinstance(value, (list, dict)):
        text = to_json(value)
    else:
        text = "null" if value is None else str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def describe(diff: TargetDiff, limit: int = 20) -> list[str]:
    """Row-level lines of a dry-run report: inserts, updates (column: old -> new), deletes, orphans."""
    lines: list[str] = []
    t = diff.table

    def key_text(k: Key) -> str:
        return ", ".join(f"{c}={v}" for c, v in zip(t.key, k))

    for row in diff.inserts[:limit]:
        values = "; ".join(f"{c}={_fmt(row.get(c))}" for c in t.owned if t.types[c] != JSONB)
        lines.append(f"+ {t.name} [{key_text(key_of(t, row))}] {values}")
    for up in diff.updates[:limit]:
        cols = "; ".join(f"{c}: {_fmt(up.old[c])} -> {_fmt(up.new.get(c))}" for c in up.changed)
        lines.append(f"~ {t.name} [{key_text(up.key)}] {cols}")
    for k in diff.deletes[:limit]:
        lines.append(f"- {t.name} [{key_text(k)}]")
    for k in diff.orphans[:limit]:
        lines.append(f"! {t.name} [{key_text(k)}] orphan kept (carries data the job does not own)")
    hidden = sum(max(0, len(x) - limit) for x in (diff.inserts, diff.updates, diff.deletes, diff.orphans))
    if hidden:
        lines.append(f"  … {hidden} more rows of {t.name} not shown")
    return lines


def iter_changed_rows(diff: TargetDiff) -> Iterable[dict[str, Any]]:
    """Inserts and updates as whole rows (what a writer upserts)."""
    yield from diff.inserts
    for up in diff.updates:
        yield up.new
