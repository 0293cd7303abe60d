"""Supabase's roles over REST: grants and row-level security decide what a key reads and writes, as on Supabase.

The database carries policies like the app's: row-level security on every table, and on the four targets a policy
letting ``authenticated`` read and write only the rows of the fiscal year its JWT names (``request.jwt.claims``);
``anon`` has no policy; ``service_role`` bypasses them all. The job (service key) must still read and write
everything; a user's JWT and the anon key must see and change only what the policies allow.
"""

from __future__ import annotations

import threading

import httpx
import psycopg
import pytest

from compliance_sync.domain.tables import REQUIREMENTS, TARGETS
from compliance_sync.service.summary import summary as summary_of
from compliance_sync_tests.postgrest_server.database import prepare_supabase_roles
from compliance_sync_tests.rest_support import (
    clone,
    direct,
    drop,
    rest_backend,
    rest_server,
    run,
    settings_for,
    target_state,
)
from compliance_sync_tests.scenario import appendix_a
from compliance_sync_tests.world import execute, load, scalar

FY_OF_THE_TOKEN = "fiscal_year::text = current_setting('request.jwt.claims', true)::json ->> 'fiscal_year'"
APP_POLICIES = [
    """DO $$ DECLARE t text; BEGIN
         FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
           EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
         END LOOP;
       END $$""",
    *(
        f"CREATE POLICY fy_of_the_token ON public.{t.name} FOR ALL TO authenticated "
        f"USING ({FY_OF_THE_TOKEN}) WITH CHECK ({FY_OF_THE_TOKEN})"
        for t in TARGETS
    ),
]


@pytest.fixture
def rls_db(migrated_db):
    """Appendix A under the app-like policies."""
    load(migrated_db, appendix_a())
    execute(migrated_db, *APP_POLICIES)
    return migrated_db


def count(url: str, table: str, where: str = "true") -> int:
    return scalar(url, f"SELECT count(*) FROM public.{table} WHERE {where}")


def test_supabase_roles_exist_as_supabase_defines_them(rls_db):
    with rest_server(rls_db):
        with psycopg.connect(rls_db) as conn:
            roles = conn.execute(
                "SELECT rolname, rolcanlogin, rolinherit, rolbypassrls, pg_has_role('authenticator', oid, 'MEMBER') "
                "FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role', 'authenticator') ORDER BY 1"
            ).fetchall()
            grants = conn.execute(
                "SELECT grantee, string_agg(privilege_type, ',' ORDER BY privilege_type) "
                "FROM information_schema.role_table_grants WHERE table_schema = 'public' AND table_name = %s "
                "AND grantee IN ('anon', 'authenticated', 'service_role') GROUP BY 1 ORDER BY 1",
                [REQUIREMENTS],
            ).fetchall()
    assert roles == [
        ("anon", False, False, False, True),
        ("authenticated", False, False, False, True),
        ("authenticator", True, False, False, True),
        ("service_role", False, False, True, True),
    ]
    every = "DELETE,INSERT,REFERENCES,SELECT,TRIGGER,TRUNCATE,UPDATE"
    assert grants == [("anon", every), ("authenticated", every), ("service_role", every)]


def test_preparing_the_roles_is_idempotent_and_safe_side_by_side(rls_db):
    errors: list[BaseException] = []

    def prepare():
        try:
            prepare_supabase_roles(rls_db)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=prepare) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and not any(t.is_alive() for t in threads)


@pytest.mark.parametrize("key", ["service_role_key", "secret_key"])
def test_the_service_key_reads_and_writes_everything_under_the_apps_policies(rls_db, tmp_path, key):
    s = appendix_a()
    settings = settings_for(tmp_path)
    expected_db = clone(rls_db)  # the same database, synced by the direct path (a superuser: no policy applies)
    try:
        assert run(direct(expected_db), s.bu_map, settings).exit_code == 0
        expected = target_state(expected_db)
    finally:
        drop(expected_db)
    assert all(expected[t.name] for t in TARGETS)
    with rest_server(rls_db) as srv:
        backend = rest_backend(srv, key=getattr(srv, key))
        first = run(backend, s.bu_map, settings)
        assert first.exit_code == 0, first.error
        assert target_state(rls_db) == expected
        again = run(backend, s.bu_map, settings)  # it reads back every row it wrote: nothing left to write
        assert again.exit_code == 0, again.error
        assert all(t["inserted"] == t["updated"] == t["deleted"] == 0 for t in summary_of(again)["targets"].values())
        assert {r.role for r in srv.requests} == {"service_role"}
    assert target_state(rls_db) == expected


