"""SPEC §6's table of errors and warnings, case by case, on the direct path (issue 12).

Every error: the command line stops before any write with SPEC §7's exit code and a message naming the
table, column or setting, and ``--json`` prints exactly one object whose ``exit_code`` is the process's
(:class:`~compliance_sync_tests.world.CliResult` asserts that on every call). Every warning: the run
finishes and the summary counts it. A few cases also run through Dagster
(``build_definitions().resolve_job_def("compliance_sync_job").execute_in_process``): a ``dg.Failure``
naming the table / column / setting without a traceback, and the WARN check results.
"""

from __future__ import annotations

import dagster as dg
import hypothesis.strategies as st
import pytest
import yaml
from hypothesis import given, settings

from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TERRITORY
from compliance_sync_tests.scenario import uid

pytest.register_assert_rewrite("compliance_sync_tests.world")
from compliance_sync_tests.world import (  # noqa: E402
    AS_OF,
    FY,
    YEAR_ARGS,
    FakeServer,
    assert_no_traceback,
    execute,
    full_snapshot,
    owned_snapshot,
    run_cli,
    scalar,
    target_counts,
    temporary_role,
    url_as,
)

pytest_plugins = ["compliance_sync_tests.world"]  # its fixtures: world, world_db, cli_env

DUMMY_DB = "postgresql://postgres@127.0.0.1:1/never_contacted"


@pytest.fixture
def no_db(cli_env, monkeypatch):
    """A configured backend that is never reached: the run stops on its settings or flags first."""
    monkeypatch.setenv("SUPABASE_DB_URL", DUMMY_DB)
    return cli_env


def stops(result, code: int, *names: str) -> str:
    """The run stopped with ``code``; its message names every one of ``names``."""
    assert result.code == code, result
    assert result.summary["status"] == "failed", result.summary
    message = result.summary["error"]
    for name in names:
        assert name in message, (name, message)
    assert_no_traceback(result.text)
    return message


def live(capsys, *extra: str):
    return run_cli(capsys, *YEAR_ARGS, *extra)


# --- bad settings: exit 2, naming the variable, before any connection ---------------------------------------
@pytest.mark.parametrize(
    "var, value",
    [
        ("COMPLIANCE_SYNC_THRESHOLDS", "80,50,100"),  # not increasing
        ("COMPLIANCE_SYNC_THRESHOLDS", "50,80,80"),
        ("COMPLIANCE_SYNC_THRESHOLDS", "50,80"),
        ("COMPLIANCE_SYNC_FY_START_MONTH", "13"),
        ("COMPLIANCE_SYNC_FY_START_MONTH", "0"),
        ("COMPLIANCE_SYNC_FY_START_MONTH", "July"),
        ("COMPLIANCE_SYNC_TIMEZONE", "Mars/Olympus"),
        ("COMPLIANCE_SYNC_TIMEZONE", "Australia"),  # a tzdata folder, not a zone
        ("COMPLIANCE_SYNC_FIRST_FY", "abc"),
        ("COMPLIANCE_SYNC_FIRST_FY", "2035"),  # after the FY containing today plus one: no partition
        ("COMPLIANCE_SYNC_GRACE_DAYS", "-1"),
        ("COMPLIANCE_SYNC_GRACE_DAYS", "400"),
        ("COMPLIANCE_SYNC_GRACE_DAYS", "a week"),
        ("COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", "1.5"),
        ("COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", "nan"),
        ("COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", "inf"),
        ("COMPLIANCE_SYNC_SCHEDULE_CRON", "every day at six"),
        ("COMPLIANCE_SYNC_SCHEDULE_CRON", "61 6 * * *"),
        ("COMPLIANCE_SYNC_SCHEDULE_CRON", "0 6 * *"),
        ("COMPLIANCE_SYNC_SCHEDULE_CRON", "0 6 30 2 *"),  # 30 February: Dagster refuses it
        ("COMPLIANCE_SYNC_LOCK_TIMEOUT", "0"),
        ("COMPLIANCE_SYNC_LOCK_TIMEOUT", "soon"),
    ],
)
def test_bad_setting_exits_2_naming_the_variable(no_db, capsys, monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    result = live(capsys)
    stops(result, 2, var)
    assert "Input should" not in result.summary["error"] or repr(value) in result.summary["error"]


def test_first_fy_after_the_partitions_names_the_setting_not_the_year(no_db, capsys, monkeypatch):
    monkeypatch.setenv("COMPLIANCE_SYNC_FIRST_FY", "2035")
    message = stops(run_cli(capsys), 2, "COMPLIANCE_SYNC_FIRST_FY=2035", "no fiscal-year partition")
    assert "--year" not in message


@pytest.mark.parametrize(
    "var, value",
    [
        ("COMPLIANCE_SYNC_SCHEDULE_CRON", "61 6 * * *"),
        ("COMPLIANCE_SYNC_SCHEDULE_CRON", "@every-day"),
        ("COMPLIANCE_SYNC_FIRST_FY", "2035"),
        ("COMPLIANCE_SYNC_TIMEZONE", "Mars/Olympus"),
    ],
)
def test_a_setting_that_shapes_the_definitions_stops_the_code_location_with_one_line(no_db, monkeypatch, var, value):
    import compliance_sync.definitions as definitions

    monkeypatch.setenv(var, value)
    with pytest.raises(definitions.SettingsLoadError) as err:
        definitions.defs()  # the code location loading, as Dagster calls it
    message = str(err.value)
    assert var in message and "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize(
    "cron",
    ["0 6 * * *", "30 5 * * 1-5", "*/15 * * * *", "0 6 * * 7", "0 6 * * mon", "@daily", "0 6 29 2 *", "0 6 1-31/2 * *"],
)
def test_cron_schedules_dagster_accepts_pass_the_settings(no_db, monkeypatch, cron):
    from compliance_sync.config.settings import load_settings
    from compliance_sync.definitions import build_definitions

    monkeypatch.setenv("COMPLIANCE_SYNC_SCHEDULE_CRON", cron)
    settings = load_settings()
    assert settings.schedule_cron == cron
    assert build_definitions(settings).resolve_schedule_def("compliance_sync_daily").cron_schedule == cron


