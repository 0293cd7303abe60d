"""The benchmark of the issue, one command: datasets, every system side by side, one Markdown table.

    .venv/bin/python benchmarks/run.py [--quick] [--with-20m] [--repeat N] [--raw results.json]
                                       [--datasets demo,2k,20k,20m] [--only a,c,d,e,f,g,h] [--keep-datasets]

Datasets (FY2026, as_of 2026-11-20, the demo's "today"), each loaded once into a template database:
``demo`` (60 clients), ``2k`` (2,000 plans, ~200k events), ``20k`` (20,000 plans, ~2M events) and, with
``--with-20m``, ``20m`` (20,000 plans, ~20M events). Systems, each a whole process (wall time and peak RSS
of that one process, from GNU time, see :func:`run_child`) unless said otherwise, each first sync on a fresh
clone of the template (``CREATE DATABASE … TEMPLATE …``) so that every system starts from the identical state:

    a  the command line, direct PostgreSQL, live first sync        compliance-sync --year 2026 --as-of … --json
    b  the same, rerun on a's clone (nothing changes)
    c  the command line, dry run (first-sync diff)                  … --dry-run
    d  the command line over the REST API (the PostgREST look-alike of compliance_sync_tests), live first sync
    e  the pure-SQL baseline, first sync, then its rerun on its own synced clone (e')
    f  the old script's write pattern over the same REST server   (benchmarks/old_script.py)
    g  Dagster's overhead in one warm process: execute_in_process minus run_fiscal_year called directly
                                                                   (benchmarks/dagster_overhead.py)
    h  the floor: python -c 'import dagster'                        (with the demo dataset)

The trials run interleaved: each repeat runs every system once, in an order rotated per repeat. Ratios are
computed per repeat (systems measured minutes apart, not hours) and the table shows their median.
``--quick`` (smoke test of the harness): the demo and 2k datasets, one repeat. Every database created here
(names ``cs_bench_<run id>_…``) is dropped at the end, on an error and on Ctrl-C / SIGTERM; every child
process is stopped by its PID. The server is ``COMPLIANCE_SYNC_TEST_DATABASE_URL`` or
postgresql://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import pathlib
import platform
import secrets
import select
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
PYTHON = sys.executable
CLI = str(pathlib.Path(sys.executable).parent / "compliance-sync")
BU_MAP = str(ROOT / "compliance_sync" / "bu_map.example.yaml")
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
YEAR, AS_OF = 2026, "2026-11-20"
FY_START, FY_END = "2026-01-01", "2026-12-31"
CHILD_TIMEOUT_S = 3 * 3600
REQ = "account_plan_event_requirements"

# targets of the issue
RSS_LIMIT_MB = 400
A_OVER_E = 1.5
B_OVER_E = 1.5
WRITE_SPEEDUP = 10
G_SHARE = 0.05
DEMO_OVER_H = 1.3
EXPONENT_MAX = 1.1  # "linear in events": log-log slope at most 1.1 between the datasets that are not demo
RSS_20M_OVER_2M = 1.5


@dataclasses.dataclass(frozen=True)
class Dataset:
    key: str
    label: str
    clients: int
    plans_per_client: int
    events_scale: float


DEMO = Dataset("demo", "demo", 60, 1, 1.0)
D2K = Dataset("2k", "2k plans / 0.2M ev.", 1000, 2, 3.5)
D20K = Dataset("20k", "20k plans / 2M ev.", 10_000, 2, 3.5)
D20M = Dataset("20m", "20k plans / 20M ev.", 10_000, 2, 35.0)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- what was started here, and its cleanup ---------------------------------------------------------------------
class Janitor:
    """Databases created and processes started by this run; :meth:`cleanup` drops and stops them (by PID)."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.databases: list[str] = []
        self.procs: dict[int, subprocess.Popen] = {}
        self.lock = threading.Lock()

    def url(self, name: str) -> str:
        params = conninfo_to_dict(self.server)
        params["dbname"] = name
        return make_conninfo(**params)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.server, autocommit=True)

    def create(self, name: str, template: str | None = None, track: bool = True) -> str:
        if track:
            self.databases.append(name)
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        for attempt in range(5):  # a template briefly in use (autovacuum) refuses to be copied
            try:
                with self.admin() as conn:
                    conn.execute(query)
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 4:
                    raise
                time.sleep(2)
        return self.url(name)

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if name in self.databases:
            self.databases.remove(name)

    def started(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs[proc.pid] = proc

    def finished(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.pop(proc.pid, None)

    def signal(self, proc: subprocess.Popen, sig: int) -> None:
        """Signal a child started here, and what it runs (GNU time's command): every child is started in a
        session of its own, so its PID is its process group's id and the group holds only what it started."""
        with self.lock:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)

    def stop(self, proc: subprocess.Popen, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL; reaped here."""
        self.signal(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(proc, signal.SIGKILL)
            proc.wait(timeout=timeout)
        except ChildProcessError:
            pass
        self.finished(proc)

    def cleanup(self) -> None:
        for proc in list(self.procs.values()):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for name in list(self.databases):
            try:
                self.drop(name)
            except Exception as exc:  # keep dropping the others
                say(f"could not drop {name}: {exc}")
        if self.databases:
            say("NOT dropped: " + ", ".join(self.databases))


JANITOR: Janitor  # set in main()


# --- running a child process --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Child:
    wall: float
    rss_mb: float
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        """The one JSON object the process printed on stdout (the CLI's ``--json``, the scripts' one line)."""
        text = self.stdout.strip()
        try:
            return json.loads(text)
        except ValueError:
            return json.loads(text.splitlines()[-1]) if text else {}


GNU_TIME = "/usr/bin/time"


def _gnu_time() -> bool:
    try:
        out = subprocess.run([GNU_TIME, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "GNU" in out.stdout + out.stderr


HAVE_GNU_TIME = _gnu_time()


def vm_hwm_mb(pid: int) -> float | None:
    """The peak RSS so far of a live process (VmHWM: its own address space's high-water mark)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_child(cmd: list[str], env: dict[str, str], cwd: str, timeout: float = CHILD_TIMEOUT_S) -> Child:
    """One process: its wall time and its own peak RSS.

    Not ``os.wait4``'s ru_maxrss of a direct child: Linux seeds a child's maxrss with the high-water mark of
    the address space it had before ``exec`` (this parent's, fork or vfork), so every child would report at
    least this harness's own peak. GNU time runs the command instead (its own address space is ~2 MB) and
    reports the command's ru_maxrss; without GNU time, /proc/<pid>/status VmHWM is polled every 20 ms."""
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file,
    ):
        argv = [GNU_TIME, "-f", "%M", "-o", rss_file.name, *cmd] if HAVE_GNU_TIME else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True, start_new_session=True
        )
        JANITOR.started(proc)
        polled: list[float] = []
        done = threading.Event()

        def poll() -> None:
            while not done.wait(0.02):
                hwm = vm_hwm_mb(proc.pid)
                if hwm is not None:
                    polled.append(hwm)

        def expire() -> None:
            JANITOR.signal(proc, signal.SIGKILL)

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        poller = None
        if not HAVE_GNU_TIME:
            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
        try:
            _, status, _usage = os.wait4(proc.pid, 0)
            with JANITOR.lock:
                proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            timer.cancel()
            done.set()
        wall = time.perf_counter() - start
        JANITOR.finished(proc)
        out.seek(0)
        err.seek(0)
        if HAVE_GNU_TIME:
            lines = [line for line in rss_file.read().splitlines() if line.strip()]
            rss_mb = int(lines[-1]) / 1024 if lines and lines[-1].strip().isdigit() else float("nan")
        else:
            rss_mb = max(polled, default=float("nan"))
        return Child(wall, rss_mb, proc.returncode, out.read(), err.read())


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SUPABASE_", "NEXT_PUBLIC_SUPABASE", "COMPLIANCE_SYNC_", "DAGSTER_"))
    }
    env["COMPLIANCE_SYNC_BU_MAP"] = BU_MAP
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class RestServer:
    """``python -m compliance_sync_tests.postgrest_server`` over one database; stopped by PID (peak RSS kept)."""

    def __init__(self, db_url: str, cwd: str) -> None:
        cmd = [
            PYTHON,
            "-m",
            "compliance_sync_tests.postgrest_server",
            "--database-url",
            db_url,
            "--port",
            "0",
            "--jwt-secret",
            secrets.token_hex(24),
        ]
        self.proc = subprocess.Popen(
            cmd,
            env=base_env(),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        JANITOR.started(self.proc)
        self.rss_mb = 0.0
        values: dict[str, str] = {}
        buf = b""
        deadline = time.monotonic() + 60
        fd = self.proc.stdout.fileno()
        while len(values) < 2:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("the REST test server did not start")
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 4096)
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    k, _, v = line.decode().partition("=")
                    values[k.strip()] = v.strip()
        self.url, self.key = values["NEXT_PUBLIC_SUPABASE_URL"], values["SUPABASE_SERVICE_ROLE_KEY"]

    def env(self) -> dict[str, str]:
        return base_env() | {
            "NEXT_PUBLIC_SUPABASE_URL": self.url,
            "SUPABASE_SERVICE_ROLE_KEY": self.key,
            "COMPLIANCE_SYNC_REST_PAGE_SIZE": "1000",
        }

    def stop(self) -> None:
        self.rss_mb = vm_hwm_mb(self.proc.pid) or 0.0  # idle now: its peak is behind it
        JANITOR.stop(self.proc)
        self.proc.stdout.close()


