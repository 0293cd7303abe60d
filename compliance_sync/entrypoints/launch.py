"""The newcomer's commands: ``compliance-sync demo`` (an embedded PostgreSQL with the demo data, a sync, what
to do next, and with ``--ui`` the Dagster UI on the same data) and ``compliance-sync ui`` (the Dagster UI
and daemon for the configured database).

Both keep Dagster's records in one fixed ``DAGSTER_HOME`` under ``.compliance_sync/``; the files kept there and the
bounded waits: docs/architecture.md, "Entry points"."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from compliance_sync.config.logs import log
from compliance_sync.config.settings import EXAMPLE_BU_MAP, Settings, load_settings, read_environment
from compliance_sync.errors import ConnectionFailure, ExitCode, SettingsError, SyncError

STATE_DIR = pathlib.Path(".compliance_sync")
DAGSTER_HOME = STATE_DIR / "dagster_home"
DEMO_ENV = STATE_DIR / "demo.env"
UI_LOCK = STATE_DIR / "ui.lock"
DEMO_DAGSTER_DB = "dagster"
LOCATION_NAME = "compliance_sync"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 180.0  # dagster dev: webserver up and the code location loaded (well under a minute here)
STOP_TIMEOUT_S = 30.0  # after SIGTERM to dagster dev's process group
KILL_TIMEOUT_S = 10.0  # after SIGKILL
# `dagster dev` is "superseded by dg dev" (dagster-dg-cli, not a dependency): not a newcomer's concern
_QUIET_WARNINGS = "ignore:Function `dev_command` is superseded"


class UiError(SyncError):
    """The Dagster UI could not be started (one line; exit code 1)."""

    exit_code = ExitCode.UNEXPECTED


# ---------------------------------------------------------------------------------------------- files


def write_dagster_home(storage_url: str | None) -> pathlib.Path:
    """``.compliance_sync/dagster_home`` with a dagster.yaml (PostgreSQL storage when a URL is given, or
    ``"env"`` to read ``DAGSTER_PG_URL`` at start so no password lands on disk, else Dagster's SQLite default
    there) and a workspace.yaml naming the code location ``compliance_sync``."""
    home = DAGSTER_HOME.absolute()
    home.mkdir(parents=True, exist_ok=True)
    value = "\n      env: DAGSTER_PG_URL" if storage_url == "env" else f" {json.dumps(storage_url)}"
    storage = f"storage:\n  postgres:\n    postgres_url:{value}\n" if storage_url else ""
    (home / "dagster.yaml").write_text(
        "# written by compliance-sync (demo / ui) at every start; "
        "see dagster.yaml at the repository root for production\n"
        + storage
        + "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator\n"
        "  config:\n    tag_concurrency_limits:\n      - key: dagster/partition\n        value:\n"
        "          applyLimitPerUniqueValue: true\n        limit: 1\n"
        "python_logs:\n  managed_python_loggers:\n    - compliance_sync\n"
        "telemetry:\n  enabled: false\n",
        encoding="utf-8",
    )
    (home / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: compliance_sync.definitions\n      attribute: defs\n"
        f"      location_name: {LOCATION_NAME}\n      working_directory: {json.dumps(str(pathlib.Path.cwd()))}\n",
        encoding="utf-8",
    )
    return home


def _write_demo_env(url: str) -> pathlib.Path:
    path = DEMO_ENV.absolute()
    path.write_text(
        "# written by `compliance-sync demo`: the embedded demo database, "
        "reachable while `compliance-sync demo --ui` runs\n"
        f"SUPABASE_DB_URL={url}\nCOMPLIANCE_SYNC_BU_MAP={EXAMPLE_BU_MAP}\n",
        encoding="utf-8",
    )
    return path


class _UiLock:
    """``.compliance_sync/ui.lock``: one ``demo --ui`` / ``ui`` per working folder (they share DAGSTER_HOME)."""

    def __init__(self) -> None:
        self.path = UI_LOCK.absolute()
        self.fd = -1

    def acquire(self) -> _UiLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = -1
            raise SettingsError(
                "a Dagster UI started by compliance-sync is already running from this folder "
                f"(pid {holder}, lock {self.path}); "
                "stop it with Ctrl-C, or run from another folder"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @staticmethod
    def holder() -> str | None:
        """The PID holding the lock, or None when no UI serves from this folder."""
        path = UI_LOCK.absolute()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return os.read(fd, 32).decode(errors="replace").strip() or "?"
        finally:
            os.close(fd)


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise SettingsError(f"--port must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise SettingsError(
                f"port {port} on {HOST} is not free ({exc.strerror}): choose another with --port"
            ) from None


# ---------------------------------------------------------------------------------------------- processes


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = pathlib.Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _poll_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, the terminal closed


@contextlib.contextmanager
def _on_stop_signals(handler) -> Iterator[None]:
    """``handler`` for Ctrl-C, SIGTERM and SIGHUP while the block runs; the previous dispositions after it."""
    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


def _stopping_anyway(what: str):
    """While stopping: a stop signal only says that the (bounded) stop is under way."""

    def say(signum: int, frame: object) -> None:
        log.warning("already stopping %s (bounded: at most %.0f s more)", what, STOP_TIMEOUT_S + KILL_TIMEOUT_S)

    return say


def _interrupt(signum: int, frame: object) -> None:
    """While serving: any stop signal stops the UI, whatever this process inherited. Installed before
    ``dagster dev`` starts, so it starts with the default dispositions: a process started with SIGINT ignored
    (``cmd &`` in a script) would otherwise pass that on, and Dagster maps SIGTERM to SIGINT's handler
    (``setup_interrupt_handlers``, also run by every in-process run here), so neither signal would stop anything."""
    raise KeyboardInterrupt


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop ``dagster dev`` and everything it started (its process group, which it leads): SIGTERM, wait up
    to STOP_TIMEOUT_S, then SIGKILL and wait up to KILL_TIMEOUT_S. Never raises."""
    pgid = proc.pid

    def done() -> bool:
        return proc.poll() is not None and not _group_members(pgid)

    with _on_stop_signals(_stopping_anyway("the Dagster UI")):
        if done():
            return
        log.info(
            "stopping the Dagster UI and daemon (dagster dev, process group %d); waiting up to %.0f s for them to exit",
            pgid,
            STOP_TIMEOUT_S,
        )
        _killpg(pgid, signal.SIGTERM)
        if _poll_until(done, STOP_TIMEOUT_S):
            log.info("the Dagster UI and daemon stopped")
            return
        log.warning(
            "still running after %.0f s: %s; sending SIGKILL, waiting up to %.0f s",
            STOP_TIMEOUT_S,
            _group_members(pgid),
            KILL_TIMEOUT_S,
        )
        _killpg(pgid, signal.SIGKILL)
        if _poll_until(done, KILL_TIMEOUT_S):
            log.info("the Dagster UI and daemon were killed")
        else:
            log.error("processes of group %d still running after SIGKILL: %s", pgid, _group_members(pgid))