CRON_ATOMS = [
    "*",
    "*/5",
    "*/59",
    "*/0",
    "0",
    "5",
    "6",
    "7",
    "12",
    "13",
    "23",
    "24",
    "29",
    "30",
    "31",
    "59",
    "60",
    "1-5",
    "5-1",
    "0-23/2",
    "2",
    "1,15",
    "30,31",
    "mon",
    "jan",
    "L",
    "5/10",
    "?",
]


@given(st.lists(st.sampled_from(CRON_ATOMS), min_size=4, max_size=6))
@settings(max_examples=300, deadline=None)
def test_the_settings_accept_a_cron_schedule_exactly_when_dagster_does(fields):
    import dagster as dg

    from compliance_sync.config.settings import validate_cron
    from compliance_sync.errors import SettingsError

    text = " ".join(fields)
    try:
        dg.ScheduleDefinition(name="probe", cron_schedule=text, job_name="probe")
        dagster_says = True
    except dg.DagsterInvalidDefinitionError:
        dagster_says = False
    try:
        validate_cron(text)
        ours = True
    except SettingsError as exc:
        ours = False
        assert "COMPLIANCE_SYNC_SCHEDULE_CRON" in str(exc)
    assert ours == dagster_says, text


# --- bad BU maps: exit 2, naming COMPLIANCE_SYNC_BU_MAP -------------------------------------------------------
BILLION_LAUGHS = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    + "".join(f"{chr(100 + i)}: &{chr(100 + i)} [{', '.join([f'*{chr(99 + i)}'] * 9)}]\n" for i in range(6))
    + "territory:\n  VIC + NZ: *i\n"
)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("", "empty"),
        ("cse: {}\nterritory: {}\n", "no entries"),
        ("territory:\n  1: ANZ\n", "not a string"),
        ("territory:\n  true: ANZ\n", "not a string"),
        ("cse:\n  ~: ANZ\n", "not a string"),
        ("territory:\n  VIC + NZ: Unassigned\n", "reserved"),
        (BILLION_LAUGHS, "aliases"),
        (b"territory:\n  \xff\xfe: ANZ\n", "not UTF-8"),
        ("- ANZ\n", "not a mapping"),
        ("territory: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_bu_map_exits_2(no_db, capsys, monkeypatch, content, fragment):
    path = no_db / "bad_map.yaml"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    monkeypatch.setenv("COMPLIANCE_SYNC_BU_MAP", str(path))
    stops(live(capsys), 2, "COMPLIANCE_SYNC_BU_MAP", fragment)


@pytest.mark.parametrize(
    "path, fragment",
    [("/dev/zero", "not a regular file"), (".", "not a regular file"), ("missing.yaml", "no such file")],
)
def test_unreadable_bu_map_exits_2(no_db, capsys, monkeypatch, path, fragment):
    monkeypatch.setenv("COMPLIANCE_SYNC_BU_MAP", path)
    stops(live(capsys), 2, "COMPLIANCE_SYNC_BU_MAP", fragment)


def test_bu_map_not_set_exits_2(no_db, capsys, monkeypatch):
    monkeypatch.delenv("COMPLIANCE_SYNC_BU_MAP")
    stops(live(capsys), 2, "COMPLIANCE_SYNC_BU_MAP")


# --- flags: exit 2 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, names",
    [
        (("--year", "1999"), ("--year 1999", "outside the fiscal-year partitions")),
        (("--year", "2099"), ("--year 2099", "outside")),
        (("--year", "20x5"), ("--year", "20x5")),
        (("--year", "2025.0"), ("--year",)),
        (("--year", ""), ("--year",)),
        (("--year", "２０２５"), ("--year",)),
        (("--year", "2025", "--as-of", "2025-13-01"), ("--as-of", "2025-13-01")),
        (("--year", "2025", "--as-of", "30/06/2025"), ("--as-of",)),
        (("--year", "2025", "--as-of", "2025-02-30"), ("--as-of",)),
        (("--year", "2025", "--as-of", "tomorrow"), ("--as-of",)),
        (
            ("--year", "2025", "--as-of", "20250630"),
            ("--as-of", "YYYY-MM-DD"),
        ),  # ISO basic format: not the documented one
        (("--year", "2025", "--as-of", "2025-W27-1"), ("--as-of", "YYYY-MM-DD")),  # an ISO week date
        (("--year", "2025", "--diff-limit", "-1"), ("--diff-limit",)),
        (("--year", "2025", "--no-such-flag"), ("--no-such-flag",)),
    ],
)
def test_bad_flags_exit_2(no_db, capsys, args, names):
    stops(run_cli(capsys, *args), 2, *names)