class DagsterWorker:
    """benchmarks/dagster_overhead.py: one warm process per dataset, one JSON command per line."""

    def __init__(self, cwd: str, log: pathlib.Path) -> None:
        self.log = open(log, "a")
        cmd = [PYTHON, str(BENCH / "dagster_overhead.py")]
        self.proc = subprocess.Popen(
            cmd,
            env=base_env(),
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )
        JANITOR.started(self.proc)
        self.ready = self._read(300)

    def _read(self, timeout: float) -> dict[str, Any]:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the Dagster worker did not answer (see {self.log.name})")
        return json.loads(line)

    def ask(self, op: str, url: str | None = None) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"op": op, "url": url}) + "\n")
        self.proc.stdin.flush()
        answer = self._read(CHILD_TIMEOUT_S)
        if not answer.get("ok"):
            raise RuntimeError(f"Dagster worker, {op}: {answer.get('error')}\n{answer.get('trace', '')}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        JANITOR.stop(self.proc)
        self.log.close()


# --- datasets ---------------------------------------------------------------------------------------------------
def dataset_fingerprint(ds: Dataset) -> str:
    h = hashlib.sha256(repr(dataclasses.astuple(ds)).encode())
    package = ROOT / "compliance_sync"
    for path in (package / "devtools" / "demo.py", package / "migrations" / "full.sql"):
        h.update(path.read_bytes())
    return h.hexdigest()[:8]


def build_dataset(ds: Dataset, run_id: str, keep: bool) -> dict[str, Any]:
    """The template database of a dataset (reused when ``keep`` and it exists); returns its facts."""
    from compliance_sync.backends.postgres.migrate import apply_full
    from compliance_sync.devtools.demo import load_demo_data

    name = f"cs_bench_tpl_{ds.key}_{dataset_fingerprint(ds)}" if keep else f"cs_bench_{run_id}_tpl_{ds.key}"
    with JANITOR.admin() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
    load_s = None
    if not exists:
        say(f"loading {ds.label} into {name}")
        url = JANITOR.create(name, track=not keep)
        started = time.perf_counter()
        try:
            with psycopg.connect(url) as conn:
                apply_full(conn)
                load_demo_data(
                    conn, clients=ds.clients, plans_per_client=ds.plans_per_client, events_scale=ds.events_scale
                )
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        except BaseException:
            if keep:  # a half-loaded kept template must not be reused
                JANITOR.drop(name)
            raise
        load_s = time.perf_counter() - started
    url = JANITOR.url(name)
    with JANITOR.admin() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
    with psycopg.connect(url) as conn:
        q = conn.execute
        facts = {
            "template": name,
            "plans": q(
                "SELECT count(*) FROM account_plans WHERE fiscal_year = %s AND status IS DISTINCT FROM 'archived'",
                (YEAR,),
            ).fetchone()[0],
            "events": q("SELECT count(*) FROM segmentation_events").fetchone()[0],
            "fy_events": q(
                "SELECT count(*) FROM segmentation_events WHERE event_date BETWEEN %s AND %s", (FY_START, FY_END)
            ).fetchone()[0],
            "size_mb": q("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20,
            "load_s": load_s,
        }
    with JANITOR.admin() as conn:  # nobody writes into a template by mistake
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
    return facts


# --- the trials -------------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, run_id: str, workdir: str) -> None:
        self.run_id = run_id
        self.cwd = workdir
        self.results: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.failures: list[str] = []
        self.seq = 0

    def record(self, ds: Dataset, system: str, r: int, value: dict[str, Any]) -> None:
        value["repeat"] = r
        self.results.setdefault(ds.key, {}).setdefault(system, []).append(value)

    @contextlib.contextmanager
    def clone(self, ds: Dataset, template: str, tag: str):
        self.seq += 1
        name = f"cs_bench_{self.run_id}_{ds.key}_{tag}_{self.seq}"
        url = JANITOR.create(name, template=template)
        try:
            yield url
        finally:
            JANITOR.drop(name)

    def child(
        self,
        ds: Dataset,
        system: str,
        r: int,
        cmd: list[str],
        env: dict[str, str],
        expect: Callable[[dict], str | None],
    ) -> dict | None:
        c = run_child(cmd, env, self.cwd)
        try:
            data = c.json()
        except ValueError:
            data = {}
        problem = f"exit {c.code}" if c.code else expect(data)
        if problem:
            msg = f"{ds.key} {system} repeat {r + 1}: {problem}: {data.get('error') or c.stderr.strip()[-800:]}"
            self.failures.append(msg)
            say("FAILED " + msg)
            return None
        value = {"wall": c.wall, "rss_mb": c.rss_mb, "json": data}
        self.record(ds, system, r, value)
        return value

    def cli(self, *extra: str) -> list[str]:
        return [CLI, "--year", str(YEAR), "--as-of", AS_OF, "--json", *extra]

    # a, then b on the same clone
    def trial_a(self, ds: Dataset, tpl: str, r: int) -> None:
        with self.clone(ds, tpl, "a") as url:
            env = base_env() | {"SUPABASE_DB_URL": url}
            if self.child(ds, "a", r, self.cli(), env, status_is("written")):
                self.child(ds, "b", r, self.cli(), env, status_is("unchanged"))

    def trial_c(self, ds: Dataset, tpl: str, r: int) -> None:
        with self.clone(ds, tpl, "c") as url:
            env = base_env() | {"SUPABASE_DB_URL": url}
            self.child(ds, "c", r, self.cli("--dry-run"), env, status_is("dry_run"))

    def trial_d(self, ds: Dataset, tpl: str, r: int) -> None:
        with self.clone(ds, tpl, "d") as url:
            server = RestServer(url, self.cwd)
            try:
                value = self.child(ds, "d", r, self.cli(), server.env(), status_is("written", backend="rest"))
            finally:
                server.stop()
            if value:
                value["server_rss_mb"] = server.rss_mb

    def trial_e(self, ds: Dataset, tpl: str, r: int) -> None:
        with self.clone(ds, tpl, "e") as url:
            cmd = [
                PYTHON,
                str(BENCH / "pure_sql.py"),
                "--database-url",
                url,
                "--year",
                str(YEAR),
                "--as-of",
                AS_OF,
                "--bu-map",
                BU_MAP,
            ]
            if self.child(ds, "e", r, cmd, base_env(), has("seconds")):
                self.child(ds, "e_rerun", r, cmd, base_env(), has("seconds"))

    def trial_f(self, ds: Dataset, tpl: str, r: int) -> None:
        with self.clone(ds, tpl, "f") as url:
            server = RestServer(url, self.cwd)
            try:
                value = self.child(
                    ds,
                    "f",
                    r,
                    [PYTHON, str(BENCH / "old_script.py"), "--year", str(YEAR), "--as-of", AS_OF],
                    server.env(),
                    has("write_s"),
                )
            finally:
                server.stop()
            if value:
                value["server_rss_mb"] = server.rss_mb

    def trial_g(self, ds: Dataset, tpl: str, r: int, worker: DagsterWorker, op: str) -> None:
        with self.clone(ds, tpl, "g" + op[:3]) as url:
            try:
                answer = worker.ask(op, url)
            except RuntimeError as exc:
                self.failures.append(f"{ds.key} g/{op} repeat {r + 1}: {exc}")
                say(f"FAILED {ds.key} g/{op}: {exc}")
                return
        if answer.get("error") or answer.get("status") != "written":
            self.failures.append(
                f"{ds.key} g/{op} repeat {r + 1}: status {answer.get('status')}: {answer.get('error')}"
            )
            return
        self.record(ds, "g_" + op, r, {"wall": answer["seconds"], "json": answer})

    def trial_h(self, ds: Dataset, tpl: str, r: int) -> None:
        self.child(ds, "h", r, [PYTHON, "-c", "import dagster"], base_env(), lambda _d: None)


def status_is(status: str, backend: str | None = None) -> Callable[[dict], str | None]:
    def check(data: dict) -> str | None:
        if data.get("status") != status:
            return f"status {data.get('status')!r}, expected {status!r}"
        if backend and data.get("backend") != backend:
            return f"backend {data.get('backend')!r}, expected {backend!r}"
        return None

    return check


def has(key: str) -> Callable[[dict], str | None]:
    return lambda data: None if key in data else f"no {key!r} in the output"


# --- figures ----------------------------------------------------------------------------------------------------
def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else None


def by_repeat(runs: list[dict]) -> dict[int, dict]:
    return {v["repeat"]: v for v in runs}


def paired(results: dict, x: str, y: str, fx: Callable[[dict], float], fy: Callable[[dict], float]) -> list[float]:
    """Per-repeat ratios fx(x) / fy(y), for the repeats where both ran."""
    xs, ys = by_repeat(results.get(x, [])), by_repeat(results.get(y, []))
    out = []
    for r in sorted(set(xs) & set(ys)):
        a, b = fx(xs[r]), fy(ys[r])
        if a is not None and b:
            out.append(a / b)
    return out


def wall(v: dict) -> float:
    return v["wall"]


def timing(name: str) -> Callable[[dict], float | None]:
    return lambda v: v["json"].get("timings", {}).get(name)


def phases_total(v: dict) -> float | None:
    t = v["json"].get("timings", {})
    return sum(t.get(k, 0.0) for k in ("read_s", "compute_s", "plan_s", "write_s")) if t else None


def num(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def fmt_s(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


def fmt_x(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×" if x < 100 else f"{x:.0f}×"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "**met**" if ok else "**not met**"


def verdict_at(ds: Dataset, ok: bool | None) -> str:
    """The issue's ratio targets are set at 20,000 plans / 2M events; other sizes are shown for the trend."""
    return verdict(ok) if ds.key == "20k" else "(target at 20k)"


SYSTEMS = {
    "a": "a: CLI, first sync (direct)",
    "b": "b: CLI, rerun (no change)",
    "c": "c: CLI, dry run (first-sync diff)",
    "d": "d: CLI over REST, first sync",
    "e": "e: pure SQL, first sync",
    "e_rerun": "e′: pure SQL, rerun",
    "f": "f: old script's writes over REST",
    "g_direct": "g: run_fiscal_year, in a warm process",
    "g_dagster": "g: execute_in_process, same process",
    "h": "h: python -c 'import dagster'",
}


def req_rows(system: str, v: dict) -> int | None:
    j = v["json"]
    if system in ("a", "b", "c", "d"):
        return j.get("requirement_rows")
    if system in ("e", "e_rerun"):
        return None
    if system == "f":
        return j.get("requirement_rows")
    if system.startswith("g_"):
        return None
    return None


def detail(system: str, runs: list[dict]) -> str:
    if system in ("a", "b", "c", "d"):
        parts = [
            f"{k[:-2]} {med([timing(k)(v) for v in runs]):.2f}"
            for k in ("read_s", "compute_s", "plan_s", "write_s")
            if med([timing(k)(v) for v in runs]) is not None
        ]
        extra = ""
        if system == "d":
            extra = f"; REST server peak RSS {num(med([v.get('server_rss_mb') for v in runs]), '.0f')} MB"
        counts = runs[0]["json"].get("targets", {}).get(REQ, {})
        return (
            "phases (s): "
            + " · ".join(parts)
            + f"; {REQ.split('_')[-1]}: ins {counts.get('inserted', 0):,} / unch {counts.get('unchanged', 0):,}"
            + extra
        )
    if system in ("e", "e_rerun"):
        counts = runs[0]["json"].get("targets", {}).get(REQ, {})
        return (
            f"SQL transaction {med([v['json']['seconds'] for v in runs]):.2f} s; "
            f"requirements ins {counts.get('inserted', 0):,}"
        )
    if system == "f":
        j = runs[0]["json"]
        return (
            f"read {med([v['json']['read_s'] for v in runs]):.2f} · "
            f"compute {med([v['json']['compute_s'] for v in runs]):.2f} · "
            f"write {med([v['json']['write_s'] for v in runs]):.2f} s; {j['requests']:,} write requests; "
            f"REST server peak RSS {num(med([v.get('server_rss_mb') for v in runs]), '.0f')} MB"
        )
    if system == "g_direct":
        return "phases (s): " + " · ".join(
            f"{k[:-2]} {med([v['json']['timings'].get(k) for v in runs]):.2f}"
            for k in ("read_s", "compute_s", "plan_s", "write_s")
        )
    if system == "g_dagster":
        keys = ("instance_s", "definitions_s", "execute_s", "summary_s")
        return "parts (s): " + " · ".join(f"{k[:-2]} {med([v['json'][k] for v in runs]):.2f}" for k in keys)
    return ""


def table(bench: Bench, datasets: list[Dataset], facts: dict[str, dict], repeats: int) -> str:
    R = bench.results
    lines = [
        "| dataset | row | median | peak RSS MB | req. rows/s | detail | target | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(*cells: Any) -> None:
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")

    # systems
    for ds in datasets:
        res = R.get(ds.key, {})
        label = ds.label
        for system, name in SYSTEMS.items():
            runs = res.get(system)
            if not runs:
                continue
            w = med([v["wall"] for v in runs])
            rss = med([v.get("rss_mb") for v in runs]) if "rss_mb" in runs[0] else None
            n = req_rows(system, runs[0])
            rate = f"{n / w:,.0f}" if n and w else "–"
            target, ok = "", None
            if system in ("a", "b", "c"):
                target, ok = f"RSS ≤ {RSS_LIMIT_MB} MB", rss is not None and rss <= RSS_LIMIT_MB
            row(
                label,
                name,
                fmt_s(w) + f" (n={len(runs)})",
                "–" if rss is None else f"{rss:.0f}",
                rate,
                detail(system, runs),
                target,
                verdict(ok) if target else "",
            )

    # ratios
    for ds in datasets:
        res = R.get(ds.key, {})
        if not res:
            continue

        def ran(
            *systems: str, res: dict = res
        ) -> bool:  # rows of systems not run here (--only, --datasets) are left out
            return all(res.get(s) for s in systems)

        if ran("a", "e"):
            ratio = med(paired(res, "a", "e", wall, wall))
            row(
                ds.label,
                "a / e (wall, whole processes)",
                fmt_x(ratio),
                "",
                "",
                "",
                f"≤ {A_OVER_E}×",
                verdict_at(ds, None if ratio is None else ratio <= A_OVER_E),
            )
        if ran("b", "e_rerun"):
            ratio = med(paired(res, "b", "e_rerun", wall, wall))
            row(
                ds.label,
                "b / e′ (reruns on synced clones)",
                fmt_x(ratio),
                "",
                "",
                "",
                f"≤ {B_OVER_E}×",
                verdict_at(ds, None if ratio is None else ratio <= B_OVER_E),
            )
        if ran("d", "f"):
            ratio = med(paired(res, "f", "d", lambda v: v["json"]["write_s"], timing("write_s")))
            d_w, f_w = (
                med([timing("write_s")(v) for v in res.get("d", [])]),
                med([v["json"]["write_s"] for v in res.get("f", [])]),
            )
            row(
                ds.label,
                "f's write phase / d's write phase",
                fmt_x(ratio),
                "",
                "",
                f"d {fmt_s(d_w)} vs f {fmt_s(f_w)}",
                f"≥ {WRITE_SPEEDUP}× (d faster)",
                verdict_at(ds, None if ratio is None else ratio >= WRITE_SPEEDUP),
            )
        for with_instance in (True, False) if ran("g_direct", "g_dagster", "a") else ():

            def over(v: dict, wi: bool = with_instance) -> float:
                return v["wall"] - (0.0 if wi else v["json"]["instance_s"])

            diffs = {}
            dag, dirs = by_repeat(res.get("g_dagster", [])), by_repeat(res.get("g_direct", []))
            for r in set(dag) & set(dirs):
                diffs[r] = over(dag[r]) - dirs[r]["wall"]
            a_runs = by_repeat(res.get("a", []))
            shares = [diffs[r] / a_runs[r]["wall"] for r in diffs if r in a_runs]
            g = med(list(diffs.values()))
            share = med(shares)
            what = "g / a: Dagster's overhead " + (
                "incl. the ephemeral instance" if with_instance else "excl. the ephemeral instance"
            )
            row(
                ds.label,
                what,
                "–" if share is None else f"{100 * share:.1f} %",
                "",
                "",
                f"overhead {fmt_s(g)}",
                f"≤ {100 * G_SHARE:.0f} % of a",
                verdict_at(ds, None if share is None else share <= G_SHARE),
            )
        if ds.key == DEMO.key and ran("a", "h"):
            ratio = med(paired(res, "a", "h", wall, wall))
            others = ", ".join(f"{s}/h {fmt_x(med(paired(res, s, 'h', wall, wall)))}" for s in ("b", "c") if res.get(s))
            row(
                ds.label,
                "demo CLI (a) / h",
                fmt_x(ratio),
                "",
                "",
                others,
                f"≤ {DEMO_OVER_H}×",
                verdict(None if ratio is None else ratio <= DEMO_OVER_H),
            )

    # cost exponents between datasets
    present = [ds for ds in datasets if R.get(ds.key, {}).get("a")]
    if len(present) >= 2:
        pairs = list(zip(present, present[1:]))
        span = " · ".join(f"{p.key}→{q.key}" for p, q in pairs)

        def slope(p: Dataset, q: Dataset, system: str, fn: Callable[[dict], float | None]) -> float | None:
            tp = med([fn(v) for v in R[p.key].get(system, [])])
            tq = med([fn(v) for v in R[q.key].get(system, [])])
            ep, eq = facts[p.key]["fy_events"], facts[q.key]["fy_events"]
            if not tp or not tq or tp <= 0 or tq <= 0:
                return None
            return math.log(tq / tp) / math.log(eq / ep)

        quantities: list[tuple[str, str, Callable[[dict], float | None], bool]] = [
            ("a", "read_s", timing("read_s"), True),
            ("a", "compute_s", timing("compute_s"), True),
            ("a", "plan_s", timing("plan_s"), True),
            ("a", "write_s", timing("write_s"), True),
            ("a", "read+compute+plan+write", phases_total, True),
            ("d", "read+compute+plan+write", phases_total, True),
            ("a", "whole process", wall, False),
            ("b", "whole process", wall, False),
            ("c", "whole process", wall, False),
            ("d", "whole process", wall, False),
            ("e", "whole process", wall, False),
            ("f", "whole process", wall, False),
            ("a", "peak RSS", lambda v: v.get("rss_mb"), False),
        ]
        for system, what, fn, judged in quantities:
            if not any(R[ds.key].get(system) for ds in present):
                continue
            slopes = [slope(p, q, system, fn) for p, q in pairs]
            text = " · ".join("–" if s is None else f"{s:.2f}" for s in slopes)
            judged_slopes = [s for (p, _q), s in zip(pairs, slopes) if p.key != DEMO.key and s is not None]
            ok = None if not judged or not judged_slopes else all(s <= EXPONENT_MAX for s in judged_slopes)
            target = f"≤ {EXPONENT_MAX} (pairs after demo)" if judged else "(information)"
            row(span, f"cost exponent: {system} {what}", text, "", "", "", target, verdict(ok) if judged else "")

    # 20M against 2M
    if R.get(D20M.key) and R.get(D20K.key):
        for system in ("a", "b", "c", "d"):
            if not (R[D20M.key].get(system) and R[D20K.key].get(system)):
                continue
            ratio = med(
                paired(
                    {"x": R[D20M.key].get(system, []), "y": R[D20K.key].get(system, [])},
                    "x",
                    "y",
                    lambda v: v["rss_mb"],
                    lambda v: v["rss_mb"],
                )
            )
            row(
                "20M vs 2M events",
                f"peak RSS of {system} at 20M / at 2M",
                fmt_x(ratio),
                "",
                "",
                "",
                f"≤ {RSS_20M_OVER_2M}×",
                verdict(None if ratio is None else ratio <= RSS_20M_OVER_2M),
            )
    return "\n".join(lines)


def consistency(bench: Bench, datasets: list[Dataset]) -> list[str]:
    """Do the systems agree on what they wrote? (requirement rows of the first syncs)"""
    notes = []
    for ds in datasets:
        res = bench.results.get(ds.key, {})
        counts = {}
        for system in ("a", "c", "d"):
            if res.get(system):
                counts[system] = res[system][0]["json"].get("targets", {}).get(REQ, {}).get("inserted")
        if res.get("e"):
            counts["e"] = res["e"][0]["json"].get("targets", {}).get(REQ, {}).get("inserted")
        if res.get("f"):
            counts["f"] = res["f"][0]["json"].get("requirement_rows")
        if len(set(counts.values())) > 1:
            notes.append(f"{ds.key}: the systems disagree on the requirement rows of a first sync: {counts}")
        elif counts:
            notes.append(
                f"{ds.key}: every first sync wrote {next(iter(counts.values())):,} requirement rows "
                f"({', '.join(counts)})"
            )
    return notes


# --- main -------------------------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="the demo and 2k datasets, one repeat (a smoke test of the harness)"
    )
    p.add_argument(
        "--with-20m", action="store_true", help="add 20,000 plans with ~20M events (loading takes several minutes)"
    )
    p.add_argument("--repeat", type=int, default=None, help="repeats per dataset (default 3; 1 with --quick)")
    p.add_argument("--raw", help="also write every measurement to this JSON file")
    p.add_argument(
        "--keep-datasets",
        action="store_true",
        help="keep the template databases (cs_bench_tpl_*) and reuse them next time",
    )
    p.add_argument(
        "--datasets", help="comma-separated datasets to run (demo,2k,20k,20m); overrides --quick / --with-20m's choice"
    )
    p.add_argument("--only", help="comma-separated systems to run (a,c,d,e,f,g,h; b runs with a); default all")
    args = p.parse_args()
    repeats = args.repeat or (1 if args.quick else 3)
    datasets = [DEMO, D2K] if args.quick else [DEMO, D2K, D20K] + ([D20M] if args.with_20m else [])
    if args.datasets:
        wanted = args.datasets.split(",")
        datasets = [ds for ds in (DEMO, D2K, D20K, D20M) if ds.key in wanted]
        if len(datasets) != len(wanted):
            p.error(f"--datasets: unknown name in {args.datasets!r} (demo, 2k, 20k, 20m)")
    only = set((args.only or "a,c,d,e,f,g,h").split(","))

    server = os.environ.get("COMPLIANCE_SYNC_TEST_DATABASE_URL") or DEFAULT_SERVER
    run_id = secrets.token_hex(4)
    global JANITOR
    JANITOR = Janitor(server)

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    command = " ".join(
        shlex.quote(a)
        for a in [os.path.relpath(PYTHON, os.getcwd()) if PYTHON.startswith(os.getcwd()) else PYTHON, *sys.argv]
    )
    started = time.perf_counter()
    facts: dict[str, dict] = {}
    workdir = tempfile.mkdtemp(prefix="cs_bench_")  # no .env here: the children see only the environment given
    bench = Bench(run_id, workdir)
    try:
        for ds in datasets:
            facts[ds.key] = build_dataset(ds, run_id, args.keep_datasets)
            say(f"{ds.key}: {facts[ds.key]}")
        if DEMO.key not in facts:  # the Dagster worker warms up on a demo clone
            facts[DEMO.key] = build_dataset(DEMO, run_id, args.keep_datasets)
        demo_tpl = facts[DEMO.key]["template"]
        for ds in datasets:
            tpl = facts[ds.key]["template"]
            worker = None
            if "g" in only:
                say(f"{ds.key}: starting the Dagster worker and warming it up on a demo clone")
                worker = DagsterWorker(workdir, pathlib.Path(workdir) / f"dagster_worker_{ds.key}.log")
                with bench.clone(DEMO, demo_tpl, "warm") as url:
                    worker.ask("warmup", url)
            try:
                trials: list[tuple[str, Callable[[int], None]]] = []
                if "a" in only:
                    trials.append(("a+b", lambda r: bench.trial_a(ds, tpl, r)))
                if "c" in only:
                    trials.append(("c", lambda r: bench.trial_c(ds, tpl, r)))
                if "d" in only:
                    trials.append(("d", lambda r: bench.trial_d(ds, tpl, r)))
                if "e" in only:
                    trials.append(("e+e′", lambda r: bench.trial_e(ds, tpl, r)))
                if "f" in only:
                    trials.append(("f", lambda r: bench.trial_f(ds, tpl, r)))
                if worker:
                    trials.append(("g direct", lambda r: bench.trial_g(ds, tpl, r, worker, "direct")))
                    trials.append(("g dagster", lambda r: bench.trial_g(ds, tpl, r, worker, "dagster")))
                if "h" in only and ds.key == DEMO.key:
                    trials.append(("h", lambda r: bench.trial_h(ds, tpl, r)))
                for r in range(repeats):
                    k = (r * len(trials)) // repeats
                    order = trials[k:] + trials[:k]
                    for name, fn in order:
                        say(f"{ds.key} repeat {r + 1}/{repeats}: {name}")
                        fn(r)
            finally:
                if worker:
                    worker.close()
    except KeyboardInterrupt:
        say("interrupted: stopping children and dropping databases")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the cleanup is not interrupted half-way
        JANITOR.cleanup()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with contextlib.suppress(OSError):
            for f in pathlib.Path(workdir).iterdir():
                f.unlink()
            os.rmdir(workdir)

    elapsed = time.perf_counter() - started
    if args.raw:
        pathlib.Path(args.raw).write_text(
            json.dumps(
                {"command": command, "facts": facts, "results": bench.results, "failures": bench.failures},
                indent=1,
                default=str,
            )
        )
    print(
        f"Command: `{command}` ({repeats} repeat(s), {elapsed / 60:.1f} min in all; "
        f"{dt.datetime.now():%Y-%m-%d %H:%M}; "
        f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}; Python {platform.python_version()})"
    )
    print()
    print(
        "Datasets (FY2026, as_of 2026-11-20): "
        + "; ".join(
            f"{ds.key}: {facts[ds.key]['plans']:,} plans, {facts[ds.key]['fy_events']:,} FY events, "
            f"{facts[ds.key]['size_mb']:.0f} MB"
            + (f", loaded in {facts[ds.key]['load_s']:.0f} s" if facts[ds.key]["load_s"] else ", reused")
            for ds in datasets
        )
    )
    print()
    print(table(bench, datasets, facts, repeats))
    print()
    print(
        "Medians over the repeats; each ratio is computed per repeat (the two systems ran minutes apart, "
        "interleaved) and the median of those is shown. RSS: the peak resident set of that one process "
        "(GNU time's %M, else VmHWM). req. rows/s: requirement rows computed per second of wall time. "
        "Cost exponent: the slope of log(median time) against log(FY2026 events) between consecutive datasets "
        "(1.0 = linear; the demo pair is dominated by fixed costs and not judged). g: in one warm process, "
        "execute_in_process (with or without creating the ephemeral instance) minus run_fiscal_year called "
        "directly, each on a fresh clone, as a share of a's wall time in the same repeat."
    )
    for note in consistency(bench, datasets):
        print(f"- {note}")
    if bench.failures:
        print()
        print("Failures:")
        for f in bench.failures:
            print(f"- {f}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
