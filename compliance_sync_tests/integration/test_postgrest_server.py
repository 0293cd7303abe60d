"""Conformance tests of the PostgREST look-alike (compliance_sync_tests/postgrest_server/).

Requests are raw HTTP (httpx), mostly taken from the examples of PostgREST's documentation (docs.postgrest.org:
Tables and Views, Pagination and Count, Preferences, Errors, OpenAPI, URL grammar), run against a real database; filters
are checked against the SQL predicate PostgREST documents for them. A handful go through supabase-py to prove a real
client works. One module-scoped database (cs_test_<random>, dropped at the end) and in-process servers on port 0.
"""

from __future__ import annotations

import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import httpx
import jwt as pyjwt
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from compliance_sync_tests.postgrest_server import (
    PostgrestServer,
    parse_query,
    start_server_process,
    stop_server_process,
)

SECRET = "test-secret-for-the-postgrest-look-alike-0123456789"
OTHER_SECRET = "another-secret-that-did-not-sign-anything-0123456789"
MIGRATIONS = pathlib.Path(__file__).resolve().parents[2] / "compliance_sync" / "migrations"

SEED = r"""
CREATE TABLE public.people (
    id          integer PRIMARY KEY,
    first_name  text,
    last_name   text,
    age         integer,
    student     boolean,
    grade       integer,
    tags        text[],
    json_data   jsonb,
    bio         text,
    age_range   int4range,
    nick        text,
    "information.cpe" text
);
COMMENT ON TABLE public.people IS E'People summary\n\nPeople of the documentation examples';
COMMENT ON COLUMN public.people.age IS 'Age in years';
INSERT INTO public.people VALUES
 (1, 'John', 'Doe', 30, false, 70, '{example,new}',
  '{"blood_type": "A-", "age": 30, "phones": [{"country_code": "61", "number": "917-929-5745"}]}',
  'The fat cats ate the rats', '[25,35)', NULL, 'cpe:/o:MS:windows'),
 (2, 'Jane', 'Doe', 20, true, 95, '{new}',
  '{"blood_type": "O+", "age": 20, "phones": [{"country_code": "43", "number": "512-446-4988"}]}',
  'amusant', '[18,21)', 'jd', NULL),
 (3, 'Bob', 'Ortiz', 14, true, 92, '{}', '{"blood_type": "A-", "age": 14}', NULL, '[10,15)', NULL, NULL),
 (4, 'Alice', 'Pan', 12, true, 88, '{example}', '{"blood_type": "B+", "age": 12}',
  'cats and dogs', '[10,13)', 'al', 'cpe:/a:apple'),
 (5, 'Carl', 'Olsen', 17, true, 91, NULL, NULL, NULL, NULL, 'c', NULL),
 (6, 'Hebdon,John', 'Quote:"', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'Backslash:\', NULL),
 (7, 'Mary Ann', 'Van Dyke', 40, false, 60, '{new}', NULL, NULL, '[35,45)', 'c++', NULL);

CREATE TABLE public.pets (id serial PRIMARY KEY, owner_id integer REFERENCES public.people (id), name text);

CREATE TABLE public.items (id integer PRIMARY KEY, label text);
INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 25) g;

CREATE TABLE public.typed (
    id       bigint PRIMARY KEY,
    code     char(12) NOT NULL,
    short    varchar(10),
    long_v   varchar,
    pct      numeric(5,1),
    small    smallint,
    flag     boolean DEFAULT true,
    labels   text[],
    happened timestamp,
    status   text DEFAULT 'draft'
);

-- no unique index on (name, fiscal_year): the zero-row upsert probe must fail with 42P10
CREATE TABLE public.no_key (name text, fiscal_year integer, value integer);

-- row-level security without a policy, as Supabase enables it on new tables: only the service role reads and writes
ALTER TABLE public.people ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.no_key ENABLE ROW LEVEL SECURITY;
"""

TARGETS = (
    "account_plan_event_requirements",
    "territory_compliance_summary",
    "business_unit_planning",
    "apac_planning_goals",
    "territory_strategies",
    "no_key",
)


def _db_url(server_url: str, dbname: str) -> str:
    params = conninfo_to_dict(server_url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="module")
