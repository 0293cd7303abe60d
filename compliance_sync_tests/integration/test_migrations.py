"""The full and the minimal migrations (SPEC §3, §3.3, §3.4, §7 safety rails), against real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from compliance_sync.backends.catalog import find_key_index, table_columns
from compliance_sync.backends.postgres.migrate import apply_full, apply_minimal, key_index_name, key_indexes
from compliance_sync.domain import tables as model
from compliance_sync.domain.tables import LEDGER_COLUMNS, LEDGER_TABLE, SECTION3_TABLES
from compliance_sync.errors import DataError

PG_TYPE_FAMILY = {
    "uuid": model.UUID,
    "text": model.TEXT,
    "integer": model.INT,
    "boolean": model.BOOL,
    "date": model.DATE,
    "jsonb": model.JSONB,
    "timestamp with time zone": model.TIMESTAMPTZ,
}


def column_types(conn: psycopg.Connection, table: str) -> dict[str, str]:
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
        """,
        (table,),
    ).fetchall()
    return dict(rows)


def family(pg_type: str) -> str:
    return model.NUMERIC if pg_type.startswith("numeric") else PG_TYPE_FAMILY.get(pg_type, pg_type)


def index_names(conn: psycopg.Connection, table: str) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s", (table,)
        )
    }


# --- the full migration ---------------------------------------------------------------------------------


