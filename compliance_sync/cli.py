"""``compliance-sync``: the old script's interface on top of the Dagster asset (no second pipeline).

    compliance-sync [--dry-run] [--year 2026] [--as-of DATE] [--allow-mass-prune] [--json]
    compliance-sync migrate [--minimal] [--dedupe] [--force]
    compliance-sync demo-data [--clients N] [--force]
    compliance-sync demo [--year 2025] [--serve]      # embedded PostgreSQL, no server needed

The sync materialises the same multi-asset in-process, on the Dagster instance of ``DAGSTER_HOME`` when it
is set (so command-line runs appear in the UI), else on an ephemeral one. Exit codes: 0 success, 2 usage
or settings, 3 stopped by data (schema, guards, invariants), 4 connection or authentication failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Sequence

from compliance_sync.model import SyncError

EXIT_OK, EXIT_USAGE, EXIT_DATA, EXIT_CONNECTION, EXIT_UNEXPECTED = 0, 2, 3, 4, 1
SUBCOMMANDS = ("migrate", "demo-data", "demo")


class Log:
    """Timestamped lines with a level: INFO, WARN, ERROR, DRY-RUN (stderr when --json owns stdout)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __call__(self, level: str, message: str) -> None:
        stamp = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S%z")
        for line in str(message).splitlines() or [""]:
            print(f"[{stamp}] [{level}] {line}", file=self.stream, flush=True)