def test_an_authenticated_jwt_sees_and_changes_only_what_the_policy_allows(rls_db, tmp_path):
    assert run(direct(rls_db), appendix_a().bu_map, settings_for(tmp_path)).exit_code == 0
    one_row = f"SELECT ctid FROM {REQUIREMENTS} LIMIT 1"
    execute(rls_db, f"UPDATE {REQUIREMENTS} SET fiscal_year = 2024 WHERE ctid = ({one_row})")
    fy2025, total = count(rls_db, REQUIREMENTS, "fiscal_year = 2025"), count(rls_db, REQUIREMENTS)
    assert 0 < fy2025 < total
    with rest_server(rls_db) as srv:
        url = f"{srv.rest_url}/{REQUIREMENTS}"

        def as_user(fiscal_year: int) -> dict[str, str]:
            token = srv.make_jwt("authenticated", sub="3f1c0a52-6d3e-4a55-9a57-0d1b2c3d4e5f", fiscal_year=fiscal_year)
            return {"apikey": srv.publishable_key, "Authorization": f"Bearer {token}"}

        rows = httpx.get(url, headers=as_user(2025)).json()
        assert len(rows) == fy2025 and {r["fiscal_year"] for r in rows} == {2025}
        resp = httpx.get(url, headers=as_user(2099))
        assert resp.status_code == 200 and resp.json() == []

        new = {k: v for k, v in rows[0].items() if k not in ("id", "created_at")} | {"fiscal_year": 2026}
        resp = httpx.post(url, headers=as_user(2025), json=new)
        assert resp.status_code == 403 and "WWW-Authenticate" not in resp.headers
        assert resp.json() == {
            "code": "42501",
            "details": None,
            "hint": None,
            "message": f'new row violates row-level security policy for table "{REQUIREMENTS}"',
        }
        resp = httpx.patch(url, params={"fiscal_year": "eq.2025"}, headers=as_user(2025), json={"fiscal_year": 2024})
        assert resp.status_code == 403 and resp.json()["code"] == "42501"  # WITH CHECK: its rows stay its year's

        for fiscal_year, method in ((2099, "PATCH"), (2025, "PATCH"), (2099, "DELETE"), (2025, "DELETE")):
            # rows of another year are invisible: the filter matches nothing, as on Supabase
            resp = httpx.request(
                method,
                url,
                params={"fiscal_year": "eq.2024"},
                headers=as_user(fiscal_year) | {"Prefer": "return=representation"},
                json={"notes": "changed"} if method == "PATCH" else None,
            )
            assert resp.status_code == 200 and resp.json() == [], (fiscal_year, method)
        resp = httpx.patch(url, params={"fiscal_year": "eq.2025"}, headers=as_user(2025), json={"notes": "seen"})
        assert resp.status_code == 204 and resp.headers["Content-Range"] == f"0-{fy2025 - 1}/*"
    assert count(rls_db, REQUIREMENTS, "notes = 'seen'") == fy2025
    assert count(rls_db, REQUIREMENTS, "notes = 'changed'") == 0
    assert (count(rls_db, REQUIREMENTS), count(rls_db, REQUIREMENTS, "fiscal_year = 2024")) == (total, 1)


@pytest.mark.parametrize("key", ["anon_key", "publishable_key"])
def test_the_anon_key_reads_nothing_and_writes_nothing(rls_db, tmp_path, key):
    assert run(direct(rls_db), appendix_a().bu_map, settings_for(tmp_path)).exit_code == 0
    before = target_state(rls_db, with_stamps=True)
    with rest_server(rls_db) as srv:
        headers = {"apikey": getattr(srv, key)}
        for t in TARGETS:
            resp = httpx.get(f"{srv.rest_url}/{t.name}", headers=headers)
            assert resp.status_code == 200 and resp.json() == [], t.name
        url = f"{srv.rest_url}/{REQUIREMENTS}"
        row = scalar(rls_db, f"SELECT to_jsonb(x) - 'id' - 'created_at' FROM {REQUIREMENTS} x LIMIT 1")
        resp = httpx.post(url, headers=headers, json=row | {"fiscal_year": 2026})
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        assert resp.json()["code"] == "42501" and "row-level security" in resp.json()["message"]
        resp = httpx.delete(url, params={"fiscal_year": "eq.2025"}, headers=headers)
        assert resp.status_code == 204
        resp = httpx.patch(url, params={"fiscal_year": "eq.2025"}, headers=headers, json={"notes": "x"})
        assert resp.status_code == 204 and resp.headers["Content-Range"] == "*/*"
        assert {r.role for r in srv.requests} == {"anon"}
    assert target_state(rls_db, with_stamps=True) == before


def test_each_request_runs_as_its_role_with_postgrests_settings(rls_db):
    execute(
        rls_db,
        """CREATE TABLE public.seen_by (
             id serial PRIMARY KEY, note text,
             who text DEFAULT current_user,
             claims jsonb DEFAULT current_setting('request.jwt.claims', true)::jsonb,
             method text DEFAULT current_setting('request.method', true),
             path text DEFAULT current_setting('request.path', true),
             prefer text DEFAULT current_setting('request.headers', true)::json ->> 'prefer',
             search_path text DEFAULT current_setting('search_path'))""",
    )
    with rest_server(rls_db) as srv:
        user = srv.make_jwt("authenticated", sub="3f1c0a52-6d3e-4a55-9a57-0d1b2c3d4e5f")
        for headers in (
            {"apikey": srv.publishable_key, "Authorization": f"Bearer {user}"},
            {"apikey": srv.secret_key},
            {"apikey": srv.anon_key},
            {"apikey": srv.publishable_key, "Authorization": f"Bearer {srv.make_jwt(None)}"},  # no role claim: anon
        ):
            resp = httpx.post(f"{srv.rest_url}/seen_by", headers=headers | {"Prefer": "return=minimal"}, json={})
            assert resp.status_code == 201, resp.text
    with psycopg.connect(rls_db) as conn:
        rows = conn.execute("SELECT who, claims, method, path, prefer, search_path FROM seen_by ORDER BY id").fetchall()
    settings = ("POST", "/seen_by", "return=minimal", '"public", "extensions"')
    assert rows == [
        (
            "authenticated",
            {"role": "authenticated", "iss": "supabase", "sub": "3f1c0a52-6d3e-4a55-9a57-0d1b2c3d4e5f"},
            *settings,
        ),
        ("service_role", {"role": "service_role"}, *settings),
        ("anon", {"role": "anon", "iss": "supabase"}, *settings),
        ("anon", {"role": "anon", "iss": "supabase"}, *settings),
    ]