def test_full_creates_every_source_and_target_column_with_its_type(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        for source in model.SOURCES:
            types = column_types(conn, source.name)
            assert types, f"{source.name} missing"
            for column, expected in source.columns.items():
                assert family(types[column]) == expected, (source.name, column, types[column])
        for target in model.TARGETS:
            types = column_types(conn, target.name)
            for column, expected in target.types.items():
                assert family(types[column]) == expected, (target.name, column, types[column])
            # percentages are numeric(5,2): exact two decimals, up to 999.99
            for column, expected in target.types.items():
                if expected == model.NUMERIC:
                    assert types[column] == "numeric(5,2)", (target.name, column)
        cache = column_types(conn, "segmentation_event_compliance")
        assert cache["compliance_percentage"] == "numeric(5,2)"


def test_full_has_columns_the_job_never_touches_and_no_foreign_keys(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        extras = {
            model.REQUIREMENTS: {"id", "created_at", "notes", "ai_recommended_dates"},
            model.TERRITORY: {"id", "created_at", "notes"},
            model.BUSINESS_UNIT: {"id", "created_at", "target_compliance", "revenue_target", "revenue_actual", "notes"},
            model.APAC: {"id", "created_at", "target_compliance", "revenue_target", "notes"},
        }
        for table, wanted in extras.items():
            cols = set(table_columns(conn, table))
            assert wanted <= cols, (table, wanted - cols)
            owned = set(model.TARGET_BY_NAME[table].types)
            assert not (wanted & owned)
        types = column_types(conn, model.REQUIREMENTS)
        assert types["ai_recommended_dates"] == "jsonb"
        assert column_types(conn, model.BUSINESS_UNIT)["target_compliance"] == "numeric(5,2)"
        n_fk = conn.execute(
            "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = 'public' AND c.contype = 'f'"
        ).fetchone()[0]
        assert n_fk == 0
        # ids default to gen_random_uuid(), created_at to now(); owned json columns default to NULL
        row = conn.execute(
            "INSERT INTO account_plan_event_requirements (plan_id, event_type_id, fiscal_year) "
            "VALUES (gen_random_uuid(), gen_random_uuid(), 2025) RETURNING id, created_at, linked_event_ids, updated_at"
        ).fetchone()
        assert isinstance(row[0], uuid.UUID) and row[1] is not None and row[2] is None and row[3] is None


def test_full_backs_every_key_with_a_unique_index_and_the_source_uniques(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        assert key_indexes(conn) == {t.name: key_index_name(t.name) for t in model.TARGETS}
        assert find_key_index(conn, "segmentation_event_types", ["event_code"])
        assert find_key_index(conn, "tier_event_requirements", ["event_type_id", "tier_id"])
        assert find_key_index(conn, "segmentation_event_compliance", ["client_name", "event_type_id", "year"])
        for table in SECTION3_TABLES:
            if "id" in table_columns(conn, table):
                assert find_key_index(conn, table, ["id"]), table


def test_full_creates_the_ledger(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        assert tuple(table_columns(conn, LEDGER_TABLE)) == ("id", *LEDGER_COLUMNS)
        types = column_types(conn, LEDGER_TABLE)
        assert types["fiscal_year"] == "integer" and types["as_of"] == "date"
        assert types["started_at"] == "timestamp with time zone" and types["error"] == "text"
        row = conn.execute(
            "INSERT INTO compliance_sync_runs (fiscal_year, as_of, started_at, mode, status) "
            "VALUES (2026, '2026-03-01', now(), 'live', 'succeeded') RETURNING id"
        ).fetchone()
        assert row[0] == 1
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute("INSERT INTO compliance_sync_runs (fiscal_year) VALUES (2026)")


def test_full_is_idempotent(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        before = {t: (table_columns(conn, t), index_names(conn, t)) for t in SECTION3_TABLES + (LEDGER_TABLE,)}
        log = apply_full(conn)
        assert any("already present" in line for line in log)
        assert not any(line.startswith("created") for line in log)
        after = {t: (table_columns(conn, t), index_names(conn, t)) for t in SECTION3_TABLES + (LEDGER_TABLE,)}
        assert before == after
        apply_full(conn)


def test_full_on_an_empty_database_logs_what_it_created(db_url):
    with psycopg.connect(db_url) as conn:
        log = apply_full(conn)
        assert any(line.startswith("created 14 table(s)") for line in log)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # committed


def test_full_refuses_a_populated_database_unless_forced(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        conn.execute(
            "INSERT INTO account_plans (client_name, fiscal_year) VALUES ('Alpha Health', 2025), ('Beta', 2025)"
        )
        conn.execute("INSERT INTO apac_planning_goals (fiscal_year) VALUES (2025)")
        conn.execute("DROP TABLE client_event_exclusions")  # will be created by the forced run
        conn.commit()
        with pytest.raises(DataError) as err:
            apply_full(conn)
        message = str(err.value)
        assert "account_plans (2 rows)" in message and "apac_planning_goals (1 row)" in message
        assert "--force" in message and "segmentation_events" not in message
        assert err.value.exit_code == 3
        # the refusal changed nothing and left the connection usable
        assert conn.execute("SELECT to_regclass('public.client_event_exclusions')").fetchone()[0] is None
        log = apply_full(conn, force=True)
        assert any("--force" in line for line in log)
        assert any(line.startswith("created 1 table(s): client_event_exclusions") for line in log)
        assert conn.execute("SELECT count(*) FROM account_plans").fetchone()[0] == 2


def test_full_refuses_rows_in_an_existing_table_of_a_partial_schema(db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TABLE segmentation_events (id uuid, client_name text)")
        conn.execute("INSERT INTO segmentation_events VALUES (gen_random_uuid(), 'x')")
        conn.commit()
        with pytest.raises(DataError, match=r"segmentation_events \(1 row\)"):
            apply_full(conn)
        assert conn.execute("SELECT to_regclass('public.account_plans')").fetchone()[0] is None


def test_event_year_is_generated_from_event_date(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        rows = conn.execute(
            "INSERT INTO segmentation_events (client_name, event_date) VALUES "
            "('a', '2025-12-31'), ('a', '2026-01-01'), ('a', NULL) RETURNING event_date, event_year"
        ).fetchall()
        assert rows == [(dt.date(2025, 12, 31), 2025), (dt.date(2026, 1, 1), 2026), (None, None)]
        conn.execute("UPDATE segmentation_events SET event_date = '2024-02-29' WHERE event_date = '2025-12-31'")
        assert (
            conn.execute("SELECT event_year FROM segmentation_events WHERE event_date = '2024-02-29'").fetchone()[0]
            == 2024
        )
        with pytest.raises(psycopg.errors.GeneratedAlways):
            conn.execute("INSERT INTO segmentation_events (client_name, event_year) VALUES ('a', 2025)")


# --- the minimal migration -------------------------------------------------------------------------------

BARE_TARGETS = {
    # what "in the wild" looks like: the columns, an id primary key, no key index
    model.REQUIREMENTS: "plan_id uuid, event_type_id uuid, fiscal_year int, client_name text, notes text",
    model.TERRITORY: "territory_strategy_id uuid, fiscal_year int, territory text",
    model.BUSINESS_UNIT: "bu_name text, fiscal_year int, revenue_target numeric",
    model.APAC: "fiscal_year int, actual_compliance numeric(5,2)",
}


def create_bare_targets(conn: psycopg.Connection, skip: tuple[str, ...] = ()) -> None:
    for table, columns in BARE_TARGETS.items():
        if table not in skip:
            conn.execute(
                f"CREATE TABLE {table} "
                f"(id uuid PRIMARY KEY DEFAULT gen_random_uuid(), {columns}, updated_at timestamptz)"
            )
    conn.commit()


def ts(hour: int) -> dt.datetime:
    return dt.datetime(2025, 3, 1, hour, tzinfo=dt.UTC)


def test_minimal_fails_naming_a_missing_target_table(db_url):
    with psycopg.connect(db_url) as conn:
        with pytest.raises(DataError) as err:
            apply_minimal(conn)
        for target in model.TARGETS:
            assert target.name in str(err.value)
        create_bare_targets(conn, skip=(model.TERRITORY,))
        with pytest.raises(DataError, match="territory_compliance_summary") as err:
            apply_minimal(conn)
        assert model.REQUIREMENTS not in str(err.value)
        assert conn.execute("SELECT to_regclass('public.compliance_sync_runs')").fetchone()[0] is None


def test_minimal_fails_naming_a_missing_key_column(db_url):
    with psycopg.connect(db_url) as conn:
        create_bare_targets(conn)
        conn.execute("ALTER TABLE business_unit_planning DROP COLUMN bu_name")
        conn.commit()
        with pytest.raises(DataError, match="business_unit_planning has no column bu_name"):
            apply_minimal(conn)


def test_minimal_creates_the_indexes_the_ledger_and_notifies_postgrest(db_url):
    with psycopg.connect(db_url) as conn, psycopg.connect(db_url, autocommit=True) as listener:
        create_bare_targets(conn)
        listener.execute("LISTEN pgrst")
        log = apply_minimal(conn)
        assert key_indexes(conn) == {t.name: key_index_name(t.name) for t in model.TARGETS}
        assert tuple(table_columns(conn, LEDGER_TABLE)) == ("id", *LEDGER_COLUMNS)
        assert any("compliance_sync_runs: created" in line for line in log)
        notes = list(listener.notifies(timeout=5, stop_after=1))
        assert [(n.channel, n.payload) for n in notes] == [("pgrst", "reload schema")]
        # only what §3.3 / §3.4 says: no other table appeared
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert tables == set(BARE_TARGETS) | {LEDGER_TABLE}


def test_minimal_is_idempotent(db_url):
    with psycopg.connect(db_url) as conn:
        create_bare_targets(conn)
        apply_minimal(conn)
        before = {t: index_names(conn, t) for t in BARE_TARGETS}
        log = apply_minimal(conn)
        assert sum("already backed by unique index" in line for line in log) == 4
        assert any("compliance_sync_runs: already present" in line for line in log)
        assert {t: index_names(conn, t) for t in BARE_TARGETS} == before


def test_minimal_after_the_full_migration_changes_nothing(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        before = {t.name: index_names(conn, t.name) for t in model.TARGETS}
        log = apply_minimal(conn)
        assert sum("already backed" in line for line in log) == 4
        assert {t.name: index_names(conn, t.name) for t in model.TARGETS} == before


def test_minimal_lists_duplicate_keys_and_stops(db_url):
    plan, etype = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(db_url) as conn:
        create_bare_targets(conn)
        conn.execute(
            "INSERT INTO account_plan_event_requirements (plan_id, event_type_id, fiscal_year) "
            "VALUES (%s, %s, 2025), (%s, %s, 2025), (%s, %s, 2025)",
            (plan, etype) * 3,
        )
        conn.execute(
            "INSERT INTO business_unit_planning (bu_name, fiscal_year) "
            "VALUES ('ANZ', 2025), ('ANZ', 2025), ('SEA', 2025)"
        )
        # NULL keys are not duplicates: a unique index accepts them
        conn.execute("INSERT INTO apac_planning_goals (fiscal_year) VALUES (NULL), (NULL), (2025)")
        conn.commit()
        with pytest.raises(DataError) as err:
            apply_minimal(conn)
        message = str(err.value)
        assert f"plan_id={plan}, event_type_id={etype}, fiscal_year=2025: 3 rows" in message
        assert "business_unit_planning (bu_name, fiscal_year): 1 duplicated key(s), 1 surplus row(s)" in message
        assert "bu_name=ANZ, fiscal_year=2025: 2 rows" in message
        assert "apac_planning_goals" not in message and "territory_compliance_summary" not in message
        assert "compliance-sync migrate --minimal --dedupe" in message
        # nothing changed: no index anywhere, no ledger, every row still there
        assert key_indexes(conn) == {t.name: None for t in model.TARGETS}
        assert conn.execute("SELECT to_regclass('public.compliance_sync_runs')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM account_plan_event_requirements").fetchone()[0] == 3


def test_minimal_lists_at_most_20_duplicate_keys_per_table(db_url):
    with psycopg.connect(db_url) as conn:
        create_bare_targets(conn)
        conn.execute(
            "INSERT INTO business_unit_planning (bu_name, fiscal_year) "
            "SELECT 'BU ' || lpad(g::text, 2, '0'), 2025 FROM generate_series(1, 25) g, generate_series(1, 2)"
        )
        conn.commit()
        with pytest.raises(DataError) as err:
            apply_minimal(conn)
        message = str(err.value)
        assert "25 duplicated key(s), 25 surplus row(s)" in message
        assert message.count(": 2 rows") == 20
        assert "... and 5 more duplicated key(s)" in message


def test_minimal_dedupe_keeps_the_latest_updated_at(db_url):
    plan, etype = uuid.uuid4(), uuid.uuid4()
    ids = [uuid.UUID(int=i, version=4) for i in range(1, 12)]  # increasing uuids
    with psycopg.connect(db_url) as conn:
        create_bare_targets(conn)
        conn.execute(
            "INSERT INTO account_plan_event_requirements (id, plan_id, event_type_id, fiscal_year, notes, updated_at) "
            "VALUES "
            "(%s, %s, %s, 2025, 'null updated_at: oldest', NULL),"
            "(%s, %s, %s, 2025, 'latest', %s),"
            "(%s, %s, %s, 2025, 'older', %s),"
            "(%s, %s, %s, 2026, 'only one', NULL)",
            (ids[9], plan, etype, ids[0], plan, etype, ts(12), ids[8], plan, etype, ts(9), ids[1], plan, etype),
        )
        # a tie on updated_at: the greatest id wins; all NULL: the greatest id wins
        conn.execute(
            "INSERT INTO business_unit_planning (id, bu_name, fiscal_year, updated_at) VALUES "
            "(%s, 'ANZ', 2025, %s), (%s, 'ANZ', 2025, %s), (%s, 'ANZ', 2025, %s),"
            "(%s, 'SEA', 2025, NULL), (%s, 'SEA', 2025, NULL)",
            (ids[2], ts(10), ids[6], ts(10), ids[7], ts(8), ids[3], ids[5]),
        )
        conn.execute("INSERT INTO apac_planning_goals (fiscal_year) VALUES (NULL), (NULL)")
        conn.commit()
        log = apply_minimal(conn, dedupe=True)
        assert any("account_plan_event_requirements: --dedupe deleted 2 duplicate row(s)" in line for line in log)
        assert any(f"deleted id {ids[9]}" in line for line in log)
        left = conn.execute("SELECT notes FROM account_plan_event_requirements ORDER BY fiscal_year").fetchall()
        assert left == [("latest",), ("only one",)]
        kept = conn.execute("SELECT bu_name, id FROM business_unit_planning ORDER BY bu_name").fetchall()
        assert kept == [("ANZ", ids[6]), ("SEA", ids[5])]
        assert conn.execute("SELECT count(*) FROM apac_planning_goals").fetchone()[0] == 2  # NULL keys kept
        assert key_indexes(conn) == {t.name: key_index_name(t.name) for t in model.TARGETS}
        # idempotent: nothing left to deduplicate
        log = apply_minimal(conn, dedupe=True)
        assert not any("deleted" in line for line in log)


def test_minimal_dedupe_without_updated_at_or_id_falls_back_to_ctid(db_url):
    with psycopg.connect(db_url) as conn:
        create_bare_targets(conn, skip=(model.APAC,))
        conn.execute("CREATE TABLE apac_planning_goals (fiscal_year int, notes text)")
        conn.execute("INSERT INTO apac_planning_goals VALUES (2025, 'first'), (2025, 'second')")
        conn.commit()
        apply_minimal(conn, dedupe=True)
        assert conn.execute("SELECT notes FROM apac_planning_goals").fetchall() == [("second",)]


def test_minimal_recognises_existing_unique_indexes_whatever_their_name(db_url):
    with psycopg.connect(db_url) as conn:
        create_bare_targets(conn, skip=(model.APAC,))
        conn.execute("CREATE TABLE apac_planning_goals (fiscal_year int PRIMARY KEY, updated_at timestamptz)")
        conn.execute("CREATE UNIQUE INDEX bu_year_uq ON business_unit_planning (fiscal_year, bu_name)")
        conn.execute(
            "ALTER TABLE territory_compliance_summary ADD CONSTRAINT tcs_uq UNIQUE (territory_strategy_id, fiscal_year)"
        )
        conn.commit()
        log = apply_minimal(conn)
        assert key_indexes(conn) == {
            model.REQUIREMENTS: key_index_name(model.REQUIREMENTS),
            model.TERRITORY: "tcs_uq",
            model.BUSINESS_UNIT: "bu_year_uq",
            model.APAC: "apac_planning_goals_pkey",
        }
        assert index_names(conn, model.BUSINESS_UNIT) == {"business_unit_planning_pkey", "bu_year_uq"}
        assert any("already backed by unique index bu_year_uq" in line for line in log)
        assert sum("created unique index" in line for line in log) == 1


def test_find_key_index_ignores_indexes_that_cannot_back_the_key(db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TABLE t (id uuid, bu_name text, fiscal_year int, x int)")
        conn.execute("CREATE UNIQUE INDEX t_partial ON t (bu_name, fiscal_year) WHERE x IS NOT NULL")
        conn.execute("CREATE UNIQUE INDEX t_expr ON t (lower(bu_name), fiscal_year)")
        conn.execute("CREATE UNIQUE INDEX t_wider ON t (bu_name, fiscal_year, id)")
        conn.execute("CREATE INDEX t_plain ON t (bu_name, fiscal_year)")
        conn.execute("CREATE UNIQUE INDEX t_narrow ON t (bu_name)")
        conn.execute("ALTER TABLE t ADD CONSTRAINT t_deferrable UNIQUE (fiscal_year, x) DEFERRABLE")
        assert find_key_index(conn, "t", ["bu_name", "fiscal_year"]) is None
        assert find_key_index(conn, "t", ["fiscal_year", "x"]) is None
        assert find_key_index(conn, "t", ["bu_name"]) == "t_narrow"
        conn.execute("CREATE UNIQUE INDEX t_including ON t (fiscal_year, bu_name) INCLUDE (x)")
        assert find_key_index(conn, "t", ["bu_name", "fiscal_year"]) == "t_including"
        assert find_key_index(conn, "no_such_table", ["bu_name"]) is None
        conn.execute('CREATE TABLE "Mixed Case" ("Key" int UNIQUE)')
        assert find_key_index(conn, "Mixed Case", ["Key"]) == "Mixed Case_Key_key"


def test_minimal_stops_when_its_index_name_is_taken_by_another_index(db_url):
    with psycopg.connect(db_url) as conn:
        create_bare_targets(conn)
        conn.execute("CREATE INDEX business_unit_planning_compliance_sync_key ON business_unit_planning (bu_name)")
        conn.commit()
        with pytest.raises(DataError, match="business_unit_planning_compliance_sync_key already exists"):
            apply_minimal(conn)
        assert key_indexes(conn)[model.REQUIREMENTS] is None  # rolled back


def test_migrations_work_on_an_autocommit_connection(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        apply_full(conn)
        apply_minimal(conn)
        assert key_indexes(conn)[model.APAC] == key_index_name(model.APAC)


def test_forced_full_migration_over_duplicate_keys_is_a_data_error(db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TABLE business_unit_planning (bu_name text, fiscal_year int)")
        conn.execute("INSERT INTO business_unit_planning VALUES ('ANZ', 2025), ('ANZ', 2025)")
        conn.commit()
        with pytest.raises(DataError, match=r"is duplicated.*--minimal"):
            apply_full(conn, force=True)
        assert conn.execute("SELECT to_regclass('public.account_plans')").fetchone()[0] is None
