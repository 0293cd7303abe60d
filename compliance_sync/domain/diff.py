"""The diff of SPEC §5 as data: what a run would insert, update, delete, keep as orphans, leave alone.

Both backends return the same :class:`SyncDiff`: counts per target, the first rows of each action in key
order (C collation) with their old and new values, and a few figures about the current rows that the
guards need. How they get there differs: the direct backend compares inside PostgreSQL; the REST backend
reads the current rows and calls :func:`diff_rows` here, which also returns the full change set it writes.
Values are compared by :func:`same`, so equal values in different spellings (``52.6`` and ``52.60``, uuid
case, JSON numbers) never count as a change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import heapq
import json
from collections.abc import Iterable, Sequence
from typing import Any

from compliance_sync.domain.tables import DATE, INT, JSONB, NUMERIC, TEXT, UUID, Kind, NotWanted, TargetTable
from compliance_sync.errors import DataError

Key = tuple


class Action(enum.StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    ORPHAN = "orphan"


# --- comparing values ---------------------------------------------------------------------------------------
def is_missing(value: Any) -> bool:
    """None, or a missing value in another spelling (float NaN; pandas' NA and NaT from a caller's frame)."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    return type(value).__name__ in ("NAType", "NaTType")


def normalize(kind: Kind, value: Any) -> Any:
    """One comparable form per column type."""
    if is_missing(value):
        return None
    if kind == JSONB:
        return _normalize_json(json.loads(value) if isinstance(value, str) else value)
    if kind == UUID:
        return str(value).lower()
    if kind == INT:
        return int(value)
    if kind == NUMERIC:
        return decimal.Decimal(str(value)).normalize()
    if kind == DATE:
        if isinstance(value, str):
            return dt.date.fromisoformat(value[:10])
        return value.date() if isinstance(value, dt.datetime) else value
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


def _strict(a: Any, b: Any) -> bool:
    """Equality as jsonb compares: JSON true is not the number 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_strict(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_strict, a, b))
    return a == b


def same(kind: Kind, a: Any, b: Any) -> bool:
    """Plain equality settles most cells; only unequal ones (and JSON values) are normalised."""
    if a is b or (type(a) is type(b) and not isinstance(a, (dict, list)) and a == b):
        return True
    return _strict(normalize(kind, a), normalize(kind, b))


def changed_columns(table: TargetTable, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [c for c in table.owned if not same(table.types[c], old.get(c), new.get(c))]


def key_of(table: TargetTable, row: dict[str, Any]) -> Key:
    """The row's key in a comparable form (uuids lower-case text, integers as int); None parts kept."""
    return tuple(None if row.get(c) is None else normalize(table.types[c], row[c]) for c in table.key)


def sort_key(key: Key) -> tuple:
    """Key order of the dry-run lines: C collation for text (code point order), numbers as numbers."""
    return tuple((0, v) if isinstance(v, int) else (1, str(v)) for v in key)


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: Decimals become JSON numbers with their two decimals."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: Any) -> str:
    return json.dumps(value, default=json_default, ensure_ascii=False, separators=(",", ":"))


# --- the diff as data ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class DiffLine:
    """One row of a dry-run report: its key, its current values (update, delete, orphan) and its wanted
    values (insert, update)."""

    action: Action
    key: Key
    old: dict[str, Any] | None
    new: dict[str, Any] | None


@dataclasses.dataclass
class TargetDiff:
    table: TargetTable
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    orphans: int = 0
    unchanged: int = 0
    current_count: int = 0  # rows of the FY before the run (with a full key)
    null_keys: int = 0  # rows of the FY with a NULL key column: never matched, updated or deleted
    lines: list[DiffLine] = dataclasses.field(default_factory=list)  # the first `limit` of each action, key order
    # figures about the current rows for the guards: completed events recorded (requirements), rows with
    # territories (business units)
    current_completed: int = 0
    current_with_territories: int = 0
    # without a unique index on the key (a dry run before `migrate --minimal`, SPEC §5): rows are matched on
    # the key columns, each duplicated key of the FY compared through the row `migrate --minimal --dedupe`
    # keeps; the duplicates are what a live run needs removed
    key_backed: bool = True
    duplicate_keys: int = 0  # keys of the FY held by more than one row
    duplicate_rows: int = 0  # the rows beyond the kept one of each such key (what --dedupe deletes)
    duplicate_examples: list[str] = dataclasses.field(default_factory=list)  # "col=v, …: n rows", most rows first

    @property
    def name(self) -> str:
        return self.table.name

    def live_run_needs(self) -> dict[str, Any] | None:
        """What a live run needs on this target before it can write (SPEC §3.3), or None."""
        if self.key_backed:
            return None
        return {
            "table": self.name,
            "missing_key": list(self.table.key),
            "duplicates": self.duplicate_keys,  # keys held by several rows
            "duplicate_rows": self.duplicate_rows,
            "examples": list(self.duplicate_examples),
        }

    @property
    def changes(self) -> int:
        return self.inserted + self.updated + self.deleted

    def counts(self) -> dict[str, int]:
        return {
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "orphans": self.orphans,
            "unchanged": self.unchanged,
        }

    def hidden(self) -> int:
        """Rows counted but not among :attr:`lines`."""
        return self.inserted + self.updated + self.deleted + self.orphans - len(self.lines)


@dataclasses.dataclass
class SyncDiff:
    fiscal_year: int
    targets: dict[str, TargetDiff]

    @property
    def changes(self) -> int:
        return sum(t.changes for t in self.targets.values())


