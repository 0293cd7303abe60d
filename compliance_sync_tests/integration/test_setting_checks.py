"""Settings a newcomer gets slightly wrong, through the entry points: a Supabase URL pasted with the REST
API's path is accepted; a ``DAGSTER_HOME`` Dagster cannot use stops every command with exit 2 naming it."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat

import pytest

from compliance_sync.config.settings import load_settings
from compliance_sync.entrypoints import cli
from compliance_sync.errors import ExitCode, SettingsError
from compliance_sync_tests.rest_support import rest_server
from compliance_sync_tests.scenario import appendix_a
from compliance_sync_tests.world import assert_no_traceback, load, run_cli

pytest_plugins = ["compliance_sync_tests.world"]  # its fixtures: cli_env

YEAR = ("--year", "2025", "--as-of", "2025-06-30")
DUMMY_DB = "postgresql://postgres@127.0.0.1:1/never_contacted"


@pytest.fixture
def said():
    """The settings' log records (the command line's logger does not propagate to pytest's handler)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("compliance_sync.config.settings")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- NEXT_PUBLIC_SUPABASE_URL with /rest/v1 --------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["/rest/v1", "/rest/v1/", "/rest/v1//"])
def test_supabase_url_with_the_rest_path_means_the_project(tmp_path, suffix, said):
    url = f"https://p{len(suffix)}.supabase.co"
    s = load_settings(tmp_path, {"NEXT_PUBLIC_SUPABASE_URL": url + suffix})
    assert s.supabase_url == url
    load_settings(tmp_path, {"NEXT_PUBLIC_SUPABASE_URL": url + suffix})
    lines = [r for r in said if "/rest/v1" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO  # once per process, not at every load
    assert "NEXT_PUBLIC_SUPABASE_URL" in lines[0].getMessage() and url in lines[0].getMessage()


def test_supabase_url_without_the_rest_path_is_kept(tmp_path, said):
    for url in ("https://abcd.supabase.co", "https://abcd.supabase.co/", "https://example.org/rest/v10"):
        assert load_settings(tmp_path, {"NEXT_PUBLIC_SUPABASE_URL": url}).supabase_url == url.rstrip("/")
    assert not [r for r in said if "/rest/v1" in r.getMessage()]


def test_a_sync_over_rest_works_with_the_rest_path_in_the_url(migrated_db, cli_env, monkeypatch, capsys):
    load(migrated_db, appendix_a())
    with rest_server(migrated_db) as srv:
        monkeypatch.delenv("SUPABASE_DB_URL", raising=False)
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", srv.service_role_key)
        statuses = []
        for suffix in ("/rest/v1", "/rest/v1/"):
            monkeypatch.setenv("NEXT_PUBLIC_SUPABASE_URL", srv.url + suffix)
            code = cli.main([*YEAR, "--json"])
            out = capsys.readouterr()
            summary = json.loads(out.out)
            assert code == 0 and summary["exit_code"] == 0, summary
            assert summary["backend"] == "rest"
            assert "Invalid path" not in out.out + out.err
            statuses.append(summary["status"])
        assert statuses == ["written", "unchanged"]  # the second run converged on what the first wrote


# --- DAGSTER_HOME ----------------------------------------------------------------------------------------------------
def unwritable_folder(tmp_path) -> str:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(folder, os.W_OK):  # root writes anywhere it has permissions for: a folder of /proc it cannot
        folder.chmod(stat.S_IRWXU)
        return "/proc/1"
    return str(folder)


def bad_homes(tmp_path) -> dict[str, str]:
    (tmp_path / "a-file").write_text("not a folder\n")
    return {
        "does not exist": str(tmp_path / "missing"),
        "is not a folder": str(tmp_path / "a-file"),
        "must be an absolute path": "relative/dagster_home",
        "is not writable": unwritable_folder(tmp_path),
    }


def test_dagster_home_is_checked_like_every_setting(tmp_path):
    for problem, home in bad_homes(tmp_path).items():
        with pytest.raises(SettingsError) as err:
            load_settings(tmp_path, {"DAGSTER_HOME": home})
        assert err.value.exit_code == ExitCode.USAGE
        assert "DAGSTER_HOME" in str(err.value) and problem in str(err.value) and home in str(err.value)
    good = tmp_path / "home"
    good.mkdir()
    assert load_settings(tmp_path, {"DAGSTER_HOME": str(good)}).dagster_home == str(good)
    assert load_settings(tmp_path, {"DAGSTER_HOME": " "}).dagster_home is None


@pytest.mark.parametrize("problem", ["does not exist", "is not a folder", "is not writable"])
def test_a_bad_dagster_home_stops_every_command_with_exit_2(cli_env, monkeypatch, capsys, problem):
    home = bad_homes(cli_env)[problem]
    monkeypatch.setenv("SUPABASE_DB_URL", DUMMY_DB)
    monkeypatch.setenv("DAGSTER_HOME", home)
    port = str(free_port())
    for args, as_json in (
        ([*YEAR], True),
        (["--dry-run", *YEAR], True),
        (["ui", "--port", port], False),
        (["demo", "--ui", "--port", port], False),
        (["demo", "--dry-run"], False),
    ):
        result = run_cli(capsys, *args, as_json=as_json)
        assert result.code == ExitCode.USAGE, (args, result)
        assert "DAGSTER_HOME" in result.message and problem in result.message, (args, result)
        assert "unexpected" not in result.text and "DagsterInvariantViolationError" not in result.text, (args, result)
        assert_no_traceback(result.text)
