"""``compliance-sync migrate`` and ``compliance-sync demo-data``: schema and demo data over SUPABASE_DB_URL.

Both refuse a database whose SPEC §3 tables already hold rows unless ``--force`` (the minimal migration
only adds the job's keys and ledger, so it needs no force: it stops on duplicate keys unless ``--dedupe``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from compliance_sync.cli import Log
from compliance_sync.model import ConnectionFailure, SettingsError, SyncError
from compliance_sync.settings import EXAMPLE_BU_MAP


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compliance-sync")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("migrate", help="create the schema (full, for local use and demos) or only the job's keys (--minimal)")
    m.add_argument("--minimal", action="store_true", help="only what the job needs on an existing Supabase database (SPEC §3.3)")
    m.add_argument("--dedupe", action="store_true", help="with --minimal: delete duplicate keys, keeping the latest updated_at")
    m.add_argument("--force", action="store_true", help="full migration even when the tables already hold rows")
    d = sub.add_parser("demo-data", help="load the deterministic APAC demo dataset (or a scale dataset)")
    d.add_argument("--clients", type=int, default=60, help="number of clients (default 60; 10000 with --plans-per-client 2 = 20,000 plans)")
    d.add_argument("--plans-per-client", type=int, default=1)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--events-scale", type=float, default=1.0, help="events per client and type, relative to the demo (3.5 with 10,000 clients ≈ 2M events)")
    d.add_argument("--force", action="store_true", help="replace the rows of a database that already holds data")
    e = sub.add_parser(
        "demo",
        help="start an embedded PostgreSQL (pip install 'compliance_sync[embedded]'), load the demo data and sync one FY",
    )
    e.add_argument("--year", default="2025", help="fiscal year to sync (default 2025)")
    e.add_argument("--as-of", default=None, help="reference date (default: today)")
    e.add_argument("--dry-run", action="store_true")
    e.add_argument("--data-dir", default=None, help="where the embedded server keeps its files (default .compliance_sync/pgdata)")
    e.add_argument("--serve", action="store_true", help="keep the server running after the sync and print how to reach it")
    return p


def run_demo(args, log: Log) -> int:
    """The explicit demo: an embedded server, the full schema and demo data (once), then a sync."""
    import os

    from compliance_sync import cli, embedded
    from compliance_sync.migrate import apply_full, populated_tables

    url = embedded.start(args.data_dir)
    log("INFO", f"embedded PostgreSQL running ({args.data_dir or embedded.DEFAULT_DIR})")
    with connect(url) as conn:
        apply_full(conn)
        if not populated_tables(conn):
            from compliance_sync.demo import load_demo_data

            counts = load_demo_data(conn)
            log("INFO", "demo data loaded: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        else:
            log("INFO", "demo data already present (kept)")
    os.environ["SUPABASE_DB_URL"] = url
    os.environ.setdefault("COMPLIANCE_SYNC_BU_MAP", str(EXAMPLE_BU_MAP))
    argv = ["--year", str(args.year)] + (["--as-of", args.as_of] if args.as_of else []) + (["--dry-run"] if args.dry_run else [])
    code = cli.run_sync(cli.sync_parser().parse_args(argv))
    if args.serve:
        log("INFO", "the demo database stays up until Ctrl-C; in another shell:")
        log("INFO", f"  export SUPABASE_DB_URL='{url}' COMPLIANCE_SYNC_BU_MAP='{os.environ['COMPLIANCE_SYNC_BU_MAP']}'")
        log("INFO", "  compliance-sync --dry-run --year 2026    # or: dagster dev -w workspace.yaml")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return code


def database_url() -> str:
    from compliance_sync.settings import load_settings

    settings = load_settings()
    if not settings.db_url:
        raise SettingsError("SUPABASE_DB_URL is not set: migrate and demo-data need a direct PostgreSQL connection")
    return settings.db_url.value


def connect(url: str):
    import psycopg

    try:
        return psycopg.connect(url, connect_timeout=10)
    except psycopg.OperationalError as exc:
        from compliance_sync.backends.postgres import describe_dsn

        raise ConnectionFailure(f"cannot connect to {describe_dsn(url)}: {str(exc).strip().splitlines()[0]}") from None


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    log = Log(sys.stdout)
    try:
        if args.command == "demo":
            return run_demo(args, log)
        url = database_url()
        with connect(url) as conn:
            t0 = time.perf_counter()
            if args.command == "migrate":
                from compliance_sync.migrate import apply_full, apply_minimal

                lines = apply_minimal(conn, dedupe=args.dedupe) if args.minimal else apply_full(conn, force=args.force)
                for line in lines or []:
                    log("INFO", line)
                log("INFO", f"migration {'minimal' if args.minimal else 'full'} done in {time.perf_counter() - t0:.1f} s")
            else:
                from compliance_sync.demo import load_demo_data

                counts = load_demo_data(conn, clients=args.clients, force=args.force, seed=args.seed, plans_per_client=args.plans_per_client, events_scale=args.events_scale)
                for table, n in counts.items():
                    log("INFO", f"{table}: {n} rows")
                log("INFO", f"demo data loaded in {time.perf_counter() - t0:.1f} s")
    except SyncError as exc:
        log("ERROR", str(exc))
        return exc.exit_code
    return 0
