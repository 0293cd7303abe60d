"""``compliance-sync explain`` against a real PostgreSQL (the demo dataset) and the PostgREST test server: every
figure it explains equals the row a sync writes, on both backends; it only reads; a name that matches nothing
exits 2 with the closest names."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from compliance_sync.backends.postgres import LOCK_CLASS, PostgresBackend
from compliance_sync.config.settings import load_settings
from compliance_sync.domain.explanation import Subject
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.tables import APAC, BUSINESS_UNIT, REQUIREMENTS, TERRITORY
from compliance_sync.entrypoints.cli import main
from compliance_sync.entrypoints.launch import EXPLAIN_EXAMPLE
from compliance_sync.service.explain import explain
from compliance_sync.service.sync import Mode
from compliance_sync_tests.rest_support import rest_backend, rest_server, run, target_state

FY = FiscalYear(2025, 1)
AS_OF = dt.date(2025, 9, 30)  # mid-year: completed, scheduled and completed-but-future events all occur


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["explain", "--year", "2025", "--as-of", AS_OF.isoformat(), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def scalars(url: str, query: str) -> list:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(query)]


def synced(url: str):
    """The demo data synced live for FY2025 at AS_OF (through the sync's own function); its settings and BU map."""
    settings = load_settings()
    bu_map = settings.bu_map()
    outcome = run(PostgresBackend(url), bu_map, settings, Mode.LIVE, fy=FY, as_of=AS_OF)
    assert outcome.error is None and outcome.written
    return settings, bu_map


def pct(value) -> Decimal:
    return Decimal(str(value)).normalize()


def sweep(backend, settings, bu_map, url: str, plans_every: int = 1) -> int:
    """Explain every plan, territory, BU and APAC of FY2025 and compare each figure with the synced target row."""
    state = target_state(url)
    plans = scalars(
        url,
        "SELECT id::text FROM account_plans WHERE fiscal_year = 2025 AND status IS DISTINCT FROM 'archived' "
        "ORDER BY id",
    )
    checked = 0
    for plan in plans[::plans_every]:
        x = explain(backend, settings, bu_map, FY, AS_OF, Subject("plan", plan))
        assert x["targets"]["in_sync"], x["targets"]
        rows = {k[1]: v for k, v in state[REQUIREMENTS].items() if k[0] == plan}
        assert sorted(rows) == sorted(t["event_type_id"] for t in x["event_types"]), plan
        for t in x["event_types"]:
            row = rows[t["event_type_id"]]
            assert (
                t["required_count"],
                t["completed_count"],
                t["scheduled_count"],
                t["status"],
                t["next_due_date"],
            ) == (
                row["required_count"],
                row["completed_count"],
                row["scheduled_count"],
                row["status"],
                row["next_due_date"],
            ), (plan, t["event_type_name"])
            assert (
                pct(t["compliance_percentage"]) == row["compliance_percentage"]
                and len(t["compliance_percentage"].split(".")[1]) == 2
            )
            linked = row["linked_event_ids"]
            assert (
                t["counted_event_ids"] == [i for i in linked if i in set(t["counted_event_ids"])]
                and len(t["counted_event_ids"]) == t["completed_count"]
            )
            assert sorted(t["counted_event_ids"] + t["scheduled_event_ids"]) == sorted(linked)
            assert max(s["frequency"] for s in t["requirement_sources"]) == t["required_count"]
            checked += 1
    for name in scalars(
        url,
        "SELECT DISTINCT territory FROM territory_strategies "
        "WHERE fiscal_year = 2025 AND status IS DISTINCT FROM 'archived'",
    ):
        x = explain(backend, settings, bu_map, FY, AS_OF, Subject("territory", name))
        assert x["targets"]["in_sync"], x["targets"]
        for r in x["rows"]:
            row = state[TERRITORY][(r["territory_strategy_id"], 2025)]
            assert (
                r["total_clients"],
                r["total_required_events"],
                r["total_completed_events"],
                r["clients_at_risk"],
                r["clients_critical"],
            ) == (
                row["total_clients"],
                row["total_required_events"],
                row["total_completed_events"],
                row["clients_at_risk"],
                row["clients_critical"],
            )
            assert pct(r["overall_compliance_percentage"]) == row["overall_compliance_percentage"]
            assert sum(c["required_total"] for c in r["contributors"]) == row["total_required_events"]
            checked += 1
        if len(x["rows"]) == 1:
            assert pct(x["overall_compliance_percentage"]) == pct(x["rows"][0]["overall_compliance_percentage"])
            assert x["total_required_events"] == x["rows"][0]["total_required_events"]
    for bu in sorted(set(bu_map.cse.values()) | set(bu_map.territory.values())):
        x = explain(backend, settings, bu_map, FY, AS_OF, Subject("bu", bu))
        row = state[BUSINESS_UNIT][(bu, 2025)]
        assert x["targets"]["in_sync"]
        assert (pct(x["overall_compliance_percentage"]), x["clients_below_compliance"], x["territory_count"]) == (
            row["overall_compliance_percentage"],
            row["clients_below_compliance"],
            row["territory_count"],
        )
        assert sum(t["clients"] for t in x["contributors"]) == sum(t["clients"] for t in row["territory_data"])
        checked += 1
    x = explain(backend, settings, bu_map, FY, AS_OF, Subject("apac"))
    row = state[APAC][(2025,)]
    assert x["targets"]["in_sync"]
    assert (pct(x["overall_compliance_percentage"]), x["below_compliance_accounts"]) == (
        row["actual_compliance"],
        row["below_compliance_accounts"],
    )
    assert [(c["bu_name"], c["clients"], pct(c["compliance_percentage"])) for c in x["contributors"]] == [
        (c["bu_name"], c["clients"], c["compliance"]) for c in row["bu_contributions"]
    ]
    return checked + 1


def test_every_explained_figure_equals_what_a_sync_wrote_direct_and_rest(demo_db):
    settings, bu_map = synced(demo_db)
    assert sweep(PostgresBackend(demo_db), settings, bu_map, demo_db) > 100
    with rest_server(demo_db) as srv:
        assert sweep(rest_backend(srv), settings, bu_map, demo_db) > 100
        assert {r.method for r in srv.requests} <= {"GET", "HEAD"}  # read-only over REST: no POST, PATCH, DELETE


def test_explain_before_a_sync_shows_the_rows_a_sync_would_write(demo_db, capsys):
    """The client the demo's next steps name, before any sync: every row is one a sync would insert."""
    code, out, _ = cli(capsys, "--client", EXPLAIN_EXAMPLE)
    assert code == 0
    assert "now against what a sync would write (0 now" in out and "\n  + account_plan_event_requirements " in out
    assert scalars(demo_db, f"SELECT count(*) FROM {REQUIREMENTS}") == [0]


def test_explain_only_reads(demo_db, capsys, monkeypatch):
    """With a role that may only SELECT (no TEMPORARY on the database) and the FY's advisory lock held by another
    session, explain still answers; the same role cannot even dry-run a sync (so the test can fail)."""
    settings, bu_map = synced(demo_db)
    role = f"cs_reader_{uuid.uuid4().hex[:8]}"
    dbname = conninfo_to_dict(demo_db)["dbname"]
    with psycopg.connect(demo_db, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        try:
            admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
            admin.execute(f'REVOKE TEMPORARY ON DATABASE "{dbname}" FROM PUBLIC')
            admin.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, 2025))
            ledger = scalars(demo_db, "SELECT count(*) FROM compliance_sync_runs")
            state = target_state(demo_db, with_stamps=True)
            monkeypatch.setenv("SUPABASE_DB_URL", make_conninfo(demo_db, user=role))
            monkeypatch.setenv("COMPLIANCE_SYNC_LOCK_TIMEOUT", "1")
            for args in (
                ("--apac",),
                (
                    "--client",
                    scalars(demo_db, "SELECT min(client_name) FROM account_plans WHERE fiscal_year = 2025")[0],
                ),
            ):
                code, out, err = cli(capsys, *args, "--json")
                assert code == 0, err
                assert json.loads(out)["targets"]["in_sync"] is True
            admin.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, 2025))
            code = main(
                ["--dry-run", "--year", "2025", "--as-of", AS_OF.isoformat(), "--json"]
            )  # a sync stages in temporary tables
            assert code == 3 and json.loads(capsys.readouterr().out)["exit_code"] == 3
            assert scalars(demo_db, "SELECT count(*) FROM compliance_sync_runs") == ledger
            assert target_state(demo_db, with_stamps=True) == state
        finally:
            admin.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"')
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')


