"""Demo and scale data (compliance_sync.devtools.demo) against real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import pathlib
import random
import uuid

import psycopg
import pytest
import yaml

from compliance_sync.backends.catalog import row_counts
from compliance_sync.devtools import demo
from compliance_sync.domain.tables import SECTION3_TABLES
from compliance_sync.errors import DataError

EXAMPLE_BU_MAP = pathlib.Path(demo.__file__).parents[1] / "bu_map.example.yaml"


def fingerprint(conn: psycopg.Connection) -> dict[str, str]:
    """An md5 of every id per table (and of the event rows themselves)."""
    out = {}
    for table in (
        "segmentation_tiers",
        "segmentation_event_types",
        "client_segmentation",
        "account_plans",
        "territory_strategies",
    ):
        out[table] = conn.execute(f"SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM {table}").fetchone()[0]
    out["events"] = conn.execute(
        "SELECT md5(string_agg(concat_ws('|', id, client_name, event_type_id, event_date, completed), ',' "
        "ORDER BY id)) FROM segmentation_events"
    ).fetchone()[0]
    return out


def scalar(conn: psycopg.Connection, query: str, params=None):
    return conn.execute(query, params).fetchone()[0]


def test_new_uuid_is_uuid4_of_the_random_bits():
    a, b = random.Random(3), random.Random(3)
    for _ in range(200):
        assert demo.new_uuid(a) == str(uuid.UUID(int=b.getrandbits(128), version=4))


def test_default_demo_loads_the_reference_data_and_about_60_clients(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        counts = demo.load_demo_data(conn)
        assert counts == {t: n for t, n in row_counts(conn, SECTION3_TABLES).items() if t in counts}
        assert set(counts) == set(SECTION3_TABLES) - {"account_plan_event_requirements", "territory_compliance_summary"}
        assert counts["segmentation_tiers"] == 6
        assert counts["segmentation_event_types"] == 13 and counts["tier_event_requirements"] == 78
        assert 2_000 <= counts["segmentation_events"] <= 8_000
        tiers = {r[0] for r in conn.execute("SELECT tier_name FROM segmentation_tiers")}
        assert tiers == {"Giant", "Collaboration", "Leverage", "Maintain", "Nurture", "Sleeping Giant"}
        codes = dict(conn.execute("SELECT event_code, is_active FROM segmentation_event_types").fetchall())
        assert {c for c, active in codes.items() if active} == {
            "PGL_ENGAGE",
            "EVP_ENGAGE",
            "STRAT_OPS",
            "SAT_PLAN",
            "SLA_REVIEW",
            "CE_ONSITE",
            "INSIGHT_TP",
            "HEALTH_CHECK",
            "RELEASE_PLAN",
            "WHITESPACE",
            "CLIENT_FORUM",
            "UPDATE_360",
        }
        assert codes["QBR_LEGACY"] is False
        freq = dict(
            ((t, c), f)
            for t, c, f in conn.execute(
                "SELECT t.tier_name, e.event_code, r.frequency FROM tier_event_requirements r "
                "JOIN segmentation_tiers t ON t.id = r.tier_id "
                "JOIN segmentation_event_types e ON e.id = r.event_type_id"
            )
        )
        assert freq[("Giant", "INSIGHT_TP")] == 12 and freq[("Giant", "SLA_REVIEW")] == 4
        assert freq[("Nurture", "EVP_ENGAGE")] == 0
        for code in codes:  # higher tiers never require less than lower ones
            ladder = [freq[(t, code)] for t in ("Giant", "Collaboration", "Leverage", "Maintain", "Nurture")]
            assert ladder == sorted(ladder, reverse=True), code
        # FY2026: every client has exactly one plan, none archived
        assert scalar(conn, "SELECT count(*) FROM account_plans WHERE fiscal_year = 2026") == 60
        assert scalar(conn, "SELECT count(DISTINCT client_name) FROM account_plans WHERE fiscal_year = 2026") == 60
        assert scalar(conn, "SELECT count(*) FROM account_plans WHERE fiscal_year = 2026 AND status = 'archived'") == 0
        statuses = {r[0] for r in conn.execute("SELECT DISTINCT status FROM account_plans")}
        assert {"approved", "submitted", "draft", "archived"} <= statuses
        assert 1 <= scalar(conn, "SELECT count(*) FROM account_plans WHERE status = 'archived'") <= 4
        assert {r[0] for r in conn.execute("SELECT DISTINCT fiscal_year FROM account_plans")} == {2024, 2025, 2026}
        # ~10 CSEs, one territory each, every territory mapped by the example BU map
        cse_territories = conn.execute("SELECT DISTINCT cse_name, territory FROM territory_strategies").fetchall()
        assert 9 <= len(cse_territories) <= 12 and len({c for c, _ in cse_territories}) == len(cse_territories)
        bu_map = yaml.safe_load(EXAMPLE_BU_MAP.read_text(encoding="utf-8"))
        assert set(bu_map) == {"cse", "territory"}
        for cse, territory in cse_territories:
            assert bu_map["cse"].get(cse) or bu_map["territory"].get(territory), (cse, territory)
        assert set(bu_map["territory"].values()) | set(bu_map["cse"].values()) == {"ANZ", "SEA", "Greater China"}


def test_demo_is_deterministic_refuses_a_populated_database_and_force_reloads(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        counts = demo.load_demo_data(conn)
        first = fingerprint(conn)
        with pytest.raises(DataError) as err:
            demo.load_demo_data(conn)
        message = str(err.value)
        assert "--force" in message and "segmentation_events (" in message and "account_plans (" in message
        assert fingerprint(conn) == first  # the refusal changed nothing
        # planner-owned rows that the job never writes are replaced too
        conn.execute(
            "INSERT INTO account_plan_event_requirements (plan_id, event_type_id, fiscal_year, notes) "
            "VALUES (gen_random_uuid(), gen_random_uuid(), 2026, 'x')"
        )
        conn.commit()
        assert demo.load_demo_data(conn, force=True) == counts
        assert fingerprint(conn) == first
        assert scalar(conn, "SELECT count(*) FROM account_plan_event_requirements") == 0
        other = demo.load_demo_data(conn, force=True, seed=8)
        assert fingerprint(conn)["account_plans"] != first["account_plans"]
        assert other["segmentation_tiers"] == 6


def test_demo_refuses_when_only_a_target_holds_rows(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        conn.execute("INSERT INTO apac_planning_goals (fiscal_year, notes) VALUES (2026, 'a real goal')")
        conn.commit()
        with pytest.raises(DataError, match=r"apac_planning_goals \(1 row\)"):
            demo.load_demo_data(conn)
        assert scalar(conn, "SELECT notes FROM apac_planning_goals") == "a real goal"
        assert scalar(conn, "SELECT count(*) FROM segmentation_tiers") == 0


def test_demo_needs_the_schema(db_url):
    with psycopg.connect(db_url) as conn:
        with pytest.raises(DataError, match="compliance-sync migrate"):
            demo.load_demo_data(conn)


def test_demo_data_has_the_documented_shape(migrated_db):
    today = demo.DEMO_DEFAULTS.today
    with psycopg.connect(migrated_db) as conn:
        demo.load_demo_data(conn)
        # events: 2024-2026, event_year generated, future ones never completed, most past ones completed
        lo, hi = conn.execute("SELECT min(event_date), max(event_date) FROM segmentation_events").fetchone()
        assert dt.date(2024, 1, 1) <= lo and hi <= dt.date(2026, 12, 31)
        assert (
            scalar(
                conn,
                "SELECT count(*) FROM segmentation_events "
                "WHERE event_year IS DISTINCT FROM extract(year FROM event_date)::int",
            )
            == 0
        )
        assert (
            scalar(conn, "SELECT count(*) FROM segmentation_events WHERE completed AND event_date > %s", (today,)) == 0
        )
        assert scalar(conn, "SELECT count(*) FROM segmentation_events WHERE event_date > %s", (today,)) > 0
        share = scalar(conn, "SELECT avg(completed::int) FROM segmentation_events WHERE event_date <= %s", (today,))
        assert 0.8 <= share <= 0.95
        assert scalar(conn, "SELECT count(*) FROM segmentation_events WHERE extract(isodow FROM event_date) > 5") == 0
        assert scalar(conn, "SELECT count(*) FROM segmentation_events WHERE event_date IS NULL") >= 1
        months = scalar(conn, "SELECT count(DISTINCT date_trunc('month', event_date)) FROM segmentation_events")
        assert months == 36
        # segment periods from 2023; some clients change tier mid-year (closed period, then an open one)
        assert scalar(conn, "SELECT min(effective_from) FROM client_segmentation") == dt.date(2023, 1, 1)
        changes = scalar(
            conn,
            "SELECT count(*) FROM client_segmentation a JOIN client_segmentation b "
            "ON a.client_name = b.client_name AND b.effective_from = a.effective_to + 1 AND a.tier_id <> b.tier_id",
        )
        assert changes >= 5
        assert scalar(conn, "SELECT count(*) FROM client_segmentation WHERE effective_to < effective_from") == 0
        assert scalar(conn, "SELECT count(*) FROM client_segmentation WHERE effective_to IS NULL") == scalar(
            conn, "SELECT count(DISTINCT client_name) FROM client_segmentation"
        )
        assert 5 <= scalar(conn, "SELECT count(DISTINCT client_uuid) FROM client_segmentation") <= 30
        assert scalar(conn, "SELECT count(*) FROM account_plans WHERE client_id IS NOT NULL") > 0
        # a client with plans and no segmentation; a client without CSE
        assert (
            scalar(
                conn,
                "SELECT count(DISTINCT client_name) FROM account_plans "
                "WHERE client_name NOT IN (SELECT client_name FROM client_segmentation)",
            )
            == 1
        )
        assert (
            scalar(conn, "SELECT count(*) FROM client_segmentation WHERE cse_name IS NULL AND effective_to IS NULL")
            == 1
        )
        # exclusions: greyed out (kept), NULL and declined (removed)
        reasons = [r[0] for r in conn.execute("SELECT reason FROM client_event_exclusions ORDER BY reason NULLS LAST")]
        assert reasons == ["Client declined", "Greyed out - not applicable", None]
        declined = scalar(
            conn,
            "SELECT count(*) FROM segmentation_events e "
            "JOIN client_event_exclusions x USING (client_name, event_type_id) "
            "WHERE x.reason IS DISTINCT FROM 'Greyed out - not applicable'",
        )
        assert declined == 0
        # strategies: an annual one per CSE and FY (but one CSE misses FY2024), some quarterly ones
        per_fy = dict(
            conn.execute(
                "SELECT fiscal_year, count(DISTINCT cse_name) FROM territory_strategies "
                "WHERE coalesce(quarter, '') = '' AND status <> 'archived' GROUP BY 1"
            ).fetchall()
        )
        assert per_fy == {2024: 10, 2025: 11, 2026: 11}
        assert scalar(conn, "SELECT count(*) FROM territory_strategies WHERE quarter LIKE 'Q_'") > 0
        assert scalar(conn, "SELECT count(*) FROM territory_strategies WHERE quarter = ''") > 0
        assert scalar(conn, "SELECT count(*) FROM territory_strategies WHERE updated_at IS NULL") == 0
        # the compliance cache: 2024 and 2025, mostly consistent with the events, a few stale rows
        assert {r[0] for r in conn.execute("SELECT DISTINCT year FROM segmentation_event_compliance")} == {2024, 2025}
        consistent, stale = conn.execute(
            """
            SELECT count(*) FILTER (WHERE c.actual_count = coalesce(e.n, 0)),
                   count(*) FILTER (WHERE c.actual_count <> coalesce(e.n, 0))
            FROM segmentation_event_compliance c
            LEFT JOIN (SELECT client_name, event_type_id, event_year, count(*) AS n FROM segmentation_events
                       WHERE completed GROUP BY 1, 2, 3) e
              ON e.client_name = c.client_name AND e.event_type_id = c.event_type_id AND e.event_year = c.year
            """
        ).fetchone()
        assert stale >= 1 and consistent >= 0.9 * (consistent + stale)
        # planning rows the job must not overwrite
        bus = conn.execute(
            "SELECT bu_name, count(*) FROM business_unit_planning WHERE target_compliance IS NOT NULL "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert bus == [("ANZ", 3), ("Greater China", 3), ("Japan", 1), ("SEA", 3)]
        assert (
            scalar(conn, "SELECT count(*) FROM business_unit_planning WHERE overall_compliance_percentage IS NOT NULL")
            == 0
        )
        assert scalar(conn, "SELECT count(*) FROM apac_planning_goals WHERE actual_compliance IS NULL") == 3


def test_demo_clients_spread_from_diligent_to_critical(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        demo.load_demo_data(conn)
        ratios = [
            float(r[0])
            for r in conn.execute(
                """
                WITH req AS (
                    SELECT s.client_name, r.event_type_id, max(r.frequency) AS r
                    FROM client_segmentation s
                    JOIN tier_event_requirements r ON r.tier_id = s.tier_id
                    JOIN segmentation_event_types t ON t.id = r.event_type_id AND t.is_active
                    WHERE s.effective_from <= '2025-12-31'
                      AND (s.effective_to IS NULL OR s.effective_to >= '2025-01-01')
                    GROUP BY 1, 2 HAVING max(r.frequency) > 0
                ), done AS (
                    SELECT client_name, event_type_id, count(*) AS c FROM segmentation_events
                    WHERE completed AND event_date BETWEEN '2025-01-01' AND '2025-12-31' GROUP BY 1, 2
                )
                SELECT sum(least(coalesce(done.c, 0), req.r))::numeric / sum(req.r)
                FROM req LEFT JOIN done USING (client_name, event_type_id)
                GROUP BY req.client_name
                """
            )
        ]
        assert len(ratios) >= 55
        assert sum(r >= 0.9 for r in ratios) >= 3  # diligent
        assert sum(r < 0.45 for r in ratios) >= 3  # critical
        assert sum(0.45 <= r < 0.9 for r in ratios) >= len(ratios) / 2  # most


def test_demo_today_separates_completed_from_scheduled(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        default = demo.load_demo_data(conn)
        ids = fingerprint(conn)
        counts = demo.load_demo_data(conn, force=True, today=dt.date(2025, 6, 30))
        assert counts == default
        assert (
            scalar(conn, "SELECT count(*) FROM segmentation_events WHERE completed AND event_date > '2025-06-30'") == 0
        )
        assert fingerprint(conn)["account_plans"] == ids["account_plans"]  # only completion flags moved


def test_scale_smoke_plans_per_client_and_generated_cses(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        counts = demo.load_demo_data(conn, clients=200, plans_per_client=2, seed=11)
        assert scalar(conn, "SELECT count(*) FROM account_plans WHERE fiscal_year = 2026") == 400
        per_client = {
            r[0]
            for r in conn.execute(
                "SELECT count(DISTINCT id) FROM account_plans WHERE fiscal_year = 2026 GROUP BY client_name"
            )
        }
        assert per_client == {2}
        assert scalar(conn, "SELECT count(DISTINCT client_name) FROM account_plans") == 200
        segmented = scalar(conn, "SELECT count(DISTINCT client_name) FROM client_segmentation")
        assert 40 <= counts["segmentation_events"] / segmented <= 80  # ~60 per client over three years
        cses = conn.execute("SELECT DISTINCT cse_name, territory FROM territory_strategies").fetchall()
        assert len(cses) == 34  # one CSE per ~6 clients
        bu_map = yaml.safe_load(EXAMPLE_BU_MAP.read_text(encoding="utf-8"))
        for cse, territory in cses:
            assert bu_map["cse"].get(cse) or bu_map["territory"].get(territory), (cse, territory)
        # events_scale multiplies the volume
        more = demo.load_demo_data(conn, clients=200, plans_per_client=2, seed=11, events_scale=2.0, force=True)
        assert 1.8 <= more["segmentation_events"] / counts["segmentation_events"] <= 2.2
        assert more["account_plans"] == counts["account_plans"]


def test_demo_rejects_nonsense_arguments(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        for kwargs in ({"clients": 0}, {"plans_per_client": 0}, {"events_scale": -1}):
            with pytest.raises(ValueError):
                demo.load_demo_data(conn, **kwargs)


def test_scale_settings_are_documented():
    assert (demo.SCALE_DEMO.clients, demo.SCALE_DEMO.plans_per_client) == (10_000, 2)
    assert demo.DEMO_DEFAULTS.clients == 60 and demo.DEMO_DEFAULTS.plans_per_client == 1


def test_demo_on_an_autocommit_connection_and_tiny_client_counts(db_url):
    from compliance_sync.backends.postgres.migrate import apply_full

    with psycopg.connect(db_url, autocommit=True) as conn:
        apply_full(conn)
        for n in (1, 4):
            counts = demo.load_demo_data(conn, clients=n, force=True)
            assert scalar(conn, "SELECT count(*) FROM account_plans WHERE fiscal_year = 2026") == n
            assert counts["segmentation_tiers"] == 6
