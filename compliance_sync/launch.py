"""The newcomer's commands: ``compliance-sync demo`` (an embedded PostgreSQL with the demo data, a sync, what
to do next, and with ``--ui`` the Dagster UI on the same data) and ``compliance-sync ui`` (the Dagster UI
and daemon for the configured database).

Both keep Dagster's records in one fixed ``DAGSTER_HOME`` under ``.compliance_sync/`` so runs launched from
the UI are picked up by the daemon that ``dagster dev`` starts, and the demo's own runs are listed there.
Ctrl-C stops everything they started.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

from compliance_sync.logs import log
from compliance_sync.settings import EXAMPLE_BU_MAP, Settings, load_settings

STATE_DIR = pathlib.Path(".compliance_sync")
DAGSTER_HOME = STATE_DIR / "dagster_home"
DEMO_DAGSTER_DB = "dagster"
STOP_TIMEOUT_S = 30


def write_dagster_home(storage_url: str | None) -> pathlib.Path:
    """``.compliance_sync/dagster_home`` with a dagster.yaml (PostgreSQL storage when a URL is given, or
    ``"env"`` to read ``DAGSTER_PG_URL`` at start so no password lands on disk, else Dagster's SQLite default
    there) and a workspace.yaml naming the code location ``compliance_sync``."""
    home = DAGSTER_HOME.absolute()
    home.mkdir(parents=True, exist_ok=True)
    value = "\n      env: DAGSTER_PG_URL" if storage_url == "env" else f' "{storage_url}"'
    storage = f"storage:\n  postgres:\n    postgres_url:{value}\n" if storage_url else ""
    (home / "dagster.yaml").write_text(
        "# written by compliance-sync (demo / ui); see dagster.yaml at the repository root for production\n"
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
        f"      location_name: compliance_sync\n      working_directory: {pathlib.Path.cwd()}\n",
        encoding="utf-8",
    )
    return home


def serve(home: pathlib.Path, env: dict[str, str], port: int) -> int:
    """Run ``dagster dev`` (webserver + daemon) until Ctrl-C, then stop it and everything it started."""
    child_env = dict(os.environ) | env | {"DAGSTER_HOME": str(home)}
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(home / "workspace.yaml"), "-p", str(port), "-h", "127.0.0.1"]
    log.info("starting the Dagster UI on http://127.0.0.1:%s (DAGSTER_HOME %s); Ctrl-C stops it", port, home)
    proc = subprocess.Popen(cmd, env=child_env, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        log.info("stopping the Dagster UI (pid %s)", proc.pid)
        with _ignore_interrupts():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("the Dagster UI did not stop within %s s; killing it", STOP_TIMEOUT_S)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)
            except ProcessLookupError:
                pass
        return 0


class _ignore_interrupts:
    def __enter__(self) -> None:
        self._old = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._old)


def _demo_database(url: str, reset: bool) -> None:
    """The full schema and the demo data, loaded once (or again with ``reset``); never refuses itself."""
    from compliance_sync.backends.postgres import connect
    from compliance_sync.demo import load_demo_data
    from compliance_sync.migrate import apply_full, populated_tables

    with connect(url) as conn:
        apply_full(conn, force=True)
        if reset or not populated_tables(conn):
            counts = load_demo_data(conn, force=True)
            log.info("demo data loaded: %s", ", ".join(f"{t} {n:,}" for t, n in counts.items()))
        else:
            log.info("demo data already loaded (kept; `compliance-sync demo --reset` reloads it)")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DAGSTER_DB,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DEMO_DAGSTER_DB}"')


def _storage_url(url: str, dbname: str) -> str:
    """The embedded server's database ``dbname`` as a SQLAlchemy URL for dagster-postgres (psycopg2 driver)."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    user, host, port = params.get("user", "postgres"), params.get("host", ""), params.get("port", "5432")
    if host.startswith("/"):
        return f"postgresql+psycopg2://{quote(user)}@/{dbname}?host={quote(host)}&port={port}"
    return f"postgresql+psycopg2://{quote(user)}@{host}:{port}/{dbname}"


def demo(year: str, as_of: str | None, *, dry_run: bool, reset: bool, ui: bool, port: int, data_dir: str | None) -> int:
    from compliance_sync import embedded
    from compliance_sync.backends.postgres import PostgresBackend
    from compliance_sync.runner import print_report, run
    from compliance_sync.sync import parse_as_of, parse_year

    started = time.perf_counter()
    url = embedded.start(data_dir)
    log.info("embedded PostgreSQL running (data in %s)", data_dir or embedded.DEFAULT_DIR)
    _demo_database(url, reset)
    base = load_settings()
    settings = Settings.model_validate(
        base.model_dump(by_alias=False) | {"db_url": url, "supabase_url": None, "service_role_key": None, "bu_map_path": str(EXAMPLE_BU_MAP)}
    )
    fy = parse_year(year, settings, settings.today())
    reference = parse_as_of(as_of) or settings.today()
    home = write_dagster_home(_storage_url(url, DEMO_DAGSTER_DB))
    summary, code = run(settings, PostgresBackend(url), fy, reference, dry_run=dry_run, allow_mass_prune=False, diff_limit=10, verbose=False, trigger="demo", dagster_home=home)
    print_report(summary)
    log.info("demo done in %.1f s", time.perf_counter() - started)
    if ui:
        return serve(home, {"SUPABASE_DB_URL": url, "COMPLIANCE_SYNC_BU_MAP": str(EXAMPLE_BU_MAP)}, port)
    for line in (
        "next steps:",
        "  compliance-sync demo --ui          # the Dagster UI on this data (materialise a fiscal year, look at the checks)",
        "  compliance-sync demo --year 2026 --dry-run   # another fiscal year, as a dry run: the row-level diff",
        "  compliance-sync demo --reset       # start again from the demo data",
        "  your own Supabase project: README.md, 'Configuration' (SUPABASE_DB_URL, or the REST URL and service-role key)",
    ):
        log.info(line)
    return code


def ui(port: int) -> int:
    settings = load_settings()
    settings.backend_kind()
    settings.bu_map()
    storage = "env" if os.environ.get("DAGSTER_PG_URL") else None
    if storage is None:
        log.warning("DAGSTER_PG_URL is not set: Dagster keeps its runs in SQLite under %s (fine on one machine)", DAGSTER_HOME)
    return serve(write_dagster_home(storage), {}, port)
