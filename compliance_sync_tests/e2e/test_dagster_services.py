"""End to end through the real services: ``dagster-webserver`` and ``dagster-daemon`` as subprocesses, on a
temporary ``DAGSTER_HOME`` whose ``dagster.yaml`` is the repository's own (dagster-postgres storage in a
throwaway PostgreSQL database, the queued run coordinator with one run per fiscal year), driven over
GraphQL with the mutations and queries the UI sends:

(a) one target's "Materialize…" for one partition: ``launchPipelineExecution`` of ``__ASSET_JOB`` with that
    asset, its checks and the partition's tags (LaunchAssetChoosePartitionsDialog, "Launch 1 run");
(b) a backfill of two of the four targets over two fiscal years: ``launchPartitionBackfill`` with an asset
    selection and partition names (the same dialog, "Launch backfill");
(c) the checks alone for a partition: ``compliance_checks_job`` from the launchpad with a partition;
(x) "Execute all" on an asset's Checks tab (no partition): the run fails asking for a fiscal year, and the
    run-failure sensor posts the alert to a local webhook.

Then it checks the rows of every fiscal year in the demo database, the ledger's run ids against Dagster's
own ``runs`` table in PostgreSQL, per-partition check results, all four targets materialised after (a),
the metadata, freshness policy and location name as GraphQL reports them, and that the services printed
no untimestamped warning. Only the processes this test started are stopped (by process id / its own
process group: terminate, a bounded wait, then kill).
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from compliance_sync.config.settings import EXAMPLE_BU_MAP
from compliance_sync.definitions.tags import MODE_TAG, PARTITION_TAG, SUMMARY
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TARGETS, TERRITORY
from compliance_sync_tests.conftest import throwaway_database
from compliance_sync_tests.webhook import Webhook

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
TARGET_NAMES = [t.name for t in TARGETS]
LOCATION = "compliance_sync"
REPOSITORY = "__repository__"
DAGSTER_URL = "http://dagster.example.test:3000"
WEBHOOK_TOKEN = "T0K3N-webhook-s3cr3t"
PLOTTED = re.compile(
    r"^(dagster/row_count|rows_written|actual_compliance|below_compliance_accounts|compliance_.+|clients_below_.+)$"
)
DONE = ("SUCCESS", "FAILURE", "CANCELED")
STOP_TIMEOUT_S = 20

# --- the UI's GraphQL (dagster-ui: LaunchAssetExecutionButton, LaunchAssetChoosePartitionsDialog, ConfigFetch,
# ExecuteChecksButton, BackfillUtils; dagster_graphql.client.query for the launch mutation) ------------------------
LAUNCH_RUN = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId tags { key value } } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
  }
}"""
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on PartitionSetNotFoundError { message }
  }
}"""
CONFIG_PARTITION_FOR_ASSET_JOB = """
query ConfigPartitionForAssetJobQuery($repositoryName: String!, $repositoryLocationName: String!, $jobName: String!,
                                      $partitionName: String!, $assetKeys: [AssetKeyInput!]!) {
  pipelineOrError(params: {pipelineName: $jobName, repositoryName: $repositoryName,
                            repositoryLocationName: $repositoryLocationName}) {
    ... on Pipeline {
      partition(partitionName: $partitionName, selectedAssetKeys: $assetKeys) {
        runConfigOrError { ... on PartitionRunConfig { yaml } }
        tagsOrError { ... on PartitionTags { results { key value } } }
      }
    }
  }
}"""
CONFIG_PARTITION_SELECTION = """
query ConfigPartitionSelectionQuery($repositorySelector: RepositorySelector!, $partitionSetName: String!,
                                    $partitionName: String!) {
  partitionSetOrError(repositorySelector: $repositorySelector, partitionSetName: $partitionSetName) {
    ... on PartitionSet {
      partition(partitionName: $partitionName) {
        runConfigOrError { ... on PartitionRunConfig { yaml } }
        tagsOrError { ... on PartitionTags { results { key value } } }
      }
    }
  }
}"""
ASSET_NODES = """
query AssetNodes {
  assetNodes {
    assetKey { path }
    jobNames
    isExecutable
    partitionDefinition { type }
    internalFreshnessPolicy { __typename ... on TimeWindowFreshnessPolicy { failWindowSeconds } }
    metadataEntries { label __typename ... on TableSchemaMetadataEntry { schema { columns { name } } } }
    assetChecksOrError { ... on AssetChecks { checks { name canExecuteIndividually jobNames } } }
  }
}"""
ASSET_EVENTS = """
query AssetEvents($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } }
      assetMaterializations(partitions: $partitions, limit: 1) {
        runId partition
        metadataEntries {
          label __typename ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue }
        }
      }
      assetObservations(limit: 10) {
        runId partition
        metadataEntries { label __typename ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } }
      }
    }
  }
}"""
CHECK_EXECUTIONS = """
query AssetCheckExecutions($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 20) {
    runId status partition evaluation { severity success partition }
  }
}"""
RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run { runId status jobName startTime endTime tags { key value } }
  }
}"""
RUN_LOGS = """
query RunLogs($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepFailureEvent { error { message cause { message } } }
        ... on MaterializationEvent { assetKey { path } partition }
      }
    }
  }
}"""
BACKFILL = """
query Backfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    ... on PartitionBackfill { id status runs(limit: 20) { runId status tags { key value } } }
  }
}"""
SENSOR = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { status ticks(limit: 5) { status timestamp } } }
  }
}"""
WORKSPACE = """
query Workspace {
  workspaceOrError {
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
}"""


# the launchpad's first config (LaunchpadAllowedRoot: rootDefaultYaml) and a job's description and step
LAUNCHPAD = """
query Launchpad($selector: PipelineSelector!) {
  runConfigSchemaOrError(selector: $selector) { ... on RunConfigSchema { rootDefaultYaml } }
  pipelineOrError(params: $selector) {
    ... on Pipeline { description solidHandles { solid { definition { description } } } }
  }
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _storage_url(url: str) -> str:
    """A libpq URL as the SQLAlchemy URL dagster-postgres wants (psycopg2 driver)."""
    from urllib.parse import quote

    p = conninfo_to_dict(url)
    user = quote(p.get("user") or "postgres")
    auth = user + (f":{quote(p['password'], safe='')}" if p.get("password") else "")
    host, port = p.get("host") or "127.0.0.1", p.get("port") or "5432"
    if host.startswith("/"):
        return f"postgresql+psycopg2://{auth}@/{p['dbname']}?host={quote(host)}&port={port}"
    return f"postgresql+psycopg2://{auth}@{host}:{port}/{p['dbname']}"


class Services:
    """The webserver and the daemon of one temporary Dagster deployment; ``stop`` ends what it started."""

    def __init__(self, root: pathlib.Path, env: dict[str, str]) -> None:
        self.root = root
        self.home = root / "dagster_home"
        self.home.mkdir()
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")  # the shipped one: storage from DAGSTER_PG_URL
        self.workspace = root / "workspace.yaml"
        self.workspace.write_text(
            "load_from:\n  - python_module:\n      module_name: compliance_sync.definitions\n      attribute: defs\n"
            f"      location_name: {LOCATION}\n      working_directory: {REPO}\n",
            encoding="utf-8",
        )
        self.env = env | {"DAGSTER_HOME": str(self.home)}
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.http = httpx.Client(timeout=60)
        self.started = time.monotonic()

    def mark(self, what: str) -> None:
        print(f"{time.monotonic() - self.started:5.1f} s  {what}")

    def _start(self, name: str, cmd: list[str]) -> None:
        out = open(self.root / f"{name}.out", "wb")
        err = open(self.root / f"{name}.err", "wb")
        # A child inherits ignored signals: when pytest itself runs with SIGINT / SIGTERM ignored (a background
        # job of a non-interactive shell), the services would ignore terminate(). Default them for the child.
        ignored = {
            s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) == signal.SIG_IGN
        }
        for s in ignored:
            signal.signal(s, signal.SIG_DFL)
        try:
            # its own session, so that stopping it also reaches the code server and run workers it spawns
            self.procs[name] = subprocess.Popen(
                cmd,
                env=self.env,
                cwd=self.root,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            for s, handler in ignored.items():
                signal.signal(s, handler)
            out.close()
            err.close()

    def start_webserver(self) -> None:
        self._start(
            "webserver",
            [str(BIN / "dagster-webserver"), "-w", str(self.workspace), "-h", "127.0.0.1", "-p", str(self.port)],
        )

    def start_daemon(self) -> None:
        self._start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)])

    def log(self, name: str, stream: str = "err") -> str:
        path = self.root / f"{name}.{stream}"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def tails(self) -> str:
        return "\n".join(f"--- {n}.{s} (tail)\n{self.log(n, s)[-3000:]}" for n in self.procs for s in ("err", "out"))

    def stop(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.terminate()  # SIGTERM to the process we started
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(f"{name} (pid {proc.pid}) did not stop within {STOP_TIMEOUT_S} s of SIGTERM: killing it")
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
            # what it spawned (code server, run workers) is in its process group, whose id is its pid
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline and _group_alive(proc.pid):
                time.sleep(0.2)
            if _group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
        self.http.close()

    # --- GraphQL ---------------------------------------------------------------------------------------------------
    def gql(self, query: str, **variables: Any) -> dict:
        response = self.http.post(f"{self.url}/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def wait(self, what: str, timeout: float, probe: Callable[[], Any], every: float = 0.5) -> Any:
        """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds saying what for."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                assert proc.poll() is None, (
                    f"{name} exited with {proc.returncode} while waiting for {what}\n{self.tails()}"
                )
            try:
                last = probe()
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                last = exc
            else:
                if last:
                    return last
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n{self.tails()}")

    def location_loaded(self) -> bool:
        entries = self.gql(WORKSPACE)["workspaceOrError"]["locationEntries"]
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry and entry["locationOrLoadError"] and entry["locationOrLoadError"]["__typename"] == "PythonError":
            raise AssertionError(f"the code location failed to load: {entry['locationOrLoadError']['message']}")
        return bool(entry and entry["loadStatus"] == "LOADED" and entry["locationOrLoadError"])

    def launch_run(self, job: str, tags: list[dict], run_config: str = "{}", **selection: Any) -> str:
        params = {
            "mode": "default",
            "runConfigData": run_config,
            "executionMetadata": {"tags": tags},
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "pipelineName": job,
                **selection,
            },
        }
        result = self.gql(LAUNCH_RUN, executionParams=params)["launchPipelineExecution"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def run(self, run_id: str) -> dict:
        return self.gql(RUN, runId=run_id)["runOrError"]

    def finished(self, run_id: str) -> dict | None:
        run = self.run(run_id)
        return run if run["status"] in DONE else None

    def asset_events(self, asset: str, partition: str | None = None) -> dict:
        return self.gql(ASSET_EVENTS, assetKey={"path": [asset]}, partitions=[partition] if partition else None)[
            "assetNodeOrError"
        ]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a recycled id of another user's group: not ours
        return False
    return True


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


@pytest.fixture
def dagster_db(server_url):
    """A throwaway database for Dagster's own storage (runs, events, schedules), dropped after."""
    with throwaway_database(server_url, "cs_dagster") as url:
        yield url


@pytest.fixture
def demo_db(migrated_db):
    from compliance_sync.devtools.demo import load_demo_data

    with psycopg.connect(migrated_db) as conn:
        load_demo_data(conn)
    return migrated_db


def test_ui_entry_points_through_webserver_and_daemon(demo_db, dagster_db, tmp_path):
    started = time.monotonic()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPLIANCE_SYNC_", "DAGSTER_", "SUPABASE_", "NEXT_PUBLIC_SUPABASE"))
    }
    with Webhook() as hook:
        env |= {
            "DAGSTER_PG_URL": _storage_url(dagster_db),
            "SUPABASE_DB_URL": demo_db,
            "COMPLIANCE_SYNC_BU_MAP": str(EXAMPLE_BU_MAP),
            # pinned, so that a developer's .env in the repository cannot change what this test expects
            "COMPLIANCE_SYNC_FIRST_FY": "2024",
            "COMPLIANCE_SYNC_FY_START_MONTH": "1",
            "COMPLIANCE_SYNC_FRESHNESS_HOURS": "36",
            "COMPLIANCE_SYNC_CHANGE_SENSOR": "false",
            "COMPLIANCE_SYNC_ALERT_WEBHOOK": f"{hook.url}/hooks/{WEBHOOK_TOKEN}",
            "COMPLIANCE_SYNC_DAGSTER_URL": DAGSTER_URL,
        }
        services = Services(tmp_path, env)
        try:
            _drive(services, hook, demo_db, dagster_db)
        finally:
            stopping = time.monotonic()
            services.stop()
            print(f"services stopped in {time.monotonic() - stopping:.1f} s")
        for name in services.procs:  # no warning of ours (or the partitioned checks' preview) without a timestamp
            for line in services.log(name).splitlines():
                timestamped = re.match(r"^(\x1b\[[0-9;]*m)?(\[|\d{4}-\d\d-\d\d)", line)
                ours = "PreviewWarning" in line or (re.search(r"\w+Warning\b", line) and "compliance_sync" in line)
                assert timestamped or not ours, f"{name}: {line}"
    print(f"services test took {time.monotonic() - started:.1f} s")


def _drive(services: Services, hook: Webhook, demo_db: str, dagster_db: str) -> None:
    services.start_webserver()
    services.wait("the webserver's GraphQL to answer and the code location to load", 90, services.location_loaded)
    services.mark("webserver ready")

    nodes = {tuple(n["assetKey"]["path"]): n for n in services.gql(ASSET_NODES)["assetNodes"]}
    bu = nodes[(BUSINESS_UNIT,)]
    asset_job = bu["jobNames"][0]  # what the UI picks with no preferred job: the hidden asset job
    assert asset_job == "__ASSET_JOB", bu["jobNames"]

    # (b) a backfill of two of the four targets over two fiscal years, as "Launch backfill" sends it
    backfill = services.gql(
        LAUNCH_BACKFILL,
        backfillParams={
            "tags": [],
            "assetSelection": [{"path": [REQUIREMENTS]}, {"path": [APAC]}],
            "partitionNames": ["2025", "2026"],
            "fromFailure": False,
        },
    )["launchPartitionBackfill"]
    assert backfill["__typename"] == "LaunchBackfillSuccess", backfill
    backfill_id = backfill["backfillId"]

    # (a) "Materialize…" on business_unit_planning, one partition ("Launch 1 run"): its config and tags first
    partition = services.gql(
        CONFIG_PARTITION_FOR_ASSET_JOB,
        repositoryName=REPOSITORY,
        repositoryLocationName=LOCATION,
        jobName=asset_job,
        partitionName="2024",
        assetKeys=[{"path": [BUSINESS_UNIT]}],
    )["pipelineOrError"]["partition"]
    bu_checks = [c["name"] for c in bu["assetChecksOrError"]["checks"] if asset_job in c["jobNames"]]
    run_a = services.launch_run(
        asset_job,
        partition["tagsOrError"]["results"],
        partition["runConfigOrError"]["yaml"],
        assetSelection=[{"path": [BUSINESS_UNIT]}],
        assetCheckSelection=[{"assetKey": {"path": [BUSINESS_UNIT]}, "name": c} for c in bu_checks],
    )
    # (c) the checks alone for FY2024: compliance_checks_job from the launchpad with the partition selected;
    # queued behind (a) by the one-run-per-fiscal-year limit of dagster.yaml
    partition = services.gql(
        CONFIG_PARTITION_SELECTION,
        repositorySelector={"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION},
        partitionSetName="compliance_checks_job_partition_set",
        partitionName="2024",
    )["partitionSetOrError"]["partition"]
    run_c = services.launch_run(
        "compliance_checks_job", partition["tagsOrError"]["results"], partition["runConfigOrError"]["yaml"]
    )

    # the daemon: queued runs, the backfill, the sensors. The failure alert starts from the first event it
    # sees, so the failing run is launched once the sensor has ticked.
    services.start_daemon()
    selector = {
        "repositoryName": REPOSITORY,
        "repositoryLocationName": LOCATION,
        "sensorName": "compliance_sync_failure_alert",
    }
    services.wait(
        "the failure-alert sensor's first tick",
        90,
        lambda: services.gql(SENSOR, selector=selector)["sensorOrError"]["sensorState"]["ticks"],
    )
    services.mark("daemon ready (first sensor tick)")

    # (x) "Execute all" on territory_compliance_summary's Checks tab: no asset, its checks, no partition
    territory = nodes[(TERRITORY,)]
    launchable = [
        c["name"] for c in territory["assetChecksOrError"]["checks"] if c["canExecuteIndividually"] == "CAN_EXECUTE"
    ]
    run_x = services.launch_run(
        territory["jobNames"][0],
        [],
        assetSelection=[],
        assetCheckSelection=[{"assetKey": {"path": [TERRITORY]}, "name": c} for c in launchable],
    )

    a = services.wait(f"run (a) {run_a} to finish", 90, lambda: services.finished(run_a))
    c = services.wait(f"run (c) {run_c} to finish", 90, lambda: services.finished(run_c))
    x = services.wait(f"run (x) {run_x} to finish", 90, lambda: services.finished(run_x))
    services.mark("runs (a), (c), (x) finished")

    def backfill_done():
        b = services.gql(BACKFILL, backfillId=backfill_id)["partitionBackfillOrError"]
        return (
            b
            if b["status"] not in ("REQUESTED",) and b["runs"] and all(r["status"] in DONE for r in b["runs"])
            else None
        )

    b = services.wait(f"backfill {backfill_id} to complete", 120, backfill_done, every=1)
    services.mark("backfill completed")
    alert = hook.wait_for(lambda m: m.get("run_id") == run_x, 90, f"for the failed run {run_x}")
    services.mark("alert received")

    # --- (a): one target selected, four written and recorded for FY2024 -----------------------------------------
    assert a["status"] == "SUCCESS" and _tags(a)["dagster/partition"] == "2024"
    with psycopg.connect(demo_db) as conn:
        counts = {
            (t, fy): conn.execute(f"SELECT count(*) FROM {t} WHERE fiscal_year = %s", (fy,)).fetchone()[0]
            for t in TARGET_NAMES
            for fy in (2024, 2025, 2026)
        }
        ledger = conn.execute(
            "SELECT run_id, fiscal_year, mode, status FROM compliance_sync_runs ORDER BY id"
        ).fetchall()
        last_2024_write = max(
            conn.execute(f"SELECT max(updated_at) FROM {t} WHERE fiscal_year = 2024").fetchone()[0]
            for t in TARGET_NAMES
        )
    for fy in (2024, 2025, 2026):
        assert (
            counts[(APAC, fy)] == 1
            and counts[(BUSINESS_UNIT, fy)] >= 3
            and counts[(TERRITORY, fy)] > 3
            and counts[(REQUIREMENTS, fy)] > 100
        ), (fy, counts)
    for name in TARGET_NAMES:
        events = services.asset_events(name, "2024")
        [mat] = events["assetMaterializations"]
        assert (mat["runId"], mat["partition"]) == (run_a, "2024"), name
        assert set(events["assetPartitionStatuses"]["materializedPartitions"]) == {"2024", "2025", "2026"}, name
        assert events["assetPartitionStatuses"]["failedPartitions"] == []
        numeric = {
            e["label"]: e.get("intValue", e.get("floatValue"))
            for e in mat["metadataEntries"]
            if e["__typename"] in ("IntMetadataEntry", "FloatMetadataEntry")
        }
        assert numeric["dagster/row_count"] == counts[(name, 2024)], (
            name
        )  # the UI's row count is the table's, for the FY
        assert all(PLOTTED.match(k) for k in numeric), numeric  # the Plots tab draws only figures worth plotting
        assert "preview" in {e["label"] for e in mat["metadataEntries"] if e["__typename"] == "TableMetadataEntry"}, (
            name
        )
    bu_exec = services.gql(CHECK_EXECUTIONS, assetKey={"path": [BUSINESS_UNIT]}, checkName="unmapped_territories")[
        "assetCheckExecutions"
    ]
    assert any(
        e["runId"] == run_a and e["partition"] == "2024" and e["evaluation"]["partition"] == "2024" for e in bu_exec
    ), bu_exec

    # --- (b): the backfill of a subset wrote both years; every run of it succeeded ------------------------------
    assert b["status"] == "COMPLETED_SUCCESS", b
    backfill_runs = {_tags(r)["dagster/partition"]: r["runId"] for r in b["runs"]}
    assert set(backfill_runs) == {"2025", "2026"} and all(r["status"] == "SUCCESS" for r in b["runs"]), b
    for fy in ("2025", "2026"):
        [mat] = services.asset_events(TERRITORY, fy)["assetMaterializations"]  # not selected, recorded all the same
        assert mat["runId"] == backfill_runs[fy]
        req_exec = services.gql(CHECK_EXECUTIONS, assetKey={"path": [REQUIREMENTS]}, checkName="unique_keys")[
            "assetCheckExecutions"
        ]
        assert any(
            e["runId"] == backfill_runs[fy] and e["partition"] == fy and e["status"] == "SUCCEEDED" for e in req_exec
        ), req_exec

    # --- (c): checks alone, for FY2024, after (a) and writing nothing --------------------------------------------
    assert c["status"] == "SUCCESS", c
    assert _tags(c)[MODE_TAG] == "dry_run" and _tags(c)[PARTITION_TAG] == "2024"
    assert c["startTime"] >= a["endTime"]  # one run per fiscal year at a time (dagster.yaml's tag limit)
    assert last_2024_write.timestamp() < c["startTime"]
    logs_c = services.gql(RUN_LOGS, runId=run_c)["logsForRun"]["events"]
    assert not [e for e in logs_c if e["__typename"] == "MaterializationEvent"]
    territory_exec = services.gql(CHECK_EXECUTIONS, assetKey={"path": [TERRITORY]}, checkName="unused_strategies")[
        "assetCheckExecutions"
    ]
    [result_c] = [e for e in territory_exec if e["runId"] == run_c]
    assert (
        result_c["partition"] == "2024"
        and result_c["status"] == "FAILED"
        and result_c["evaluation"]["severity"] == "WARN"
    )  # the demo has losing strategies

    # --- (x): the Checks tab's "Execute all" without a partition fails clearly, and the alert says so ----------------
    assert x["status"] == "FAILURE" and "dagster/partition" not in _tags(x)
    [failure] = [
        e
        for e in services.gql(RUN_LOGS, runId=run_x)["logsForRun"]["events"]
        if e["__typename"] == "ExecutionStepFailureEvent"
    ]
    assert "this run has no fiscal-year partition" in failure["error"]["message"]
    assert failure["error"]["cause"] is None  # a dg.Failure raised with no chained cause: its own frames only
    assert alert["job"] == "__ASSET_JOB" and alert["fiscal_year"] is None
    assert (
        "this run has no fiscal-year partition" in alert["error"] and alert["run_url"] == f"{DAGSTER_URL}/runs/{run_x}"
    )
    assert all(
        WEBHOOK_TOKEN not in r["body"].decode() and r["path"] == f"/hooks/{WEBHOOK_TOKEN}" for r in hook.received
    )

    # --- the ledger's run ids are Dagster's, and Dagster's runs are in PostgreSQL -----------------------------------
    with psycopg.connect(dagster_db) as conn:
        stored = dict(conn.execute("SELECT run_id, status FROM runs").fetchall())
    assert {run_a, run_c, run_x, *backfill_runs.values()} <= set(stored)
    assert stored[run_a] == "SUCCESS" and stored[run_x] == "FAILURE"
    assert {r[0] for r in ledger} <= set(stored)  # every ledger row names a Dagster run
    by_run = {(r[0], r[1]): r[2:] for r in ledger}
    assert by_run[(run_a, 2024)] == ("live", "succeeded")
    assert by_run[(backfill_runs["2025"], 2025)] == by_run[(backfill_runs["2026"], 2026)] == ("live", "succeeded")
    assert not {run_c, run_x} & {r[0] for r in ledger}  # checks runs write nothing, not even a ledger row

    # --- what the UI shows: metadata, sources, freshness, the location's name ------------------------------------
    for name in TARGET_NAMES:
        node = nodes[(name,)]
        schema = {e["label"]: e for e in node["metadataEntries"]}["dagster/column_schema"]
        assert schema["__typename"] == "TableSchemaMetadataEntry" and len(schema["schema"]["columns"]) >= 5
        assert node["internalFreshnessPolicy"] == {
            "__typename": "TimeWindowFreshnessPolicy",
            "failWindowSeconds": 36 * 3600,
        }
        assert node["partitionDefinition"] == {"type": "STATIC"}
    source = nodes[("account_plans",)]
    assert source["partitionDefinition"] is None and not source["isExecutable"]
    observations = services.asset_events("account_plans")["assetObservations"]
    read = {
        o["runId"]: {e["label"]: e.get("intValue", e.get("text")) for e in o["metadataEntries"]} for o in observations
    }
    assert (
        read[run_a]["fiscal_year"] == "2024"
        and read[run_a]["rows_read"] > 0
        and all(o["partition"] is None for o in observations)
    )
    assert [e["name"] for e in services.gql(WORKSPACE)["workspaceOrError"]["locationEntries"]] == [LOCATION]

    # --- the launchpads: no job starts with dry_run: false; the dry-run and checks jobs say they are read-only ---
    for job in ("compliance_sync_job", "compliance_sync_dry_run_job", "compliance_checks_job"):
        shown = services.gql(
            LAUNCHPAD, selector={"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION, "pipelineName": job}
        )
        yaml_first = shown["runConfigSchemaOrError"]["rootDefaultYaml"]
        assert "dry_run" not in yaml_first and "diff_limit: 50" in yaml_first, (job, yaml_first)
        description = shown["pipelineOrError"]["description"]
        assert ("Read-only" in description) == (job != "compliance_sync_job"), (job, description)
        [step] = shown["pipelineOrError"]["solidHandles"]
        assert "into the four planning tables" not in step["solid"]["definition"]["description"]
    for name in ("compliance_sync_dry_run_job", "compliance_checks_job"):
        picked = services.gql(
            CONFIG_PARTITION_SELECTION,
            repositorySelector={"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION},
            partitionSetName=f"{name}_partition_set",
            partitionName="2025",
        )["partitionSetOrError"]["partition"]
        assert "dry_run: true" in picked["runConfigOrError"]["yaml"], picked


# --- the `dg` command line on the project ([tool.dg] in pyproject.toml) --------------------------------------------
DG = BIN / "dg"
DG_TIMEOUT_S = 240


def _dg_env(tmp_path: pathlib.Path, demo_db: str, **extra: str) -> dict[str, str]:
    """The environment of a ``dg`` command: the demo database, a throwaway DAGSTER_HOME (SQLite, telemetry off)."""
    from compliance_sync_tests.conftest import dagster_home

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPLIANCE_SYNC_", "DAGSTER_", "SUPABASE_", "NEXT_PUBLIC_SUPABASE"))
    }
    home = tmp_path / "dg_home"
    if not home.exists():
        dagster_home(home)
    return (
        env
        | {
            "DAGSTER_HOME": str(home),
            "SUPABASE_DB_URL": demo_db,
            "COMPLIANCE_SYNC_BU_MAP": str(EXAMPLE_BU_MAP),
            "COMPLIANCE_SYNC_FIRST_FY": "2024",
            "COMPLIANCE_SYNC_FY_START_MONTH": "1",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
        | extra
    )


def _dg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DG), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DG_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def test_dg_check_defs_loads_the_location_and_names_a_bad_setting(demo_db, tmp_path):
    ok = _dg(_dg_env(tmp_path, demo_db), "check", "defs")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "All definitions loaded successfully." in ok.stdout + ok.stderr
    bad = _dg(_dg_env(tmp_path, demo_db, COMPLIANCE_SYNC_SCHEDULE_CRON="61 6 * * *"), "check", "defs")
    assert bad.returncode != 0
    assert (
        "SettingsLoadError: COMPLIANCE_SYNC_SCHEDULE_CRON: '61 6 * * *' is not a valid cron schedule"
        in bad.stdout + bad.stderr
    )


def test_dg_list_defs_shows_the_assets_jobs_schedule_and_sensors(demo_db, tmp_path):
    import json

    out = _dg(_dg_env(tmp_path, demo_db), "list", "defs", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    listed = json.loads(out.stdout)
    assert {a["asset_key"] for a in listed["assets"]} >= {*TARGET_NAMES, "account_plans"}
    jobs = {j["name"]: j["description"] for j in listed["jobs"]}
    assert set(jobs) >= {"compliance_sync_job", "compliance_sync_dry_run_job", "compliance_checks_job"}
    assert "Read-only" in jobs["compliance_sync_dry_run_job"] and "Read-only" in jobs["compliance_checks_job"]
    assert [(s["name"], s["cron_schedule"]) for s in listed["schedules"]] == [("compliance_sync_daily", "0 6 * * *")]
    assert listed["resources"] == [
        {"name": "compliance_sync", "type": "compliance_sync.definitions.resources.ComplianceSyncResource"}
    ]
    assert {s["name"] for s in listed["sensors"]} == {
        "compliance_sync_failure_alert",
        "compliance_sync_on_change",
        "compliance_report_automation",
    }
    assert "compliance_report" in {a["asset_key"] for a in listed["assets"]}
    assert {(c["asset_key"], c["name"]) for c in listed["asset_checks"]} >= {
        (TERRITORY, "unused_strategies"),
        (APAC, "write_guards"),
    }


def test_dg_launch_materialises_one_fiscal_year(demo_db, tmp_path, monkeypatch):
    """``dg launch --assets <one target> --partition 2025``: the four targets of FY2025 written, recorded as the
    materialisation of that partition, with the as_of the run computed with in the metadata."""
    import dagster as dg

    env = _dg_env(tmp_path, demo_db)
    out = _dg(env, "launch", "--assets", REQUIREMENTS, "--partition", "2025")
    assert out.returncode == 0, out.stdout + out.stderr
    with psycopg.connect(demo_db) as conn:
        rows = {
            t: conn.execute(f"SELECT count(*) FROM {t} WHERE fiscal_year = 2025").fetchone()[0] for t in TARGET_NAMES
        }
        ledger = conn.execute("SELECT fiscal_year, mode, status FROM compliance_sync_runs").fetchall()
    assert rows[APAC] == 1 and rows[BUSINESS_UNIT] == 3 and rows[REQUIREMENTS] > 100, rows
    assert ledger == [(2025, "live", "succeeded")]
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])  # the instance dg launch recorded the run in
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert run.tags["dagster/partition"] == "2025"
        for name in TARGET_NAMES:
            assert instance.get_materialized_partitions(dg.AssetKey(name)) == {"2025"}, name
        [mat] = instance.fetch_materializations(dg.AssetKey(APAC), limit=1).records
        meta = mat.asset_materialization.metadata
        # today in the configured timezone, clamped to FY2025's last day (UTC's today may be a day off it)
        today = dt.date.today()
        clamped = {min(today + dt.timedelta(days=d), dt.date(2025, 12, 31)).isoformat() for d in (-1, 0, 1)}
        assert meta["as_of"].value in clamped
        assert meta[SUMMARY].value["status"] == "written"


@pytest.mark.slow  # the webserver and daemon starting: most of a minute on a shared machine
def test_dg_dev_serves_the_ui_and_stops_by_pid(demo_db, tmp_path):
    """``dg dev`` starts the webserver and daemon on the project; the UI answers with the location loaded
    under its name; stopping its process group (by the pid this test started) ends it."""
    env = _dg_env(tmp_path, demo_db)
    port = _free_port()
    log = open(tmp_path / "dg_dev.log", "wb")
    try:
        proc = subprocess.Popen(
            [str(DG), "dev", "--port", str(port), "--host", "127.0.0.1"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        log.close()
    try:
        deadline, entry = time.monotonic() + DG_TIMEOUT_S, None
        with httpx.Client(timeout=10) as http:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    body = http.post(f"http://127.0.0.1:{port}/graphql", json={"query": WORKSPACE}).json()
                    entries = body["data"]["workspaceOrError"]["locationEntries"]
                    entry = next((e for e in entries if e["loadStatus"] == "LOADED" and e["locationOrLoadError"]), None)
                except (httpx.TransportError, KeyError, TypeError, ValueError):
                    entry = None
                if entry:
                    break
                time.sleep(1)
            assert entry, (
                f"dg dev did not serve a loaded location within {DG_TIMEOUT_S} s\n"
                f"{(tmp_path / 'dg_dev.log').read_text()[-3000:]}"
            )
            assert entry["name"] == LOCATION and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            page = http.get(f"http://127.0.0.1:{port}/")
            assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this test started: dg dev, dagster dev, webserver, daemon
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and _group_alive(proc.pid):
            time.sleep(0.2)
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert not _group_alive(proc.pid)
