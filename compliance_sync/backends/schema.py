"""The schema check of SPEC §3, §3.3 and §6, the same for both backends: each describes the tables it sees
(from PostgreSQL's catalog, or from PostgREST's OpenAPI description) and this module says what is wrong,
in the same words, before anything is read or written."""

from __future__ import annotations

import dataclasses

from compliance_sync.backends.catalog import WRITABLE, Relation, read_problem, varchar_limit, write_problem
from compliance_sync.domain.tables import EXCLUSIONS, LEDGER_COLUMNS, LEDGER_TABLE, SOURCES, TARGET_BY_NAME, TARGETS
from compliance_sync.errors import DataError

MINIMAL = "run `compliance-sync migrate --minimal`"


@dataclasses.dataclass
class SchemaReport:
    exclusions_exist: bool
    ledger_columns: set[str] | None  # None: no ledger table
    foreign_columns: dict[str, list[str]]  # per target: the columns the job does not own
    varchar_limits: dict[tuple[str, str], int]  # (target, column) -> n of varchar(n)
    warnings: list[str]
    missing_keys: list[str] = dataclasses.field(default_factory=list)  # targets without a unique key (a dry run)


def missing_key_problem(name: str, key: tuple[str, ...]) -> str:
    return f"{name} has no unique index on ({', '.join(key)}): {MINIMAL}"


def check(
    relations: dict[str, Relation], keys_backed: dict[str, bool], where: str, keys_required: bool = True
) -> SchemaReport:
    """Raise :class:`DataError` listing every problem; else what the run needs to know about the tables.

    ``keys_backed``: per target, whether a unique index backs its key (only asked for targets that exist
    with their key columns). Without ``keys_required`` (a dry run, SPEC §5), a target whose key no unique
    index backs is not a problem by itself: it is listed in :attr:`SchemaReport.missing_keys`, and the run
    compares rows by their key columns."""
    problems: list[str] = []
    missing_keys: list[str] = []
    warnings: list[str] = []
    for source in SOURCES:
        rel = relations.get(source.name)
        if rel is None:
            if source.required:
                problems.append(f"table {source.name} does not exist")
            else:
                warnings.append(
                    f"{source.name} does not exist: no requirement is excluded"
                    if source.name == EXCLUSIONS
                    else f"{source.name} does not exist"
                )
            continue
        for column, kind in source.columns.items():
            col = rel.columns.get(column)
            problem = f"{source.name}.{column} is missing" if col is None else read_problem(kind, col)
            if problem:
                problems.append(problem if col is None else f"{source.name}.{column} {problem}")
    limits: dict[tuple[str, str], int] = {}
    foreign: dict[str, list[str]] = {}
    for target in TARGETS:
        rel = relations.get(target.name)
        if rel is None:
            problems.append(f"table {target.name} does not exist")
            continue
        if rel.kind not in WRITABLE:
            problems.append(
                f"{target.name} is a {rel.kind_name}, not a table: the job writes tables with a unique key on "
                f"({', '.join(target.key)}); replace it with a table (the full migration's definition is in "
                "compliance_sync/migrations/full.sql)"
            )
            continue
        columns_ok = True
        for column, kind in target.types.items():
            col = rel.columns.get(column)
            if col is None:
                problems.append(f"{target.name}.{column} is missing")
                columns_ok = False
                continue
            problem = write_problem(kind, col)
            if problem:
                problems.append(f"{target.name}.{column} {problem}")
                columns_ok = False
            if (n := varchar_limit(col)) is not None:
                limits[(target.name, column)] = n
        if columns_ok and not keys_backed.get(target.name, False):
            missing_keys.append(target.name)
        mine = set(target.types) | {"id", "created_at"}
        foreign[target.name] = [c for c in rel.columns if c not in mine]
    if problems or (missing_keys and keys_required):
        problems += [missing_key_problem(name, TARGET_BY_NAME[name].key) for name in missing_keys]
        raise DataError(
            f"the database schema at {where} does not match what compliance_sync needs: " + "; ".join(problems)
        )
    ledger = relations.get(LEDGER_TABLE)
    ledger_columns = None if ledger is None else set(ledger.columns)
    if ledger_columns is None:
        warnings.append(f"{LEDGER_TABLE} does not exist: run not recorded ({MINIMAL} to add it)")
    elif missing := [c for c in LEDGER_COLUMNS if c not in ledger_columns]:
        warnings.append(
            f"{LEDGER_TABLE} has no column(s) {', '.join(missing)}: "
            f"the run is recorded without them ({MINIMAL} adds them)"
        )
    return SchemaReport(EXCLUSIONS in relations, ledger_columns, foreign, limits, warnings, missing_keys)


def check_lengths(limits: dict[tuple[str, str], int], longest: dict[tuple[str, str], tuple[int, str]]) -> None:
    """A ``varchar(n)`` target column shorter than a value about to be written is an error (SPEC §6).
    ``longest``: (table, column) -> (length, the value) of the longest wanted value."""
    problems = [
        f"{table}.{column} is varchar({n}) but the run would write {length} characters ({value[:40]!r}…)"
        for (table, column), n in sorted(limits.items())
        if (hit := longest.get((table, column))) and (length := hit[0]) > n and (value := hit[1])
    ]
    if problems:
        raise DataError("a target column cannot hold the job's values: " + "; ".join(problems))
