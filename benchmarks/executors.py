"""In-process versus multiprocess executor, side by side, on one dry run of the demo data.

    SUPABASE_DB_URL=... COMPLIANCE_SYNC_BU_MAP=compliance_sync/bu_map.example.yaml python benchmarks/executors.py

Needs a database with the demo data (``compliance-sync migrate && compliance-sync demo-data``). Each executor
runs the same job twice, alternating, on one temporary Dagster instance; the script prints each wall time.
"""

from __future__ import annotations

import tempfile
import time

import dagster as dg

NO_TELEMETRY = {"telemetry": {"enabled": False}}  # else Dagster writes ~/.dagster/.telemetry


def in_process_job():
    from compliance_sync.definitions import SYNC_JOB, build_definitions

    return build_definitions().resolve_job_def(SYNC_JOB)


def multiprocess_job():
    return in_process_job().with_executor_def(dg.multiprocess_executor)


def main() -> None:
    config = {"ops": {"compliance_sync": {"config": {"as_of": "2025-06-30", "dry_run": True}}}}
    with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.local_temp(home, overrides=NO_TELEMETRY) as instance:
        for name, fn in (("in_process", in_process_job), ("multiprocess", multiprocess_job)) * 2:
            start = time.perf_counter()
            with dg.execute_job(
                dg.reconstructable(fn), instance=instance, run_config=config, tags={"dagster/partition": "2025"}
            ) as result:
                assert result.success, name
            print(f"{name:13s} {time.perf_counter() - start:5.2f} s")


if __name__ == "__main__":
    main()