def rest_db(server_url):
    """A throwaway database with the project's full schema (migrations/full.sql then minimal.sql, as the full
    migration applies them) plus the documentation's example tables."""
    name = f"cs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _db_url(server_url, name)
    try:
        with psycopg.connect(url) as conn:
            for migration in ("full.sql", "minimal.sql"):
                conn.execute((MIGRATIONS / migration).read_text())
            conn.execute(SEED)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def srv(rest_db):
    with PostgrestServer(rest_db, jwt_secret=SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def capped(rest_db):
    with PostgrestServer(rest_db, jwt_secret=SECRET, max_rows=10, listen_for_reload=False) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_server(srv):
    yield
    srv.faults.clear()
    srv.clear_requests()


@pytest.fixture
def api(srv):
    with httpx.Client(base_url=srv.rest_url, headers={"apikey": srv.service_role_key}, timeout=30) as client:
        yield client


@pytest.fixture
def clean(rest_db):
    with psycopg.connect(rest_db) as conn:
        for table in TARGETS:
            conn.execute(f"DELETE FROM public.{table}")
    return rest_db


def sql(url: str, query: str, params=None) -> list[tuple]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def ids(resp: httpx.Response) -> list[int]:
    assert resp.status_code in (200, 206), resp.text
    return sorted(r["id"] for r in resp.json())


def err(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"code", "details", "hint", "message"}, body
    return body


# ---------------------------------------------------------------------------------------------------------------------
# Horizontal filtering: every operator (docs: Tables and Views > Operators), checked against its SQL
# ---------------------------------------------------------------------------------------------------------------------

OPERATOR_CASES = [
    ("age=lt.13", "age < 13"),
    ("age=gte.18&student=is.true", "age >= 18 AND student IS TRUE"),
    ("age=eq.14", "age = 14"),
    ("age=neq.14", "age <> 14"),
    ("age=gt.20", "age > 20"),
    ("age=lte.14", "age <= 14"),
    ("age=not.eq.14", "NOT age = 14"),
    ("last_name=like.O*", "last_name LIKE 'O%'"),
    ("last_name=ilike.*o*", "last_name ILIKE '%o%'"),
    ("first_name=match.^J", "first_name ~ '^J'"),
    ("first_name=imatch.^j", "first_name ~* '^j'"),
    ("id=in.(1,3,5)", "id IN (1, 3, 5)"),
    ("id=in.()", "false"),
    ("id=not.in.(1,3)", "NOT id IN (1, 3)"),
    ("nick=is.null", "nick IS NULL"),
    ("nick=not.is.null", "nick IS NOT NULL"),
    ("nick=is.not_null", "nick IS NOT NULL"),
    ("student=is.true", "student IS TRUE"),
    ("student=is.false", "student IS FALSE"),
    ("student=is.unknown", "student IS UNKNOWN"),
    ("student=is.NULL", "student IS NULL"),
    ("nick=isdistinct.jd", "nick IS DISTINCT FROM 'jd'"),
    ("bio=fts.cats", "to_tsvector(bio) @@ to_tsquery('cats')"),
    ("bio=plfts.The Fat Cats", "to_tsvector(bio) @@ plainto_tsquery('The Fat Cats')"),
    ("bio=phfts(english).fat cats", "to_tsvector('english', bio) @@ phraseto_tsquery('english', 'fat cats')"),
    ("bio=wfts(french).amusant", "to_tsvector('french', bio) @@ websearch_to_tsquery('french', 'amusant')"),
    ("bio=not.wfts(french).amusant", "NOT to_tsvector('french', bio) @@ websearch_to_tsquery('french', 'amusant')"),
    ("tags=cs.{example,new}", "tags @> '{example,new}'"),
    ("tags=cd.{example,new}", "tags <@ '{example,new}'"),
    ("tags=ov.{new}", "tags && '{new}'"),
    ("age_range=sl.(40,50)", "age_range << '(40,50)'"),
    ("age_range=sr.[1,5)", "age_range >> '[1,5)'"),
    ("age_range=nxr.(0,14)", "age_range &< '(0,14)'"),
    ("age_range=nxl.[19,30)", "age_range &> '[19,30)'"),
    ("age_range=adj.[15,18)", "age_range -|- '[15,18)'"),
    ("last_name=like(any).{O*,P*}", "last_name LIKE ANY('{O%,P%}')"),
    ("last_name=like(all).{O*,*z}", "last_name LIKE ALL('{O%,%z}')"),
    ("grade=gt(any).{90,94}", "grade > ANY('{90,94}')"),
    ("json_data->>blood_type=eq.A-", "json_data->>'blood_type' = 'A-'"),
    ("json_data->age=gt.20", "json_data->'age' > '20'"),
    ("%22information.cpe%22=like.*MS*", "\"information.cpe\" LIKE '%MS%'"),
]


@pytest.mark.parametrize("query,predicate", OPERATOR_CASES, ids=[c[0] for c in OPERATOR_CASES])
def test_filter_operator_matches_its_sql(api, rest_db, query, predicate):
    expected = [r[0] for r in sql(rest_db, f"SELECT id FROM public.people WHERE {predicate} ORDER BY id")]
    assert ids(api.get("/people?select=id&" + query)) == expected


def test_operator_examples_from_the_docs_give_the_documented_rows(api):
    assert ids(api.get("/people?age=lt.13")) == [4]
    assert ids(api.get("/people?age=gte.18&student=is.true")) == [2]
    assert ids(api.get("/people", params={"last_name": "like(any).{O*,P*}"})) == [3, 4, 5]
    assert ids(api.get("/people", params={"tags": "cs.{example,new}"})) == [1]


LOGIC_CASES = [
    ("or=(age.lt.18,age.gt.21)", "(age < 18 OR age > 21)"),
    ("not.and=(age.gte.0,age.lte.100)", "NOT (age >= 0 AND age <= 100)"),
    (
        "grade=gte.90&student=is.true&or=(age.eq.14,not.and(age.gte.11,age.lte.17))",
        "grade >= 90 AND student IS TRUE AND (age = 14 OR NOT (age >= 11 AND age <= 17))",
    ),
    ("or=(id.eq.1,and(grade.gt.90,nick.is.null))", "(id = 1 OR (grade > 90 AND nick IS NULL))"),
    ("not.or=(age.is.null,student.is.true)", "NOT (age IS NULL OR student IS TRUE)"),
    ("and=(age.gte.11,or(nick.is.null,nick.eq.c))", "(age >= 11 AND (nick IS NULL OR nick = 'c'))"),
    ("or=(tags.cs.{example,new},age.eq.14)", "(tags @> '{example,new}' OR age = 14)"),
    (
        "or=(first_name.eq.%22Hebdon,John%22,last_name.in.(%22Van Dyke%22,Doe))",
        "(first_name = 'Hebdon,John' OR last_name IN ('Van Dyke', 'Doe'))",
    ),
    (
        "or=(age_range.adj.%22[18,21)%22,age_range.cs.%22[30,35]%22)",
        "(age_range -|- '[18,21)' OR age_range @> '[30,35]'::int4range)",
    ),
    ("or=( age.eq.14 , id.eq.7 )", "(age = 14 OR id = 7)"),
]


@pytest.mark.parametrize("query,predicate", LOGIC_CASES, ids=[c[0] for c in LOGIC_CASES])
def test_logical_operators_match_their_sql(api, rest_db, query, predicate):
    expected = [r[0] for r in sql(rest_db, f"SELECT id FROM public.people WHERE {predicate} ORDER BY id")]
    assert ids(api.get("/people?select=id&" + query)) == expected


def test_form_encoding_quotes_and_reserved_characters(api):
    # docs URL grammar: + is a space, %2B a plus, %22-quoted values in in.(...), backslash escapes
    assert ids(api.get("/people?first_name=eq.Mary+Ann")) == [7]
    assert ids(api.get("/people?nick=eq.c%2B%2B")) == [7]
    assert ids(api.get("/people?first_name=in.(%22Hebdon,John%22,%22Williams,Mary%22)")) == [6]
    assert ids(api.get("/people?last_name=in.(%22Quote:%5C%22%22,%22Backslash:%5C%5C%22)")) == [6]
    assert ids(api.get("/people?nick=in.(%22Quote:%5C%22%22,%22Backslash:%5C%5C%22)")) == [6]
    assert ids(api.get("/people", params={"first_name": "in.(Jane,John)"})) == [1, 2]
    assert ids(api.get("/people", params={"last_name": "eq.Van Dyke"})) == [7]


def test_long_urls_are_refused_as_supabase_does(api, srv):
    many = ",".join(str(uuid.uuid4()) for _ in range(600))  # ~22 KiB: over Supabase's ~16 KiB
    resp = api.get("/account_plan_event_requirements", params={"plan_id": f"in.({many})"})
    assert resp.status_code == 414 and resp.text == "URI too long\n"
    assert srv.requests[-1].status == 414
    fits = ",".join(str(uuid.uuid4()) for _ in range(300))
    assert api.get("/account_plan_event_requirements", params={"plan_id": f"in.({fits})"}).status_code == 200


def test_values_are_parameters_never_sql(api, rest_db):
    resp = api.get("/people", params={"first_name": "eq.x'; DROP TABLE public.people; --"})
    assert resp.status_code == 200 and resp.json() == []
    assert sql(rest_db, "SELECT count(*) FROM public.people")[0][0] == 7


def test_filter_parse_error_is_pgrst100(api):
    resp = api.get("/people?id=gtt.1")
    assert resp.status_code == 400
    body = err(resp)
    assert body["code"] == "PGRST100"
    assert body["message"].startswith('"failed to parse filter (gtt.1)" (line 1, column ')
    resp = api.get("/people?order=id.asc.nullslasttt")
    assert (
        resp.status_code == 400
        and err(resp)["message"] == '"failed to parse order (id.asc.nullslasttt)" (line 1, column 17)'
    )


def test_parse_query_grammar_details():
    qp = parse_query(
        "or=(a.eq.1,not.and(b.gt.2,c.is.null))&d=not.in.(%22x,y%22,z)&order=a.desc.nullsfirst,b&limit=5&offset=2"
    )
    logic, flt = qp.filters
    assert logic.op == "or" and not logic.negate and logic.children[1].negate and logic.children[1].op == "and"
    assert logic.children[1].children[1].value == "NULL"
    assert flt.negate and flt.op == "in" and flt.value == ["x,y", "z"]
    assert [(t.field.name, t.direction, t.nulls) for t in qp.order] == [("a", "desc", "nullsfirst"), ("b", None, None)]
    assert (qp.limit, qp.offset) == (5, 2)


# ---------------------------------------------------------------------------------------------------------------------
# Vertical filtering, ordering, pagination
# ---------------------------------------------------------------------------------------------------------------------


def test_select_columns_renaming_casts_and_json_paths(api):
    resp = api.get("/people", params={"select": "first_name,age", "id": "in.(1,2)", "order": "id"})
    assert resp.json() == [{"first_name": "John", "age": 30}, {"first_name": "Jane", "age": 20}]
    resp = api.get("/people", params={"select": "fullName:first_name,years:age::text", "id": "eq.1"})
    assert resp.json() == [{"fullName": "John", "years": "30"}]
    resp = api.get("/people", params={"select": "id,json_data->>blood_type,json_data->phones", "id": "eq.1"})
    assert resp.json() == [{"id": 1, "blood_type": "A-", "phones": [{"country_code": "61", "number": "917-929-5745"}]}]
    resp = api.get("/people", params={"select": "id,json_data->phones->0->>number", "id": "in.(1,2)", "order": "id"})
    assert resp.json() == [{"id": 1, "number": "917-929-5745"}, {"id": 2, "number": "512-446-4988"}]
    full = api.get("/people", params={"select": "*", "id": "eq.4"}).json()[0]
    assert list(full) == [
        "id",
        "first_name",
        "last_name",
        "age",
        "student",
        "grade",
        "tags",
        "json_data",
        "bio",
        "age_range",
        "nick",
        "information.cpe",
    ]
    assert api.get("/people", params={"id": "eq.4"}).json()[0] == full  # the default is *


def test_unknown_column_is_42703(api):
    resp = api.get("/people", params={"select": "id,nope"})
    assert resp.status_code == 400
    body = err(resp)
    assert (body["code"], body["message"]) == ("42703", "column people.nope does not exist")
    resp = api.get("/people", params={"nope": "eq.1"})
    assert resp.status_code == 400 and err(resp)["code"] == "42703"


ORDER_CASES = [
    ("nick.asc,id", "nick ASC, id"),  # asc: nulls last
    ("nick.desc,id", "nick DESC, id"),  # desc: nulls first
    ("nick.asc.nullsfirst,id", "nick ASC NULLS FIRST, id"),
    ("nick.desc.nullslast,id.desc", "nick DESC NULLS LAST, id DESC"),
    ("age.desc.nullslast,id.asc", "age DESC NULLS LAST, id ASC"),
    ("last_name,first_name.desc", "last_name, first_name DESC"),
    ("json_data->>blood_type.desc,id", "json_data->>'blood_type' DESC, id"),
]


@pytest.mark.parametrize("order,order_by", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_order_with_nulls(api, rest_db, order, order_by):
    expected = [r[0] for r in sql(rest_db, f"SELECT id FROM public.people ORDER BY {order_by}")]
    assert [r["id"] for r in api.get("/people", params={"select": "id", "order": order}).json()] == expected


def test_order_nulls_placement_by_hand(api):
    def order(o):
        return [r["id"] for r in api.get("/people", params={"select": "id", "order": o}).json()]

    assert order("age.desc.nullslast,id.asc") == [7, 1, 2, 5, 3, 4, 6]
    assert order("age.desc,id.asc") == [6, 7, 1, 2, 5, 3, 4]
    assert order("age.asc.nullsfirst,id") == [6, 4, 3, 5, 2, 1, 7]


def test_limit_offset_and_content_range(api):
    resp = api.get("/people", params={"select": "id", "order": "id", "limit": 2, "offset": 1})
    assert resp.status_code == 200 and ids(resp) == [2, 3]
    assert resp.headers["Content-Range"] == "1-2/*"
    resp = api.get("/people", params={"select": "id", "order": "id", "limit": 0})
    assert resp.json() == [] and resp.headers["Content-Range"] == "*/*"
    resp = api.get("/people", params={"select": "id", "order": "id", "offset": 50})
    assert resp.json() == [] and resp.headers["Content-Range"] == "*/*"
    resp = api.get("/people", params={"limit": -1})
    assert resp.status_code == 416 and err(resp)["code"] == "PGRST103"


def test_range_header(api):
    resp = api.get("/people", params={"select": "id", "order": "id"}, headers={"Range-Unit": "items", "Range": "0-1"})
    assert ids(resp) == [1, 2] and resp.headers["Content-Range"] == "0-1/*"
    resp = api.get("/people", params={"select": "id", "order": "id"}, headers={"Range": "5-"})
    assert ids(resp) == [6, 7] and resp.headers["Content-Range"] == "5-6/*"
    resp = api.get("/people", params={"select": "id", "order": "id"}, headers={"Range": "0-19"})
    assert resp.headers["Content-Range"] == "0-6/*"  # fewer than asked: docs' 0-17/* example
    resp = api.get("/people", headers={"Range": "3-1"})
    assert resp.status_code == 416 and err(resp)["code"] == "PGRST103"


def test_exact_count_200_and_206(api):
    resp = api.get("/people", params={"select": "id"}, headers={"Prefer": "count=exact"})
    assert resp.status_code == 200 and resp.headers["Content-Range"] == "0-6/7"
    assert resp.headers["Preference-Applied"] == "count=exact"
    resp = api.get("/people", params={"select": "id", "order": "id"}, headers={"Prefer": "count=exact", "Range": "0-1"})
    assert resp.status_code == 206 and resp.headers["Content-Range"] == "0-1/7"
    resp = api.get("/people", params={"id": "gt.100"}, headers={"Prefer": "count=exact"})
    assert resp.status_code == 200 and resp.headers["Content-Range"] == "*/0"
    resp = api.get("/people", params={"offset": 9}, headers={"Prefer": "count=exact"})
    assert resp.status_code == 416 and resp.headers["Content-Range"] == "*/7"
    assert err(resp)["details"] == "An offset of 9 was requested, but there are only 7 rows."


def test_head_gives_headers_only(api):
    resp = api.head("/people", headers={"Prefer": "count=exact"})
    assert resp.status_code == 200 and resp.content == b""
    assert resp.headers["Content-Range"] == "0-6/7"
    resp = api.head("/people", params={"limit": 3}, headers={"Prefer": "count=exact"})
    assert resp.status_code == 206 and resp.headers["Content-Range"] == "0-2/7"


def test_max_rows_cap(capped):
    with httpx.Client(base_url=capped.rest_url, headers={"apikey": capped.service_role_key}) as c:
        resp = c.get("/items", params={"order": "id"})
        assert resp.status_code == 200 and len(resp.json()) == 10
        assert resp.headers["Content-Range"] == "0-9/*"
        assert len(c.get("/items", params={"limit": 50}).json()) == 10
        resp = c.get("/items", params={"limit": 5})
        assert len(resp.json()) == 5 and resp.headers["Content-Range"] == "0-4/*"
        resp = c.get("/items", headers={"Prefer": "count=exact"})
        assert resp.status_code == 206 and resp.headers["Content-Range"] == "0-9/25"
        resp = c.get("/items", params={"order": "id", "offset": 20})
        assert [r["id"] for r in resp.json()] == [21, 22, 23, 24, 25] and resp.headers["Content-Range"] == "20-24/*"
        resp = c.get("/items", params={"order": "id", "id": "gt.15"}, headers={"Range": "0-99"})
        assert len(resp.json()) == 10 and resp.headers["Content-Range"] == "0-9/*"
        resp = c.get("/items", params={"id": "gt.100"})
        assert resp.json() == [] and resp.headers["Content-Range"] == "*/*"
        resp = c.get("/items", params={"id": "lte.3"}, headers={"Prefer": "count=exact"})
        assert resp.status_code == 200 and resp.headers["Content-Range"] == "0-2/3"


def test_singular_object_accept_header(api):
    obj = "application/vnd.pgrst.object+json"
    resp = api.get("/people", params={"select": "id,first_name", "id": "eq.2"}, headers={"Accept": obj})
    assert resp.status_code == 200 and resp.json() == {"id": 2, "first_name": "Jane"}
    assert resp.headers["Content-Type"].startswith(obj)
    resp = api.get("/people", params={"id": "eq.99"}, headers={"Accept": obj})
    assert resp.status_code == 406
    assert err(resp) == {
        "code": "PGRST116",
        "details": "The result contains 0 rows",
        "hint": None,
        "message": "Cannot coerce the result to a single JSON object",
    }
    resp = api.get("/people", headers={"Accept": obj})
    assert resp.status_code == 406 and err(resp)["details"] == "The result contains 7 rows"
    resp = api.get("/people", params={"select": "id,nick", "id": "eq.1"}, headers={"Accept": obj + ";nulls=stripped"})
    assert resp.json() == {"id": 1}
    resp = api.get("/people", headers={"Accept": "text/html"})
    assert resp.status_code == 406 and err(resp)["code"] == "PGRST107"


def test_profiles(api):
    resp = api.get("/people", params={"id": "eq.1", "select": "id"}, headers={"Accept-Profile": "public"})
    assert resp.status_code == 200 and resp.headers["Content-Profile"] == "public"
    resp = api.get("/people", headers={"Accept-Profile": "tenant3"})
    assert resp.status_code == 406
    assert err(resp) == {
        "code": "PGRST106",
        "details": None,
        "hint": "Only the following schemas are exposed: public",
        "message": "Invalid schema: tenant3",
    }
    resp = api.post("/no_key", json={"name": "x"}, headers={"Content-Profile": "private"})
    assert resp.status_code == 406 and err(resp)["code"] == "PGRST106"


def test_unknown_table_is_pgrst205_with_a_hint(api):
    resp = api.get("/peoplx")
    assert resp.status_code == 404
    assert err(resp) == {
        "code": "PGRST205",
        "details": None,
        "hint": "Perhaps you meant the table 'public.people'",
        "message": "Could not find the table 'public.peoplx' in the schema cache",
    }
    assert resp.headers["Proxy-Status"] == "PostgREST; error=PGRST205"
    assert err(api.get("/zzzzzzzz"))["hint"] is None


def test_invalid_value_for_the_type_is_22p02(api):
    resp = api.get("/account_plan_event_requirements", params={"id": "eq.abc"})
    assert resp.status_code == 400
    assert err(resp) == {
        "code": "22P02",
        "details": None,
        "hint": None,
        "message": 'invalid input syntax for type uuid: "abc"',
    }


# ---------------------------------------------------------------------------------------------------------------------
# Writes
# ---------------------------------------------------------------------------------------------------------------------


def test_post_single_object_and_bulk(api, clean):
    resp = api.post("/business_unit_planning", json={"bu_name": "ANZ", "fiscal_year": 2026, "territory_count": 1})
    assert resp.status_code == 201 and resp.content == b""
    assert resp.headers["Content-Range"] == "*/*"
    rows = [
        {"bu_name": "SEA", "fiscal_year": 2026, "territory_count": 2},
        {"bu_name": "GC", "fiscal_year": 2026, "territory_count": 3},
    ]
    resp = api.post(
        "/business_unit_planning",
        params={"select": "bu_name,territory_count"},
        json=rows,
        headers={"Prefer": "return=representation, count=exact"},
    )
    assert resp.status_code == 201
    assert resp.json() == [{"bu_name": "SEA", "territory_count": 2}, {"bu_name": "GC", "territory_count": 3}]
    assert resp.headers["Content-Range"] == "*/2"
    assert resp.headers["Preference-Applied"] == "return=representation, count=exact"
    assert sql(clean, "SELECT bu_name FROM business_unit_planning ORDER BY bu_name") == [("ANZ",), ("GC",), ("SEA",)]


def test_post_objects_must_share_keys(api, clean):
    resp = api.post("/business_unit_planning", json=[{"bu_name": "A", "fiscal_year": 1}, {"bu_name": "B"}])
    assert resp.status_code == 400
    assert err(resp) == {"code": "PGRST102", "details": None, "hint": None, "message": "All object keys must match"}
    resp = api.post("/business_unit_planning", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and err(resp)["message"] == "Empty or invalid json"


def test_columns_param_missing_keys_are_null_unless_missing_default(api, clean):
    body = [{"cse_name": "Kim", "fiscal_year": 2026, "status": "approved"}, {"cse_name": "Lee", "fiscal_year": 2026}]
    resp = api.post("/territory_strategies", params={"columns": "cse_name,fiscal_year,status"}, json=body)
    assert resp.status_code == 201
    assert sql(clean, "SELECT cse_name, status FROM territory_strategies ORDER BY cse_name") == [
        ("Kim", "approved"),
        ("Lee", None),
    ]
    resp = api.post(
        "/territory_strategies",
        params={"columns": "cse_name,fiscal_year,status", "select": "cse_name,status"},
        json=[{"cse_name": "Max", "fiscal_year": 2026, "extra": "ignored"}],
        headers={"Prefer": "missing=default,return=representation"},
    )
    assert resp.status_code == 201 and resp.json() == [{"cse_name": "Max", "status": "draft"}]
    assert resp.headers["Preference-Applied"] == "missing=default, return=representation"


def test_unknown_payload_column_is_pgrst204(api, clean):
    resp = api.post("/business_unit_planning", json={"bu_name": "A", "fiscal_year": 1, "colour": "red"})
    assert resp.status_code == 400
    assert err(resp) == {
        "code": "PGRST204",
        "details": None,
        "hint": None,
        "message": "Could not find the 'colour' column of 'business_unit_planning' in the schema cache",
    }
    resp = api.post("/business_unit_planning", params={"columns": "bu_name,colour"}, json=[{"bu_name": "A"}])
    assert resp.status_code == 400 and err(resp)["code"] == "PGRST204"


def test_duplicate_key_is_23505_conflict(api, clean):
    row = {"bu_name": "ANZ", "fiscal_year": 2026}
    assert api.post("/business_unit_planning", json=row).status_code == 201
    resp = api.post("/business_unit_planning", json=row)
    assert resp.status_code == 409
    body = err(resp)
    assert body["code"] == "23505"
    assert (
        body["message"] == 'duplicate key value violates unique constraint "business_unit_planning_compliance_sync_key"'
    )
    assert body["details"] == "Key (bu_name, fiscal_year)=(ANZ, 2026) already exists."


def test_upsert_merge_duplicates_on_composite_key_updates_only_given_columns(api, clean):
    sql(
        clean,
        "INSERT INTO business_unit_planning "
        "(bu_name, fiscal_year, overall_compliance_percentage, notes, target_compliance) "
        "VALUES ('ANZ', 2026, 10, 'keep me', 80)",
    )
    prefer = {"Prefer": "resolution=merge-duplicates,return=representation"}
    params = {
        "on_conflict": "bu_name,fiscal_year",
        "select": "bu_name,overall_compliance_percentage,notes,target_compliance",
    }
    resp = api.post(
        "/business_unit_planning",
        params=params,
        json=[{"bu_name": "ANZ", "fiscal_year": 2026, "overall_compliance_percentage": 52.63}],
        headers=prefer,
    )
    assert resp.status_code == 200  # nothing inserted: PostgREST answers 200
    assert resp.json() == [
        {"bu_name": "ANZ", "overall_compliance_percentage": 52.63, "notes": "keep me", "target_compliance": 80}
    ]
    assert resp.headers["Preference-Applied"] == "resolution=merge-duplicates, return=representation"
    resp = api.post(
        "/business_unit_planning",
        params=params,
        json=[
            {"bu_name": "ANZ", "fiscal_year": 2026, "overall_compliance_percentage": 60},
            {"bu_name": "SEA", "fiscal_year": 2026, "overall_compliance_percentage": 70},
        ],
        headers=prefer,
    )
    assert resp.status_code == 201  # one row inserted
    assert sql(
        clean,
        "SELECT bu_name, overall_compliance_percentage::float, notes FROM business_unit_planning ORDER BY bu_name",
    ) == [("ANZ", 60.0, "keep me"), ("SEA", 70.0, None)]
    resp = api.post(
        "/business_unit_planning",
        params={"on_conflict": "bu_name,fiscal_year"},
        json=[{"bu_name": "ANZ", "fiscal_year": 2026, "overall_compliance_percentage": 1}],
        headers={"Prefer": "resolution=ignore-duplicates"},
    )
    assert resp.status_code == 201
    assert sql(
        clean, "SELECT overall_compliance_percentage::float FROM business_unit_planning WHERE bu_name = 'ANZ'"
    ) == [(60.0,)]


def test_upsert_default_conflict_target_is_the_primary_key(api, clean):
    row_id = str(uuid.uuid4())
    api.post("/apac_planning_goals", json={"id": row_id, "fiscal_year": 2025, "notes": "n"})
    resp = api.post(
        "/apac_planning_goals",
        json={"id": row_id, "fiscal_year": 2026},
        headers={"Prefer": "resolution=merge-duplicates"},
    )
    assert resp.status_code == 200
    assert sql(clean, "SELECT fiscal_year, notes FROM apac_planning_goals") == [(2026, "n")]


def test_zero_row_upsert_probe_raises_42p10_without_a_matching_unique_index(api, clean):
    prefer = {"Prefer": "resolution=merge-duplicates,return=minimal"}
    resp = api.post("/business_unit_planning", params={"on_conflict": "bu_name,fiscal_year"}, json=[], headers=prefer)
    assert resp.status_code == 200  # the key exists: nothing inserted, nothing wrong
    for table, key in (("no_key", "name,fiscal_year"), ("territory_compliance_summary", "territory,fiscal_year")):
        resp = api.post(f"/{table}", params={"on_conflict": key}, json=[], headers=prefer)
        assert resp.status_code == 400
        assert err(resp) == {
            "code": "42P10",
            "details": None,
            "hint": None,
            "message": "there is no unique or exclusion constraint matching the ON CONFLICT specification",
        }
        resp = api.post(
            f"/{table}",
            params={"on_conflict": key, "columns": "fiscal_year"},
            content=b"[]",
            headers={**prefer, "Content-Type": "application/json"},
        )
        assert resp.status_code == 400 and err(resp)["code"] == "42P10"


def test_patch_with_filters(api, clean):
    sql(
        clean,
        "INSERT INTO business_unit_planning (bu_name, fiscal_year, territory_count) "
        "VALUES ('A', 2026, 1), ('B', 2026, 1), ('C', 2025, 1)",
    )
    resp = api.patch("/business_unit_planning", params={"fiscal_year": "eq.2026"}, json={"territory_count": 5})
    assert resp.status_code == 204 and resp.content == b""
    assert resp.headers["Content-Range"] == "0-1/*"
    resp = api.patch(
        "/business_unit_planning",
        params={"bu_name": "eq.C", "select": "bu_name,territory_count"},
        json={"territory_count": 9},
        headers={"Prefer": "return=representation,count=exact"},
    )
    assert resp.status_code == 200 and resp.json() == [{"bu_name": "C", "territory_count": 9}]
    assert resp.headers["Content-Range"] == "0-0/1"
    resp = api.patch(
        "/business_unit_planning",
        params={"bu_name": "eq.none"},
        json={"territory_count": 9},
        headers={"Prefer": "count=exact"},
    )
    assert resp.status_code == 204 and resp.headers["Content-Range"] == "*/0"
    assert sql(clean, "SELECT bu_name, territory_count FROM business_unit_planning ORDER BY bu_name") == [
        ("A", 5),
        ("B", 5),
        ("C", 9),
    ]


def test_delete_with_is_null_filters_on_several_columns(api, clean):
    sql(
        clean,
        """INSERT INTO account_plan_event_requirements
                  (plan_id, event_type_id, fiscal_year, notes, ai_recommended_dates)
           VALUES (gen_random_uuid(), gen_random_uuid(), 2026, NULL, NULL),
                  (gen_random_uuid(), gen_random_uuid(), 2026, 'planner note', NULL),
                  (gen_random_uuid(), gen_random_uuid(), 2026, NULL, '["2026-03-01"]'),
                  (gen_random_uuid(), gen_random_uuid(), 2025, NULL, NULL)""",
    )
    resp = api.delete(
        "/account_plan_event_requirements",
        params={"fiscal_year": "eq.2026", "notes": "is.null", "ai_recommended_dates": "is.null"},
        headers={"Prefer": "count=exact"},
    )
    assert resp.status_code == 204 and resp.headers["Content-Range"] == "*/1"
    left = sql(
        clean,
        "SELECT fiscal_year, notes IS NULL, ai_recommended_dates IS NULL FROM account_plan_event_requirements "
        "ORDER BY 1, 2, 3",
    )
    assert left == [(2025, True, True), (2026, False, True), (2026, True, False)]


def test_delete_composite_keys_with_or_of_ands(api, clean):
    keys = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(4)]
    for p, e in keys:
        sql(
            clean,
            "INSERT INTO account_plan_event_requirements (plan_id, event_type_id, fiscal_year) VALUES (%s, %s, 2026)",
            [p, e],
        )
    doomed = keys[:2]
    cond = ",".join(f"and(plan_id.eq.{p},event_type_id.eq.{e},fiscal_year.eq.2026)" for p, e in doomed)
    resp = api.delete(
        "/account_plan_event_requirements",
        params={"or": f"({cond})", "select": "plan_id"},
        headers={"Prefer": "return=representation"},
    )
    assert resp.status_code == 200
    assert sorted(r["plan_id"] for r in resp.json()) == sorted(p for p, _ in doomed)
    assert sorted(r[0] for r in sql(clean, "SELECT plan_id::text FROM account_plan_event_requirements")) == sorted(
        p for p, _ in keys[2:]
    )


def test_unfiltered_patch_and_delete_are_refused_like_supabase_safeupdate(api, clean):
    sql(clean, "INSERT INTO no_key VALUES ('a', 1, 1)")
    resp = api.delete("/no_key")
    assert resp.status_code == 400
    assert err(resp) == {"code": "21000", "details": None, "hint": None, "message": "DELETE requires a WHERE clause"}
    resp = api.patch("/no_key", json={"value": 2})
    assert resp.status_code == 400 and err(resp)["message"] == "UPDATE requires a WHERE clause"
    assert api.delete("/no_key", params={"or": "(name.is.null,name.not.is.null)"}).status_code == 204
    assert sql(clean, "SELECT count(*) FROM no_key") == [(0,)]


def test_embedding_is_not_served(api):
    resp = api.get("/people", params={"select": "id,pets(name)"})
    assert resp.status_code == 400
    assert (
        err(resp)["code"] == "PGRST200"
        and err(resp)["message"] == "Could not find a relationship between 'people' and 'pets' in the schema cache"
    )
    resp = api.get("/people", params={"select": "count()"})
    assert resp.status_code == 400 and err(resp)["code"] == "PGRST123"


def test_return_minimal_and_headers_only(api, clean):
    try:
        resp = api.post("/items", json={"id": 900, "label": "x"}, headers={"Prefer": "return=minimal"})
        assert resp.status_code == 201 and resp.content == b"" and "Content-Type" not in resp.headers
        assert resp.headers["Preference-Applied"] == "return=minimal"
        resp = api.post("/items", json={"id": 901, "label": "y"}, headers={"Prefer": "return=headers-only"})
        assert resp.status_code == 201 and resp.headers["Location"] == "/items?id=eq.901"
        resp = api.delete("/items", params={"id": "gte.900"})
        assert resp.status_code == 204 and resp.headers["Content-Range"] == "*/*"
    finally:
        sql(clean, "DELETE FROM public.items WHERE id >= 900")


def test_several_prefer_headers_and_handling_strict(api, clean):
    resp = api.post(
        "/no_key",
        json=[{"name": "a", "fiscal_year": 1}],
        headers=[("Prefer", "return=representation"), ("Prefer", "count=exact, return=minimal")],
    )
    assert resp.status_code == 201 and resp.json() == [{"name": "a", "fiscal_year": 1, "value": None}]  # first wins
    assert resp.headers["Content-Range"] == "*/1"
    resp = api.post("/no_key", json=[{"name": "b"}], headers={"Prefer": "handling=strict, frobnicate=yes"})
    assert resp.status_code == 400
    assert err(resp) == {
        "code": "PGRST122",
        "details": "Invalid preferences: frobnicate=yes",
        "hint": None,
        "message": "Invalid preferences given with handling=strict",
    }
    assert api.post("/no_key", json=[{"name": "b"}], headers={"Prefer": "frobnicate=yes"}).status_code == 201


def test_max_affected_and_singular_writes_roll_back(api, clean):
    sql(clean, "INSERT INTO no_key VALUES ('a', 1, 1), ('b', 1, 2)")
    resp = api.delete("/no_key", params={"fiscal_year": "eq.1"}, headers={"Prefer": "handling=strict, max-affected=1"})
    assert resp.status_code == 400 and err(resp)["code"] == "PGRST124"
    resp = api.patch(
        "/no_key",
        params={"fiscal_year": "eq.1"},
        json={"value": 0},
        headers={"Accept": "application/vnd.pgrst.object+json", "Prefer": "return=representation"},
    )
    assert resp.status_code == 406 and err(resp)["code"] == "PGRST116"
    assert sql(clean, "SELECT name, value FROM no_key ORDER BY name") == [("a", 1), ("b", 2)]


def test_each_request_is_one_transaction(api, clean):
    # the second row violates NOT NULL: nothing of the batch is kept
    resp = api.post(
        "/business_unit_planning", json=[{"bu_name": "A", "fiscal_year": 1}, {"bu_name": None, "fiscal_year": 2}]
    )
    assert resp.status_code == 400 and err(resp)["code"] == "23502"
    assert sql(clean, "SELECT count(*) FROM business_unit_planning") == [(0,)]


# ---------------------------------------------------------------------------------------------------------------------
# Authentication and roles
# ---------------------------------------------------------------------------------------------------------------------


def test_apikey_is_required_and_checked(srv):
    resp = httpx.get(srv.rest_url + "/people")
    assert resp.status_code == 401
    assert resp.json() == {
        "message": "No API key found in request",
        "hint": "No `apikey` request header or url param was found.",
    }
    resp = httpx.get(srv.rest_url + "/people", headers={"apikey": "not-a-key"})
    assert resp.status_code == 401 and resp.json()["message"] == "Invalid API key"
    resp = httpx.get(srv.rest_url + "/people", params={"apikey": srv.service_role_key, "id": "eq.1", "select": "id"})
    assert resp.status_code == 200 and resp.json() == [{"id": 1}]


def test_service_role_jwt_and_sb_secret_keys(srv):
    for headers in (
        {"apikey": srv.service_role_key},
        {"apikey": srv.anon_key, "Authorization": f"Bearer {srv.service_role_key}"},
        {"apikey": "sb_secret_abc123", "Authorization": "Bearer sb_secret_abc123"},
        {"apikey": "sb_secret_abc123"},
    ):
        resp = httpx.get(srv.rest_url + "/people", params={"select": "id", "id": "eq.1"}, headers=headers)
        assert resp.json() == [{"id": 1}], headers


def test_under_rls_without_a_policy_anon_and_publishable_keys_read_nothing_and_cannot_insert(srv, clean):
    for key in (srv.anon_key, "sb_publishable_xyz"):
        headers = {"apikey": key}
        resp = httpx.get(srv.rest_url + "/people", headers=headers)
        assert resp.status_code == 200 and resp.json() == [] and resp.headers["Content-Range"] == "*/*"
        resp = httpx.post(srv.rest_url + "/no_key", headers=headers, json={"name": "x"})
        assert resp.status_code == 401
        assert err(resp) == {
            "code": "42501",
            "details": None,
            "hint": None,
            "message": 'new row violates row-level security policy for table "no_key"',
        }
    sql(clean, "INSERT INTO no_key VALUES ('keep', 1, 1)")
    resp = httpx.delete(srv.rest_url + "/no_key", params={"name": "eq.keep"}, headers={"apikey": srv.anon_key})
    assert resp.status_code == 204
    assert sql(clean, "SELECT count(*) FROM no_key") == [(1,)]
    authenticated = srv.make_jwt("authenticated", sub=str(uuid.uuid4()))
    resp = httpx.post(
        srv.rest_url + "/no_key",
        headers={"apikey": srv.anon_key, "Authorization": f"Bearer {authenticated}"},
        json={"name": "x"},
    )
    assert resp.status_code == 403 and err(resp)["code"] == "42501"


def test_jwt_errors(srv):
    def get(token, apikey=None):
        return httpx.get(
            srv.rest_url + "/people",
            headers={"apikey": apikey or srv.anon_key, "Authorization": f"Bearer {token}".strip()},
        )

    bad = pyjwt.encode({"role": "service_role"}, OTHER_SECRET, algorithm="HS256")
    resp = get(bad)
    assert resp.status_code == 401
    assert err(resp) == {
        "code": "PGRST301",
        "details": "None of the keys was able to decode the JWT",
        "hint": None,
        "message": "No suitable key or wrong key type",
    }
    expired = srv.make_jwt("service_role", exp=timedelta(minutes=-5))
    resp = get(expired)
    assert resp.status_code == 401
    assert err(resp) == {"code": "PGRST303", "details": None, "hint": None, "message": "JWT expired"}
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token", error_description="JWT expired"'
    assert get(srv.make_jwt("service_role", exp=timedelta(seconds=-10))).status_code == 200  # 30 s clock skew
    resp = get("")
    assert resp.status_code == 401 and err(resp)["message"] == "Empty JWT is sent in Authorization header"
    resp = get("abc.def")
    assert resp.status_code == 401 and err(resp)["message"] == "Expected 3 parts in JWT; got 2"
    resp = get(srv.make_jwt("no_such_role"))
    assert resp.status_code == 401
    assert err(resp) == {
        "code": "22023",
        "details": None,
        "hint": None,
        "message": 'role "no_such_role" does not exist',
    }
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    resp = get(srv.make_jwt("postgres"))  # a role that exists but is not granted to the authenticator
    assert resp.status_code == 403
    assert err(resp) == {
        "code": "42501",
        "details": None,
        "hint": None,
        "message": 'permission denied to set role "postgres"',
    }
    resp = httpx.get(
        srv.rest_url + "/people", headers={"apikey": bad}
    )  # a foreign JWT as apikey: refused at the gateway
    assert resp.status_code == 401 and resp.json()["message"] == "Invalid API key"


def test_service_key_claims(srv):
    claims = pyjwt.decode(srv.service_role_key, SECRET, algorithms=["HS256"])
    assert claims == {"role": "service_role", "iss": "supabase"}
    assert pyjwt.decode(srv.anon_key, SECRET, algorithms=["HS256"])["role"] == "anon"


# ---------------------------------------------------------------------------------------------------------------------
# OpenAPI
# ---------------------------------------------------------------------------------------------------------------------


def test_openapi_document_of_the_target_tables(api):
    resp = api.get("/", headers={"Accept": "application/openapi+json"})
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/openapi+json; charset=utf-8"
    doc = resp.json()
    assert doc["swagger"] == "2.0" and doc["basePath"] == "/rest/v1/"
    req = doc["definitions"]["account_plan_event_requirements"]
    props = req["properties"]
    assert props["id"] == {
        "default": "gen_random_uuid()",
        "description": "Note:\nThis is a Primary Key.<pk/>",
        "format": "uuid",
        "type": "string",
    }
    assert props["plan_id"] == {"format": "uuid", "type": "string"}
    assert props["fiscal_year"] == {"format": "int32", "type": "integer"}
    assert props["required_count"] == {"format": "int32", "type": "integer"}
    assert props["compliance_percentage"] == {"format": "numeric", "type": "number"}  # numeric(5,2): no typmod
    assert props["next_due_date"] == {"format": "date", "type": "string"}
    assert props["linked_event_ids"] == {"format": "jsonb"}
    assert props["status"] == {"format": "text", "type": "string"}
    assert props["created_at"] == {"default": "now()", "format": "timestamp with time zone", "type": "string"}
    assert props["updated_at"] == {"format": "timestamp with time zone", "type": "string"}
    assert req["required"] == ["id", "plan_id", "event_type_id", "fiscal_year"]  # NOT NULL, defaults included
    assert [c for c, p in props.items() if "<pk/>" in p.get("description", "")] == ["id"]
    for table, required in (
        ("territory_compliance_summary", ["id", "territory_strategy_id", "fiscal_year"]),
        ("business_unit_planning", ["id", "bu_name", "fiscal_year"]),
        ("apac_planning_goals", ["id", "fiscal_year"]),
    ):
        assert doc["definitions"][table]["required"] == required
        assert (
            doc["definitions"][table]["properties"][
                "overall_compliance_percentage" if table != "apac_planning_goals" else "actual_compliance"
            ]["format"]
            == "numeric"
        )
        assert set(doc["paths"]["/" + table]) == {"get", "post", "patch", "delete"}
    get_op = doc["paths"]["/business_unit_planning"]["get"]
    assert get_op["responses"]["200"]["schema"] == {
        "items": {"$ref": "#/definitions/business_unit_planning"},
        "type": "array",
    }
    assert {"$ref": "#/parameters/rowFilter.business_unit_planning.bu_name"} in get_op["parameters"]
    assert doc["parameters"]["preferPost"]["enum"] == [
        "return=representation",
        "return=minimal",
        "return=none",
        "resolution=ignore-duplicates",
        "resolution=merge-duplicates",
    ]


def test_openapi_formats_typmods_maxlength_defaults_fks_and_comments(api):
    doc = api.get("/").json()
    typed = doc["definitions"]["typed"]["properties"]
    assert typed["id"]["format"] == "int64"
    assert typed["code"] == {"format": "character", "maxLength": 12, "type": "string"}
    assert typed["short"] == {"format": "character varying", "maxLength": 10, "type": "string"}
    assert typed["long_v"] == {"format": "character varying", "type": "string"}
    assert typed["pct"] == {"format": "numeric", "type": "number"}
    assert typed["small"] == {"format": "int32", "type": "integer"}
    assert typed["flag"] == {"default": True, "format": "boolean", "type": "boolean"}
    assert typed["labels"] == {"format": "text[]", "type": "array", "items": {"type": "string"}}
    assert typed["happened"] == {"format": "timestamp without time zone", "type": "string"}
    assert typed["status"] == {"default": "draft", "format": "text", "type": "string"}
    assert doc["definitions"]["typed"]["required"] == ["id", "code"]
    pets = doc["definitions"]["pets"]["properties"]
    assert (
        pets["owner_id"]["description"]
        == "Note:\nThis is a Foreign Key to `people.id`.<fk table='people' column='id'/>"
    )
    assert "default" not in pets["id"]  # nextval(...) is not JSON
    people = doc["definitions"]["people"]
    assert people["description"] == "People summary\n\nPeople of the documentation examples"
    assert people["properties"]["age"]["description"] == "Age in years"
    assert doc["paths"]["/people"]["get"]["summary"] == "People summary"
    assert doc["paths"]["/people"]["get"]["description"] == "People of the documentation examples"


def test_openapi_accept_negotiation(api):
    for accept in ("application/json", None, "*/*"):
        headers = {"Accept": accept} if accept else {}
        if accept is None:
            api.headers.pop("Accept", None)
        resp = api.get("/", headers=headers)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/openapi+json")
    resp = api.get("/", headers={"Accept": "text/csv"})
    assert resp.status_code == 406 and err(resp)["code"] == "PGRST107"
    resp = api.head("/")
    assert resp.status_code == 200 and resp.content == b""


def test_schema_reload_on_notify(api, rest_db):
    assert api.get("/late_table").status_code == 404
    sql(rest_db, "CREATE TABLE public.late_table (id int PRIMARY KEY); NOTIFY pgrst, 'reload schema'")
    try:
        deadline = time.monotonic() + 10
        while api.get("/late_table").status_code == 404:
            assert time.monotonic() < deadline, "the schema cache was not reloaded"
            time.sleep(0.05)
        assert api.get("/late_table").json() == []
    finally:
        sql(rest_db, "DROP TABLE public.late_table; NOTIFY pgrst, 'reload schema'")


# ---------------------------------------------------------------------------------------------------------------------
# Fault hooks and the request log
# ---------------------------------------------------------------------------------------------------------------------


def test_fail_nth_matching_request_for_k_requests(srv, api):
    srv.faults.fail(2, times=2, method="GET", table="items")
    statuses = []
    for path in ("/items", "/people", "/items", "/items", "/items"):
        resp = api.get(path, params={"limit": 1})
        statuses.append(resp.status_code)
        if resp.status_code == 503:
            assert err(resp)["code"] == "PGRST000"
    assert statuses == [200, 200, 503, 503, 200]
    assert srv.faults.list()[0]["fired"] == 2


def test_fail_after_commit_reports_an_error_for_a_write_that_happened(srv, api, clean):
    srv.faults.fail(method="POST", table="no_key", when="after", status=500)
    resp = api.post("/no_key", json={"name": "written"})
    assert resp.status_code == 500
    assert sql(clean, "SELECT name FROM no_key") == [("written",)]


def test_drop_connection_before_executing(srv, api, clean):
    srv.faults.drop(method="POST", table="no_key")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.post("/no_key", json={"name": "lost"})
    assert sql(clean, "SELECT count(*) FROM no_key") == [(0,)]
    assert api.post("/no_key", json={"name": "kept"}).status_code == 201
    rec = [r for r in srv.requests if r.method == "POST"]
    assert [r.dropped for r in rec] == [True, False] and rec[0].status is None


def test_drop_connection_after_executing_and_committing(srv, api, clean):
    srv.faults.drop(method="POST", table="no_key", when="after")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.post("/no_key", json={"name": "written anyway"})
    assert sql(clean, "SELECT name FROM no_key") == [("written anyway",)]


def test_delay_holds_a_delete_until_another_client_has_written(srv, api, clean):
    gate = threading.Event()
    srv.faults.delay(10, method="DELETE", table="no_key", event=gate)
    result = {}

    def delete():
        with httpx.Client(base_url=srv.rest_url, headers={"apikey": srv.service_role_key}) as c:
            result["resp"] = c.delete("/no_key", params={"fiscal_year": "eq.7"}, headers={"Prefer": "count=exact"})

    t = threading.Thread(target=delete)
    t.start()
    deadline = time.monotonic() + 5
    while not any(r.method == "DELETE" for r in srv.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert (
        api.post("/no_key", json={"name": "late", "fiscal_year": 7}).status_code == 201
    )  # written while the DELETE waits
    gate.set()
    t.join(5)
    assert result["resp"].status_code == 204 and result["resp"].headers["Content-Range"] == "*/1"
    assert sql(clean, "SELECT count(*) FROM no_key") == [(0,)]


def test_delay_after_commit_and_plain_delay(srv, api, clean):
    srv.faults.delay(0.3, method="GET", table="items")
    started = time.monotonic()
    assert api.get("/items", params={"limit": 1}).status_code == 200
    assert time.monotonic() - started >= 0.3
    gate = threading.Event()
    srv.faults.delay(10, method="POST", table="no_key", when="after", event=gate)
    t = threading.Thread(
        target=lambda: httpx.post(
            srv.rest_url + "/no_key", json={"name": "x"}, headers={"apikey": srv.service_role_key}
        )
    )
    t.start()
    deadline = time.monotonic() + 5
    while sql(clean, "SELECT count(*) FROM no_key") != [(1,)]:  # committed before the answer
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert t.is_alive()
    gate.set()
    t.join(5)


def test_rls_hook_hides_rows_and_refuses_writes(srv, api, clean):
    sql(clean, "INSERT INTO no_key VALUES ('a', 1, 1)")
    srv.faults.rls("no_key")
    resp = api.get("/no_key", headers={"Prefer": "count=exact"})
    assert resp.status_code == 200 and resp.json() == [] and resp.headers["Content-Range"] == "*/0"
    assert api.get("/no_key").headers["Content-Range"] == "*/*"
    assert api.post("/no_key", json={"name": "b"}).status_code == 201  # writes unaffected
    srv.faults.clear()
    srv.faults.rls("no_key", refuse_writes=True)
    resp = api.post("/no_key", json={"name": "c"})
    assert resp.status_code == 403
    assert err(resp) == {
        "code": "42501",
        "details": None,
        "hint": None,
        "message": 'new row violates row-level security policy for table "no_key"',
    }
    assert api.patch("/no_key", params={"name": "eq.a"}, json={"value": 2}).status_code == 403
    assert sql(clean, "SELECT name, value FROM no_key ORDER BY name") == [("a", 1), ("b", None)]
    assert api.get("/people", params={"id": "eq.1", "select": "id"}).json() == [{"id": 1}]  # other tables untouched


def test_request_log_and_count(srv, api):
    before = srv.request_count
    api.get("/items", params={"id": "gt.3", "order": "id", "limit": 2})
    api.get("/items", params={"offset": 5}, headers={"Prefer": "count=exact"})
    assert srv.request_count == before + 2
    first, second = srv.requests[-2:]
    assert (first.method, first.path, first.table, first.status) == ("GET", "/rest/v1/items", "items", 200)
    assert first.param("id") == "gt.3" and first.param("offset") is None and "count=exact" not in first.prefer
    assert second.param("offset") == "5" and "count=exact" in second.prefer
    assert first.headers["apikey"] == "<redacted>"


def test_admin_endpoints_drive_faults_over_http(srv):
    admin = httpx.Client(base_url=srv.url, headers={"apikey": srv.service_role_key})
    assert httpx.get(srv.url + "/__admin/faults", headers={"apikey": srv.anon_key}).status_code == 401
    resp = admin.post(
        "/__admin/faults", json={"kind": "fail", "nth": 1, "times": 1, "method": "GET", "table": "items", "status": 503}
    )
    assert resp.status_code == 201 and resp.json()["faults"][0]["kind"] == "fail"
    assert httpx.get(srv.rest_url + "/items", headers={"apikey": srv.service_role_key}).status_code == 503
    state = admin.get("/__admin/faults").json()
    assert state["faults"][0]["fired"] == 1 and state["requests_served"] >= 1
    reqs = admin.get("/__admin/requests").json()
    assert reqs["requests"][-1]["status"] == 503
    assert admin.delete("/__admin/faults").status_code == 204
    assert admin.get("/__admin/faults").json()["faults"] == []
    assert admin.post("/__admin/faults", json={"kind": "explode"}).status_code == 400
    admin.close()


# ---------------------------------------------------------------------------------------------------------------------
# supabase-py
# ---------------------------------------------------------------------------------------------------------------------


def test_supabase_py_select_filters_order_limit(srv):
    from supabase import create_client

    client = create_client(srv.url, srv.service_role_key)
    res = client.table("people").select("id,first_name").gt("age", 13).order("age", desc=True).limit(3).execute()
    assert res.data == [
        {"id": 7, "first_name": "Mary Ann"},
        {"id": 1, "first_name": "John"},
        {"id": 2, "first_name": "Jane"},
    ]
    res = client.table("people").select("id", count="exact").in_("id", [1, 2, 3]).is_("nick", "null").execute()
    assert res.data == [{"id": 1}, {"id": 3}] and res.count == 2
    single = client.table("people").select("first_name").eq("id", 4).single().execute()
    assert single.data == {"first_name": "Alice"}
    with pytest.raises(Exception) as info:
        client.table("nope").select("*").execute()
    assert info.value.code == "PGRST205"


def test_supabase_py_keyset_paging_across_the_row_cap(capped):
    from supabase import create_client

    client = create_client(capped.url, capped.service_role_key)
    seen, last, pages = [], 0, 0
    while True:
        page = client.table("items").select("id,label").gt("id", last).order("id").limit(25).execute().data
        pages += 1
        if not page:
            break
        assert len(page) <= 10  # the cap, not the page size
        seen += [r["id"] for r in page]
        last = page[-1]["id"]
    assert seen == list(range(1, 26)) and pages == 4
    capped_reqs = capped.requests[-pages:]
    assert all(r.param("offset") is None for r in capped_reqs)  # keyset, no offset
    assert all("count=exact" not in r.prefer for r in capped_reqs)


def test_supabase_py_upsert_and_delete(srv, clean):
    from supabase import create_client

    client = create_client(srv.url, "sb_secret_for_tests")
    rows = [{"bu_name": b, "fiscal_year": 2026, "territory_count": n} for b, n in (("ANZ", 1), ("SEA", 2))]
    client.table("business_unit_planning").upsert(rows, on_conflict="bu_name,fiscal_year").execute()
    res = (
        client.table("business_unit_planning")
        .upsert([{"bu_name": "ANZ", "fiscal_year": 2026, "territory_count": 5}], on_conflict="bu_name,fiscal_year")
        .execute()
    )
    assert res.data[0]["territory_count"] == 5
    probe = (
        client.table("business_unit_planning")
        .upsert([], on_conflict="bu_name,fiscal_year", returning="minimal")
        .execute()
    )
    assert probe.data == []
    with pytest.raises(Exception) as info:
        client.table("no_key").upsert([], on_conflict="name,fiscal_year", returning="minimal").execute()
    assert info.value.code == "42P10"
    res = client.table("business_unit_planning").delete().eq("fiscal_year", 2026).in_("bu_name", ["SEA"]).execute()
    assert [r["bu_name"] for r in res.data] == ["SEA"]
    assert sql(clean, "SELECT bu_name, territory_count FROM business_unit_planning") == [("ANZ", 5)]


# ---------------------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------------------


def test_command_line_prints_two_lines_logs_to_stderr_and_stops_on_sigterm(rest_db, tmp_path):
    err_path = tmp_path / "stderr.log"
    with open(err_path, "wb") as err_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "compliance_sync_tests.postgrest_server",
                "--database-url",
                rest_db,
                "--port",
                "0",
                "--jwt-secret",
                SECRET,
                "--max-rows",
                "5",
            ],
            stdout=subprocess.PIPE,
            stderr=err_file,
        )
        try:
            first = proc.stdout.readline().decode()
            second = proc.stdout.readline().decode()
            m = re.fullmatch(r"NEXT_PUBLIC_SUPABASE_URL=http://127\.0\.0\.1:(\d+)\n", first)
            assert m, first
            assert second.startswith("SUPABASE_SERVICE_ROLE_KEY=") and second.endswith("\n")
            key = second.split("=", 1)[1].strip()
            assert pyjwt.decode(key, SECRET, algorithms=["HS256"]) == {"role": "service_role", "iss": "supabase"}
            url = first.split("=", 1)[1].strip()
            resp = httpx.get(url + "/rest/v1/items", headers={"apikey": key})
            assert len(resp.json()) == 5 and resp.headers["Content-Range"] == "0-4/*"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            assert proc.stdout.read() == b""  # nothing else, ever
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    lines = err_path.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} "
    assert any(re.match(stamp + r'INFO 127\.0\.0\.1 "GET /rest/v1/items" 200 ', line) for line in lines), lines
    assert all(re.match(stamp + "(DEBUG|INFO|WARNING|ERROR) ", line) for line in lines), lines
    assert any("shutting down" in line for line in lines)


def test_subprocess_helper_and_http_fault_control(rest_db, tmp_path):
    with open(tmp_path / "stderr.log", "wb") as err_file:
        url, key, proc = start_server_process(rest_db, jwt_secret=SECRET, stderr=err_file)
        try:
            headers = {"apikey": key}
            httpx.post(
                url + "/__admin/faults", headers=headers, json={"kind": "drop", "method": "GET", "table": "items"}
            ).raise_for_status()
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                httpx.get(url + "/rest/v1/items", headers=headers)
            assert httpx.get(url + "/rest/v1/items", headers=headers, params={"limit": 1}).status_code == 200
            log = httpx.get(url + "/__admin/requests", headers=headers).json()
            assert [r["dropped"] for r in log["requests"]] == [True, False]
        finally:
            assert stop_server_process(proc) == 0
