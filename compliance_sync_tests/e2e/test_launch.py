"""The files and guards of ``compliance-sync demo`` / ``ui`` (compliance_sync.entrypoints.launch), without starting
anything.

The whole flow (embedded server, dagster dev, a run launched from the UI, Ctrl-C) is test_browser.py (slow).
"""

from __future__ import annotations

import socket

import pytest
import yaml

from compliance_sync.entrypoints import launch
from compliance_sync.errors import SettingsError


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_dagster_home_with_the_demo_storage_url(in_tmp):
    url = launch._storage_url("postgresql://postgres@:5432/postgres?host=/var/lib/compliance-sync/x-1/run", "dagster")
    assert url == "postgresql+psycopg2://postgres@/dagster?host=/var/lib/compliance-sync/x-1/run&port=5432"
    home = launch.write_dagster_home(url)
    assert home == in_tmp / ".compliance_sync" / "dagster_home"
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["storage"] == {"postgres": {"postgres_url": url}}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["telemetry"] == {"enabled": False}
    [location] = yaml.safe_load((home / "workspace.yaml").read_text())["load_from"]
    assert location["python_module"] == {
        "module_name": "compliance_sync.definitions",
        "attribute": "defs",
        "location_name": "compliance_sync",
        "working_directory": str(in_tmp),
    }


def test_dagster_home_reads_dagster_pg_url_at_start_or_keeps_sqlite(in_tmp):
    home = launch.write_dagster_home("env")
    assert yaml.safe_load((home / "dagster.yaml").read_text())["storage"] == {
        "postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}
    }
    home = launch.write_dagster_home(None)
    assert "storage" not in yaml.safe_load((home / "dagster.yaml").read_text())


def test_storage_url_over_tcp():
    assert (
        launch._storage_url("postgresql://me@db.example:6543/app", "dagster")
        == "postgresql+psycopg2://me@db.example:6543/dagster"
    )


def test_one_ui_per_folder(in_tmp, monkeypatch):
    lock = launch._UiLock().acquire()
    try:
        assert launch._UiLock.holder() is not None
        with pytest.raises(SettingsError, match="already running from this folder"):
            launch._UiLock().acquire()
        monkeypatch.setattr(launch, "load_settings", lambda: pytest.fail("--reset must refuse before anything starts"))
        with pytest.raises(SettingsError, match=r"before --reset"):
            launch.demo("2025", None, dry_run=False, reset=True, ui=False, port=3000, data_dir=str(in_tmp / "pg"))
    finally:
        lock.release()
    assert launch._UiLock.holder() is None
    launch._UiLock().acquire().release()


def test_a_busy_port_is_refused_before_anything_starts(in_tmp):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SettingsError, match=f"port {port} .* not free"):
            launch.demo("2025", None, dry_run=False, reset=False, ui=True, port=port, data_dir=str(in_tmp / "pg"))
    assert not (in_tmp / "pg").exists() and not (in_tmp / ".compliance_sync" / "ui.lock").exists()
    with pytest.raises(SettingsError, match="between 1 and 65535"):
        launch._check_port(70000)


def test_next_steps_name_the_command_as_it_can_be_typed_again(tmp_path, monkeypatch):
    """`sh dev.sh demo` runs .venv/bin/compliance-sync, which no PATH lists: the next steps say that path."""
    from compliance_sync.entrypoints.launch import invoked_as

    script = tmp_path / ".venv" / "bin" / "compliance-sync"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", [str(script), "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert invoked_as() == ".venv/bin/compliance-sync"
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")  # an activated venv
    assert invoked_as() == "compliance-sync"
    monkeypatch.setattr("sys.argv", ["/somewhere/pytest"])
    assert invoked_as() == "compliance-sync"


def test_next_steps_include_explain_on_the_demo_data():
    """The demo suggests `explain` for one of its clients, with the demo database's environment file."""
    from compliance_sync.entrypoints.launch import DEMO_ENV, EXPLAIN_EXAMPLE, next_steps

    steps = "\n".join(next_steps(".venv/bin/compliance-sync", 2025))
    assert (
        f"(set -a; . {DEMO_ENV}; .venv/bin/compliance-sync explain --year 2025 --client '{EXPLAIN_EXAMPLE}')" in steps
    )
    assert ".venv/bin/compliance-sync demo --ui" in steps