@dataclasses.dataclass
class ChangeSet:
    """What a writer applies for one target (the REST backend's plan): whole rows to upsert, rows to delete."""

    upserts: list[dict[str, Any]]
    deletes: list[dict[str, Any]]  # the current rows (key columns at least) that carry nothing foreign
    new: list[bool] = dataclasses.field(default_factory=list)  # per upsert: an insert (not an update)


DUPLICATE_EXAMPLES = 5  # duplicated keys named per target in a dry run's report


def duplicate_example(table: TargetTable, key: Sequence[Any], rows: int) -> str:
    """One duplicated key as the dry run and the minimal migration name it: ``col=value, …: n rows``."""
    return ", ".join(f"{c}={v}" for c, v in zip(table.key, key)) + f": {rows} rows"


def _instant(value: Any) -> dt.datetime | None:
    """A timestamptz as read over REST (ISO text, or ±infinity) or directly, comparable with the others."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = str(value)
    if text in ("infinity", "-infinity"):
        return (dt.datetime.max if text == "infinity" else dt.datetime.min).replace(tzinfo=dt.UTC)
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def keeper_rank(row: dict[str, Any]) -> tuple:
    """Among rows sharing a key, the greatest rank is the row ``migrate --minimal --dedupe`` keeps: the latest
    ``updated_at`` (NULL oldest), then the greatest ``id``. (The migration breaks a remaining tie by the
    physical row position, which only a direct connection sees; here the first row read wins.)"""
    stamp, ident = _instant(row.get("updated_at")), row.get("id")
    if ident is not None and not isinstance(ident, int):
        ident = str(ident).lower()  # a uuid: its text orders as PostgreSQL orders uuids
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    return (stamp is not None, stamp or oldest, ident is not None, ident if ident is not None else 0)


def reset_row(table: TargetTable, key_row: dict[str, Any]) -> dict[str, Any]:
    """The wanted row of a business unit that gets no territory this time (SPEC §4.8)."""
    return {c: key_row[c] for c in table.key} | dict(table.reset_values)


def diff_rows(
    table: TargetTable,
    current: Iterable[dict[str, Any]],
    wanted: Iterable[dict[str, Any]],
    limit: int,
    key_backed: bool = True,
) -> tuple[TargetDiff, ChangeSet]:
    """Compare on the owned columns. ``current`` rows carry key + owned columns + ``has_foreign`` (a column
    the job does not own is non-null). Rows with a NULL key column are counted and left alone. Without
    ``key_backed`` (no unique index on the key: a dry run), ``current`` may hold a key several times (with
    ``updated_at`` and ``id`` when the table has them): each key is compared through the row
    :func:`keeper_rank` picks, and the duplicates are counted."""
    diff = TargetDiff(table, key_backed=key_backed)
    changes = ChangeSet([], [])
    by_key: dict[Key, dict[str, Any]] = {}
    repeats: dict[Key, int] = {}
    for row in current:
        k = key_of(table, row)
        if None in k:
            diff.null_keys += 1
            continue
        kept = by_key.get(k)
        if kept is not None:
            repeats[k] = repeats.get(k, 1) + 1
            if keeper_rank(row) <= keeper_rank(kept):
                continue
        by_key[k] = row
    if repeats:
        diff.duplicate_keys, diff.duplicate_rows = len(repeats), sum(repeats.values()) - len(repeats)
        top = heapq.nsmallest(DUPLICATE_EXAMPLES, repeats.items(), key=lambda kv: (-kv[1], sort_key(kv[0])))
        diff.duplicate_examples = [duplicate_example(table, k, n) for k, n in top]
    for row in by_key.values():
        diff.current_count += 1
        diff.current_completed += int(row.get("completed_count") or 0) if "completed_count" in table.owned else 0
        diff.current_with_territories += (
            int(bool(row.get("territory_count"))) if "territory_count" in table.owned else 0
        )
    lines: dict[Action, list[DiffLine]] = {a: [] for a in Action}
    seen: set[Key] = set()

    def upsert(k: Key, old: dict[str, Any] | None, row: dict[str, Any]) -> None:
        """An insert (no current row) or an update: counted, upserted, listed."""
        action = Action.INSERT if old is None else Action.UPDATE
        if old is None:
            diff.inserted += 1
        else:
            diff.updated += 1
        changes.upserts.append(row)
        changes.new.append(old is None)
        lines[action].append(DiffLine(action, k, old, row))

    for row in wanted:
        k = key_of(table, row)
        if k in seen:
            raise DataError(f"{table.name}: duplicate key {k} among the rows about to be written")
        seen.add(k)
        old = by_key.get(k)
        if old is None or changed_columns(table, old, row):
            upsert(k, old, row)
        else:
            diff.unchanged += 1
    for k, old in by_key.items():
        if k in seen:
            continue
        if table.not_wanted == NotWanted.PRUNE:
            action = Action.ORPHAN if old.get("has_foreign") else Action.DELETE
            if action == Action.DELETE:
                diff.deleted += 1
                changes.deletes.append(old)
            else:
                diff.orphans += 1
            lines[action].append(DiffLine(action, k, old, None))
        elif table.not_wanted == NotWanted.RESET and changed_columns(table, old, new := reset_row(table, old)):
            upsert(k, old, new)
        else:
            diff.unchanged += 1
    for action in Action:
        diff.lines += heapq.nsmallest(limit, lines[action], key=lambda line: sort_key(line.key))
    return diff, changes
