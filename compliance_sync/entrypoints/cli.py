"""``compliance-sync``: the old script's interface on top of the Dagster asset, plus the project's commands.

    compliance-sync [--dry-run] [--year 2026] [--as-of DATE] [--allow-mass-prune] [--json] [--diff-limit N] [--verbose]
    compliance-sync migrate [--minimal] [--dedupe] [--force] [--print-sql]
    compliance-sync demo-data [--clients N] [--plans-per-client K] [--events-scale X] [--seed S] [--force]
    compliance-sync demo [--year 2025] [--as-of DATE] [--dry-run] [--reset] [--ui] [--port N]
    compliance-sync ui [--port N]
    compliance-sync explain [--year N] (--client NAME | --plan ID | --territory NAME | --bu NAME | --apac)
                            [--as-of DATE] [--json]
    compliance-sync report --year N [--as-of DATE] [--out FILE.html|.xlsx|.csv] [--json]

One argparse parser with subcommands (the sync is the default, so the old flags keep working). Exit codes
(SPEC §7): 0 success, 2 usage or settings, 3 stopped by the data or the database's state, 4 cannot reach or
authenticate, 130 interrupted; ``--json`` always prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence

from compliance_sync.config import logs
from compliance_sync.config.logs import log
from compliance_sync.errors import ExitCode, SettingsError, SyncError


class _Parser(argparse.ArgumentParser):
    """Usage errors become :class:`SettingsError` so that ``--json`` still prints its one object. An unknown flag
    followed by a value (``--yeer 2025``) is named as such, not as an invalid command ``2025``."""

    argv: list[str] | None = None  # the top-level parser's arguments, to name unknown flags

    def error(self, message: str):  # type: ignore[override]
        if "invalid choice" in message and self.argv is not None:
            try:
                _, extras = parser(commands=False).parse_known_args(self.argv)
            except SettingsError:
                extras = []
            unknown = [t for t in extras if t.startswith("-") and t != "-"]
            if unknown:
                message = f"unrecognized argument{'s' if len(unknown) > 1 else ''}: {' '.join(unknown)}"
        raise SettingsError(f"{self.prog}: {message} (see --help)")


def _json_flag(sub: argparse.ArgumentParser) -> None:
    """A subcommand's ``--json`` (a missing flag stays unset, so the top-level ``--json`` before it still counts)."""
    sub.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON object on stdout (logs go to stderr)",
    )