def test_near_miss_names_are_listed_as_not_counted(demo_db, capsys):
    client = scalars(demo_db, "SELECT min(client_name) FROM account_plans WHERE fiscal_year = 2025")[0]
    code, out, _ = cli(capsys, "--client", client, "--json")
    type_id = json.loads(out)["event_types"][0]["event_type_id"]  # a type required of the client
    alias = f"{client.upper()} PTY LTD"
    with psycopg.connect(demo_db) as conn:
        conn.execute(
            "INSERT INTO segmentation_events (id, client_name, event_type_id, event_date, completed) VALUES "
            "(gen_random_uuid(), %s, %s, '2025-03-03', true), (gen_random_uuid(), %s, %s, '2025-04-04', true)",
            (alias, type_id, alias, type_id),
        )
    code, out, _ = cli(capsys, "--client", client, "--json")
    x = json.loads(out)
    assert code == 0 and x["possible_aliases"] == [{"name": alias, "events": 2}]
    row = next(t for t in x["event_types"] if t["event_type_id"] == type_id)
    assert [n["reason"].split(",")[0] for n in row["not_counted"] if "logged under" in n["reason"]] == [
        f"logged under {alias!r}"
    ] * 2
    assert x["warnings"]["possible_alias"] >= 1
    code, out, _ = cli(capsys, "--client", client)
    assert f"not counted: logged under {alias!r}" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "one of the arguments --client --plan --territory --bu --apac is required"),
        (("--client", "x", "--bu", "ANZ"), "not allowed with argument"),
        (("--client", "alpha healht"), "closest: 'Alpha Health'"),
        (("--territory", "vic + nz"), "closest: 'VIC + NZ'"),
        (("--bu", "anz"), "closest: 'ANZ'"),
        (("--plan", "00000000-0000-4000-8000-000000000000"), "no plan in scope"),
    ],
)
def test_usage_errors_exit_2_with_one_json_object(demo_db, capsys, args, needle):
    code, out, err = cli(capsys, *args, "--json")
    assert code == 2
    result = json.loads(out)  # exactly one object
    assert result["exit_code"] == 2 and needle in result["error"]
    assert "Traceback" not in err


def test_apac_as_json_and_the_sync_flags_unchanged(demo_db, capsys):
    code, out, _ = cli(capsys, "--apac", "--json")
    x = json.loads(out)
    assert code == 0 and x["exit_code"] == 0 and x["fiscal_year"] == 2025 and x["as_of"] == AS_OF.isoformat()
    assert {"overall_compliance_percentage", "total_required_events", "total_completed_events", "contributors"} <= set(
        x
    )
    assert x["targets"]["in_sync"] is False  # nothing synced yet: the APAC row a sync would write
    assert (
        main(["--dry-run", "--year", "2025", "--json"]) == 0
        and json.loads(capsys.readouterr().out)["mode"] == "dry_run"
    )
