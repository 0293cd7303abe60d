"""Run one fiscal year from the command line, then print the old script's report from the run's summary.

Through the Dagster asset, in-process, when there is an instance to record the run in (``DAGSTER_HOME``), else
:func:`compliance_sync.service.sync.run_fiscal_year` directly; why: docs/architecture.md, "Service"."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import pathlib
import uuid
from typing import Any

from compliance_sync.backends import Backend
from compliance_sync.config.logs import DRY_RUN, log
from compliance_sync.config.settings import Settings
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.guards import GuardCode, how_to_run
from compliance_sync.domain.tables import REQUIREMENTS
from compliance_sync.errors import ExitCode


def failure_summary(message: str, code: int) -> dict[str, Any]:
    """The one JSON object ``--json`` prints when a run stops before it has a summary of its own."""
    return {"status": "failed", "error": message, "exit_code": int(code)}


def _summary_of(metadata: Any) -> dict[str, Any] | None:
    from compliance_sync.definitions.tags import SUMMARY

    value = (metadata or {}).get(SUMMARY)
    return value.value if value is not None else None


def _summary_of_result(result: Any) -> dict[str, Any] | None:
    """The run's summary: on a step failure's metadata, else on the APAC target's materialisation (live) or
    observation (dry run)."""
    from compliance_sync.definitions.tags import OP_NAME

    for event in result.get_step_failure_events():
        failure = event.step_failure_data.user_failure_data
        if failure is not None and (summary := _summary_of(failure.metadata)):
            return summary
    found = [_summary_of(m.metadata) for m in result.asset_materializations_for_node(OP_NAME)]
    found += [
        _summary_of(e.asset_observation_data.asset_observation.metadata) for e in result.get_asset_observation_events()
    ]
    return next((s for s in found if s), None)


def _summary_of_interrupted(instance: Any, run_id: str) -> dict[str, Any] | None:
    """The summary an interrupted step recorded (``execute_in_process`` returned no result to read)."""
    for record in reversed(instance.get_records_for_run(run_id).records):
        entry = record.event_log_entry
        found = entry.asset_observation or entry.asset_materialization
        if found is not None and (summary := _summary_of(found.metadata)):
            return summary
    return None


def _failure_message(result: Any) -> str:
    for event in result.get_step_failure_events():
        if event.step_failure_data.error is not None:
            return event.step_failure_data.error.message.strip().splitlines()[0]
    return "the run failed (see the Dagster event log)"


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """One FY asked for from the command line or the demo: what :func:`run` needs besides settings and backend."""

    fy: FiscalYear
    reference: dt.date  # as_of before clamping to the FY end
    dry_run: bool = False
    allow_mass_prune: bool = False
    diff_limit: int = 50
    verbose: bool = False
    trigger: str = "cli"
    dagster_home: pathlib.Path | None = None  # the demo's instance; else DAGSTER_HOME when set


def run(settings: Settings, backend: Backend, request: RunRequest) -> tuple[dict[str, Any], int]:
    """Run the FY: through Dagster when there is an instance to record it in, else directly."""
    if request.dagster_home is not None or os.environ.get("DAGSTER_HOME"):
        return run_in_dagster(settings, backend, request)
    return run_directly(settings, backend, request)


def run_directly(settings: Settings, backend: Backend, request: RunRequest) -> tuple[dict[str, Any], int]:
    from compliance_sync.service.outcome import Mode, Outcome
    from compliance_sync.service.summary import summary
    from compliance_sync.service.sync import RunOptions, run_fiscal_year

    mode = Mode.DRY_RUN if request.dry_run else Mode.LIVE
    fy = request.fy
    outcome = Outcome(fy, fy.as_of(request.reference), mode, backend.name.value, f"{request.trigger}-{uuid.uuid4()}")
    try:
        run_fiscal_year(
            backend,
            settings,
            settings.bu_map(),
            outcome,
            RunOptions(mode, request.allow_mass_prune, request.diff_limit, outcome.run_id),
        )
    except (KeyboardInterrupt, SystemExit):
        return summary(outcome), ExitCode.INTERRUPTED
    return summary(outcome), int(outcome.exit_code)


def run_in_dagster(settings: Settings, backend: Backend, request: RunRequest) -> tuple[dict[str, Any], int]:
    """Materialise the FY in-process; returns the run's summary and the process exit code. The request's
    ``dagster_home`` (the demo's) is where the run is recorded, else ``DAGSTER_HOME``."""
    import dagster as dg

    from compliance_sync.definitions import SYNC_JOB, build_definitions
    from compliance_sync.definitions.resources import FixedSync
    from compliance_sync.definitions.tags import run_tags
    from compliance_sync.definitions.targets import sync_run_config

    defs = build_definitions(settings, sync=FixedSync(settings, backend))
    job = defs.resolve_job_def(SYNC_JOB)
    log_level = "DEBUG" if request.verbose else "CRITICAL"
    run_config = sync_run_config(
        as_of=request.reference,
        dry_run=request.dry_run,
        allow_mass_prune=request.allow_mass_prune,
        diff_limit=request.diff_limit,
        loggers={"console": {"config": {"log_level": log_level}}},
    )
    # the dry-run tag is set here, where the run is launched; as_of is the one the run computes with
    tags = run_tags(request.trigger, request.fy.as_of(request.reference), request.dry_run)
    run_id = str(uuid.uuid4())
    if request.dagster_home is not None:
        os.environ["DAGSTER_HOME"] = str(request.dagster_home)  # Dagster's own way to name an instance
    instance = dg.DagsterInstance.get()
    with instance:
        try:
            result = job.execute_in_process(
                run_config=run_config,
                instance=instance,
                partition_key=request.fy.key,
                raise_on_error=False,
                tags=tags,
                run_id=run_id,
            )
        except KeyboardInterrupt:
            summary = _summary_of_interrupted(instance, run_id) or failure_summary(
                "interrupted: nothing written (none of it)", ExitCode.INTERRUPTED
            )
            summary["exit_code"] = int(ExitCode.INTERRUPTED)
            return summary, ExitCode.INTERRUPTED
        summary = _summary_of_result(result)
        if summary is None:
            return failure_summary(_failure_message(result), ExitCode.UNEXPECTED), ExitCode.UNEXPECTED
        if not result.success and not summary.get("error"):
            summary["error"], summary["exit_code"] = _failure_message(result), int(ExitCode.UNEXPECTED)
    return summary, int(summary.get("exit_code", ExitCode.UNEXPECTED))


def print_report(summary: dict[str, Any], logger: logging.Logger = log) -> None:
    """The old script's report: warnings, a dry run's row-level diff, then the summary block."""
    for w in summary.get("backend_warnings", []):
        logger.warning(w)
    for code, n in summary.get("warnings", {}).items():
        logger.warning("%s: %s", code, n)
    for code, n in summary.get("invariant_violations", {}).items():
        logger.error("invariant %s: %s violation(s)", code, n)
    dry = summary.get("mode") == "dry_run"
    for g in summary.get("guards", []):
        if g.get("stops_live_run") and g.get("code") != GuardCode.MISSING_KEY:  # said below, with what to run
            logger.log(DRY_RUN if dry else logging.ERROR, ("a live run would stop: " if dry else "") + g["message"])
    needs = summary.get("live_run_needs") or []
    for need in needs:
        duplicates = (
            f"; {need['duplicates']} key(s) of the FY held by several rows "
            f"({need['duplicate_rows']} surplus row(s)), "
            f"e.g. {'; '.join(need['examples'][:3])}"
            if need["duplicates"]
            else "; no duplicate keys in the FY"
        )
        key = ", ".join(need["missing_key"])
        logger.log(DRY_RUN, "a live run needs: %s: a unique index on (%s)%s", need["table"], key, duplicates)
    if needs and summary.get("next_command"):
        logger.log(DRY_RUN, "a live run needs: next, run %s; then the live run", how_to_run(summary["next_command"]))
    for name, lines in summary.get("diff", {}).items():
        counts = summary["targets"].get(name, {})
        logger.log(DRY_RUN, "%s: %s", name, ", ".join(f"{k} {v}" for k, v in counts.items()))
        for line in lines:
            logger.log(DRY_RUN, "  %s", line)
    if summary.get("error"):
        logger.error(summary["error"])
    if "fiscal_year" not in summary:
        return
    req = summary["targets"].get(REQUIREMENTS, {})
    level = DRY_RUN if dry else logging.INFO
    lines = [
        "=" * 60,
        f"SUMMARY FY{summary['fiscal_year']} ({summary['window']['start']} … {summary['window']['end']}), "
        f"as_of {summary['as_of']}",
        f"Mode:                {'DRY RUN (nothing written)' if dry else 'LIVE'}; backend {summary['backend']}",
        f"Clients processed:   {summary['clients_processed']} "
        f"(skipped {summary['clients_skipped']}, unassigned {summary['clients_unassigned']})",
        f"Requirement rows:    {summary['requirement_rows']} "
        f"(inserted {req.get('inserted', 0)}, updated {req.get('updated', 0)}, "
        f"deleted {req.get('deleted', 0)}, unchanged {req.get('unchanged', 0)}, orphans {req.get('orphans', 0)})",
        f"Territories:         {summary['territories']}",
        f"Business units:      {summary['business_units']}",
        f"APAC updated:        {'yes' if summary['apac_updated'] else 'no'}",
        f"Clients at risk:     {summary['clients_at_risk']}",
        f"Clients critical:    {summary['clients_critical']}",
        f"Clients compliant:   {summary['clients_compliant']}",
        f"Status:              {summary['status']}"
        + (f" (exit {summary['exit_code']})" if summary.get("exit_code") else ""),
    ]
    if needs and summary.get("next_command"):
        missing = ", ".join(need["table"] for need in needs)
        lines.append(f"Live run needs:      {summary['next_command']} (no unique key on {missing})")
    partial = summary.get("partly_written")
    if partial:  # REST: what the server acknowledged before the stop, and each write of unknown outcome
        done = [
            f"{n} upserted {c['upserted']}, deleted {c['deleted']}"
            for n, c in partial["acknowledged"].items()
            if c["upserted"] or c["deleted"]
        ]
        lines.append(f"Written:             partly; acknowledged: {'; '.join(done) if done else 'nothing'}")
        lines += [
            f"Outcome unknown:     {u['request']} on {u['table']} ({u['rows']} row(s)): {u['why']}"
            for u in partial["unknown"]
        ]
        lines.append("                     every row is old or new, none missing; a rerun converges")
    lines.append("=" * 60)
    for line in lines:
        logger.log(level, line)


def print_json(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=2, default=str), flush=True)