def parser(commands: bool = True) -> argparse.ArgumentParser:
    """The command line; without ``commands``, the sync's own flags only (to tell an unknown flag from a command)."""
    p = _Parser(
        prog="compliance-sync",
        description="Sync segmentation compliance into the planning tables, one fiscal year at a time. "
        "Without a command: sync one fiscal year (the old script's flags).",
    )
    p.add_argument("--dry-run", action="store_true", help="compute and report the diff; write nothing")
    p.add_argument("--year", help="fiscal year, e.g. 2026 (default: the FY containing today)")
    p.add_argument("--as-of", help="reference date YYYY-MM-DD (default: today in COMPLIANCE_SYNC_TIMEZONE)")
    p.add_argument(
        "--allow-mass-prune",
        action="store_true",
        help="let the run delete more than max_prune_fraction of a target's rows, and pass the collapse guards",
    )
    p.add_argument(
        "--json", action="store_true", help="print one machine-readable JSON object on stdout (logs go to stderr)"
    )
    p.add_argument(
        "--diff-limit", type=int, default=50, help="rows per action and target listed in a dry run's diff (default 50)"
    )
    p.add_argument("--verbose", action="store_true", help="also print Dagster's own log lines")
    if not commands:
        return p
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    m = sub.add_parser(
        "migrate",
        help="create the schema (full, for local use and demos) or only the job's keys and ledger (--minimal)",
    )
    m.add_argument(
        "--minimal", action="store_true", help="only what the job needs on an existing Supabase database (SPEC §3.3)"
    )
    m.add_argument(
        "--dedupe",
        action="store_true",
        help="with --minimal: delete duplicate keys, keeping the latest updated_at (with --print-sql: in the SQL)",
    )
    m.add_argument("--force", action="store_true", help="full migration even when the tables already hold rows")
    m.add_argument(
        "--print-sql",
        action="store_true",
        help="with --minimal: print the SQL to paste into Supabase's SQL editor (no connection needed)",
    )
    _json_flag(m)

    d = sub.add_parser(
        "demo-data", help="load the deterministic APAC demo dataset (or a larger one) over SUPABASE_DB_URL"
    )
    d.add_argument(
        "--clients",
        type=int,
        default=60,
        help="number of clients (default 60; 10000 with --plans-per-client 2 = 20,000 plans)",
    )
    d.add_argument("--plans-per-client", type=int, default=1)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument(
        "--events-scale",
        type=float,
        default=1.0,
        help="events per client and type, relative to the demo (3.5 with 10,000 clients ≈ 2M events)",
    )
    d.add_argument("--force", action="store_true", help="replace the rows of a database that already holds data")
    _json_flag(d)

    e = sub.add_parser(
        "demo",
        help="an embedded PostgreSQL with the demo data (loaded once), a sync, and what to do next; no server needed",
    )
    e.add_argument("--year", default="2025", help="fiscal year to sync (default 2025)")
    e.add_argument("--as-of", default=None, help="reference date (default: today)")
    e.add_argument("--dry-run", action="store_true")
    e.add_argument("--reset", action="store_true", help="reload the demo data (the targets start empty again)")
    e.add_argument(
        "--ui", action="store_true", help="then start the Dagster UI (dagster dev) on the same data until Ctrl-C"
    )
    e.add_argument("--port", type=int, default=3000, help="the UI's port (default 3000)")
    e.add_argument(
        "--data-dir", default=None, help="where the embedded server keeps its files (default .compliance_sync/pgdata)"
    )

    u = sub.add_parser(
        "ui", help="start the Dagster UI and daemon (dagster dev) for the configured database until Ctrl-C"
    )
    u.add_argument("--port", type=int, default=3000)

    x = sub.add_parser(
        "explain",
        help="how one figure came about, from the rows a sync reads (read-only): a client, plan, territory, BU or APAC",
    )
    x.add_argument(
        "--year", default=argparse.SUPPRESS, help="fiscal year, e.g. 2026 (default: the FY containing today)"
    )
    x.add_argument(
        "--as-of",
        default=argparse.SUPPRESS,
        help="reference date YYYY-MM-DD (default: today in COMPLIANCE_SYNC_TIMEZONE)",
    )
    _json_flag(x)
    what = x.add_mutually_exclusive_group(required=True)
    what.add_argument("--client", metavar="NAME", help="a client of the FY's plans (exact client_name)")
    what.add_argument("--plan", metavar="ID", help="an account plan in scope (its id)")
    what.add_argument("--territory", metavar="NAME", help="a territory (territory_strategies.territory)")
    what.add_argument("--bu", metavar="NAME", help="a business unit of the BU map")
    what.add_argument("--apac", action="store_true", help="the APAC figure")
    r = sub.add_parser(
        "report", help="one fiscal year on one page (.html), as a workbook (.xlsx) or its clients below compliance"
    )
    r.add_argument("--year", default=argparse.SUPPRESS, help="fiscal year, e.g. 2026 (default: the current FY)")
    r.add_argument("--as-of", default=argparse.SUPPRESS, help="reference date YYYY-MM-DD (default: today)")
    r.add_argument("--out", default=None, help="the file: .html (default compliance_report_FY<N>.html), .xlsx or .csv")
    _json_flag(r)
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    logs.configure(sys.stderr if as_json else sys.stdout)
    logs.route_warnings()
    if threading_main():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        top = parser()
        top.argv = argv
        args = top.parse_args(argv)
        if args.command == "migrate":
            return migrate(args)
        if args.command == "demo-data":
            return demo_data(args)
        if args.command == "explain":
            return explain(args)
        if args.command == "report":
            return report(args)
        if args.command in ("demo", "ui"):
            from compliance_sync.entrypoints import launch

            if args.command == "ui":
                return launch.ui(args.port)
            return launch.demo(
                args.year,
                args.as_of,
                dry_run=args.dry_run,
                reset=args.reset,
                ui=args.ui,
                port=args.port,
                data_dir=args.data_dir,
            )
        return sync(args)
    except SyncError as exc:
        log.error(str(exc))
        if as_json:
            from compliance_sync.entrypoints.runner import failure_summary, print_json

            print_json(failure_summary(str(exc), exc.exit_code))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        log.error("interrupted")
        if as_json:
            from compliance_sync.entrypoints.runner import failure_summary, print_json

            print_json(failure_summary("interrupted: nothing written (none of it)", ExitCode.INTERRUPTED))
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: still one JSON object, and a traceback (secrets masked) on the log
        from compliance_sync.config.secrets import redact

        message = redact(f"unexpected error: {type(exc).__name__}: {' '.join(str(exc).split())}")
        log.exception(message)
        if as_json:
            from compliance_sync.entrypoints.runner import failure_summary, print_json

            print_json(failure_summary(message, ExitCode.UNEXPECTED))
        return int(ExitCode.UNEXPECTED)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _fiscal_year_of(args: argparse.Namespace):
    """What every per-FY command starts from: settings, their backend and BU map (checked before any read), the FY
    of ``--year`` (default: the current one) and the reference date of ``--as-of`` (default: today)."""
    from compliance_sync.backends import choose_backend
    from compliance_sync.config.settings import load_settings
    from compliance_sync.service.sync import current_year, parse_as_of, parse_year

    settings = load_settings()
    backend = choose_backend(settings)
    bu_map = settings.bu_map()
    today = settings.today()
    fy = parse_year(args.year if args.year is not None else current_year(settings), settings, today)
    return settings, backend, bu_map, fy, parse_as_of(args.as_of) or today


