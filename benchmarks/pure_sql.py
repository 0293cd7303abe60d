"""Runner of ``benchmarks/pure_sql.sql``: SPEC §4-5 for one fiscal year, computed and written inside PostgreSQL.

Reference code, not a product path: the yardstick for benchmarks ("the same computation done inside
PostgreSQL") and a second oracle in tests. It shares no code with the package ``compliance_sync``.

    python benchmarks/pure_sql.py --database-url postgresql://postgres@127.0.0.1:5432/db \\
        --year 2026 --as-of 2026-11-20 [--start-month 1] [--thresholds 50,80,100] \\
        [--bu-map compliance_sync/bu_map.example.yaml] [--run-ts 2026-11-20T06:00:00+00:00]

prints one JSON line: ``{"fiscal_year": ..., "window": ..., "targets": {table: {inserted, updated, deleted}},
"seconds": ...}``. Importable as ``benchmarks.pure_sql`` (``run_pure_sql``) or as a plain module from this
folder. No guards, no ledger, no advisory lock, no warnings: only the rows (see the SQL file's header).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

SQL_PATH = pathlib.Path(__file__).with_name("pure_sql.sql")
TARGETS = (
    "account_plan_event_requirements",
    "territory_compliance_summary",
    "business_unit_planning",
    "apac_planning_goals",
)
UNASSIGNED = "Unassigned"


def fy_window(fiscal_year: int, start_month: int = 1) -> tuple[dt.date, dt.date]:
    """SPEC §2: FY N starts on m/1 of year N when m = 1, else on m/1 of year N-1; ends the day before the next."""
    if not 1 <= start_month <= 12:
        raise ValueError(f"start month must be 1-12, got {start_month}")

    def start_of(n: int) -> dt.date:
        return dt.date(n if start_month == 1 else n - 1, start_month, 1)

    return start_of(fiscal_year), start_of(fiscal_year + 1) - dt.timedelta(days=1)


def load_bu_map(path: str | pathlib.Path) -> dict[str, dict[str, str]]:
    """The BU mapping YAML (``cse:`` and ``territory:`` dictionaries of exact names to BU names)."""
    import yaml

    data = yaml.safe_load(pathlib.Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with 'cse' and 'territory'")
    return {"cse": dict(data.get("cse") or {}), "territory": dict(data.get("territory") or {})}


def _check_bu_map(bu_map: Mapping[str, Mapping[str, str]] | None) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for kind, entries in (bu_map or {}).items():
        if kind not in ("cse", "territory"):
            raise ValueError(f"BU map: unknown section {kind!r} (expected 'cse' and 'territory')")
        for name, bu in (entries or {}).items():
            if not isinstance(name, str) or not isinstance(bu, str):
                raise ValueError(f"BU map {kind}: names and BUs must be strings, got {name!r}: {bu!r}")
            if bu == UNASSIGNED:
                raise ValueError(f"BU map {kind} {name!r}: {UNASSIGNED!r} is reserved and cannot be a BU")
            rows.append((kind, name, bu))
    return rows


def _check_thresholds(thresholds: Sequence[Any]) -> tuple[Any, Any, Any]:
    if len(thresholds) != 3:
        raise ValueError(f"thresholds: three values expected, got {thresholds!r}")
    a, b, c = thresholds
    if not (0 <= a < b < c):
        raise ValueError(f"thresholds must be increasing and non-negative, got {thresholds!r}")
    return a, b, c


def _counts(rows: Sequence[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    out = {t: {"inserted": 0, "updated": 0, "deleted": 0} for t in TARGETS}
    for target, action, n in rows:
        out[target][action] = int(n)
    return out


def _run(conn: psycopg.Connection, params: tuple, bu_rows: list[tuple[str, str, str]]) -> dict[str, dict[str, int]]:
    script = SQL_PATH.read_text(encoding="utf-8")
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS pg_temp.pure_sql_params, pg_temp.pure_sql_bu_map")
        cur.execute(
            "CREATE TEMP TABLE pure_sql_params (fiscal_year int, fy_start date, fy_end date, as_of date, "
            "at_risk_from numeric, compliant_from numeric, exceeded_from numeric, run_ts timestamptz) ON COMMIT DROP"
        )
        cur.execute("INSERT INTO pure_sql_params VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", params)
        cur.execute("CREATE TEMP TABLE pure_sql_bu_map (kind text, name text, bu text) ON COMMIT DROP")
        if bu_rows:
            cur.executemany("INSERT INTO pure_sql_bu_map VALUES (%s, %s, %s)", bu_rows)
        cur.execute("ANALYZE pure_sql_bu_map")
        # client_event_exclusions is optional (SPEC §3.1): an empty stand-in when the table does not exist
        if cur.execute("SELECT to_regclass('client_event_exclusions') IS NULL").fetchone()[0]:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS client_event_exclusions "
                "(client_name text, event_type_id uuid, reason text) ON COMMIT DROP"
            )
        cur.execute(script)  # no parameters: sent as one multi-statement query
        rows = cur.execute("SELECT target, action, n FROM ps_counts").fetchall()
    return _counts(rows)


def run_pure_sql(
    conn_or_url: psycopg.Connection | str,
    fiscal_year: int,
    as_of: dt.date,
    start_month: int = 1,
    thresholds: Sequence[Any] = (50, 80, 100),
    bu_map: Mapping[str, Mapping[str, str]] | None = None,
    run_ts: dt.datetime | None = None,
) -> dict[str, Any]:
    """Compute SPEC §4 for ``fiscal_year`` and write the four targets (SPEC §5, live run) in one transaction.

    ``as_of`` is the reference date (the script uses ``min(as_of, FY end)``); ``thresholds`` are
    ``(at_risk_from, compliant_from, exceeded_from)`` in percent; ``bu_map`` is ``{"cse": {name: bu},
    "territory": {name: bu}}`` (the CSE entry wins); ``run_ts`` is the ``updated_at`` of every new or changed
    row (default: now, UTC). With a URL the function connects, commits and closes; with a connection it runs
    in ``conn.transaction()`` (committed on exit unless the caller already has a transaction open).

    Returns ``{"fiscal_year", "window": {"start", "end", "as_of"}, "targets": {table: {"inserted",
    "updated", "deleted"}}, "seconds"}`` (wall time of the whole transaction, commit included).
    """
    start, end = fy_window(fiscal_year, start_month)
    t_risk, t_ok, t_exc = _check_thresholds(tuple(thresholds))
    bu_rows = _check_bu_map(bu_map)
    ts = run_ts or dt.datetime.now(dt.UTC)
    params = (fiscal_year, start, end, as_of, t_risk, t_ok, t_exc, ts)

    began = time.perf_counter()
    if isinstance(conn_or_url, str):
        with psycopg.connect(conn_or_url, autocommit=True) as conn:
            with conn.transaction():
                targets = _run(conn, params, bu_rows)
    else:
        with conn_or_url.transaction():
            targets = _run(conn_or_url, params, bu_rows)
    seconds = time.perf_counter() - began
    return {
        "fiscal_year": fiscal_year,
        "window": {"start": start.isoformat(), "end": end.isoformat(), "as_of": min(as_of, end).isoformat()},
        "targets": targets,
        "seconds": round(seconds, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", required=True)
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--as-of", type=dt.date.fromisoformat, required=True, help="reference date, YYYY-MM-DD")
    p.add_argument("--start-month", type=int, default=1)
    p.add_argument("--thresholds", default="50,80,100", help="at_risk_from,compliant_from,exceeded_from (percent)")
    p.add_argument("--bu-map", help="BU mapping YAML (cse: / territory:); none: every territory unmapped")
    p.add_argument("--run-ts", type=dt.datetime.fromisoformat, help="updated_at of written rows (default: now)")
    args = p.parse_args(argv)
    from decimal import Decimal

    thresholds = tuple(Decimal(x.strip()) for x in args.thresholds.split(","))
    bu_map = load_bu_map(args.bu_map) if args.bu_map else None
    result = run_pure_sql(args.database_url, args.year, args.as_of, args.start_month, thresholds, bu_map, args.run_ts)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
