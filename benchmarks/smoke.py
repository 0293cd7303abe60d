"""Smoke benchmark: read + rules + diff + write, through the real command line, on a throwaway database.

    python benchmarks/smoke.py            # the demo dataset (60 clients), FY2025
    python benchmarks/smoke.py --scale    # 20,000 plans and ~2,000,000 events, FY2026

Each sync runs as its own ``compliance-sync`` process (wall time and peak RSS of that process, from
``wait4``), three times: a first live run (everything inserted), a second live run (nothing changes), a
dry run. The server is ``COMPLIANCE_SYNC_TEST_DATABASE_URL`` or postgresql://postgres@127.0.0.1:5432/postgres.
Absolute times drift on a shared machine; compare runs side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, dict]:
    """Wall time, peak RSS (MB) of that one process, and its --json summary."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1024, json.loads(stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", action="store_true", help="20,000 plans and ~2,000,000 events")
    p.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    args = p.parse_args()

    server = os.environ.get("COMPLIANCE_SYNC_TEST_DATABASE_URL") or DEFAULT_URL
    name = f"cs_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server)
    params["dbname"] = name
    url = make_conninfo(**params)
    exe = shutil.which("compliance-sync", path=str(pathlib.Path(sys.executable).parent)) or "compliance-sync"
    env = dict(
        os.environ, SUPABASE_DB_URL=url, COMPLIANCE_SYNC_BU_MAP=str(ROOT / "compliance_sync" / "bu_map.example.yaml")
    )
    env.pop("DAGSTER_HOME", None)
    year, as_of = ("2026", "2026-06-30") if args.scale else ("2025", "2025-06-30")
    try:
        subprocess.run([exe, "migrate"], env=env, check=True, capture_output=True)
        t0 = time.perf_counter()
        load = [exe, "demo-data"] + (
            ["--clients", "10000", "--plans-per-client", "2", "--events-scale", "3.5"] if args.scale else []
        )
        subprocess.run(load, env=env, check=True, capture_output=True)
        load_s = time.perf_counter() - t0
        with psycopg.connect(url) as conn:
            events = conn.execute("SELECT count(*) FROM segmentation_events").fetchone()[0]
            plans = conn.execute("SELECT count(*) FROM account_plans WHERE fiscal_year = %s", (int(year),)).fetchone()[
                0
            ]
        print(
            f"dataset: {'scale' if args.scale else 'demo'}; FY{year} plans {plans:,}; "
            f"events (all years) {events:,}; load {load_s:.1f} s"
        )
        print("| run | wall s | peak RSS MB | read s | compute s | write s | inserted | updated | unchanged |")
        print("|---|---|---|---|---|---|---|---|---|")
        sync = [exe, "--year", year, "--as-of", as_of, "--json"]
        for label, extra in (("first live run", []), ("second live run (no change)", []), ("dry run", ["--dry-run"])):
            wall, rss, summary = run(sync + extra, env)
            t = summary.get("timings", {})
            req = summary.get("targets", {}).get("account_plan_event_requirements", {})
            print(
                f"| {label} | {wall:.1f} | {rss:.0f} | {t.get('read_s', 0):.2f} | {t.get('compute_s', 0):.2f} | "
                f"{t.get('write_s', 0):.2f} | {req.get('inserted', 0):,} | {req.get('updated', 0):,} | "
                f"{req.get('unchanged', 0):,} |"
            )
    finally:
        if args.keep:
            print(f"kept database {name}")
        else:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