def sync(args: argparse.Namespace) -> int:
    from compliance_sync.entrypoints.runner import RunRequest, print_json, print_report, run

    settings, backend, _, fy, reference = _fiscal_year_of(args)
    if args.diff_limit < 0:
        raise SettingsError(f"--diff-limit must be 0 or more, got {args.diff_limit}")
    log.info(
        "compliance-sync %s, as_of %s, %s, backend %s at %s",
        fy.describe(),
        fy.as_of(reference),
        "dry run" if args.dry_run else "live",
        backend.name.value,
        backend.describe(),
    )
    request = RunRequest(fy, reference, args.dry_run, args.allow_mass_prune, args.diff_limit, args.verbose)
    summary, code = run(settings, backend, request)
    print_report(summary)
    if args.json:
        print_json(summary)
    return code


def explain(args: argparse.Namespace) -> int:
    from compliance_sync.domain.explanation import Subject
    from compliance_sync.entrypoints.runner import print_json
    from compliance_sync.service import explain_text
    from compliance_sync.service.explain import explain as explain_subject

    settings, backend, bu_map, fy, reference = _fiscal_year_of(args)
    as_of = fy.as_of(reference)
    kind = next(k for k in ("client", "plan", "territory", "bu", "apac") if getattr(args, k) not in (None, False))
    subject = Subject(kind, None if kind == "apac" else getattr(args, kind))
    log.info(
        "compliance-sync explain %s %s, %s, as_of %s, read-only, backend %s at %s",
        kind,
        subject.value or "",
        fy.describe(),
        as_of,
        backend.name.value,
        backend.describe(),
    )
    result = explain_subject(backend, settings, bu_map, fy, as_of, subject)
    if args.json:
        print_json(result | {"error": None, "exit_code": 0})
    else:
        print("\n".join(explain_text.render(result)), flush=True)
    return 0


