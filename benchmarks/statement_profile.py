"""Where one direct sync spends its time and memory: each SQL statement's wall time and the peak RSS after
each phase, for one live run over ``SUPABASE_DB_URL`` (a throwaway clone: the run writes).

    SUPABASE_DB_URL=postgresql://postgres@127.0.0.1:5432/<clone> \\
        COMPLIANCE_SYNC_BU_MAP=compliance_sync/bu_map.example.yaml \\
        .venv/bin/python benchmarks/statement_profile.py [--year 2026] [--as-of 2026-11-20] [--top 20]

Calls :func:`compliance_sync.service.sync.run_fiscal_year` as the command line does (``runner.run_directly``), with
``psycopg.Cursor.execute`` / ``fetchall`` timed (a statement's time includes receiving its rows; ``fetchall``
is the conversion to Python). Python time between statements is the phase time minus its statements.
For a sampling profile of the same run: ``py-spy record --idle -f raw -o out.txt -- .venv/bin/compliance-sync …``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import resource
import sys
import time
import uuid

import psycopg
from psycopg import sql

STATEMENTS: list[tuple[str, float, str]] = []  # (phase, seconds, statement)
PHASE = ["start"]


def _text(cur: psycopg.Cursor, query: object) -> str:
    text = query.as_string(cur.connection) if isinstance(query, sql.Composable) else str(query)
    return " ".join(text.split())


def _instrument() -> None:
    execute, fetchall = psycopg.Cursor.execute, psycopg.Cursor.fetchall

    def timed_execute(self, query, params=None, **kw):
        t = time.perf_counter()
        try:
            return execute(self, query, params, **kw)
        finally:
            STATEMENTS.append((PHASE[0], time.perf_counter() - t, _text(self, query)))

    def timed_fetchall(self):
        t = time.perf_counter()
        try:
            return fetchall(self)
        finally:
            STATEMENTS.append((PHASE[0], time.perf_counter() - t, "(fetchall: rows to Python)"))

    psycopg.Cursor.execute, psycopg.Cursor.fetchall = timed_execute, timed_fetchall


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--year", type=int, default=2026)
    p.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 11, 20))
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()

    _instrument()
    import compliance_sync.service.sync as sync
    from compliance_sync.backends import choose_backend
    from compliance_sync.config.settings import load_settings
    from compliance_sync.domain.fiscal import FiscalYear
    from compliance_sync.service.summary import summary as summary_of

    print(f"peak RSS after imports: {peak_mb():.0f} MB")
    order = ["read_s", "compute_s", "plan_s", "write_s"]
    timed = sync._timed

    def phase_end(outcome, name, started):
        timed(outcome, name, started)
        print(f"{name}: {outcome.timings[name]:.2f} s, peak RSS {peak_mb():.0f} MB")
        nxt = order.index(name) + 1 if name in order else len(order)
        PHASE[0] = order[nxt] if nxt < len(order) else "after"

    sync._timed = phase_end
    settings = load_settings()
    backend = choose_backend(settings)
    fy = FiscalYear(args.year, settings.fy_start_month)
    outcome = sync.Outcome(fy, fy.as_of(args.as_of), sync.Mode.LIVE, backend.name.value, f"profile-{uuid.uuid4()}")
    PHASE[0] = "read_s"
    started = time.perf_counter()
    sync.run_fiscal_year(
        backend, settings, settings.bu_map(), outcome, sync.RunOptions(sync.Mode.LIVE, False, 50, outcome.run_id)
    )
    total = time.perf_counter() - started
    summary = summary_of(outcome)
    print(f"run_fiscal_year: {total:.2f} s, status {summary['status']}, error {summary['error']}")

    in_sql = collections.defaultdict(float)
    for phase, seconds, _ in STATEMENTS:
        in_sql[phase] += seconds
    print("\nper phase: wall = SQL statements (incl. fetchall) + Python")
    for name in order:
        if name in outcome.timings:
            print(
                f"  {name:10s} {outcome.timings[name]:7.2f} s = SQL {in_sql[name]:6.2f} "
                f"+ Python {outcome.timings[name] - in_sql[name]:6.2f}"
            )
    print(f"\nthe {args.top} slowest statements:")
    for phase, seconds, text in sorted(STATEMENTS, key=lambda s: -s[1])[: args.top]:
        print(f"  {seconds:7.3f} s  [{phase}]  {text[:160]}")
    return 0 if not summary["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
