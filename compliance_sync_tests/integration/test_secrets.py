"""Secrets never leave the process (SPEC §7), on the direct path: known fake secrets in SUPABASE_DB_URL —
well-formed, percent-encoded, in query parameters, and malformed with raw ``/``, ``@``, ``:``, ``?`` or a bad
``%``-escape — through successful runs, failing runs and connection errors, from the command line and
through Dagster with a real ``DAGSTER_HOME``.

"Leaked" means: any stretch of six or more characters of the secret, raw or percent-encoded, appears in an
output line, the ``--json`` object, the ledger, Dagster's event log, run config, metadata, exception text,
or any file Dagster wrote.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import traceback
from urllib.parse import quote, quote_plus

import dagster as dg
import pytest
from psycopg.conninfo import conninfo_to_dict

from compliance_sync_tests.conftest import dagster_home

pytest.register_assert_rewrite("compliance_sync_tests.world")
from compliance_sync_tests.world import (  # noqa: E402
    AS_OF,
    YEAR_ARGS,
    FakeServer,
    execute,
    run_cli,
)

pytest_plugins = ["compliance_sync_tests.world"]  # its fixtures: world, world_db, cli_env


def spellings(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}


def leaks(secret: str, text: str) -> list[str]:
    """The six-character stretches of any spelling of ``secret`` found in ``text``."""
    return sorted({w for s in spellings(secret) for i in range(len(s) - 5) if (w := s[i : i + 6]) in text})


def parts(url: str) -> tuple[str, str, str]:
    p = conninfo_to_dict(url)
    return p.get("host") or "127.0.0.1", str(p.get("port") or 5432), p["dbname"]


# (case, secret, url template with {host} {port} {db}, exit code; None: whatever libpq makes of it)
S1 = "Zq9Kx/Vb@7:Wm%Lp?Tr"  # every character a URL parser cares about
CASES = [
    ("percent-encoded", S1, "postgresql://postgres:{enc}@{host}:{port}/{db}", 0),
    (
        "query-parameter",
        S1,
        "postgresql://postgres@{host}:{port}/{db}?sslmode=disable&password={enc}&application_name=cs",
        0,
    ),
    ("key-value", "Qw7Rt/Yu@8:Io%Pa", "host={host} port={port} dbname={db} user=postgres password='{raw}'", 0),
    ("raw-slash-at-colon", "Hj4Kl/Mn@6:Bv5Cx", "postgresql://postgres:{raw}@{host}:{port}/{db}", None),
    ("bad-percent-escape", "Gf3Ds%ZZAq2Ws9Ed", "postgresql://postgres:{raw}@{host}:{port}/{db}", None),
    ("secret-as-port", "Rf5Tg6Yh7Uj8Ik/tail", "postgresql://postgres:{raw}@{host}/{db}", None),
    ("question-mark", "Ol9Pk?Mj8Nh7Bg", "postgresql://postgres:{raw}@{host}:{port}/{db}", None),
    ("double-at", "Vc4Xz3Lk2Jh", "postgresql://postgres:{raw}@@{host}:{port}/{db}", None),
    ("unterminated-quote", "Wd5Ef6Rg7Th", "host={host} port={port} password='{raw} dbname={db}", None),
    ("other-scheme", "Yt6Ur5Ie4Wo", "mysql://root:{raw}@{host}:{port}/{db}", None),
    ("unreachable", "Pl0Ok9Ij8Uh", "postgresql://postgres:{enc}@127.0.0.1:1/{db}", 4),
    ("unknown-host", "Mn7Bv6Cx5Za", "postgresql://postgres:{enc}@cs-no-such-host.invalid:5432/{db}", 4),
]


def url_for(template: str, secret: str, world_url: str) -> str:
    host, port, db = parts(world_url)
    return template.format(raw=secret, enc=quote(secret, safe=""), host=host, port=port, db=db)


def ledger_text(url: str) -> str:
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            return "\n".join(
                str(r) for r in conn.execute("SELECT to_jsonb(r)::text FROM compliance_sync_runs r").fetchall()
            )
    except psycopg.Error:
        return ""


@pytest.mark.parametrize("case, secret, template, code", CASES, ids=[c[0] for c in CASES])
def test_cli_never_shows_the_secret(world, capsys, monkeypatch, case, secret, template, code):
    monkeypatch.setenv("SUPABASE_DB_URL", url_for(template, secret, world))
    result = run_cli(capsys, *YEAR_ARGS, "--verbose")
    assert code is None or result.code == code, result
    assert result.summary is not None  # one JSON object, whatever happened
    assert not leaks(secret, result.text), (case, leaks(secret, result.text), result.text[-2000:])
    assert not leaks(secret, ledger_text(world))


@pytest.mark.parametrize(
    "setup, extra, code",
    [
        ("DELETE FROM tier_event_requirements", (), 3),  # a guard
        ("ALTER TABLE account_plans ALTER COLUMN id TYPE text", (), 3),  # the schema
        ("UPDATE tier_event_requirements SET frequency = 999", ("--dry-run",), 3),  # the data, in a dry run
        (None, ("--dry-run",), 0),
    ],
)
def test_failing_runs_never_show_the_secret(world, capsys, monkeypatch, setup, extra, code):
    monkeypatch.setenv("SUPABASE_DB_URL", url_for(CASES[0][2], S1, world))
    if setup:
        execute(world, setup)
    result = run_cli(capsys, *YEAR_ARGS, *extra)
    assert result.code == code, result
    assert not leaks(S1, result.text)
    assert not leaks(S1, ledger_text(world))


def test_a_bad_setting_beside_the_secret_never_shows_it(world, capsys, monkeypatch):
    monkeypatch.setenv("SUPABASE_DB_URL", url_for(CASES[0][2], S1, world))
    monkeypatch.setenv("COMPLIANCE_SYNC_THRESHOLDS", "80,50,100")
    result = run_cli(capsys, *YEAR_ARGS)
    assert result.code == 2 and "COMPLIANCE_SYNC_THRESHOLDS" in result.summary["error"]
    assert not leaks(S1, result.text)


def test_a_server_quoting_the_password_back_is_masked(cli_env, capsys, monkeypatch):
    secret = "Kj8Hg7Fd6/Sa@5"
    server = FakeServer(echo=True)
    try:
        monkeypatch.setenv(
            "SUPABASE_DB_URL",
            f"postgresql://postgres:{quote(secret, safe='')}@127.0.0.1:{server.port}/postgres?sslmode=disable",
        )
        result = run_cli(capsys, *YEAR_ARGS)
    finally:
        server.close()
    assert server.passwords == [secret]
    assert result.code == 4 and "received" in result.text  # the server did quote it ...
    assert not leaks(secret, result.text)  # ... and the run masked it


def test_migrate_commands_never_show_the_secret(world, capsys, monkeypatch):
    for template in (CASES[0][2], CASES[3][2], CASES[10][2]):
        secret = S1 if template == CASES[0][2] else "Hj4Kl/Mn@6:Bv5Cx"
        monkeypatch.setenv("SUPABASE_DB_URL", url_for(template, secret, world))
        result = run_cli(capsys, "migrate", "--minimal")
        assert not leaks(secret, result.text), result


# --- through Dagster, with a real instance ----------------------------------------------------------------------
def files_text(home: pathlib.Path) -> str:
    """Every file Dagster wrote under its home (SQLite storage, compute logs), as text."""
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in home.rglob("*") if p.is_file())


def test_dagster_records_never_hold_the_secret(world, capsys, monkeypatch, tmp_path):
    from compliance_sync.definitions import SYNC_JOB, build_definitions
    from compliance_sync.definitions.targets import sync_run_config

    home = dagster_home(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    good = url_for(CASES[0][2], S1, world)
    seen: list[str] = []

    def cli(url: str, *extra: str) -> int:
        monkeypatch.setenv("SUPABASE_DB_URL", url)
        result = run_cli(capsys, *YEAR_ARGS, "--verbose", *extra)
        seen.append(result.text)
        return result.code

    assert cli(good) == 0  # a live run recorded on the instance
    execute(world, "DELETE FROM segmentation_events")
    assert cli(good) == 3  # a guard: a failed run
    assert cli(url_for(CASES[10][2], "Pl0Ok9Ij8Uh", world)) == 4  # a connection error

    # the job itself, as the UI or the daemon runs it: a failure's exception text
    monkeypatch.setenv("SUPABASE_DB_URL", good)
    job = build_definitions().resolve_job_def(SYNC_JOB)
    with dg.DagsterInstance.get() as instance:
        with pytest.raises(dg.Failure) as err:
            job.execute_in_process(
                run_config=sync_run_config(as_of=dt.date.fromisoformat(AS_OF)), instance=instance, partition_key="2025"
            )
        seen.append("".join(traceback.format_exception(err.value)) + repr(err.value.metadata))
        runs = instance.get_runs()
        assert len(runs) == 4
        for run in runs:
            seen.append(repr(run))
            seen.append(repr(run.run_config) + repr(run.tags))
            for record in instance.get_records_for_run(run.run_id).records:
                seen.append(repr(record))  # the entry with its Dagster event, metadata included
                seen.append(str(record.event_log_entry.user_message))
    seen.append(files_text(home))
    seen.append(ledger_text(world))
    text = "\n".join(seen)
    assert "segmentation_events returned no event" in text and "cannot connect" in text  # the records are there ...
    assert not leaks(S1, text), leaks(S1, text)  # ... and hold no piece of the secret
    assert not leaks("Pl0Ok9Ij8Uh", text)


def test_the_alert_webhook_is_a_secret_whole(cli_env, monkeypatch):
    """The webhook URL is a secret as a whole (its token may sit in the path, the query, the user part or even the
    host): no fragment of six characters or more survives in a message, at the price of masking the same
    fragments of other URLs (``https:``) while a webhook is configured."""
    from compliance_sync.config import secrets as redact
    from compliance_sync.config.settings import load_settings

    monkeypatch.setattr(redact, "_grams", set())  # only this test's secrets (the registry is per process)
    monkeypatch.setattr(redact, "_short", set())
    webhook = "https://alerts-7Qx9.example.com/services/T0AB12CD/B0XY98ZZ/q7Wm3kP9vR2sLx8N?channel=ops-alerts"
    monkeypatch.setenv("COMPLIANCE_SYNC_ALERT_WEBHOOK", webhook)
    load_settings(cli_env)
    shown = redact.redact(f"posting to {webhook} failed; host alerts-7Qx9.example.com, token q7Wm3kP9vR2sLx8N")
    fragments = {webhook[i : i + 6] for i in range(len(webhook) - 5)}
    assert not [f for f in fragments if f in shown], shown