def sync_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="compliance-sync",
        description="Sync segmentation compliance into the planning tables for one fiscal year. "
        "Other commands: `compliance-sync migrate --help`, `compliance-sync demo-data --help`.",
    )
    p.add_argument("--dry-run", action="store_true", help="compute and report the diff; write nothing")
    p.add_argument("--year", help="fiscal year, e.g. 2026 (default: the FY containing today)")
    p.add_argument("--as-of", help="reference date YYYY-MM-DD (default: today in COMPLIANCE_SYNC_TIMEZONE)")
    p.add_argument("--allow-mass-prune", action="store_true", help="let the run delete more than max_prune_fraction of a target's rows")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout (logs go to stderr)")
    p.add_argument("--diff-limit", type=int, default=50, help="rows per section shown in a dry run's diff (default 50)")
    p.add_argument("--verbose", action="store_true", help="also print Dagster's own log lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        from compliance_sync import admin

        return admin.main(argv)
    args = sync_parser().parse_args(argv)
    return run_sync(args)


def run_sync(args: argparse.Namespace) -> int:
    import dagster as dg

    from compliance_sync.definitions import SYNC_JOB, build_definitions
    from compliance_sync.resources import RunReport
    from compliance_sync.settings import load_settings
    from compliance_sync.sync import parse_as_of, parse_year, today_in

    log = Log(sys.stderr if args.json else sys.stdout)
    try:
        settings = load_settings()
        settings.backend_kind()
        settings.bu_map()
        today = today_in(settings)
        fy = parse_year(args.year if args.year is not None else _current_year(today, settings), settings, today)
        reference = parse_as_of(args.as_of) or today
    except SyncError as exc:
        log("ERROR", str(exc))
        return _early_failure(args, str(exc), exc.exit_code)
    mode = "dry run" if args.dry_run else "live"
    log("INFO", f"compliance-sync {fy.describe()}, as_of {fy.as_of(reference)}, mode {mode}")
    report = RunReport()
    defs = build_definitions(resources={"run_report": dg.ResourceDefinition.hardcoded_resource(report)})
    job = defs.resolve_job_def(SYNC_JOB)
    run_config = {
        "ops": {"compliance_sync": {"config": {"dry_run": bool(args.dry_run), "as_of": reference.isoformat(), "allow_mass_prune": bool(args.allow_mass_prune)}}},
        "loggers": {"console": {"config": {"log_level": "DEBUG" if args.verbose else "CRITICAL"}}},
    }
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    with instance:
        result = job.execute_in_process(
            run_config=run_config,
            instance=instance,
            partition_key=fy.key,
            raise_on_error=False,
            tags={"compliance_sync/trigger": "cli", "compliance_sync/as_of": reference.isoformat()},
        )
    outcome = report.outcome
    if outcome is None:
        message, code = report.error or (_failure_message(result), EXIT_UNEXPECTED)
        log("ERROR", message)
        return _early_failure(args, message, code)
    _print_report(outcome, args, log)
    if args.json:
        print(json.dumps(outcome.summary(), indent=2, default=str))
    if outcome.error:
        return outcome.exit_code
    if not result.success:
        log("ERROR", _failure_message(result))
        return EXIT_UNEXPECTED
    return EXIT_OK


def _early_failure(args: argparse.Namespace, message: str, code: int) -> int:
    """A run that stopped before it had an outcome; ``--json`` still gets a summary object."""
    if args.json:
        print(json.dumps({"status": "failed", "error": message, "exit_code": code}, indent=2))
    return code


def _current_year(today: dt.date, settings) -> int:
    from compliance_sync.fiscal import fiscal_year_of

    return fiscal_year_of(today, settings.fy_start_month).year


def _failure_message(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            return event.step_failure_data.error.message.strip()
    return "the run failed (see the Dagster event log)"


def _print_report(outcome, args, log: Log) -> None:
    from compliance_sync.diff import describe
    from compliance_sync.model import REQUIREMENTS

    for w in outcome.backend_warnings:
        log("WARN", w)
    for code, f in outcome.findings.items():
        if f.count:
            log("WARN", f"{code}: {f.count} — {f.description}; e.g. " + "; ".join(f.examples[:3]))
    for table, f in outcome.orphan_findings().items():
        if f.count:
            log("WARN", f"orphans in {table}: {f.count} kept (they carry data the job does not own); e.g. " + "; ".join(f.examples[:3]))
    for code, f in outcome.invariants.items():
        if f.count:
            log("ERROR", f"invariant {code}: {f.count} violation(s); e.g. " + "; ".join(f.examples[:3]))
    dry = outcome.mode == "dry_run"
    if dry and outcome.diff:
        for g in outcome.guards:
            log("DRY-RUN", f"a live run would stop: {g.message}")
        for name, t in outcome.diff.targets.items():
            log("DRY-RUN", f"{name}: " + ", ".join(f"{k} {v}" for k, v in t.counts().items()))
            for line in describe(t, limit=args.diff_limit):
                log("DRY-RUN", "  " + line)
    if outcome.error:
        log("ERROR", outcome.error)
    s = outcome.summary()
    req = s["targets"].get(REQUIREMENTS, {})
    level = "DRY-RUN" if dry else "INFO"
    lines = [
        "=" * 60,
        f"SUMMARY FY{outcome.fy.year} ({outcome.fy.start} … {outcome.fy.end}), as_of {outcome.as_of}",
        f"Mode:                {'DRY RUN (nothing written)' if dry else 'LIVE'}; backend {outcome.backend}",
        f"Clients processed:   {s['clients_processed']} (skipped {s['clients_skipped']}, unassigned {s['clients_unassigned']})",
        f"Requirement rows:    {s['requirement_rows']} (inserted {req.get('inserted', 0)}, updated {req.get('updated', 0)}, "
        f"deleted {req.get('deleted', 0)}, unchanged {req.get('unchanged', 0)}, orphans {req.get('orphans', 0)})",
        f"Territories:         {s['territories']}",
        f"Business units:      {s['business_units']}",
        f"APAC updated:        {'yes' if s['apac_updated'] else 'no'}",
        f"Clients at risk:     {s['clients_at_risk']}",
        f"Clients critical:    {s['clients_critical']}",
        f"Clients compliant:   {s['clients_compliant']}",
        f"Status:              {s['status']}" + (f" (exit {outcome.exit_code})" if outcome.error else ""),
        "=" * 60,
    ]
    for line in lines:
        log(level, line)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