def _graphql(port: int, query: str, timeout: float = 5.0) -> dict:
    request = urllib.request.Request(
        f"http://{HOST}:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


_LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _location_state(port: int) -> tuple[str, str | None] | None:
    """``(loadStatus, load error)`` of the code location, or None while the webserver does not answer."""
    try:
        data = _graphql(port, _LOCATION_QUERY)["data"]["workspaceOrError"]
    except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError):
        return None
    for entry in data.get("locationEntries") or []:
        if entry.get("name") == LOCATION_NAME:
            error = entry.get("locationOrLoadError") or {}
            message = error.get("message") if error.get("__typename") == "PythonError" else None
            return entry.get("loadStatus") or "LOADING", message
    return None


def _wait_until_ready(proc: subprocess.Popen, port: int) -> None:
    what = f"the Dagster UI on http://{HOST}:{port} to answer and load the code location {LOCATION_NAME}"
    log.info("waiting up to %.0f s for %s", READY_TIMEOUT_S, what)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        code = proc.poll()
        if code is not None:
            raise UiError(f"dagster dev exited (code {code}) before the UI was ready; see its lines above")
        state = _location_state(port)
        if state is not None and state[0] == "LOADED":
            if state[1]:
                log.error(
                    "the code location %s failed to load (the UI shows the error): %s",
                    LOCATION_NAME,
                    state[1].strip().splitlines()[0],
                )
            return
        if time.monotonic() >= deadline:
            raise UiError(f"timed out after {READY_TIMEOUT_S:.0f} s waiting for {what}")
        time.sleep(0.5)