@pytest.mark.parametrize(
    "args, flag",
    [
        (("--yeer", "2025"), "--yeer"),
        (("--yeer", "2025", "--dry-run"), "--yeer"),
        (("--dry-run", "--yaer", "2025"), "--yaer"),
        (("-y", "2025"), "-y"),
        (("--year", "2025", "--asof", "2025-06-30"), "--asof"),
        (("--yeer=2025",), "--yeer=2025"),
        (("--YEAR", "2025"), "--YEAR"),
        (("--year", "2025", "--dryrun"), "--dryrun"),
    ],
)
def test_an_unknown_flag_is_named_not_its_value_as_a_command(no_db, capsys, args, flag):
    message = stops(run_cli(capsys, *args), 2, flag, "unrecognized argument")
    assert "invalid choice" not in message and "COMMAND" not in message


def test_no_backend_exits_2_naming_both_options(cli_env, capsys):
    stops(live(capsys), 2, "SUPABASE_DB_URL", "NEXT_PUBLIC_SUPABASE_URL")


# --- connection and authentication: exit 4 -------------------------------------------------------------------------
@pytest.mark.parametrize("echo", [False, True])
def test_wrong_password_exits_4_without_the_password(cli_env, capsys, monkeypatch, echo):
    server = FakeServer(echo=echo)
    password = "Wr0ngPassw0rd-9f3k"
    try:
        monkeypatch.setenv(
            "SUPABASE_DB_URL", f"postgresql://postgres:{password}@127.0.0.1:{server.port}/postgres?sslmode=disable"
        )
        result = live(capsys)
    finally:
        server.close()
    assert server.passwords and server.passwords[0] == password  # the server did see it: it was a real attempt
    stops(result, 4, "password authentication failed", f"127.0.0.1:{server.port}/postgres")
    for i in range(len(password) - 5):
        assert password[i : i + 6] not in result.text


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://postgres:Unr3achable-pw@127.0.0.1:1/plans", "127.0.0.1:1/plans"),
        ("postgresql://postgres:Unr3achable-pw@no-such-host.invalid:5432/plans", "no-such-host.invalid"),
    ],
)
def test_unreachable_host_exits_4_without_the_password(cli_env, capsys, monkeypatch, url, shown):
    monkeypatch.setenv("SUPABASE_DB_URL", url)
    result = live(capsys)
    stops(result, 4, shown)
    assert "Unr3ach" not in result.text and "achable-pw" not in result.text


def test_unknown_role_exits_4(world, capsys, monkeypatch):
    monkeypatch.setenv("SUPABASE_DB_URL", url_as(world, "cs_no_such_role"))
    stops(live(capsys), 4, "cs_no_such_role")


# --- the schema: exit 3, naming the table or column, nothing written ---------------------------------------------
def schema_stop(capsys, url: str, *names: str) -> str:
    before = full_snapshot(url)
    message = stops(live(capsys), 3, *names)
    assert full_snapshot(url) == before
    return message


@pytest.mark.parametrize(
    "table",
    [
        "account_plans",
        "segmentation_events",
        "tier_event_requirements",
        "segmentation_event_compliance",
        TERRITORY,
        APAC,
    ],
)
def test_missing_table(world, capsys, table):
    execute(world, f"DROP TABLE {table}")
    stops(live(capsys), 3, f"table {table} does not exist")
    assert (
        all(n == 0 for t, n in target_counts(world).items() if t != table) if table not in (TERRITORY, APAC) else True
    )


def test_missing_exclusions_table_is_a_warning(world, capsys):
    execute(world, "DROP TABLE client_event_exclusions")
    result = live(capsys)
    assert result.code == 0, result
    assert any("client_event_exclusions does not exist" in w for w in result.summary["backend_warnings"])


@pytest.mark.parametrize(
    "table, column",
    [
        ("client_segmentation", "effective_to"),
        ("segmentation_event_types", "is_active"),
        (REQUIREMENTS, "linked_event_ids"),
        (BUSINESS_UNIT, "territory_data"),
    ],
)
def test_missing_column(world, capsys, table, column):
    execute(world, f"ALTER TABLE {table} DROP COLUMN {column}")
    schema_stop(capsys, world, f"{table}.{column} is missing")