def report(args: argparse.Namespace) -> int:
    """Compute the FY as a dry run does (nothing written, no ledger row) and write its report."""
    from compliance_sync.service.fy_report import output, service

    settings, backend, _, fy, reference = _fiscal_year_of(args)

    out = output.check_out(args.out if args.out is not None else service.default_name(fy))
    where = f"backend {backend.name.value} at {backend.describe()}"
    log.info("report %s, as_of %s, %s (read-only)", fy.describe(), fy.as_of(reference), where)
    made = service.produce(settings, backend, fy, reference)
    path = service.write(settings, made.tables, out)
    t = made.tables
    log.info("report written to %s (APAC %s %%, %d of %d clients below compliance)", path, t.apac, t.below, t.clients)
    if args.json:
        from compliance_sync.entrypoints.runner import print_json

        print_json(
            {
                "status": "written",
                "path": str(path),
                "fiscal_year": fy.year,
                "as_of": t.as_of.isoformat(),
                "apac_compliance": None if t.apac is None else format(t.apac, "f"),
                "below_compliance_accounts": t.below,
                "warnings": made.warnings,
                "error": None,
                "exit_code": 0,
            }
        )
    return 0


def _database_url() -> str:
    from compliance_sync.config.settings import load_settings

    settings = load_settings()
    if not settings.db_url:
        raise SettingsError(
            "SUPABASE_DB_URL is not set: migrate and demo-data need a direct PostgreSQL connection "
            "(or use `compliance-sync migrate --minimal --print-sql` and paste the SQL into Supabase's SQL editor)"
        )
    return settings.db_url.get_secret_value()


def migrate(args: argparse.Namespace) -> int:
    from compliance_sync.backends.postgres import migrate as migrations

    if args.print_sql:
        if not args.minimal:
            raise SettingsError(
                "--print-sql goes with --minimal: the SQL of the minimal migration, for Supabase's SQL editor"
            )
        if args.json:
            from compliance_sync.entrypoints.runner import print_json

            script = migrations.minimal_sql_script(dedupe=args.dedupe)
            print_json({"status": "printed", "sql": script, "error": None, "exit_code": 0})
        else:
            print(migrations.minimal_sql_script(dedupe=args.dedupe), flush=True)
        return 0
    from compliance_sync.backends.postgres import connect

    started = time.perf_counter()
    with connect(_database_url(), autocommit=False) as conn:
        lines = (
            migrations.apply_minimal(conn, dedupe=args.dedupe)
            if args.minimal
            else migrations.apply_full(conn, force=args.force)
        )
    for line in lines:
        log.info(line)
    log.info("migration %s done in %.1f s", "minimal" if args.minimal else "full", time.perf_counter() - started)
    if args.json:
        from compliance_sync.entrypoints.runner import print_json

        print_json(
            {
                "status": "migrated",
                "migration": "minimal" if args.minimal else "full",
                "log": lines,
                "error": None,
                "exit_code": 0,
            }
        )
    return 0


def demo_data(args: argparse.Namespace) -> int:
    from compliance_sync.backends.postgres import connect
    from compliance_sync.devtools.demo import load_demo_data

    started = time.perf_counter()
    with connect(_database_url(), autocommit=False) as conn:
        counts = load_demo_data(
            conn,
            clients=args.clients,
            force=args.force,
            seed=args.seed,
            plans_per_client=args.plans_per_client,
            events_scale=args.events_scale,
        )
    for table, n in counts.items():
        log.info("%s: %s rows", table, f"{n:,}")
    log.info("demo data loaded in %.1f s", time.perf_counter() - started)
    if args.json:
        from compliance_sync.entrypoints.runner import print_json

        print_json({"status": "loaded", "rows": counts, "error": None, "exit_code": 0})
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