def serve(home: pathlib.Path, env: dict[str, str], port: int, ready_note: str = "") -> int:
    """Run ``dagster dev`` (webserver + daemon, DAGSTER_HOME ``home``) until Ctrl-C, SIGTERM or SIGHUP, then
    stop it and everything it started; 0 when stopped that way. The caller holds the UI lock."""
    child_env = dict(os.environ) | env | {"DAGSTER_HOME": str(home)}
    child_env["PYTHONWARNINGS"] = ",".join(w for w in (child_env.get("PYTHONWARNINGS"), _QUIET_WARNINGS) if w)
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(home / "workspace.yaml"), "-p", str(port), "-h", HOST]
    log.info("starting the Dagster UI and daemon (dagster dev, DAGSTER_HOME %s)", home)
    proc: subprocess.Popen | None = None
    with _on_stop_signals(_interrupt):
        try:
            proc = subprocess.Popen(cmd, env=child_env, stdin=subprocess.DEVNULL, start_new_session=True)
            _wait_until_ready(proc, port)
            log.info("the Dagster UI is ready: http://%s:%d%s", HOST, port, ready_note)
            log.info("Ctrl-C stops it (and everything this command started)")
            code = proc.wait()  # the UI's lifetime: until Ctrl-C, by design not bounded
            log.error("dagster dev (pid %d) exited by itself with code %d", proc.pid, code)
            _stop_group(proc)
            return code or int(ExitCode.UNEXPECTED)
        except KeyboardInterrupt:
            log.info("interrupted: stopping what this command started")
            if proc is not None:
                _stop_group(proc)
            return 0
        except BaseException:
            if proc is not None:
                _stop_group(proc)
            raise


# ---------------------------------------------------------------------------------------------- demo


def _demo_database(url: str, reset: bool) -> None:
    """The full schema and the demo data, loaded once (or again with ``reset``, which also clears the demo's
    Dagster records so the UI matches the data); never refuses itself."""
    from compliance_sync.backends.postgres import connect
    from compliance_sync.backends.postgres.migrate import apply_full, populated_tables
    from compliance_sync.devtools.demo import load_demo_data

    with connect(url) as conn:
        apply_full(conn, force=True)
        if reset or not populated_tables(conn):
            counts = load_demo_data(conn, force=True)
            log.info("demo data loaded: %s", ", ".join(f"{t} {n:,}" for t, n in counts.items()))
        else:
            log.info("demo data already loaded: kept (`compliance-sync demo --reset` reloads it)")
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DAGSTER_DB,)).fetchone()
        if exists and reset:
            conn.execute(f'DROP DATABASE "{DEMO_DAGSTER_DB}" WITH (FORCE)')
            log.info("Dagster's records of the demo (runs, materialisations) cleared")
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{DEMO_DAGSTER_DB}"')