@pytest.mark.parametrize(
    "table, column, change, shown",
    [
        ("tier_event_requirements", "frequency", "text", "text"),  # numbers stored as text: no coercion
        ("account_plans", "id", "text", "text"),  # non-UUID ids
        ("client_segmentation", "effective_from", "timestamp", "timestamp without time zone"),
        ("segmentation_event_types", "is_active", "text", "text"),
    ],
)
def test_source_column_of_the_wrong_type(world, capsys, table, column, change, shown):
    execute(world, f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {change} USING {column}::{change}")
    schema_stop(capsys, world, f"{table}.{column}", shown, "no coercion")


@pytest.mark.parametrize(
    "table, column, change, shown",
    [
        (REQUIREMENTS, "compliance_percentage", "numeric(5,1)", "numeric(5,1)"),
        (TERRITORY, "overall_compliance_percentage", "numeric(4,2)", "numeric(4,2)"),
        (REQUIREMENTS, "client_name", "char(12)", "character(12)"),
        (REQUIREMENTS, "required_count", "int2", "smallint"),
        (TERRITORY, "total_clients", "smallint", "smallint"),
        (APAC, "updated_at", "timestamp", "timestamp without time zone"),
        (BUSINESS_UNIT, "territory_data", "json", "json"),
        (REQUIREMENTS, "plan_id", "text", "text"),
    ],
)
def test_target_column_that_cannot_hold_the_values(world, capsys, table, column, change, shown):
    execute(world, f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {change} USING {column}::{change}")
    schema_stop(capsys, world, f"{table}.{column}", shown)


@pytest.mark.parametrize(
    "table, column, n, value",
    [
        (REQUIREMENTS, "segment", 5, "Collaboration"),
        (TERRITORY, "territory", 3, "Singapore"),
        (BUSINESS_UNIT, "bu_name", 4, "Greater China"),
    ],
)
def test_varchar_shorter_than_a_value(world, capsys, table, column, n, value):
    execute(world, f"ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar({n})")
    message = schema_stop(capsys, world, f"{table}.{column} is varchar({n})")
    assert value[:n] in message


def test_varchar_long_enough_is_fine(world, capsys):
    execute(world, f"ALTER TABLE {REQUIREMENTS} ALTER COLUMN segment TYPE varchar(13)")
    assert live(capsys).code == 0


def test_missing_unique_key_names_the_minimal_migration(world, capsys):
    execute(world, f"DROP INDEX {TERRITORY}_compliance_sync_key")
    schema_stop(capsys, world, TERRITORY, "territory_strategy_id, fiscal_year", "compliance-sync migrate --minimal")


def test_a_view_as_target_is_named_and_the_minimal_migration_refuses_it_cleanly(world, capsys):
    execute(
        world, f"ALTER TABLE {APAC} RENAME TO apac_goals_table", f"CREATE VIEW {APAC} AS SELECT * FROM apac_goals_table"
    )
    schema_stop(capsys, world, f"{APAC} is a view, not a table")
    indexes = "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'"
    before = scalar(world, indexes)
    result = run_cli(capsys, "migrate", "--minimal")
    message = stops(result, 3, APAC, "view", "not a table")
    assert "minimal migration" in message
    assert scalar(world, indexes) == before  # nothing created
    assert scalar(world, f"SELECT relkind::text FROM pg_class WHERE relname = '{APAC}'") == "v"


def test_row_level_security_the_role_cannot_bypass_exits_3(world, capsys, monkeypatch):
    with temporary_role(world, "NOSUPERUSER", "NOBYPASSRLS") as role:
        execute(world, "ALTER TABLE segmentation_events ENABLE ROW LEVEL SECURITY")
        monkeypatch.setenv("SUPABASE_DB_URL", url_as(world, role))
        message = schema_stop(capsys, world, "row-level security", "segmentation_events", role, "BYPASSRLS")
        assert "client_segmentation" not in message
        # the owner without FORCE, or a role with BYPASSRLS, reads every row: no error
        execute(world, f'ALTER ROLE "{role}" BYPASSRLS')
        assert live(capsys).code == 0


def test_permission_denied_exits_3(world, capsys, monkeypatch):
    with temporary_role(world, "NOSUPERUSER") as role:
        execute(world, f'REVOKE ALL ON {BUSINESS_UNIT} FROM "{role}"')
        monkeypatch.setenv("SUPABASE_DB_URL", url_as(world, role))
        schema_stop(capsys, world, "permission denied", BUSINESS_UNIT)


# --- the data: exit 3 ---------------------------------------------------------------------------------------------
def test_frequency_above_366_names_tier_and_event_type(world, capsys):
    execute(
        world,
        f"UPDATE tier_event_requirements SET frequency = 367 WHERE tier_id = '{uid('tier:Leverage')}' "
        f"AND event_type_id = '{uid('type:INSIGHT_TP')}'",
    )
    schema_stop(capsys, world, "tier_event_requirements.frequency = 367", "Leverage", "INSIGHT_TP", "366")


def test_frequency_366_is_allowed(world, capsys):
    execute(
        world,
        f"UPDATE tier_event_requirements SET frequency = 366 WHERE tier_id = '{uid('tier:Leverage')}' "
        f"AND event_type_id = '{uid('type:INSIGHT_TP')}'",
    )
    result = live(capsys)
    assert result.code == 0, result
    assert scalar(world, f"SELECT max(required_count) FROM {REQUIREMENTS}") == 366


def test_invariant_violation_exits_3_and_writes_nothing(world, capsys, monkeypatch):
    from compliance_sync.domain import rules

    real = rules.bu_row

    def broken(*args, **kwargs):
        row = real(*args, **kwargs)
        row["clients_below_compliance"] += 1
        return row

    monkeypatch.setattr(rules, "bu_row", broken)
    message = schema_stop(capsys, world, "invariant violated", "territory_totals", "BU")
    assert "nothing written" in message


def test_invariant_violation_stops_a_dry_run_too(world, capsys, monkeypatch):
    from compliance_sync.domain import rules

    real = rules.territory_row
    monkeypatch.setattr(rules, "territory_row", lambda *a, **k: {**real(*a, **k), "clients_critical": -1})
    result = live(capsys, "--dry-run")
    stops(result, 3, "invariant violated", "territory_totals")


# --- data that warns: the run finishes, the summary and the exit code agree ------------------------------------------
def test_null_client_name_of_a_plan_is_a_warning(world, capsys):
    execute(
        world,
        "ALTER TABLE account_plans ALTER COLUMN client_name DROP NOT NULL",  # SPEC §3.1 does not promise it
        "INSERT INTO account_plans (id, client_name, fiscal_year, status) "
        "VALUES (gen_random_uuid(), NULL, 2025, 'approved')",
    )
    result = live(capsys)
    assert result.code == 0 and result.summary["status"] == "written" and result.summary["error"] is None, result
    assert result.summary["warnings"]["clients_without_segmentation"] == 1
    assert result.summary["clients_processed"] == 8
    assert scalar(world, f"SELECT count(*) FROM {REQUIREMENTS} WHERE client_name IS NULL") == 0


def test_null_tier_name_is_a_warning(world, capsys):
    execute(
        world,
        "ALTER TABLE segmentation_tiers ALTER COLUMN tier_name DROP NOT NULL",
        f"UPDATE segmentation_tiers SET tier_name = NULL WHERE id = '{uid('tier:Leverage')}'",
    )
    result = live(capsys)
    assert result.code == 0 and result.summary["error"] is None, result
    leverage = 4  # Beta Bank, Gamma Gov, Epsilon Energy, Eta Retail: their only period is ignored
    assert result.summary["warnings"]["invalid_segment_periods"] == leverage
    assert result.summary["warnings"]["clients_without_segmentation"] == leverage
    assert result.summary["clients_processed"] == 8 - leverage and result.summary["clients_skipped"] == leverage
    assert scalar(world, f"SELECT count(*) FROM {REQUIREMENTS} WHERE segment IS NULL") == 0


WARNING_SETUP = [
    # null and unknown tier_id of a plan client's periods (the client keeps its valid period)
    f"INSERT INTO client_segmentation (id, client_name, tier_id, cse_name, effective_from) VALUES "
    f"(gen_random_uuid(), 'Alpha Health', NULL, 'Kim Lee', '2025-02-01'), "
    f"(gen_random_uuid(), 'Alpha Health', '{uid('no-such-tier')}', 'Kim Lee', '2025-03-01')",
    # two open periods of one client
    f"INSERT INTO client_segmentation (id, client_name, tier_id, cse_name, effective_from) VALUES "
    f"(gen_random_uuid(), 'Beta Bank', '{uid('tier:Leverage')}', 'Kim Lee', '2025-04-01')",
    # a plan whose client has no segmentation
    "INSERT INTO account_plans (id, client_name, fiscal_year, status) VALUES "
    "(gen_random_uuid(), 'Nobody Ltd', 2025, 'approved')",
    # a negative frequency
    f"INSERT INTO tier_event_requirements (tier_id, event_type_id, frequency) VALUES "
    f"('{uid('tier:Leverage')}', '{uid('type:HEALTH_CHECK')}', -2) "
    "ON CONFLICT (tier_id, event_type_id) DO UPDATE SET frequency = -2",
    # a null event_date, an unknown type, an unknown client, a completed event after as_of
    f"INSERT INTO segmentation_events (id, client_name, event_type_id, event_date, completed) VALUES "
    f"(gen_random_uuid(), 'Alpha Health', '{uid('type:SLA_REVIEW')}', NULL, true), "
    f"(gen_random_uuid(), 'Alpha Health', '{uid('no-such-type')}', '2025-02-02', true), "
    f"(gen_random_uuid(), 'Stranger Co', '{uid('type:SLA_REVIEW')}', '2025-02-02', true), "
    f"(gen_random_uuid(), 'Delta Telco', '{uid('type:SLA_REVIEW')}', '2025-08-01', true)",
    # an unmapped territory with a client, a client without strategy, a strategy without clients
    f"INSERT INTO client_segmentation (id, client_name, tier_id, cse_name, effective_from) VALUES "
    f"(gen_random_uuid(), 'Iota Insurance', '{uid('tier:Leverage')}', 'Lee Wong', '2024-01-01'), "
    f"(gen_random_uuid(), 'Kappa Logistics', '{uid('tier:Leverage')}', 'No Strategy', '2024-01-01')",
    "INSERT INTO account_plans (id, client_name, fiscal_year, status) VALUES "
    "(gen_random_uuid(), 'Iota Insurance', 2025, 'approved'), "
    "(gen_random_uuid(), 'Kappa Logistics', 2025, 'approved')",
    "INSERT INTO territory_strategies (id, cse_name, territory, fiscal_year, status) VALUES "
    "(gen_random_uuid(), 'Lee Wong', 'Taiwan', 2025, 'approved'), "
    "(gen_random_uuid(), 'Idle CSE', 'Nowhere', 2025, 'approved')",
    # a name matching only when case is ignored; two names sharing a client_uuid
    f"INSERT INTO segmentation_events (id, client_name, event_type_id, event_date, completed) VALUES "
    f"(gen_random_uuid(), 'alpha health', '{uid('type:SLA_REVIEW')}', '2025-02-03', true)",
    f"UPDATE client_segmentation SET client_uuid = '{uid('shared')}' WHERE client_name IN ('Eta Retail', 'Theta Uni')",
    # the compliance cache disagrees with the events of 2025
    f"INSERT INTO segmentation_event_compliance (client_name, event_type_id, year, expected_count, actual_count) "
    f"VALUES ('Alpha Health', '{uid('type:SLA_REVIEW')}', 2025, 4, 99)",
    # an orphan (a target row with the planners' note) and a row with a NULL key column
    f"INSERT INTO {REQUIREMENTS} (plan_id, event_type_id, fiscal_year, notes) VALUES "
    f"('{uid('gone')}', '{uid('type:SLA_REVIEW')}', 2025, 'keep me')",
    f"ALTER TABLE {TERRITORY} ALTER COLUMN territory_strategy_id DROP NOT NULL",
    f"INSERT INTO {TERRITORY} (territory_strategy_id, fiscal_year, territory, total_clients) VALUES "
    "(NULL, 2025, 'legacy', 3)",
]
EXPECTED_WARNINGS = {
    "invalid_segment_periods": 2,
    "overlapping_segment_periods": 1,
    "clients_without_segmentation": 1,
    "negative_frequency": 1,
    "undated_events": 1,
    "unknown_events": 3,  # the unknown type, 'Stranger Co' and 'alpha health'
    "completed_future_events": 2,  # Delta Telco's, and the world's own (Eta Retail, 2025-07-20)
    "unmapped_territories": 1,
    "clients_without_strategy": 1,
    "unused_strategies": 1,
    "name_mismatches": 2,
    "possible_alias": 1,  # 'alpha health' nearly matches 'Alpha Health'
    "compliance_cache_drift": 1,
    "orphans": 1,
    "null_key_rows": 1,
}


def test_every_warning_lets_the_run_finish_and_is_counted(world, capsys):
    execute(world, *WARNING_SETUP)
    null_key_row = scalar(world, f"SELECT to_jsonb(t)::text FROM {TERRITORY} t WHERE territory_strategy_id IS NULL")
    result = live(capsys)
    assert result.code == 0 and result.summary["status"] == "written", result
    assert result.summary["warnings"] == EXPECTED_WARNINGS
    assert result.summary["targets"][REQUIREMENTS]["orphans"] == 1
    assert result.summary["targets"][TERRITORY] == {
        "inserted": 4,
        "updated": 0,
        "deleted": 0,
        "orphans": 0,
        "unchanged": 0,
    }
    for code in EXPECTED_WARNINGS:
        assert f"[WARN] {code}:" in result.err
    # the NULL-key row: reported, never touched, and no count claims otherwise
    assert (
        scalar(world, f"SELECT to_jsonb(t)::text FROM {TERRITORY} t WHERE territory_strategy_id IS NULL")
        == null_key_row
    )
    assert scalar(world, f"SELECT notes FROM {REQUIREMENTS} WHERE plan_id = '{uid('gone')}'") == "keep me"
    again = live(capsys)
    assert again.code == 0 and again.summary["warnings"] == EXPECTED_WARNINGS
    assert all(c["inserted"] == c["updated"] == c["deleted"] == 0 for c in again.summary["targets"].values()), (
        again.summary["targets"]
    )


def test_a_null_key_row_is_never_deleted_nor_counted_by_the_prune_guard(world, capsys):
    execute(
        world,
        f"ALTER TABLE {REQUIREMENTS} ALTER COLUMN plan_id DROP NOT NULL",
        *[
            f"INSERT INTO {REQUIREMENTS} (plan_id, event_type_id, fiscal_year, completed_count) "
            f"VALUES (NULL, '{uid('type:SLA_REVIEW')}', 2025, {k})"
            for k in range(30)
        ],
    )
    assert live(capsys).code == 0
    execute(world, "UPDATE account_plans SET status = 'archived' WHERE client_name IN ('Alpha Health', 'Beta Bank')")
    result = live(capsys)  # 8 of the 28 keyed rows deleted: under half, whatever the 30 NULL-key rows
    assert result.code == 0, result
    assert result.summary["targets"][REQUIREMENTS]["deleted"] == 8
    assert result.summary["warnings"]["null_key_rows"] == 30
    assert scalar(world, f"SELECT count(*) FROM {REQUIREMENTS} WHERE plan_id IS NULL") == 30


# --- the guards of SPEC §5 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "table, statement",
    [
        ("account_plans", "UPDATE account_plans SET fiscal_year = 2024"),
        ("client_segmentation", "DELETE FROM client_segmentation"),
        ("segmentation_tiers", "DELETE FROM segmentation_tiers"),
        ("tier_event_requirements", "DELETE FROM tier_event_requirements"),
    ],
)
def test_guard_empty_required_source_is_not_lifted_by_the_override(world, capsys, table, statement):
    assert live(capsys).code == 0
    execute(world, statement)
    before = full_snapshot(world)
    for extra in ((), ("--allow-mass-prune",)):
        result = live(capsys, *extra)
        message = stops(result, 3, f"{table} returned no rows", "guard")
        assert result.summary["written"] is False and "nothing written" in message
        assert any(
            g["code"] == "empty_source" and g["table"] == table and g["stops_live_run"]
            for g in result.summary["guards"]
        )
        assert full_snapshot(world) == before
    last = scalar(world, "SELECT status || ': ' || error FROM compliance_sync_runs ORDER BY id DESC LIMIT 1")
    assert last.startswith("failed: ") and table in last


def test_guard_mass_prune_names_table_and_counts_then_the_override(world, capsys):
    assert live(capsys).code == 0
    total = target_counts(world)[REQUIREMENTS]
    execute(world, "UPDATE account_plans SET status = 'archived' WHERE client_name NOT IN ('Eta Retail', 'Theta Uni')")
    gone = total - scalar(
        world, f"SELECT count(*) FROM {REQUIREMENTS} WHERE client_name IN ('Eta Retail', 'Theta Uni')"
    )
    before = full_snapshot(world)
    message = stops(
        live(capsys),
        3,
        f"{REQUIREMENTS}: the run would delete {gone} of {total} rows",
        "max_prune_fraction=0.5",
        "--allow-mass-prune",
    )
    assert f"{TERRITORY}: the run would delete 2 of 3 rows" in message
    assert full_snapshot(world) == before
    result = live(capsys, "--allow-mass-prune")
    assert result.code == 0, result
    assert result.summary["targets"][REQUIREMENTS]["deleted"] == gone
    assert target_counts(world)[REQUIREMENTS] == total - gone


def test_guard_mass_prune_follows_the_setting(world, capsys, monkeypatch):
    assert live(capsys).code == 0
    execute(
        world, "UPDATE territory_strategies SET status = 'archived' WHERE cse_name = 'Ana Souza'"
    )  # 1 of 3 territory rows
    monkeypatch.setenv("COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", "0.25")
    stops(live(capsys), 3, f"{TERRITORY}: the run would delete 1 of 3 rows", "max_prune_fraction=0.25")
    monkeypatch.setenv("COMPLIANCE_SYNC_MAX_PRUNE_FRACTION", "0.34")
    assert live(capsys).code == 0


def test_guard_events_collapse_and_override(world, capsys):
    assert live(capsys).code == 0
    recorded = scalar(world, f"SELECT sum(completed_count) FROM {REQUIREMENTS} WHERE fiscal_year = 2025")
    execute(world, "DELETE FROM segmentation_events")  # what row-level security with the wrong key looks like
    before = full_snapshot(world)
    result = live(capsys)
    stops(result, 3, "segmentation_events returned no event", f"records {recorded} completed events")
    assert [g["code"] for g in result.summary["guards"] if g["stops_live_run"]] == ["events_collapse"]
    assert full_snapshot(world) == before
    result = live(capsys, "--allow-mass-prune")
    assert result.code == 0 and result.summary["guards"][0]["stops_live_run"] is False, result
    assert scalar(world, f"SELECT sum(completed_count) FROM {REQUIREMENTS} WHERE fiscal_year = 2025") == 0


def test_guard_bu_map_collapse_and_override(world, capsys, cli_env, monkeypatch):
    assert live(capsys).code == 0
    wrong = cli_env / "wrong_map.yaml"
    wrong.write_text(yaml.safe_dump({"territory": {"Victoria": "ANZ", "SG": "SEA"}}))
    monkeypatch.setenv("COMPLIANCE_SYNC_BU_MAP", str(wrong))
    before = full_snapshot(world)
    result = live(capsys)
    stops(
        result,
        3,
        "the BU map maps none of the fiscal year's 3 territories",
        f"3 {BUSINESS_UNIT} rows",
        "COMPLIANCE_SYNC_BU_MAP",
    )
    assert [g["code"] for g in result.summary["guards"] if g["stops_live_run"]] == ["bu_map_collapse"]
    assert full_snapshot(world) == before
    result = live(capsys, "--allow-mass-prune")
    assert result.code == 0, result
    assert scalar(world, f"SELECT sum(territory_count) FROM {BUSINESS_UNIT} WHERE fiscal_year = 2025") == 0


def test_dry_run_that_a_guard_would_stop_exits_0_and_says_so(world, capsys):
    assert live(capsys).code == 0
    execute(world, "DELETE FROM segmentation_events")
    before = full_snapshot(world)
    result = live(capsys, "--dry-run")
    assert result.code == 0 and result.summary["status"] == "dry_run" and result.summary["error"] is None, result
    assert [g["code"] for g in result.summary["guards"] if g["stops_live_run"]] == ["events_collapse"]
    assert "[DRY-RUN] a live run would stop: segmentation_events returned no event" in result.err
    assert full_snapshot(world) == before
    assert scalar(world, "SELECT count(*) FROM compliance_sync_runs WHERE mode = 'dry_run'") == 0


# --- through Dagster: a dg.Failure naming the table / column / setting, no traceback; WARN checks --------------------
def dagster_job():
    from compliance_sync.definitions import SYNC_JOB, build_definitions

    return build_definitions().resolve_job_def(SYNC_JOB)


def run_config(**config) -> dg.RunConfig:
    """The run config as typed into a launchpad: ``as_of`` is text, possibly not a date."""
    from compliance_sync.definitions.tags import OP_NAME
    from compliance_sync.definitions.targets import SyncConfig

    return dg.RunConfig(ops={OP_NAME: SyncConfig(**{"as_of": AS_OF, **config})})


def dagster_failure(*names: str, **config) -> dg.Failure:
    with dg.DagsterInstance.ephemeral() as instance:
        with pytest.raises(dg.Failure) as err:
            dagster_job().execute_in_process(run_config=run_config(**config), instance=instance, partition_key=str(FY))
    description = err.value.description
    for name in names:
        assert name in description, (name, description)
    assert_no_traceback(description)
    assert "\n" not in description
    return err.value


def test_dagster_missing_column_fails_naming_it(world):
    execute(world, "ALTER TABLE segmentation_tiers DROP COLUMN tier_name")
    from compliance_sync.definitions.tags import SUMMARY

    failure = dagster_failure("segmentation_tiers.tier_name is missing")
    assert failure.metadata[SUMMARY].value["exit_code"] == 3
    assert target_counts(world) == dict.fromkeys(target_counts(world), 0)


def test_dagster_bad_bu_map_fails_naming_the_setting(world, cli_env, monkeypatch):
    bad = cli_env / "bad.yaml"
    bad.write_text("territory:\n  VIC + NZ: Unassigned\n")
    monkeypatch.setenv("COMPLIANCE_SYNC_BU_MAP", str(bad))
    dagster_failure("COMPLIANCE_SYNC_BU_MAP", "reserved")


def test_dagster_bad_run_config_as_of_fails_naming_it(world):
    dagster_failure("run config as_of", "2025-02-30", as_of="2025-02-30")


def test_dagster_guard_fails_with_the_failed_error_check(world, capsys):
    assert live(capsys).code == 0
    execute(world, "DELETE FROM segmentation_events")
    before = full_snapshot(world)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dagster_job().execute_in_process(
            run_config=run_config(), instance=instance, partition_key=str(FY), raise_on_error=False
        )
    assert not result.success and result.get_asset_materialization_events() == []
    [failure] = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert "segmentation_events returned no event" in description and "Traceback" not in description
    guard = {c.check_name: c for c in result.get_asset_check_evaluations()}["write_guards"]
    assert not guard.passed and guard.severity == dg.AssetCheckSeverity.ERROR
    assert full_snapshot(world) == before


def test_dagster_invariant_violation_fails_with_the_failed_error_check(world, monkeypatch):
    from compliance_sync.domain import rules

    real = rules.territory_row
    monkeypatch.setattr(rules, "territory_row", lambda *a, **k: {**real(*a, **k), "total_completed_events": 10**6})
    with dg.DagsterInstance.ephemeral() as instance:
        result = dagster_job().execute_in_process(
            run_config=run_config(), instance=instance, partition_key=str(FY), raise_on_error=False
        )
    assert not result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["territory_totals"].passed and checks["territory_totals"].severity == dg.AssetCheckSeverity.ERROR
    assert target_counts(world) == dict.fromkeys(target_counts(world), 0)


def test_dagster_warnings_show_as_warn_checks_and_the_run_succeeds(world):
    execute(world, *WARNING_SETUP)
    from compliance_sync.definitions.checks import CHECKS_BY_TARGET

    with dg.DagsterInstance.ephemeral() as instance:
        result = dagster_job().execute_in_process(run_config=run_config(), instance=instance, partition_key=str(FY))
    assert result.success
    checks = result.get_asset_check_evaluations()
    failed: dict[str, int] = {}
    for c in checks:
        if not c.passed:
            assert c.severity == dg.AssetCheckSeverity.WARN, c.check_name
            failed[c.check_name] = failed.get(c.check_name, 0) + c.metadata["total"].value
    per_target_codes = {"orphans", "null_key_rows"}
    assert {k: v for k, v in failed.items() if k not in per_target_codes} == {
        k: v for k, v in EXPECTED_WARNINGS.items() if k not in per_target_codes
    }
    assert failed["orphans"] == 1 and failed["null_key_rows"] == 1
    assert len(checks) == sum(len(w) + len(e) for w, e in CHECKS_BY_TARGET.values())
    examples = next(c for c in checks if c.check_name == "unmapped_territories").metadata["examples"].value
    assert "Taiwan" in examples
    assert scalar(world, f"SELECT count(*) FROM {APAC} WHERE fiscal_year = 2025") == 1


def test_owned_snapshot_helper_sees_the_fy_only(world, capsys):
    assert live(capsys).code == 0
    snap = owned_snapshot(world)
    assert len(snap[APAC]) == 1 and len(snap[BUSINESS_UNIT]) == 3 and len(snap[TERRITORY]) == 3
    assert owned_snapshot(world, 2024) == dict.fromkeys(snap, [])


def test_an_unexpected_error_still_prints_one_json_object_without_secrets(world, capsys, monkeypatch):
    """A bug (not a SyncError): exit 1, one JSON object, the traceback on the log, secrets masked."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from compliance_sync.service import sync

    secret = "Uv8Wx9Yz0-Ab1"
    params = conninfo_to_dict(world)
    params["password"] = secret
    monkeypatch.setenv("SUPABASE_DB_URL", make_conninfo(**params))

    def broken(*args, **kwargs):
        raise RuntimeError(f"a bug that quotes {secret}")

    monkeypatch.setattr(sync, "compute", broken)
    result = live(capsys)
    assert result.code == 1 and result.summary["exit_code"] == 1 and result.summary["status"] == "failed"
    assert "RuntimeError" in result.summary["error"] and "a bug that quotes ***" in result.summary["error"]
    assert "Traceback" in result.err  # for whoever debugs it
    assert secret[:6] not in result.text and secret[-6:] not in result.text
    assert full_snapshot(world) == dict.fromkeys(full_snapshot(world), [])
