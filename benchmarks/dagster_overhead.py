"""(g) of ``benchmarks/run.py``: Dagster's overhead, in one warm Python process.

A worker driven over stdin / stdout, one JSON object per line each way (``benchmarks/run.py`` starts it
once per dataset and interleaves its commands with the other systems' runs)::

    {"op": "warmup", "url": "postgresql://..."}   both paths once, untimed (a throwaway database)
    {"op": "direct", "url": "..."}                 compliance_sync.service.sync.run_fiscal_year,
                                                   as the command line calls it
    {"op": "dagster", "url": "..."}                the same FY materialised through Dagster (execute_in_process)
    {"op": "quit"}

Every answer is ``{"ok": true, ...}`` with the wall time of the timed region (``seconds``) and its parts, or
``{"ok": false, "error": "..."}``. Each timed command expects a fresh clone of the dataset (a first sync).
The environment gives everything but the database (``COMPLIANCE_SYNC_BU_MAP``; no ``DAGSTER_HOME``).

Timed regions:

- direct: the backend from settings, the BU map, ``run_fiscal_year`` and the summary (``runner.run_directly``);
- dagster: ``DagsterInstance.ephemeral()`` (``instance_s``; a command-line run pays it), ``build_definitions``
  and ``resolve_job_def`` (``definitions_s``), ``execute_in_process`` (``execute_s``) and reading the summary
  back from the run's result as the command line does (``summary_s``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import traceback
import uuid

YEAR, AS_OF = 2026, dt.date(2026, 11, 20)

t0 = time.perf_counter()
import dagster as dg  # noqa: E402  (imported before anything is timed: the process is warm)

from compliance_sync.backends import choose_backend  # noqa: E402
from compliance_sync.backends import postgres as _postgres  # noqa: E402,F401  (warm: imported by the first run otherwise)
from compliance_sync.config.settings import load_settings  # noqa: E402
from compliance_sync.definitions import SYNC_JOB, build_definitions  # noqa: E402
from compliance_sync.domain.fiscal import FiscalYear  # noqa: E402
from compliance_sync.entrypoints.runner import _summary_of_result  # noqa: E402
from compliance_sync.service.summary import summary as summary_of  # noqa: E402
from compliance_sync.service.sync import Mode, Outcome, RunOptions, run_fiscal_year  # noqa: E402

IMPORT_S = time.perf_counter() - t0


def _settings(url: str):
    os.environ["SUPABASE_DB_URL"] = url  # the Dagster resource reads the environment when the run starts
    return load_settings()


def direct(url: str, live: bool = True) -> dict:
    settings = _settings(url)
    clock = time.perf_counter()
    backend = choose_backend(settings)
    fy = FiscalYear(YEAR, settings.fy_start_month)
    mode = Mode.LIVE if live else Mode.DRY_RUN
    outcome = Outcome(fy, fy.as_of(AS_OF), mode, backend.name.value, f"bench-{uuid.uuid4()}")
    run_fiscal_year(backend, settings, settings.bu_map(), outcome, RunOptions(mode, False, 50, outcome.run_id))
    summary = summary_of(outcome)
    seconds = time.perf_counter() - clock
    return {"seconds": seconds, "status": summary["status"], "timings": summary["timings"], "error": summary["error"]}


def dagster(url: str, live: bool = True) -> dict:
    settings = _settings(url)
    config = {"ops": {"compliance_sync": {"config": {"as_of": AS_OF.isoformat(), "dry_run": not live}}}}
    clock = time.perf_counter()
    instance = dg.DagsterInstance.ephemeral()
    instance_s = time.perf_counter() - clock
    c1 = time.perf_counter()
    job = build_definitions(settings).resolve_job_def(SYNC_JOB)
    definitions_s = time.perf_counter() - c1
    c1 = time.perf_counter()
    result = job.execute_in_process(run_config=config, partition_key=str(YEAR), instance=instance, raise_on_error=False)
    execute_s = time.perf_counter() - c1
    c1 = time.perf_counter()
    summary = _summary_of_result(result) or {}
    summary_s = time.perf_counter() - c1
    seconds = time.perf_counter() - clock
    instance.dispose()
    return {
        "seconds": seconds,
        "instance_s": instance_s,
        "definitions_s": definitions_s,
        "execute_s": execute_s,
        "summary_s": summary_s,
        "success": result.success,
        "status": summary.get("status"),
        "timings": summary.get("timings", {}),
        "error": summary.get("error") or (None if result.success else "the Dagster run failed"),
    }


def main() -> int:
    os.environ.pop("DAGSTER_HOME", None)
    print(json.dumps({"ok": True, "ready": True, "import_s": IMPORT_S}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        try:
            if op == "quit":
                break
            if op == "warmup":
                answer = {"direct": direct(cmd["url"], live=False), "dagster": dagster(cmd["url"], live=False)}
                answer["direct_live"] = direct(cmd["url"])
                answer["dagster_live"] = dagster(cmd["url"])
            elif op == "direct":
                answer = direct(cmd["url"])
            elif op == "dagster":
                answer = dagster(cmd["url"])
            else:
                raise ValueError(f"unknown op {op!r}")
            print(json.dumps({"ok": True, **answer}, default=str), flush=True)
        except Exception as exc:  # report and keep serving: the harness decides
            print(
                json.dumps(
                    {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