def _storage_url(url: str, dbname: str) -> str:
    """The embedded server's database ``dbname`` as a SQLAlchemy URL for dagster-postgres (psycopg2 driver)."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    user, host, port = params.get("user", "postgres"), params.get("host", ""), params.get("port", "5432")
    if host.startswith("/"):
        return f"postgresql+psycopg2://{quote(user)}@/{dbname}?host={quote(host, safe='/')}&port={port}"
    return f"postgresql+psycopg2://{quote(user)}@{host}:{port}/{dbname}"


def demo(year: str, as_of: str | None, *, dry_run: bool, reset: bool, ui: bool, port: int, data_dir: str | None) -> int:
    from compliance_sync.backends.postgres import PostgresBackend
    from compliance_sync.devtools import embedded
    from compliance_sync.entrypoints.runner import RunRequest, print_report, run
    from compliance_sync.service.sync import parse_as_of, parse_year

    started = time.perf_counter()
    # the report's charts (matplotlib) keep their font cache in the checkout, not in the home folder: the demo
    # writes nothing outside the checkout (the UI's processes inherit it)
    os.environ.setdefault("MPLCONFIGDIR", str((STATE_DIR / "matplotlib").resolve()))
    lock = None
    if ui:  # before the sync: a busy port or a UI already serving from here fails in a second, not after it
        _check_port(port)
        lock = _UiLock().acquire()
    elif reset and (holder := _UiLock.holder()):
        raise SettingsError(
            f"a Dagster UI started by compliance-sync runs from this folder on the demo data (pid {holder}): "
            "stop it (Ctrl-C) before --reset"
        )
    try:
        base = load_settings()
        url = embedded.start(data_dir)  # logs where its data is (as root: under /var/lib/compliance-sync)
        _demo_database(url, reset)
        settings = Settings.model_validate(
            base.model_dump(by_alias=False)
            | {"db_url": url, "supabase_url": None, "service_role_key": None, "bu_map_path": str(EXAMPLE_BU_MAP)}
        )
        fy = parse_year(year, settings, settings.today())
        reference = parse_as_of(as_of) or settings.today()
        home = write_dagster_home(_storage_url(url, DEMO_DAGSTER_DB))
        env_file = _write_demo_env(url)
        backend = PostgresBackend(url, lock_timeout_s=settings.lock_timeout_s)
        summary, code = run(
            settings, backend, RunRequest(fy, reference, dry_run, diff_limit=10, trigger="demo", dagster_home=home)
        )
        print_report(summary)
        report = _demo_report(settings, backend, fy, reference) if code == 0 and not dry_run else None
        log.info("demo done in %.1f s", time.perf_counter() - started)
        if ui:
            from compliance_sync.devtools.demo import UI_SENSOR_ENV, UI_SENSOR_NOTE

            log.info("the demo database, while the UI runs: %s (also in %s)", url, env_file)
            log.info(UI_SENSOR_NOTE)
            env = {"SUPABASE_DB_URL": url, "COMPLIANCE_SYNC_BU_MAP": str(EXAMPLE_BU_MAP)} | UI_SENSOR_ENV
            return serve(
                home, env, port, " (the demo's run is under Runs; materialise another fiscal year from the asset graph)"
            )
        for line in next_steps(invoked_as(), fy.year, report):
            log.info(line)
        return code
    finally:
        if lock is not None:
            lock.release()


def _demo_report(settings: Settings, backend, fy, reference) -> pathlib.Path | None:
    """The synced FY's report, where the ``compliance_report`` asset writes it (the demo's DAGSTER_HOME/reports)."""
    from compliance_sync.service.fy_report import service

    try:
        made = service.produce(settings, backend, fy, reference, trigger="demo")
        path = service.write(settings, made.tables, service.report_dir(settings) / service.default_name(fy))
    except SyncError as exc:
        log.warning("the report of FY%s was not written: %s", fy.year, exc)
        return None
    log.info("report of FY%s written to %s", fy.year, path)
    return path


# ---------------------------------------------------------------------------------------------- ui


def _check_dagster_storage(url: str) -> None:
    """Fail in a second with one line (exit 4) when DAGSTER_PG_URL cannot be reached, not with a traceback later."""
    from compliance_sync.backends.postgres import connect

    libpq = url.split("://", 1)
    scheme = libpq[0].split("+", 1)[0] if len(libpq) == 2 else ""
    if scheme not in ("postgresql", "postgres"):
        raise SettingsError("DAGSTER_PG_URL must be a postgresql:// URL (not shown: it may contain the password)")
    try:
        with connect(f"{scheme}://{libpq[1]}"):
            pass
    except ConnectionFailure as exc:
        raise ConnectionFailure(f"DAGSTER_PG_URL: {exc}") from None


def ui(port: int) -> int:
    settings = load_settings()
    settings.backend_kind()
    settings.bu_map()
    _check_port(port)
    lock = _UiLock().acquire()
    try:
        env = read_environment()  # the environment over .env.local over .env, for dagster dev and its children
        storage = "env" if env.get("DAGSTER_PG_URL", "").strip() else None
        if storage:
            _check_dagster_storage(env["DAGSTER_PG_URL"].strip())
        else:
            log.warning(
                "DAGSTER_PG_URL is not set: Dagster keeps its runs in SQLite under %s (fine on one machine)",
                DAGSTER_HOME.absolute(),
            )
        return serve(write_dagster_home(storage), env, port)
    finally:
        lock.release()


EXPLAIN_EXAMPLE = "Alpha Health"  # a client of the demo data in every fiscal year


def next_steps(cmd: str, year: int, report: pathlib.Path | str | None = None) -> list[str]:
    """What the demo suggests next; ``cmd`` as the person can type it again (:func:`invoked_as`); ``report``: the
    report the demo wrote, if any."""
    return [
        "next steps:",
        f"  {cmd} demo --ui          # the Dagster UI on this data (materialise a fiscal year, look at the checks)",
        f"  (set -a; . {DEMO_ENV}; {cmd} explain --year {year} --client '{EXPLAIN_EXAMPLE}')"
        "   # while demo --ui runs: why a client's figures are what they are, from the rows (read-only)",
        *([f"  open {report}   # FY{year} on one page, as `{cmd} report` writes it"] if report else []),
        f"  (set -a; . {DEMO_ENV}; {cmd} report --year {year} --out fy{year}.xlsx)"
        "   # while demo --ui runs: the same as a workbook (.csv: the clients below compliance)",
        f"  {cmd} demo --year 2026 --dry-run   # another fiscal year, as a dry run: the row-level diff",
        f"  {cmd} demo --reset       # start again from the demo data",
        "  your own Supabase project: README.md, 'Configuration' "
        "(SUPABASE_DB_URL, or the REST URL and service-role key)",
    ]


def invoked_as() -> str:
    """The command as this person can type it again: ``compliance-sync`` when that is on PATH, else the path it
    was started by (``sh dev.sh demo`` runs ``.venv/bin/compliance-sync``, which no PATH lists)."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) != "compliance-sync":
        return "compliance-sync"
    on_path = shutil.which("compliance-sync")
    if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
        return "compliance-sync"
    relative = os.path.relpath(argv0)
    return relative if not relative.startswith("..") else argv0
