"""A small PostgREST look-alike over a real PostgreSQL database, served the way Supabase exposes it.

It exists so that the REST backend of ``compliance_sync`` (and its tests and benchmarks) can run against a real HTTP
server and a real database without Docker: every request becomes one SQL statement in its own transaction (commit on
success, rollback on error), built the way PostgREST builds it (``json_agg`` for the body, ``json_to_recordset`` for the
payload, filter values sent as *untyped* parameters so that PostgreSQL casts them to the column's type, exactly as
PostgREST's ``unknownLiteral`` does), and every answer carries PostgREST's status codes, headers and error bodies. Fault
hooks (503s, dropped connections, delays, row-level security that hides rows) let tests provoke the failures a real
deployment produces.

Command line (an independent checker starts it exactly so)::

    python -m compliance_sync_tests.postgrest_server --database-url URL --port N --jwt-secret S [--max-rows 1000] [--host 127.0.0.1]
                                                     [--max-url-length 16384]   (optional; 0 = no limit)

Once listening it prints exactly two lines on stdout (flushed; nothing else is ever printed there)::

    NEXT_PUBLIC_SUPABASE_URL=http://127.0.0.1:N
    SUPABASE_SERVICE_ROLE_KEY=<HS256 JWT signed with S, claims {"role": "service_role", "iss": "supabase"}, no exp>

Logs (one timestamped line per request, with a level) go to stderr. SIGTERM or SIGINT stops it with exit status 0.
Without ``--max-rows`` there is no cap.

Python API::

    with PostgrestServer(database_url, jwt_secret=DEFAULT_JWT_SECRET, max_rows=None, host="127.0.0.1", port=0) as srv:
        srv.url                 # http://127.0.0.1:N (the REST API is srv.rest_url = srv.url + "/rest/v1")
        srv.service_role_key, srv.anon_key, srv.make_jwt(role, exp=None, **claims)
        srv.requests            # [RequestRecord(seq, method, path, table, query, params, headers, status, role, ...)]
        srv.request_count, srv.clear_requests(), srv.reload_schema()
        srv.faults.fail(nth=1, times=1, method=None, table=None, status=503, when="before")
        srv.faults.drop(nth=1, times=1, method=None, table=None, when="before" | "after")
        srv.faults.delay(seconds, nth=1, times=1, method=None, table=None, when="before" | "after", event=None)
        srv.faults.rls(*tables, refuse_writes=False)
        srv.faults.add(spec), srv.faults.list(), srv.faults.clear(fault_id=None), srv.faults.requests_served

    url, key, proc = start_server_process(database_url, jwt_secret=..., max_rows=None, stderr=file)
    stop_server_process(proc)        # SIGTERM by PID; returns the exit status
    with server_process(database_url, ...) as (url, key, proc): ...

Everything is served under ``/rest/v1`` (Supabase's gateway prefix). Admin endpoints (the service key is required; they
are not counted as API requests): ``POST /__admin/faults`` (a fault spec or a list of them; answers
``{"faults": [...]}``), ``GET /__admin/faults`` (``{"faults": [...], "requests_served": n}``), ``DELETE
/__admin/faults[?id=n]``, ``GET|DELETE /__admin/requests`` (``{"count": n, "requests": [...]}``), ``POST
/__admin/reload-schema``. A fault spec: ``{"kind": "fail"|"drop"|"delay"|"rls", "nth": 1, "times": 1 (null: every
one), "method": "DELETE", "table": "t", "when": "before"|"after", "status": 503, "seconds": 2.0, "tables": ["t"],
"refuse_writes": false}``; ``nth`` counts matching requests from when the fault is set.

Conformance table. Docs pages are https://docs.postgrest.org/en/v14/references/... (abbreviated ``ref/``); source and
test files are PostgREST's (github.com/PostgREST/postgrest, read at commit 4834678, v16.1), paths under
``src/library/PostgREST/`` and ``test/spec/``:

==========================================  ====================================================  =====================================
behaviour                                   followed                                              deliberate deviation
==========================================  ====================================================  =====================================
Supabase gateway: ``apikey`` header (or     Supabase API-keys docs; its answers ``{"message":     only these two gateway answers are
``?apikey=``) required, Bearer optional     "No API key found in request","hint":...}`` and       emulated; ``?apikey=`` is removed from
                                            ``Invalid API key``                                   the query string
URLs longer than ~16 KiB -> 414             Supabase's edge (supabase-js#766, postgrest-js#393,   PostgREST has no limit: set
``URI too long``                            postgrest-py#365)                                     ``max_url_length=None`` to lift it
unfiltered PATCH/DELETE -> 400 21000        pg-safeupdate, on by default on Supabase (supabase    ``safeupdate=False`` turns it off
``UPDATE/DELETE requires a WHERE clause``   PR #5050); Error.hs maps 21000 "...WHERE clause"->400
JWT HS256/384/512, exp/nbf/iat with 30 s    ref/auth.html; Auth/Jwt.hs; Error.hs (PGRST301,       a validly signed apikey JWT passes the
skew, ``role`` claim, WWW-Authenticate      PGRST303 and their messages); ErrorSpec.hs, AuthSpec  gateway; a foreign one is refused there
roles                                       ``service_role``, ``sb_secret_…``: full access;       no database role is switched (the
                                            ``anon``, ``sb_publishable_…``; ``authenticated``     server is a superuser): anon and
                                                                                                  authenticated behave as under RLS with
                                                                                                  no policy (reads empty, PATCH/DELETE
                                                                                                  touch nothing, inserted rows -> 42501:
                                                                                                  401 anon, 403 authenticated); any
                                                                                                  other role -> 401 22023 ``role "x"
                                                                                                  does not exist`` (as PostgREST)
GET/HEAD, ``select`` (columns, ``*``,       ref/api/tables_views.html (Read, Vertical filtering,  no resource embedding (PGRST200 as
``alias:col``, ``col::type``,               Renaming, Casting, JSON columns); HEAD runs no        without a relationship); aggregates
``col->a->>b``)                             aggregate                                             -> PGRST123 (Supabase's default
                                                                                                  db-aggregates-enabled = false)
filters eq neq gt gte lt lte like ilike     ref/api/tables_views.html#operators, #modifiers,      PGRST100 messages keep PostgREST's
match imatch in is isdistinct fts plfts     #logical-operators, #fts (to_tsvector on non-         layout; Parsec's "expecting" wording
phfts wfts cs cd ov sl sr nxr nxl adj,      tsvector columns); ApiRequest/QueryParams.hs (the     is approximated
``(any)``/``(all)``, ``not.``, ``or``/      grammar: quoting, ``{}`` arrays in logic trees,
``and`` nesting, ``not.or``                 ``*`` in like); Query/SqlFragment.hs
form encoding, reserved characters          ref/api/url_grammar.html (``+`` is a space, %22       none
                                            quoting, backslash escapes)
``order=a.asc,b.desc.nullsfirst``           ref/api/tables_views.html#ordering                    no ordering of embedded resources
``limit``/``offset``, ``Range`` (GET only)  ref/api/pagination_count.html#limits; RangeQuery.hs,  ``Range-Unit`` is accepted and ignored
Content-Range, 206, 416 (PGRST103)          ApiRequest.hs getRanges, Response.hs                  (as PostgREST)
db-max-rows (``--max-rows``)                ref/configuration.html#db-max-rows; Plan.hs           none
                                            treeRestrictRange (min(limit, max-rows)); 200 and
                                            ``0-999/*`` without a count
``Prefer: count=exact|planned|estimated``   ref/api/pagination_count.html#exact-count             planned = EXPLAIN's "Plan Rows"
singular object Accept                      ref/api/resource_representation.html; MainTx.hs       text/csv, geo+json, ... -> 406
                                            failNotSingular (406 PGRST116; writes rolled back)    PGRST107
``Accept-Profile``/``Content-Profile``      ref/api/schemas.html; ApiRequest.hs getSchema         only ``public`` is exposed
                                            (406 PGRST106 ``Invalid schema: x``)
POST (object or array), ``columns=``,       ref/api/tables_views.html#insert, #bulk-insert,       CSV/form bodies -> 400 PGRST102;
``Prefer: missing=default``                 #specifying-columns; ApiRequest/Payload.hs            filters on POST are ignored
                                            (PGRST102 "All object keys must match");
                                            SqlFragment.hs fromJsonBodyF (typmod types, jsonb
                                            defaults); Location only for return=headers-only
upsert ``resolution=merge-duplicates|       ref/api/tables_views.html#upsert, #on-conflict;       PUT (single-row upsert) -> 405
ignore-duplicates``, ``on_conflict``        QueryBuilder.hs mutatePlanToQuery (``[]`` still runs  PGRST117
(default: the primary key)                  INSERT ... ON CONFLICT -> 42P10); Response.hs (200
                                            when merge-duplicates inserted nothing)
PATCH, DELETE with every filter             ref/api/tables_views.html#update, #delete             none (limit/offset are ignored on
                                                                                                  writes, as PostgREST >= 13)
``Prefer: return=minimal|representation|    ref/api/preferences.html; ApiRequest/Preferences.hs   ``tx=`` is ignored (Supabase's
headers-only``, ``count``, ``handling``,    (comma lists, several headers, first wins,            db-tx-end default)
``timezone``, ``max-affected``              Preference-Applied); Response.hs (201/200/204,
                                            Content-Range ``*/n``, ``0-(n-1)/n``)
errors ``{"code","details","hint",          ref/errors.html; Error.hs (mapSQLtoHTTP: 23505->409,  table hint by Levenshtein similarity
"message"}``, SQLSTATE -> HTTP status,      42501->401/403, 42P01->404, others 400; PGRST1xx,     >= 0.75 (Data.FuzzySet approximated);
Proxy-Status                                2xx, 3xx); ErrorSpec.hs (PGRST205 hint)               a dead pooled connection is replaced
                                                                                                  and the request retried once
OpenAPI (Swagger 2.0) on GET/HEAD           ref/api/openapi.html; Response/OpenAPI.hs;            ``basePath`` is ``/rest/v1/`` (as with
/rest/v1/                                   SchemaCache.hs tablesSqlQuery; OpenApiSpec.hs         openapi-server-proxy-uri); every table
                                                                                                  for every role; no RPC paths; views
                                                                                                  get no inferred pk/fk markers
schema cache; ``NOTIFY pgrst, 'reload       ref/schema_cache.html                                 also ``reload_schema()`` and
schema'``                                                                                         ``POST /__admin/reload-schema``
==========================================  ====================================================  =====================================

OpenAPI property shape, as ``Response/OpenAPI.hs`` (``toSwaggerType``, ``toSwaggerFormat``, ``makeTableDef``,
``makeProperty``) renders ``SchemaCache.hs``'s column query: ``format`` is ``format_type(atttypid, NULL)`` for
pg_catalog types, i.e. the type name *without typmods* (``numeric`` for numeric(5,1), ``character`` for char(12),
``character varying``, ``timestamp with time zone``, ``text[]``, ``uuid``, ``jsonb``, ``date``), except smallint and
integer -> ``int32`` and bigint -> ``int64``; ``type`` is string / integer / number / boolean / array (with ``items``),
and absent for json/jsonb; ``maxLength`` is given for char(n) and varchar(n) only
(``information_schema._pg_char_max_length``); ``required`` lists every NOT NULL column whether or not it has a
default; ``description`` is the column comment, then ``Note:\nThis is a Primary Key.<pk/>`` and/or ``This is a Foreign
Key to `t.c`.<fk table='t' column='c'/>`` (single-column FKs to exposed tables); ``default`` is the column default
decoded as JSON (for string types with the ``::type`` suffix and quotes stripped: ``gen_random_uuid()``, ``now()``,
``draft``), absent when that is not JSON (``nextval(...)``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import http.server
import json
import logging
import os
import re
import select as _select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.adapt import Loader

__all__ = [
    "PostgrestServer",
    "FaultInjector",
    "Fault",
    "RequestRecord",
    "start_server_process",
    "stop_server_process",
    "server_process",
    "make_jwt",
    "DEFAULT_JWT_SECRET",
    "main",
]

POSTGREST_VERSION = "14.1"
DOCS_VERSION = "v14"
REST_PREFIX = "/rest/v1"
ADMIN_PREFIX = "/__admin"
EXPOSED_SCHEMA = "public"
# Supabase's local-development secret (supabase/cli): handy when a test does not care.
DEFAULT_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
KNOWN_ROLES = ("anon", "authenticated", "service_role")
# Supabase's edge answers 414 "URI too long" past roughly 16 KiB of request target (supabase-js#766, postgrest-js#393,
# postgrest-py#365: a few hundred uuids in an in.(...) filter); PostgREST itself has no limit.
DEFAULT_MAX_URL_LENGTH = 16 * 1024
_INSERTED_FLAG = "pgrst_inserted__"

log = logging.getLogger("compliance_sync_tests.postgrest_server")


# ---------------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclasses.dataclass
class _Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    no_length: bool = False  # HEAD and 204: no Content-Length header


class ApiError(Exception):
    """An error answered with PostgREST's JSON body ``{"code","details","hint","message"}``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None, hint: Any = None, headers=()):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = list(headers)

    def body(self) -> bytes:
        return _dumps({"code": self.code, "details": self.details, "hint": self.hint, "message": self.message})

    def to_resp(self) -> _Resp:
        body = self.body()
        headers = [("Content-Type", "application/json; charset=utf-8"), ("Proxy-Status", f"PostgREST; error={self.code}")]
        return _Resp(self.status, headers + self.headers, body)


class _GatewayError(Exception):
    """An answer of Supabase's gateway (Kong), before PostgREST: ``{"message","hint"}``."""

    def __init__(self, status: int, message: str, hint: str | None = None):
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint

    def to_resp(self) -> _Resp:
        payload = {"message": self.message}
        if self.hint is not None:
            payload["hint"] = self.hint
        return _Resp(self.status, [("Content-Type", "application/json; charset=utf-8")], _dumps(payload))


class _DropConnection(Exception):
    """Close the client's socket without any response."""


def _pg_status(sqlstate: str, message: str, authed: bool) -> int:
    """PostgREST's ``mapSQLtoHTTP`` (src/library/PostgREST/Error.hs)."""
    c = sqlstate or ""
    if c.startswith("08"):
        return 503
    if c.startswith("09"):
        return 500
    if c.startswith("0L") or c.startswith("0P"):
        return 403
    if c in ("23503", "23505"):
        return 409
    if c == "25006":
        return 405
    if c == "21000":
        return 400 if message.endswith("requires a WHERE clause") else 500
    if c == "22023":
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if c.startswith("25"):
        return 500
    if c.startswith("28"):
        return 403
    if c[:2] in ("2D", "38", "39", "3B", "40"):
        return 500
    if c == "53400":
        return 500
    if c.startswith("53"):
        return 503
    if c[:2] in ("54", "55"):
        return 500
    if c == "57P01":
        return 503
    if c[:2] in ("57", "58", "F0", "HV"):
        return 500
    if c == "P0001":
        return 400
    if c.startswith("P0") or c.startswith("XX"):
        return 500
    if c == "42883":
        return 406 if message.startswith("function xmlagg(") else 404
    if c == "42P01":
        return 404
    if c == "42P17":
        return 500
    if c == "42501":
        return 403 if authed else 401
    if c.startswith("PT"):
        try:
            return int(c[2:])
        except ValueError:
            return 500
    return 400


def _pg_error(exc: psycopg.Error, authed: bool) -> ApiError:
    sqlstate = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    if not sqlstate:
        # the connection broke (server gone, socket closed): PostgREST's PGRST001, 503
        return ApiError(503, "PGRST001", "Database client error. Retrying the connection.", str(exc).strip() or None)
    message = (diag.message_primary if diag else None) or str(exc)
    details = diag.message_detail if diag else None
    hint = diag.message_hint if diag else None
    status = _pg_status(sqlstate, message, authed)
    headers = [("WWW-Authenticate", "Bearer")] if status == 401 else []
    return ApiError(status, sqlstate, message, details, hint, headers)


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _fuzzy_hint(name: str, candidates: Iterable[str]) -> str | None:
    """Data.FuzzySet's getOneWithMinScore 0.75, approximated by normalised Levenshtein similarity (case-insensitive)."""
    best, best_score = None, 0.0
    for cand in candidates:
        a, b = name.lower(), cand.lower()
        score = 1.0 - _levenshtein(a, b) / max(len(a), len(b), 1)
        if score > best_score:
            best, best_score = cand, score
    return best if best is not None and best_score >= 0.75 else None


# ---------------------------------------------------------------------------------------------------------------------
# JWT (HS256/384/512), as PostgREST validates it (src/library/PostgREST/Auth/Jwt.hs)
# ---------------------------------------------------------------------------------------------------------------------

_HS_ALGS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_JWT_SKEW_SECONDS = 30


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _exp_value(exp: Any) -> int | None:
    if exp is None:
        return None
    if isinstance(exp, datetime):
        return int(exp.timestamp())
    if isinstance(exp, timedelta):
        return int(time.time() + exp.total_seconds())
    return int(exp)


def make_jwt(secret: str, role: str | None, exp: Any = None, algorithm: str = "HS256", **claims: Any) -> str:
    """An HS256 JWT with ``{"role": role, "iss": "supabase", **claims}``; ``exp`` is epoch seconds, a datetime or a
    timedelta from now (negative: already expired); None leaves it out."""
    payload: dict[str, Any] = {}
    if role is not None:
        payload["role"] = role
    payload["iss"] = "supabase"
    payload.update(claims)
    exp_v = _exp_value(exp)
    if exp_v is not None:
        payload["exp"] = exp_v
    header = {"alg": algorithm, "typ": "JWT"}
    signing_input = _b64url(_dumps(header)) + "." + _b64url(_dumps(payload))
    sig = hmac.new(secret.encode("utf-8"), signing_input.encode("ascii"), _HS_ALGS[algorithm]).digest()
    return signing_input + "." + _b64url(sig)


def _jwt_decode_error(message: str, details: str | None = None) -> ApiError:
    hdr = ("WWW-Authenticate", f'Bearer error="invalid_token", error_description={json.dumps(message)}')
    return ApiError(401, "PGRST301", message, details, None, [hdr])


def _jwt_claims_error(message: str) -> ApiError:
    hdr = ("WWW-Authenticate", f'Bearer error="invalid_token", error_description={json.dumps(message)}')
    return ApiError(401, "PGRST303", message, None, None, [hdr])


def _jwt_signature_ok(token: str, secret: str) -> bool:
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(_b64url_decode(parts[0]))
        alg = _HS_ALGS.get(header.get("alg"))
        if alg is None:
            return False
        expected = hmac.new(secret.encode("utf-8"), (parts[0] + "." + parts[1]).encode("ascii"), alg).digest()
        return hmac.compare_digest(expected, _b64url_decode(parts[2]))
    except (ValueError, TypeError, AttributeError):
        return False


def decode_jwt(token: str, secret: str, now: float | None = None) -> dict:
    """Verify and decode a token as PostgREST does; raises ApiError (401, PGRST301/PGRST303)."""
    if token == "":
        raise _jwt_decode_error("Empty JWT is sent in Authorization header")
    parts = token.split(".")
    if len(parts) != 3:
        raise _jwt_decode_error(f"Expected 3 parts in JWT; got {len(parts)}")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        if not isinstance(header, dict):
            raise ValueError
    except (ValueError, TypeError):
        raise _jwt_decode_error("JWT cryptographic operation failed") from None
    alg_name = header.get("alg")
    if alg_name == "none":
        raise _jwt_decode_error("Wrong or unsupported encoding algorithm", "JWT is unsecured but expected 'alg' was not 'none'")
    if not _jwt_signature_ok(token, secret):
        raise _jwt_decode_error("No suitable key or wrong key type", "None of the keys was able to decode the JWT")
    try:
        claims = json.loads(_b64url_decode(parts[1]))
    except (ValueError, TypeError):
        raise _jwt_claims_error("Parsing claims failed") from None
    if not isinstance(claims, dict):
        raise _jwt_claims_error("Parsing claims failed")
    now_s = int(time.time() if now is None else now)

    def number(key: str, message: str):
        value = claims.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _jwt_claims_error(message)
        return int(value)

    exp = number("exp", "The JWT 'exp' claim must be a number")
    if exp is not None and now_s - _JWT_SKEW_SECONDS > exp:
        raise _jwt_claims_error("JWT expired")
    nbf = number("nbf", "The JWT 'nbf' claim must be a number")
    if nbf is not None and now_s + _JWT_SKEW_SECONDS < nbf:
        raise _jwt_claims_error("JWT not yet valid")
    iat = number("iat", "The JWT 'iat' claim must be a number")
    if iat is not None and now_s + _JWT_SKEW_SECONDS < iat:
        raise _jwt_claims_error("JWT issued at future")
    aud = claims.get("aud")
    if aud is not None and not (isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))):
        raise _jwt_claims_error("The JWT 'aud' claim must be a string or an array of strings")
    return claims


# ---------------------------------------------------------------------------------------------------------------------
# Schema cache (PostgREST's src/library/PostgREST/SchemaCache.hs, reduced to what is served here)
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Column:
    name: str
    description: str | None
    nullable: bool
    data_type: str  # format_type without typmod for pg_catalog types (OpenAPI "format")
    nominal_type: str  # format_type with typmod (used to read the JSON payload)
    max_length: int | None
    default: str | None
    enum: list[str]


@dataclasses.dataclass
class Table:
    schema: str
    name: str
    description: str | None
    is_view: bool
    insertable: bool
    updatable: bool
    deletable: bool
    pk_cols: list[str]
    columns: dict[str, Column]


@dataclasses.dataclass
class SchemaCache:
    tables: dict[str, Table]
    fks: dict[tuple[str, str], tuple[str, str]]  # (table, column) -> (foreign table, foreign column), single-column FKs
    schema_description: str | None


_TABLES_SQL = """
SELECT c.oid::bigint, n.nspname, c.relname, d.description,
       c.relkind IN ('v','m') AS is_view,
       (c.relkind IN ('r','p') OR (c.relkind IN ('v','f') AND (pg_relation_is_updatable(c.oid::regclass, TRUE) & 8) = 8)),
       (c.relkind IN ('r','p') OR (c.relkind IN ('v','f') AND (pg_relation_is_updatable(c.oid::regclass, TRUE) & 4) = 4)),
       (c.relkind IN ('r','p') OR (c.relkind IN ('v','f') AND (pg_relation_is_updatable(c.oid::regclass, TRUE) & 16) = 16)),
       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attname)
                 FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (k.conkey)
                 WHERE k.conrelid = c.oid AND k.contype = 'p' AND NOT a.attisdropped), '{}')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_description d ON d.objoid = c.oid AND d.objsubid = 0 AND d.classoid = 'pg_class'::regclass
WHERE c.relkind IN ('v','r','m','f','p') AND n.nspname = %(schema)s AND NOT c.relispartition
ORDER BY c.relname
"""

_COLUMNS_SQL = """
SELECT a.attrelid::bigint, a.attname::text, d.description,
       CASE
         WHEN t.typbasetype != 0 AND ad.adbin IS NULL THEN pg_get_expr(t.typdefaultbin, 0)
         WHEN a.attidentity = 'd' THEN format('nextval(%%L)',
              pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname))
         WHEN a.attgenerated = 's' THEN NULL
         ELSE pg_get_expr(ad.adbin, ad.adrelid)::text
       END AS column_default,
       NOT (a.attnotnull OR (t.typtype = 'd' AND t.typnotnull)) AS is_nullable,
       CASE
         WHEN t.typtype = 'd' THEN
           CASE WHEN bt.typnamespace = 'pg_catalog'::regnamespace THEN format_type(bt.oid, NULL::integer)
                ELSE format_type(a.atttypid, a.atttypmod) END
         ELSE
           CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN format_type(a.atttypid, NULL::integer)
                ELSE format_type(a.atttypid, a.atttypmod) END
       END::text AS data_type,
       format_type(a.atttypid, a.atttypmod)::text AS nominal_data_type,
       information_schema._pg_char_max_length(information_schema._pg_truetypid(a.*, t.*),
                                              information_schema._pg_truetypmod(a.*, t.*))::integer,
       coalesce((SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e
                 WHERE e.enumtypid = coalesce(bt.oid, t.oid)), '{}')
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
LEFT JOIN pg_description d ON d.objoid = a.attrelid AND d.objsubid = a.attnum AND d.classoid = 'pg_class'::regclass
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('v','r','m','f','p') AND n.nspname = %(schema)s
ORDER BY a.attrelid, a.attnum
"""

_FKS_SQL = """
SELECT c.relname::text, a.attname::text, fc.relname::text, fa.attname::text
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class fc ON fc.oid = k.confrelid
JOIN pg_namespace fn ON fn.oid = fc.relnamespace
JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
JOIN pg_attribute fa ON fa.attrelid = k.confrelid AND fa.attnum = k.confkey[1]
WHERE k.contype = 'f' AND cardinality(k.conkey) = 1 AND n.nspname = %(schema)s AND fn.nspname = %(schema)s
ORDER BY c.relname, a.attname, k.conname
"""


def load_schema_cache(conn: psycopg.Connection, schema: str = EXPOSED_SCHEMA) -> SchemaCache:
    params = {"schema": schema}
    with conn.cursor() as cur:
        cur.execute(_TABLES_SQL, params)
        by_oid: dict[int, Table] = {}
        for oid, nsp, name, desc, is_view, ins, upd, dele, pks in cur.fetchall():
            by_oid[oid] = Table(nsp, name, desc, is_view, ins, upd, dele, list(pks), {})
        cur.execute(_COLUMNS_SQL, params)
        for relid, name, desc, default, nullable, data_type, nominal, max_len, enum in cur.fetchall():
            tbl = by_oid.get(relid)
            if tbl is not None:
                tbl.columns[name] = Column(name, desc, nullable, data_type, nominal, max_len, default, list(enum))
        cur.execute(_FKS_SQL, params)
        fks: dict[tuple[str, str], tuple[str, str]] = {}
        for tname, col, ftname, fcol in cur.fetchall():
            fks.setdefault((tname, col), (ftname, fcol))
        cur.execute("SELECT pg_catalog.obj_description(%(schema)s::regnamespace, 'pg_namespace')", params)
        row = cur.fetchone()
    conn.rollback()
    return SchemaCache({t.name: t for t in by_oid.values()}, fks, row[0] if row else None)


# ---------------------------------------------------------------------------------------------------------------------
# OpenAPI (Swagger 2.0), as src/library/PostgREST/Response/OpenAPI.hs builds it
# ---------------------------------------------------------------------------------------------------------------------

_SWAGGER_TYPES = {
    "character varying": "string",
    "character": "string",
    "text": "string",
    "boolean": "boolean",
    "smallint": "integer",
    "integer": "integer",
    "bigint": "integer",
    "numeric": "number",
    "real": "number",
    "double precision": "number",
    "json": None,
    "jsonb": None,
}


def _swagger_type(col_type: str) -> str | None:
    if col_type in _SWAGGER_TYPES:
        return _SWAGGER_TYPES[col_type]
    return "array" if col_type.endswith("[]") else "string"


def _swagger_format(col_type: str) -> str:
    return {"smallint": "int32", "integer": "int32", "bigint": "int64"}.get(col_type, col_type)


def _reject_constant(_value: str):
    raise ValueError("not JSON")


def _openapi_default(col_type: str, default: str) -> Any:
    """OpenAPI.hs ``parseDefault`` then ``JSON.decode``; ``_MISSING`` when it is not valid JSON."""
    text = default
    if _swagger_type(col_type) == "string":
        suffix = "::" + col_type
        if text.endswith(suffix):
            text = text[: -len(suffix)].strip("'")
        text = '"' + text + '"'
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return _MISSING


_MISSING = object()


def _column_property(table: Table, col: Column, fks) -> dict:
    prop: dict[str, Any] = {}
    if col.default is not None:
        value = _openapi_default(col.data_type, col.default)
        if value is not _MISSING:
            prop["default"] = value
    notes = ["Note:"]
    if col.name in table.pk_cols:
        notes.append("This is a Primary Key.<pk/>")
    fk = fks.get((table.name, col.name))
    if fk is not None:
        ft, fc = fk
        notes.append(f"This is a Foreign Key to `{ft}.{fc}`.<fk table='{ft}' column='{fc}'/>")
    if len(notes) > 1:
        prop["description"] = ((col.description + "\n\n") if col.description is not None else "") + "\n".join(notes)
    elif col.description is not None:
        prop["description"] = col.description
    if col.enum:
        prop["enum"] = list(col.enum)
    prop["format"] = _swagger_format(col.data_type)
    if col.max_length is not None:
        prop["maxLength"] = col.max_length
    stype = _swagger_type(col.data_type)
    if stype is not None:
        prop["type"] = stype
    if stype == "array":
        item_type = _swagger_type(col.data_type[:-2])
        prop["items"] = {"type": item_type} if item_type is not None else {}
    return prop


def _summary_description(text: str | None) -> tuple[str | None, str | None]:
    if text is None:
        return None, None
    head, sep, rest = text.partition("\n")
    return head, rest.lstrip("\n") if sep else ""


def _prefer_param(kinds: list[str]) -> dict:
    values = {
        "count": ["count=none"],
        "return": ["return=representation", "return=minimal", "return=none"],
        "resolution": ["resolution=ignore-duplicates", "resolution=merge-duplicates"],
    }
    enum = [v for k in kinds for v in values.get(k, [])]
    param = {"name": "Prefer", "description": "Preference", "required": False, "in": "header", "type": "string"}
    if enum:
        param["enum"] = enum
    return param


def build_openapi(cache: SchemaCache, host: str, port: int, base_path: str = REST_PREFIX + "/") -> dict:
    mimes = ["application/json", "application/vnd.pgrst.object+json;nulls=stripped", "application/vnd.pgrst.object+json", "text/csv"]
    tables = [cache.tables[name] for name in sorted(cache.tables)]
    title, desc = _summary_description(cache.schema_description)

    def query_param(name: str, description: str) -> dict:
        return {"name": name, "description": description, "required": False, "in": "query", "type": "string"}

    parameters: dict[str, dict] = {
        "preferParams": _prefer_param(["params"]),
        "preferReturn": _prefer_param(["return"]),
        "preferCount": _prefer_param(["count"]),
        "preferPost": _prefer_param(["return", "resolution"]),
        "select": query_param("select", "Filtering Columns"),
        "on_conflict": query_param("on_conflict", "On Conflict"),
        "order": query_param("order", "Ordering"),
        "range": {"name": "Range", "description": "Limiting and Pagination", "required": False, "in": "header", "type": "string"},
        "rangeUnit": {
            "name": "Range-Unit",
            "description": "Limiting and Pagination",
            "required": False,
            "in": "header",
            "type": "string",
            "default": "items",
        },
        "offset": query_param("offset", "Limiting and Pagination"),
        "limit": query_param("limit", "Limiting and Pagination"),
    }
    definitions: dict[str, dict] = {}
    paths: dict[str, dict] = {
        "/": {
            "get": {
                "tags": ["Introspection"],
                "summary": "OpenAPI description (this document)",
                "produces": ["application/openapi+json", "application/json"],
                "responses": {"200": {"description": "OK"}},
            }
        }
    }
    for t in tables:
        tn = t.name
        parameters["body." + tn] = {"name": tn, "description": tn, "required": False, "in": "body", "schema": {"$ref": "#/definitions/" + tn}}
        for col in t.columns.values():
            p = {"name": col.name, "required": False, "in": "query", "type": "string"}
            if col.description is not None:
                p["description"] = col.description
            parameters[f"rowFilter.{tn}.{col.name}"] = p
        definition: dict[str, Any] = {}
        if t.description is not None:
            definition["description"] = t.description
        definition["type"] = "object"
        definition["properties"] = {c.name: _column_property(t, c, cache.fks) for c in t.columns.values()}
        required = [c.name for c in t.columns.values() if not c.nullable]
        if required:
            definition["required"] = required
        definitions[tn] = definition

        summary, description = _summary_description(t.description)
        base_op: dict[str, Any] = {"tags": [tn]}
        if summary is not None:
            base_op["summary"] = summary
        if description:
            base_op["description"] = description
        row_filters = [{"$ref": f"#/parameters/rowFilter.{tn}.{c}"} for c in t.columns]
        refs = lambda names: [{"$ref": "#/parameters/" + n} for n in names]  # noqa: E731
        item = {
            "get": {
                **base_op,
                "parameters": row_filters + refs(["select", "order", "range", "rangeUnit", "offset", "limit", "preferCount"]),
                "responses": {
                    "200": {"description": "OK", "schema": {"items": {"$ref": "#/definitions/" + tn}, "type": "array"}},
                    "206": {"description": "Partial Content"},
                },
            }
        }
        if t.insertable or t.updatable or t.deletable:
            item["post"] = {**base_op, "parameters": refs(["body." + tn, "select", "preferPost"]), "responses": {"201": {"description": "Created"}}}
            item["delete"] = {**base_op, "parameters": row_filters + refs(["preferReturn"]), "responses": {"204": {"description": "No Content"}}}
            item["patch"] = {
                **base_op,
                "parameters": row_filters + refs(["body." + tn, "preferReturn"]),
                "responses": {"204": {"description": "No Content"}},
            }
        paths["/" + tn] = item
    return {
        "swagger": "2.0",
        "info": {
            "description": desc if desc is not None else "This is a dynamic API generated by PostgREST",
            "title": title if title is not None else "PostgREST API",
            "version": POSTGREST_VERSION,
        },
        "host": f"{host}:{port}",
        "basePath": base_path,
        "schemes": ["http"],
        "consumes": mimes,
        "produces": mimes,
        "paths": paths,
        "definitions": definitions,
        "parameters": parameters,
        "externalDocs": {"description": "PostgREST Documentation", "url": f"https://postgrest.org/en/{DOCS_VERSION}/references/api.html"},
    }


# ---------------------------------------------------------------------------------------------------------------------
# Query-string grammar (src/library/PostgREST/ApiRequest/QueryParams.hs, a Parsec grammar, transcribed)
# ---------------------------------------------------------------------------------------------------------------------


class _ParseFail(Exception):
    def __init__(self, pos: int, found: str | None, expecting: str):
        super().__init__(expecting)
        self.pos, self.found, self.expecting = pos, found, expecting


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    json_path: tuple = ()  # ((arrow, operand, is_index), ...)


@dataclasses.dataclass
class Filter:
    field: Field
    negate: bool
    op: str  # eq gt ... in is isdistinct fts plfts phfts wfts neq cs ...
    value: Any  # str, list[str] (in), str isval (is)
    quant: str | None = None  # any/all
    lang: str | None = None  # fts language


@dataclasses.dataclass
class Logic:
    negate: bool
    op: str  # and / or
    children: list  # of Logic | Filter


@dataclasses.dataclass
class OrderTerm:
    field: Field
    direction: str | None
    nulls: str | None


@dataclasses.dataclass
class SelectItem:
    field: Field | None  # None: *
    alias: str | None = None
    cast: str | None = None


_QUANT_OPS = [("eq", "="), ("gte", ">="), ("gt", ">"), ("lte", "<="), ("lt", "<"), ("like", "like"), ("ilike", "ilike"), ("match", "~"), ("imatch", "~*")]
_SIMPLE_OPS = [("neq", "<>"), ("cs", "@>"), ("cd", "<@"), ("ov", "&&"), ("sl", "<<"), ("sr", ">>"), ("nxr", "&<"), ("nxl", "&>"), ("adj", "-|-")]
_QUANT_SQL = dict(_QUANT_OPS)
_SIMPLE_SQL = dict(_SIMPLE_OPS)
_FTS_OPS = {"fts": "to_tsquery", "plfts": "plainto_tsquery", "phfts": "phraseto_tsquery", "wfts": "websearch_to_tsquery"}
_IS_VALS = [("null", "NULL"), ("not_null", "NOT NULL"), ("true", "TRUE"), ("false", "FALSE"), ("unknown", "UNKNOWN")]


class _Cursor:
    def __init__(self, text: str):
        self.s = text
        self.i = 0

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.s[j] if j < len(self.s) else None

    def at(self, lit: str) -> bool:
        return self.s.startswith(lit, self.i)

    def fail(self, expecting: str):
        raise _ParseFail(self.i, self.peek(), expecting)

    def expect(self, ch: str, what: str | None = None):
        if self.peek() != ch:
            self.fail(what or f'"{ch}"')
        self.i += 1

    def ws(self):
        while self.peek() in (" ", "\t"):
            self.i += 1


def _is_ident_char(c: str | None) -> bool:
    return c is not None and (c.isalpha() or "0" <= c <= "9" or c in "_ $")


def _p_identifier(cur: _Cursor) -> str:
    start = cur.i
    while _is_ident_char(cur.peek()):
        cur.i += 1
    if cur.i == start:
        cur.fail("field name (* or [a..z0..9_$])")
    return cur.s[start : cur.i].strip()


def _sep_by_dash(cur: _Cursor, ident: Callable[[_Cursor], str]) -> str:
    parts = [ident(cur)]
    while cur.peek() == "-" and cur.peek(1) != ">":
        cur.i += 1
        parts.append(ident(cur))
    return "-".join(parts)


def _p_quoted(cur: _Cursor) -> str:
    cur.expect('"')
    out = []
    while True:
        c = cur.peek()
        if c is None:
            cur.fail('"\\"" (closing quote)')
        if c == '"':
            cur.i += 1
            return "".join(out)
        if c == "\\":
            if cur.peek(1) is None:
                cur.i += 1
                cur.fail("any character")
            out.append(cur.peek(1))
            cur.i += 2
        else:
            out.append(c)
            cur.i += 1


def _p_field_name(cur: _Cursor) -> str:
    if cur.peek() == '"':
        return _p_quoted(cur)
    return _sep_by_dash(cur, _p_identifier)


def _p_json_key_identifier(cur: _Cursor) -> str:
    start = cur.i
    while cur.peek() is not None and cur.peek() not in "(-:.,>)":
        cur.i += 1
    if cur.i == start:
        cur.fail("any non reserved character different from: .,>()")
    return cur.s[start : cur.i].strip()


def _p_json_path(cur: _Cursor) -> tuple:
    path = []
    while True:
        if cur.at("->>"):
            arrow = "->>"
        elif cur.at("->"):
            arrow = "->"
        else:
            return tuple(path)
        cur.i += len(arrow)
        save = cur.i
        # an index: optional '-' then digits, followed by '->', '::', '.', ',' or the end
        j = cur.i
        if cur.peek() == "-":
            j += 1
        k = j
        while k < len(cur.s) and "0" <= cur.s[k] <= "9":
            k += 1
        rest = cur.s[k:]
        if k > j and (rest == "" or rest.startswith(("->", "::", ".", ","))):
            sign = "-" if cur.peek() == "-" else "+"
            cur.i = k
            path.append((arrow, sign + cur.s[j:k], True))
            continue
        cur.i = save
        key = _p_quoted(cur) if cur.peek() == '"' else _sep_by_dash(cur, _p_json_key_identifier)
        path.append((arrow, key, False))


def _p_field(cur: _Cursor) -> Field:
    cur.ws()
    name = _p_field_name(cur)
    path = _p_json_path(cur)
    cur.ws()
    return Field(name, path)


def _p_list_val(cur: _Cursor) -> list[str]:
    cur.ws()
    cur.expect("(")
    cur.ws()
    items = [_p_list_element(cur)]
    while cur.peek() == ",":
        cur.i += 1
        items.append(_p_list_element(cur))
    cur.ws()
    cur.expect(")", '")" or ","')
    cur.ws()
    return items


def _p_list_element(cur: _Cursor) -> str:
    if cur.peek() == '"':
        save = cur.i
        try:
            value = _p_quoted(cur)
            if cur.peek() is None or cur.peek() in ",)":
                return value
        except _ParseFail:
            pass
        cur.i = save
    start = cur.i
    while cur.peek() is not None and cur.peek() not in ",)":
        cur.i += 1
    return cur.s[start : cur.i]


def _p_rest(cur: _Cursor) -> str:
    value = cur.s[cur.i :]
    cur.i = len(cur.s)
    return value


def _p_logic_single_val(cur: _Cursor) -> str:
    if cur.peek() == '"':
        save = cur.i
        try:
            value = _p_quoted(cur)
            if cur.peek() is None or cur.peek() in ",)":
                return value
        except _ParseFail:
            pass
        cur.i = save
    if cur.peek() == "{":
        end = cur.i + 1
        while end < len(cur.s) and cur.s[end] not in "{}":
            end += 1
        if end < len(cur.s) and cur.s[end] == "}":
            value = cur.s[cur.i : end + 1]
            cur.i = end + 1
            return value
    start = cur.i
    while cur.peek() is not None and cur.peek() not in ",)":
        cur.i += 1
    return cur.s[start : cur.i]


def _p_op_expr(cur: _Cursor, field: Field, single_val: Callable[[_Cursor], str]) -> Filter:
    negate = False
    if cur.at("not."):
        cur.i += 4
        negate = True
    if cur.at("in."):
        cur.i += 3
        return Filter(field, negate, "in", _p_list_val(cur))
    if cur.at("is."):
        cur.i += 3
        low = cur.s[cur.i :].lower()
        for word, sql in _IS_VALS:
            if low.startswith(word):
                cur.i += len(word)
                return Filter(field, negate, "is", sql)
        cur.fail("isVal: (null, not_null, true, false, unknown)")
    if cur.at("isdistinct."):
        cur.i += len("isdistinct.")
        return Filter(field, negate, "isdistinct", single_val(cur))
    for name in ("fts", "plfts", "phfts", "wfts"):
        if cur.at(name):
            save = cur.i
            cur.i += len(name)
            lang = None
            if cur.peek() == "(":
                cur.i += 1
                try:
                    lang = _p_identifier(cur)
                    cur.expect(")")
                except _ParseFail:
                    cur.i = save
                    break
            if cur.peek() == ".":
                cur.i += 1
                return Filter(field, negate, name, single_val(cur), lang=lang)
            cur.i = save
            break
    for name, _sql in _SIMPLE_OPS:
        if cur.at(name + "."):
            cur.i += len(name) + 1
            return Filter(field, negate, name, single_val(cur))
    for name, _sql in _QUANT_OPS:
        if cur.at(name):
            cur.i += len(name)
            quant = None
            if cur.at("(any)"):
                quant, cur.i = "any", cur.i + 5
            elif cur.at("(all)"):
                quant, cur.i = "all", cur.i + 5
            cur.expect(".", "delimiter (.)")
            return Filter(field, negate, name, single_val(cur), quant=quant)
    cur.fail('"not" or operator (eq, gt, ...)')
    raise AssertionError  # unreachable


def _p_logic_tree(cur: _Cursor):
    save = cur.i
    try:
        field = _p_field(cur)
        cur.expect(".", "delimiter (.)")
        return _p_op_expr(cur, field, _p_logic_single_val)
    except _ParseFail:
        cur.i = save
    negate = False
    if cur.at("not."):
        cur.i += 4
        negate = True
    if cur.at("and"):
        op, cur.i = "and", cur.i + 3
    elif cur.at("or"):
        op, cur.i = "or", cur.i + 2
    else:
        cur.fail("logic operator (and, or)")
    cur.ws()
    cur.expect("(")
    cur.ws()
    children = [_p_logic_tree(cur)]
    while True:
        cur.ws()
        if cur.peek() != ",":
            break
        cur.i += 1
        cur.ws()
        children.append(_p_logic_tree(cur))
    cur.ws()
    cur.expect(")", '")" or ","')
    cur.ws()
    return Logic(negate, op, children)


def _p_order(cur: _Cursor) -> list[OrderTerm]:
    terms = []
    while True:
        cur.ws()
        field = _p_field(cur)
        direction = nulls = None
        if cur.at(".asc"):
            direction, cur.i = "asc", cur.i + 4
        elif cur.at(".desc"):
            direction, cur.i = "desc", cur.i + 5
        if cur.at(".nullsfirst"):
            nulls, cur.i = "nullsfirst", cur.i + 11
        elif cur.at(".nullslast"):
            nulls, cur.i = "nullslast", cur.i + 10
        if not (cur.peek() is None or cur.peek() == ","):
            cur.fail('"," or end of input')
        cur.ws()
        terms.append(OrderTerm(field, direction, nulls))
        if cur.peek() == ",":
            cur.i += 1
            continue
        return terms


def _p_columns(cur: _Cursor) -> list[str]:
    cols = [_p_field_name(cur)]
    while True:
        save = cur.i
        cur.ws()
        if cur.peek() != ",":
            cur.i = save
            return cols
        cur.i += 1
        cur.ws()
        cols.append(_p_field_name(cur))


class _EmbedRequested(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _p_select(cur: _Cursor) -> list[SelectItem]:
    items: list[SelectItem] = []
    first = True
    while True:
        cur.ws()
        if first and cur.peek() is None:
            return items
        first = False
        items.append(_p_select_item(cur))
        cur.ws()
        if cur.peek() == ",":
            cur.i += 1
            continue
        return items


def _select_end(cur: _Cursor) -> bool:
    return cur.peek() is None or cur.peek() in ",)"


def _p_select_item(cur: _Cursor) -> SelectItem:
    cur.ws()
    start = cur.i
    if cur.at("..."):
        cur.i += 3
        raise _EmbedRequested(_p_field_name(cur))
    if cur.peek() == "*":
        cur.i += 1
        cur.ws()
        if _select_end(cur):
            return SelectItem(None)
        cur.i = start
    # an embedding looks like [alias:]name[!hint][!inner](...)
    save = cur.i
    try:
        alias = None
        name = _p_field_name(cur)
        if cur.peek() == ":" and cur.peek(1) != ":":
            cur.i += 1
            alias, name = name, _p_field_name(cur)
        while cur.peek() == "!":
            cur.i += 1
            _p_field_name(cur)
        if cur.peek() == "(" and name != "count":
            raise _EmbedRequested(name)
    except _ParseFail:
        pass
    cur.i = save
    alias = None
    probe = cur.i
    try:
        candidate = _p_field_name(cur)
        if cur.peek() == ":" and cur.peek(1) != ":":
            cur.i += 1
            alias = candidate
        else:
            cur.i = probe
    except _ParseFail:
        cur.i = probe
    if cur.at("count()"):
        raise ApiError(400, "PGRST123", "Use of aggregate functions is not allowed")
    field = _p_field(cur)
    cast = None
    if cur.at("::"):
        cur.i += 2
        cast = _p_identifier(cur)
    if cur.peek() == "." and re.match(r"\.(sum|avg|count|max|min)\(\)", cur.s[cur.i :]):
        raise ApiError(400, "PGRST123", "Use of aggregate functions is not allowed")
    cur.ws()
    if not _select_end(cur):
        cur.fail('"," or end of input')
    return SelectItem(field, alias, cast)


def _parse(label: str, text: str, fn: Callable[[_Cursor], Any], source: str | None = None) -> Any:
    cur = _Cursor(text if source is None else source)
    try:
        return fn(cur)
    except _ParseFail as e:
        found = "end of input" if e.found is None else f'"{e.found}"'
        raise ApiError(
            400,
            "PGRST100",
            f'"failed to parse {label} ({text})" (line 1, column {e.pos + 1})',
            f"unexpected {found} expecting {e.expecting}",
        ) from None


def _p_tree_path(cur: _Cursor) -> tuple[list[str], Field]:
    names = [_p_field_name(cur)]
    while cur.peek() == ".":
        cur.i += 1
        names.append(_p_field_name(cur))
    path = _p_json_path(cur)
    return names[:-1], Field(names[-1], path)


def _not_embedded(name: str) -> ApiError:
    return ApiError(
        400, "PGRST108", f"'{name}' is not an embedded resource in this request", None, f"Verify that '{name}' is included in the 'select' query parameter."
    )


_INT_RE = re.compile(r"^\s*-?\d+\s*$")
_RESERVED = ("select", "columns", "on_conflict")
_RESERVED_EMBEDDABLE = ("order", "limit", "offset", "and", "or")


@dataclasses.dataclass
class QueryParams:
    raw: list[tuple[str, str]]
    select: list[SelectItem]
    filters: list  # Filter | Logic, all ANDed
    order: list[OrderTerm]
    limit: int | None
    offset: int | None
    columns: list[str] | None
    on_conflict: list[str] | None
    canonical: str


def parse_query(raw_query: str) -> QueryParams:
    """``QueryParams.parse``: form-decoded (``+`` is a space), reserved names, filters, logic trees, order, ranges."""
    pairs = [(k, v) for k, v in urllib.parse.parse_qsl(raw_query, keep_blank_values=True) if k != "apikey"]
    canonical = urllib.parse.urlencode(sorted(pairs, key=lambda kv: kv[0]), quote_via=urllib.parse.quote, safe="")
    select_text = "*"
    columns = on_conflict = None
    order: list[OrderTerm] = []
    filters: list = []
    limit = offset = None
    for key, value in pairs:
        last = key.split(".")[-1]
        if key == "select":
            select_text = value
        elif key == "columns":
            columns = _parse("columns parameter", value, _p_columns)
        elif key == "on_conflict":
            on_conflict = _parse("on_conflict parameter", value, _p_columns)
        elif last in ("and", "or"):
            names = _parse("logic path", key, _p_logic_path)
            embed = [n for n in names[:-1] if n != "not"]
            if embed:
                raise _not_embedded(embed[0])
            op = ("not." if "not" in names[:-1] else "") + last
            # PostgREST parses "or(...)" / "not.or(...)": the operator is glued to the value
            filters.append(_parse("logic tree", value, _p_logic_tree, source=op + value))
        elif last == "order":
            path = _parse("tree path", key, lambda c: _p_tree_path(c))[0]
            if path:
                raise _not_embedded(path[0])
            order = _parse("order", value, _p_order)
        elif last in ("limit", "offset"):
            path = key.split(".")[:-1]
            if path:
                raise _not_embedded(path[0])
            n = int(value) if _INT_RE.match(value) else None  # Haskell readMaybe: anything else is ignored
            if last == "limit":
                limit = n
            else:
                offset = n
        else:
            path, field = _parse("tree path", key, _p_tree_path)
            if path:
                raise _not_embedded(path[0])
            filters.append(_parse("filter", value, lambda c, f=field: _p_op_expr(c, f, _p_rest)))
    select = _parse("select parameter", select_text, _p_select)
    if not select:
        select = [SelectItem(None)]
    return QueryParams(pairs, select, filters, order, limit, offset, columns, on_conflict, canonical)


def _p_logic_path(cur: _Cursor) -> list[str]:
    names = [_p_field_name(cur)]
    while cur.peek() == ".":
        cur.i += 1
        names.append(_p_field_name(cur))
    return names


# ---------------------------------------------------------------------------------------------------------------------
# SQL fragments
# ---------------------------------------------------------------------------------------------------------------------


class _Frag:
    """SQL text with ``%s`` placeholders and their parameters (text is %-escaped on the way in)."""

    __slots__ = ("sql", "params")

    def __init__(self, sql: str = "", params: Iterable[Any] = ()):
        self.sql = sql
        self.params = list(params)

    def __add__(self, other: _Frag | str) -> _Frag:
        if isinstance(other, str):
            return _Frag(self.sql + other.replace("%", "%%"), self.params)
        return _Frag(self.sql + other.sql, self.params + other.params)

    def __radd__(self, other: str) -> _Frag:
        return _Frag(other.replace("%", "%%") + self.sql, self.params)


def _S(text: str) -> _Frag:
    return _Frag(text.replace("%", "%%"))


def _P(value: Any) -> _Frag:
    return _Frag("%s", [value])


def _join(frags: Iterable[_Frag | str], sep: str) -> _Frag:
    out = _Frag()
    for i, f in enumerate(frags):
        if i:
            out = out + sep
        out = out + f
    return out


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qi(table: Table) -> str:
    return _ident(table.schema) + "." + _ident(table.name)


def _pg_array_literal(values: list[str]) -> str:
    def esc(v: str) -> str:
        v = v.replace("\x00", "").replace("\\", "\\\\").replace('"', '\\"')
        return '"' + v + '"'

    return "{" + ",".join(esc(v) for v in values) + "}"


def _field_sql(qual: str, field: Field, table: Table | None = None, to_json_if_needed: bool = True) -> _Frag:
    base = qual + "." + _ident(field.name)
    if not field.json_path:
        return _S(base)
    col = table.columns.get(field.name) if table is not None else None
    if to_json_if_needed and not (col is not None and col.data_type in ("json", "jsonb")):
        frag = _S("to_jsonb(" + base + ")")
    else:
        frag = _S(base)
    for arrow, operand, is_index in field.json_path:
        frag = frag + arrow + _P(operand) + ("::int" if is_index else "")
    return frag


def _field_alias(field: Field) -> str:
    for _arrow, operand, is_index in reversed(field.json_path):
        if not is_index:
            return operand
    return field.name


def _filter_sql(qual: str, table: Table, flt: Filter) -> _Frag:
    field = _field_sql(qual, flt.field, table)
    op = flt.op
    if op in _FTS_OPS:
        col = table.columns.get(flt.field.name)
        if not (col is not None and col.data_type == "tsvector" and not flt.field.json_path):
            field = _S("to_tsvector(") + ((_P(flt.lang) + ", ") if flt.lang else _Frag()) + field + ")"
        lang = (_P(flt.lang) + ", ") if flt.lang else _Frag()
        expr = field + (" @@ " + _FTS_OPS[op] + "(") + lang + _P(flt.value) + ")"
    elif op == "in":
        if flt.value == [""]:
            expr = field + " = ANY('{}')"
        else:
            expr = field + " = ANY (" + _P(_pg_array_literal(flt.value)) + ")"
    elif op == "is":
        expr = field + (" IS " + flt.value)
    elif op == "isdistinct":
        expr = field + " IS DISTINCT FROM " + _P(flt.value)
    elif op in _SIMPLE_SQL:
        expr = field + (" " + _SIMPLE_SQL[op] + " ") + _P(flt.value)
    else:
        value = flt.value.replace("*", "%") if op in ("like", "ilike") else flt.value
        if flt.quant:
            rhs = _S(flt.quant.upper() + "(") + _P(value) + ")"
        else:
            rhs = _P(value)
        expr = field + (" " + _QUANT_SQL[op] + " ") + rhs
    return ("NOT " + expr) if flt.negate else expr


def _logic_sql(qual: str, table: Table, node) -> _Frag:
    if isinstance(node, Filter):
        return _filter_sql(qual, table, node)
    inner = _join([_logic_sql(qual, table, c) for c in node.children], " AND " if node.op == "and" else " OR ")
    return ("NOT (" if node.negate else "(") + inner + ")"


def _where_sql(qual: str, table: Table, filters: list, hidden: bool) -> _Frag:
    parts = [_logic_sql(qual, table, f) for f in filters]
    if hidden:
        parts.insert(0, _S("false"))
    if not parts:
        return _Frag()
    return " WHERE " + _join(parts, " AND ")


def _order_sql(qual: str, table: Table, order: list[OrderTerm]) -> _Frag:
    if not order:
        return _Frag()
    terms = []
    for t in order:
        frag = _field_sql(qual, t.field, table)
        if t.direction:
            frag = frag + (" " + t.direction.upper())
        if t.nulls:
            frag = frag + (" NULLS FIRST" if t.nulls == "nullsfirst" else " NULLS LAST")
        terms.append(frag)
    return " ORDER BY " + _join(terms, ", ")


def _select_sql(qual: str, table: Table, items: list[SelectItem], star_columns: list[str] | None = None) -> _Frag:
    out = []
    for item in items:
        if item.field is None:
            if star_columns is None:
                out.append(_S(qual + ".*"))
            else:
                out.extend(_S(qual + "." + _ident(c)) for c in star_columns)
            continue
        frag = _field_sql(qual, item.field, table)
        if item.cast:
            frag = "CAST(" + frag + (" AS " + item.cast + ")")
        alias = item.alias
        if alias is None and (item.cast or item.field.json_path):
            alias = _field_alias(item.field)
        if alias is not None:
            frag = frag + (" AS " + _ident(alias))
        out.append(frag)
    return _join(out, ", ")


# ---------------------------------------------------------------------------------------------------------------------
# Faults and the request log
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Fault:
    """One fault rule. ``nth``: the first matching request it hits (1 = the next one), counted from when it was set;
    ``times``: how many consecutive matching requests it hits (None: every one from ``nth`` on)."""

    id: int
    kind: str  # fail | drop | delay | rls
    nth: int = 1
    times: int | None = 1
    method: str | None = None
    table: str | None = None
    when: str = "before"  # before executing, or after executing and committing
    status: int = 503
    seconds: float = 0.0
    tables: tuple[str, ...] = ()
    refuse_writes: bool = False
    event: threading.Event | None = dataclasses.field(default=None, repr=False)
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, table: str | None) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return not (self.table is not None and self.table != table)

    def to_dict(self) -> dict:
        d = {
            "id": self.id,
            "kind": self.kind,
            "nth": self.nth,
            "times": self.times,
            "method": self.method,
            "table": self.table,
            "when": self.when,
            "seen": self.seen,
            "fired": self.fired,
        }
        if self.kind == "fail":
            d["status"] = self.status
        if self.kind == "delay":
            d["seconds"] = self.seconds
        if self.kind == "rls":
            d = {"id": self.id, "kind": "rls", "tables": list(self.tables), "refuse_writes": self.refuse_writes}
        return d


class FaultInjector:
    """Fault rules of one server. Also reachable over HTTP: ``POST /__admin/faults`` (a spec object or a list),
    ``GET /__admin/faults``, ``DELETE /__admin/faults[?id=N]``."""

    def __init__(self, server: PostgrestServer):
        self._server = server
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1

    # -- setting
    def add(self, spec: dict) -> Fault:
        """Add a fault from a JSON-like spec: ``{"kind": "fail"|"drop"|"delay"|"rls", "nth": 1, "times": 1,
        "method": "DELETE", "table": "t", "when": "before"|"after", "status": 503, "seconds": 2.0,
        "tables": ["t"], "refuse_writes": false}``."""
        spec = dict(spec)
        kind = spec.pop("kind", None)
        if kind not in ("fail", "drop", "delay", "rls"):
            raise ValueError(f"unknown fault kind {kind!r} (fail, drop, delay, rls)")
        if "count" in spec and "times" not in spec:
            spec["times"] = spec.pop("count")
        allowed = {"nth", "times", "method", "table", "when", "status", "seconds", "tables", "refuse_writes", "event"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault field(s): {sorted(unknown)}")
        when = spec.get("when", "before")
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        nth = int(spec.get("nth", 1))
        if nth < 1:
            raise ValueError("nth counts from 1")
        times = spec.get("times", 1)
        times = None if times is None else int(times)
        tables = spec.get("tables", ())
        if isinstance(tables, str):
            tables = (tables,)
        with self._lock:
            fault = Fault(
                id=self._next_id,
                kind=kind,
                nth=nth,
                times=times,
                method=spec.get("method"),
                table=spec.get("table"),
                when=when,
                status=int(spec.get("status", 503)),
                seconds=float(spec.get("seconds", 0.0)),
                tables=tuple(tables),
                refuse_writes=bool(spec.get("refuse_writes", False)),
                event=spec.get("event"),
            )
            self._next_id += 1
            self._faults.append(fault)
        log.info("fault set: %s", json.dumps(fault.to_dict()))
        return fault

    def fail(self, nth: int = 1, *, times: int | None = 1, method: str | None = None, table: str | None = None, status: int = 503, when: str = "before") -> Fault:
        """Answer the nth matching request (and the next ``times - 1``) with ``status`` and a JSON error; with
        ``when="after"`` the request is executed and committed first."""
        return self.add({"kind": "fail", "nth": nth, "times": times, "method": method, "table": table, "status": status, "when": when})

    def drop(self, nth: int = 1, *, times: int | None = 1, method: str | None = None, table: str | None = None, when: str = "before") -> Fault:
        """Close the connection of the nth matching request without any response, before executing it or after
        executing and committing it (the client sees a failed write that happened)."""
        return self.add({"kind": "drop", "nth": nth, "times": times, "method": method, "table": table, "when": when})

    def delay(
        self,
        seconds: float,
        nth: int = 1,
        *,
        times: int | None = 1,
        method: str | None = None,
        table: str | None = None,
        when: str = "before",
        event: threading.Event | None = None,
    ) -> Fault:
        """Hold the nth matching request ``seconds`` before (or after) executing it; with ``event``, hold it until the
        event is set (at most ``seconds``)."""
        return self.add({"kind": "delay", "seconds": seconds, "nth": nth, "times": times, "method": method, "table": table, "when": when, "event": event})

    def rls(self, *tables: str, refuse_writes: bool = False) -> Fault:
        """Make these tables read empty for every key, the service key included (row-level security that hides rows);
        with ``refuse_writes`` every POST/PATCH/DELETE on them that touches a row fails with 42501."""
        return self.add({"kind": "rls", "tables": list(tables), "refuse_writes": refuse_writes})

    def clear(self, fault_id: int | None = None) -> None:
        with self._lock:
            if fault_id is None:
                self._faults.clear()
            else:
                self._faults = [f for f in self._faults if f.id != fault_id]

    def list(self) -> list[dict]:
        with self._lock:
            return [f.to_dict() for f in self._faults]

    @property
    def requests_served(self) -> int:
        return self._server.request_count

    # -- applying
    def take(self, method: str, table: str | None) -> list[Fault]:
        """The non-RLS faults that fire for this request (counting it against every matching rule)."""
        fired = []
        with self._lock:
            for f in self._faults:
                if f.kind == "rls" or not f.matches(method, table):
                    continue
                f.seen += 1
                end = None if f.times is None else f.nth + f.times
                if f.seen >= f.nth and (end is None or f.seen < end):
                    f.fired += 1
                    fired.append(f)
        return fired

    def rls_state(self, table: str) -> tuple[bool, bool]:
        hidden = refuse = False
        with self._lock:
            for f in self._faults:
                if f.kind == "rls" and table in f.tables:
                    hidden = True
                    refuse = refuse or f.refuse_writes
        return hidden, refuse


@dataclasses.dataclass
class RequestRecord:
    """One API request as served (admin requests are not recorded)."""

    seq: int
    time: float
    method: str
    path: str
    table: str | None
    query: str  # the raw query string
    params: list[tuple[str, str]]  # form-decoded query parameters
    headers: dict[str, str]  # lower-cased names; apikey and authorization redacted
    status: int | None = None
    role: str | None = None
    faults: list[str] = dataclasses.field(default_factory=list)
    dropped: bool = False
    duration_ms: float | None = None

    @property
    def prefer(self) -> str:
        return self.headers.get("prefer", "")

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["params"] = [list(p) for p in self.params]
        return d


# ---------------------------------------------------------------------------------------------------------------------
# Connection pool
# ---------------------------------------------------------------------------------------------------------------------


class _RawJsonLoader(Loader):
    """Keep json results as the bytes PostgreSQL sent (no parse/serialise round trip in Python)."""

    def load(self, data) -> bytes:
        return bytes(data)


class _Pool:
    def __init__(self, url: str, max_idle: int = 8):
        self.url = url
        self.max_idle = max_idle
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.url, autocommit=False, prepare_threshold=None, application_name="postgrest_server")
        conn.adapters.register_loader("json", _RawJsonLoader)
        conn.adapters.register_loader("jsonb", _RawJsonLoader)
        return conn

    def get(self) -> tuple[psycopg.Connection, bool]:
        """A connection and whether it was reused from the pool."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn, True
        try:
            return self._connect(), False
        except psycopg.OperationalError as exc:
            raise ApiError(503, "PGRST000", "Database connection error. Retrying the connection.", str(exc).strip() or None) from None

    def put(self, conn: psycopg.Connection, broken: bool = False) -> None:
        if broken or conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(Exception):
                conn.close()
            return
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()


# ---------------------------------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Prefs:
    resolution: str | None = None
    representation: str | None = None
    count: str | None = None
    missing: str | None = None
    handling: str | None = None
    timezone: str | None = None
    max_affected: int | None = None
    tx: str | None = None
    invalid: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def parse(cls, values: list[str]) -> _Prefs:
        """Preferences.fromHeaders: comma-separated, several headers, the first value of each kind wins."""
        prefs = cls()
        kinds = {
            "resolution=merge-duplicates": ("resolution", "merge-duplicates"),
            "resolution=ignore-duplicates": ("resolution", "ignore-duplicates"),
            "return=representation": ("representation", "representation"),
            "return=minimal": ("representation", "minimal"),
            "return=headers-only": ("representation", "headers-only"),
            "count=exact": ("count", "exact"),
            "count=planned": ("count", "planned"),
            "count=estimated": ("count", "estimated"),
            "missing=default": ("missing", "default"),
            "missing=null": ("missing", "null"),
            "handling=strict": ("handling", "strict"),
            "handling=lenient": ("handling", "lenient"),
            "tx=commit": ("tx", "commit"),
            "tx=rollback": ("tx", "rollback"),
        }
        for header in values:
            for raw in header.split(","):
                p = raw.strip()
                if p in kinds:
                    attr, val = kinds[p]
                    if getattr(prefs, attr) is None:
                        setattr(prefs, attr, val)
                elif p.startswith("timezone="):
                    if prefs.timezone is None:
                        prefs.timezone = p[len("timezone=") :]
                elif p.startswith("max-affected="):
                    if prefs.max_affected is None and _INT_RE.match(p[len("max-affected=") :]):
                        prefs.max_affected = int(p[len("max-affected=") :])
                else:
                    prefs.invalid.append(p)
        return prefs

    def applied(self, *, resolution=False, missing=False, representation=False, max_affected=False) -> str | None:
        vals = []
        if resolution and self.resolution:
            vals.append("resolution=" + self.resolution)
        if missing and self.missing:
            vals.append("missing=" + self.missing)
        if representation and self.representation:
            vals.append("return=" + self.representation)
        if self.count:
            vals.append("count=" + self.count)
        if self.handling:
            vals.append("handling=" + self.handling)
        if self.timezone:
            vals.append("timezone=" + self.timezone)
        if max_affected and self.handling == "strict" and self.max_affected is not None:
            vals.append(f"max-affected={self.max_affected}")
        return ", ".join(vals) if vals else None


@dataclasses.dataclass
class _Auth:
    role: str
    claims: dict

    @property
    def authed(self) -> bool:
        return self.role != "anon"

    @property
    def full_access(self) -> bool:
        return self.role == "service_role"


_JSON_CT = "application/json; charset=utf-8"
_OBJECT_MT = "application/vnd.pgrst.object+json"


def _parse_accept(value: str | None) -> list[str]:
    """Media types of an Accept header, best first (q-values honoured, stable)."""
    if not value:
        return ["*/*"]
    entries = []
    for idx, part in enumerate(value.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        mt = pieces[0].lower()
        if not mt:
            continue
        q = 1.0
        params = []
        for p in pieces[1:]:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
            elif p:
                params.append(p.replace(" ", "").lower())
        if q <= 0:
            continue
        entries.append((-q, idx, mt + "".join(";" + p for p in params)))
    entries.sort()
    return [e[2] for e in entries]


def _negotiate(accept: str | None) -> str:
    """'json', 'object', 'object-stripped' or 'array-stripped'; 406 PGRST107 otherwise."""
    for mt in _parse_accept(accept):
        base = mt.split(";")[0]
        stripped = "nulls=stripped" in mt
        if base in ("*/*", "application/json", "application/*"):
            return "json"
        if base in (_OBJECT_MT, "application/vnd.pgrst.object"):
            return "object-stripped" if stripped else "object"
        if base == "application/vnd.pgrst.array+json":
            return "array-stripped" if stripped else "json"
    raise ApiError(406, "PGRST107", "None of these media types are available: " + (accept or ""))


def _content_type(media: str) -> str:
    if media == "object":
        return _OBJECT_MT + "; charset=utf-8"
    if media == "object-stripped":
        return _OBJECT_MT + ";nulls=stripped; charset=utf-8"
    if media == "array-stripped":
        return "application/vnd.pgrst.array+json;nulls=stripped; charset=utf-8"
    return _JSON_CT


def _body_expr(media: str, alias: str = "_postgrest_t") -> str:
    if media in ("object", "object-stripped"):
        inner = f"json_agg({alias})->0"
        if media == "object-stripped":
            inner = f"json_strip_nulls({inner})"
        return f"coalesce({inner}, 'null'::json)"
    if media == "array-stripped":
        return f"coalesce(json_agg(json_strip_nulls(row_to_json({alias}))), '[]'::json)"
    return f"coalesce(json_agg({alias}), '[]'::json)"


def _content_range(lower: int, upper: int, total: int | None) -> str:
    """RangeQuery.contentRangeH."""
    range_str = f"{lower}-{upper}" if total != 0 and lower <= upper else "*"
    return range_str + "/" + ("*" if total is None else str(total))


class _Range:
    """Ranges over row numbers: [lower, upper] with upper None for open (Data.Ranged, NonnegRange)."""

    def __init__(self, lower: int = 0, upper: int | None = None):
        self.lower, self.upper = lower, upper

    def intersect(self, other: _Range) -> _Range:
        ups = [u for u in (self.upper, other.upper) if u is not None]
        return _Range(max(self.lower, other.lower), min(ups) if ups else None)

    @property
    def empty(self) -> bool:
        return self.upper is not None and self.upper < self.lower

    @property
    def limit(self) -> int | None:
        return None if self.upper is None else self.upper - self.lower + 1


class PostgrestServer:
    """The server: ``start()`` serves in a background thread; also a context manager."""

    def __init__(
        self,
        database_url: str,
        jwt_secret: str = DEFAULT_JWT_SECRET,
        max_rows: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        schema: str = EXPOSED_SCHEMA,
        pool_size: int = 8,
        listen_for_reload: bool = True,
        max_url_length: int | None = DEFAULT_MAX_URL_LENGTH,
        safeupdate: bool = True,
    ):
        self.database_url = database_url
        self.max_url_length = max_url_length
        self.safeupdate = safeupdate
        self.jwt_secret = jwt_secret
        self.max_rows = max_rows
        self.host = host
        self.port = port
        self.schema = schema
        self.faults = FaultInjector(self)
        self._pool = _Pool(database_url, pool_size)
        self._cache: SchemaCache | None = None
        self._cache_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._listen_for_reload = listen_for_reload
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._log_lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._seq = 0
        self.service_role_key = make_jwt(jwt_secret, "service_role")
        self.anon_key = make_jwt(jwt_secret, "anon")
        self.secret_key = "sb_secret_" + _b64url(os.urandom(18))
        self.publishable_key = "sb_publishable_" + _b64url(os.urandom(18))

    # -- lifecycle
    def start(self) -> PostgrestServer:
        """Listen for schema reloads, load the schema cache, then serve in a background thread."""
        self._stopping.clear()
        if self._listen_for_reload:
            self._listener = threading.Thread(target=self._listen, name="postgrest-listener", daemon=True)
            self._listener.start()
            self._listening.wait(5)  # LISTEN before loading: a schema change in between is not missed
        try:
            self.reload_schema()
            self._httpd = _HTTPServer((self.host, self.port), _Handler)
        except BaseException:
            self._stopping.set()
            raise
        self._httpd.api = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="postgrest-server", daemon=True)
        self._thread.start()
        log.info("listening on %s (schema %s, max-rows %s)", self.url, self.schema, self.max_rows)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_all_clients()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._listener is not None:
            self._listener.join(timeout=5)
            self._listener = None
        self._pool.close()

    def __enter__(self) -> PostgrestServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return self.url + REST_PREFIX

    def make_jwt(self, role: str | None, exp: Any = None, **claims: Any) -> str:
        """A token signed with this server's secret: ``{"role": role, "iss": "supabase", **claims}`` (+ ``exp``: epoch
        seconds, datetime, or timedelta from now; a negative timedelta gives an expired token)."""
        return make_jwt(self.jwt_secret, role, exp, **claims)

    # -- schema cache
    def reload_schema(self) -> SchemaCache:
        with psycopg.connect(self.database_url, autocommit=False) as conn:
            cache = load_schema_cache(conn, self.schema)
        with self._cache_lock:
            self._cache = cache
        log.info("schema cache loaded: %d relations", len(cache.tables))
        return cache

    @property
    def schema_cache(self) -> SchemaCache:
        with self._cache_lock:
            assert self._cache is not None
            return self._cache

    def _listen(self) -> None:
        """NOTIFY pgrst, 'reload schema' (or an empty payload) reloads the schema cache, as PostgREST's listener."""
        conn = None
        while not self._stopping.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.database_url, autocommit=True)
                    conn.execute("LISTEN pgrst")
                    self._listening.set()
                for note in conn.notifies(timeout=0.5):
                    if note.payload in ("", "reload schema"):
                        self.reload_schema()
                    if self._stopping.is_set():
                        break
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    break
                log.warning("schema listener: %s", exc)
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                self._stopping.wait(1.0)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # -- request log
    @property
    def requests(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._log_lock:
            return self._seq

    def clear_requests(self) -> None:
        with self._log_lock:
            self._requests.clear()

    def _record(self, method: str, path: str, table: str | None, query: str, headers: dict[str, str]) -> RequestRecord:
        redacted = {k: ("<redacted>" if k in ("apikey", "authorization") else v) for k, v in headers.items()}
        params = [(k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k != "apikey"]
        with self._log_lock:
            self._seq += 1
            rec = RequestRecord(self._seq, time.time(), method, path, table, query, params, redacted)
            self._requests.append(rec)
        return rec

    # -- authentication (Supabase's gateway, then PostgREST)
    def authenticate(self, headers: dict[str, str], query_apikey: str | None) -> _Auth:
        apikey = headers.get("apikey") or query_apikey
        if not apikey:
            raise _GatewayError(401, "No API key found in request", "No `apikey` request header or url param was found.")
        if not (apikey.startswith("sb_secret_") or apikey.startswith("sb_publishable_") or _jwt_signature_ok(apikey, self.jwt_secret)):
            raise _GatewayError(401, "Invalid API key", "Double check your Supabase `anon` or `service_role` API key.")
        authz = headers.get("authorization")
        token = apikey
        if authz is not None:
            scheme, _, rest = authz.strip().partition(" ")
            if scheme.lower() == "bearer":
                token = rest.strip()
        if token.startswith("sb_secret_"):
            return _Auth("service_role", {"role": "service_role"})
        if token.startswith("sb_publishable_"):
            return _Auth("anon", {"role": "anon"})
        claims = decode_jwt(token, self.jwt_secret)
        role = claims.get("role", "anon")
        if not isinstance(role, str):
            role = json.dumps(role)
        if role not in KNOWN_ROLES:
            raise ApiError(401, "22023", f'role "{role}" does not exist', None, None, [("WWW-Authenticate", "Bearer")])
        return _Auth(role, claims)

    def _auth_or_none(self, headers: dict[str, str]) -> _Auth | None:
        try:
            return self.authenticate(headers, None)
        except (ApiError, _GatewayError):
            return None

    # -- the API proper
    def handle_rest(self, method: str, resource: str, raw_query: str, headers: dict[str, str], body: bytes, record: RequestRecord) -> _Resp:
        query_apikey = None
        for k, v in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
            if k == "apikey":
                query_apikey = v
        if method == "OPTIONS":
            return self._options(resource)
        auth = self.authenticate(headers, query_apikey)
        record.role = auth.role
        segments = [s for s in resource.split("/") if s != ""]
        profile_header = "Accept-Profile" if method in ("GET", "HEAD") else "Content-Profile"
        profile = headers.get(profile_header.lower())
        if profile is not None and profile != self.schema:
            raise ApiError(406, "PGRST106", f"Invalid schema: {profile}", None, f"Only the following schemas are exposed: {self.schema}")
        profile_hdr = [("Content-Profile", profile)] if profile is not None else []
        if not segments:
            if method not in ("GET", "HEAD"):
                raise ApiError(405, "PGRST117", f"Unsupported HTTP method: {method}")
            return self._root(method, headers, profile_hdr)
        if segments[0] == "rpc" and len(segments) == 2:
            raise ApiError(
                404,
                "PGRST202",
                f"Could not find the function {self.schema}.{segments[1]} without parameters in the schema cache",
                f"Searched for the function {self.schema}.{segments[1]} without parameters, but no matches were found in the schema cache.",
            )
        if len(segments) != 1:
            raise ApiError(404, "PGRST125", "Invalid path specified in request URL")
        cache = self.schema_cache
        table = cache.tables.get(segments[0])
        if table is None:
            hint = _fuzzy_hint(segments[0], cache.tables)
            raise ApiError(
                404,
                "PGRST205",
                f"Could not find the table '{self.schema}.{segments[0]}' in the schema cache",
                None,
                None if hint is None else f"Perhaps you meant the table '{self.schema}.{hint}'",
            )
        prefs = _Prefs.parse([v for k, v in headers.items() if k == "prefer"])
        if prefs.handling == "strict" and prefs.invalid:
            raise ApiError(400, "PGRST122", "Invalid preferences given with handling=strict", "Invalid preferences: " + ", ".join(prefs.invalid))
        try:
            qp = parse_query(raw_query)
        except _EmbedRequested as e:  # no embedding here: as PostgREST without a relationship (NoRelBetween)
            raise ApiError(
                400,
                "PGRST200",
                f"Could not find a relationship between '{table.name}' and '{e.name}' in the schema cache",
                f"Searched for a foreign key relationship between '{table.name}' and '{e.name}' in the schema '{self.schema}', but no matches were found.",
            ) from None
        if method in ("GET", "HEAD"):
            return self._read(method, table, qp, headers, prefs, auth, profile_hdr)
        if method == "POST":
            return self._insert(table, qp, headers, body, prefs, auth, profile_hdr)
        if method == "PATCH":
            return self._update(table, qp, headers, body, prefs, auth, profile_hdr)
        if method == "DELETE":
            return self._delete(table, qp, headers, prefs, auth, profile_hdr)
        raise ApiError(405, "PGRST117", f"Unsupported HTTP method: {method}")

    def _options(self, resource: str) -> _Resp:
        segments = [s for s in resource.split("/") if s != ""]
        if not segments:
            allow = "OPTIONS,GET,HEAD"
        else:
            table = self.schema_cache.tables.get(segments[0])
            if table is None:
                raise ApiError(404, "PGRST205", f"Could not find the table '{self.schema}.{segments[0]}' in the schema cache")
            allow = ",".join(
                ["OPTIONS,GET,HEAD"]
                + (["POST"] if table.insertable else [])
                + (["PUT"] if table.insertable and table.updatable and table.pk_cols else [])
                + (["PATCH"] if table.updatable else [])
                + (["DELETE"] if table.deletable else [])
            )
        return _Resp(200, [("Access-Control-Allow-Origin", "*"), ("Allow", allow)], b"")

    def _root(self, method: str, headers: dict[str, str], profile_hdr) -> _Resp:
        accept = headers.get("accept")
        ok = False
        for mt in _parse_accept(accept):
            if mt.split(";")[0] in ("application/openapi+json", "application/json", "*/*"):
                ok = True
                break
        if not ok:
            raise ApiError(406, "PGRST107", "None of these media types are available: " + (accept or ""))
        doc = build_openapi(self.schema_cache, self.host, self.port)
        body = _dumps(doc)
        hdrs = [("Content-Type", "application/openapi+json; charset=utf-8")] + profile_hdr
        if method == "HEAD":
            return _Resp(200, hdrs, b"", no_length=True)
        return _Resp(200, hdrs, body)

    # -- transactions
    def _run(self, auth: _Auth, read_only: bool, fn: Callable[[psycopg.Connection], Any], prefs: _Prefs) -> Any:
        """One transaction: commit on success, rollback on any error. A pooled connection found dead before the
        commit (the database restarted, a backend was terminated) is replaced and the request run once more: nothing
        of it can have been committed."""
        for attempt in (1, 2):
            conn, reused = self._pool.get()
            broken = False
            committing = False
            try:
                conn.read_only = read_only
                try:
                    if prefs.timezone:
                        conn.execute("SELECT set_config('timezone', %s, true)", [prefs.timezone])
                    result = fn(conn)
                    committing = True
                    conn.commit()
                    return result
                except BaseException:
                    with contextlib.suppress(Exception):
                        conn.rollback()
                    raise
            except psycopg.Error as exc:
                broken = conn.closed or conn.broken
                if broken and reused and not committing and attempt == 1:
                    log.warning("a pooled database connection was dead (%s); retrying on a new one", exc)
                    continue
                raise _pg_error(exc, auth.authed) from None
            finally:
                self._pool.put(conn, broken)
        raise AssertionError("unreachable")

    # -- reads
    def _ranges(self, method: str, qp: QueryParams, headers: dict[str, str]) -> _Range:
        """ApiRequest.getRanges + Plan.treeRestrictRange (max-rows)."""
        offset = qp.offset if qp.offset is not None else 0
        limit_range = _Range(offset, None if qp.limit is None else offset + qp.limit - 1)
        header_range = _Range()
        if method == "GET" and "range" in headers:
            m = re.match(r"^([0-9]+)-([0-9]*)$", headers["range"].strip())
            if m:
                header_range = _Range(int(m.group(1)), int(m.group(2)) if m.group(2) else None)
        limit_zero = qp.limit == 0
        top = _Range(0, -1) if limit_zero else header_range.intersect(limit_range)
        if top.empty and not limit_zero:
            details = (
                "The lower boundary must be lower than or equal to the upper boundary in the Range header."
                if header_range.empty
                else "Limit should be greater than or equal to zero."
            )
            raise ApiError(416, "PGRST103", "Requested range not satisfiable", details)
        if self.max_rows is not None and not limit_zero:
            top = top.intersect(_Range(0, top.lower + self.max_rows - 1))
        return top

    def _read(self, method: str, table: Table, qp: QueryParams, headers, prefs: _Prefs, auth: _Auth, profile_hdr) -> _Resp:
        media = _negotiate(headers.get("accept"))
        hidden = not auth.full_access or self.faults.rls_state(table.name)[0]
        rng = self._ranges(method, qp, headers)
        qual = _qi(table)
        where = _where_sql(qual, table, qp.filters, hidden)
        inner = "SELECT " + _select_sql(qual, table, qp.select) + (" FROM " + qual) + where + _order_sql(qual, table, qp.order)
        if rng.limit is not None:
            inner = inner + f" LIMIT {max(rng.limit, 0)}"
        if rng.lower:
            inner = inner + f" OFFSET {rng.lower}"
        count = prefs.count
        exact_count = count in ("exact", "estimated")
        if exact_count:
            count_q = "SELECT 1 FROM " + qual + where
            if count == "estimated" and self.max_rows is not None:
                count_q = count_q + f" LIMIT {self.max_rows + 1}"
            total_sql = "(SELECT pg_catalog.count(*) FROM (" + count_q + ") _pgrst_count)"
        else:
            total_sql = _S("NULL::bigint")
        body_sql = "NULL::json" if method == "HEAD" else _body_expr(media)
        stmt = "SELECT " + total_sql + ", pg_catalog.count(_postgrest_t), " + body_sql + " FROM (" + inner + ") _postgrest_t"

        def work(conn):
            row = conn.execute(stmt.sql, stmt.params).fetchone()
            total = row[0]
            if count in ("planned", "estimated") and (count == "planned" or (self.max_rows is not None and total > self.max_rows)):
                plan_q = "EXPLAIN (FORMAT JSON) SELECT 1 FROM " + qual + where
                plan = conn.execute(plan_q.sql, plan_q.params).fetchone()[0]
                planned = int(json.loads(plan)[0]["Plan"]["Plan Rows"])
                total = planned if count == "planned" else max(total, planned)
            return total, row[1], row[2]

        total, page_total, body = self._run(auth, True, work, prefs)
        if media.startswith("object") and page_total != 1:
            raise ApiError(406, "PGRST116", "Cannot coerce the result to a single JSON object", f"The result contains {page_total} rows")
        lower = rng.lower
        upper = lower + page_total - 1
        status = 200
        if total is not None:
            if lower > total:
                status = 416
            elif (1 + upper - lower) < total:
                status = 206
        hdrs = [("Content-Range", _content_range(lower, upper, total))]
        hdrs.append(("Content-Location", "/" + table.name + ("?" + qp.canonical if qp.canonical else "")))
        if status == 416:
            err = ApiError(416, "PGRST103", "Requested range not satisfiable", f"An offset of {lower} was requested, but there are only {total} rows.")
            return _Resp(416, hdrs + [("Content-Type", _JSON_CT)], err.body())
        hdrs.append(("Content-Type", _content_type(media)))
        hdrs += profile_hdr
        applied = prefs.applied()
        if applied:
            hdrs.append(("Preference-Applied", applied))
        if method == "HEAD":
            return _Resp(status, hdrs, b"", no_length=True)
        return _Resp(status, hdrs, body)

    # -- payloads
    def _payload(self, table: Table, qp: QueryParams, headers, body: bytes) -> tuple[str, list[str], bool]:
        """ApiRequest/Payload.hs: (json text, columns, is_object)."""
        ctype = (headers.get("content-type") or "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", _OBJECT_MT, "application/vnd.pgrst.object"):
            raise ApiError(400, "PGRST102", "Content-Type not acceptable: " + ctype)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "PGRST102", "Empty or invalid json") from None
        is_object = text.lstrip(" \t\r\n")[:1] == "{"
        if qp.columns is not None:
            return text, list(dict.fromkeys(qp.columns)), is_object
        try:
            data = json.loads(text)
        except ValueError:
            raise ApiError(400, "PGRST102", "Empty or invalid json") from None
        if isinstance(data, dict):
            return text, list(data.keys()), True
        if isinstance(data, list):
            if not data:
                return "[]", [], False
            if not isinstance(data[0], dict):
                raise ApiError(400, "PGRST102", "All object keys must match")
            keys = set(data[0])
            for item in data:
                if not isinstance(item, dict) or set(item) != keys:
                    raise ApiError(400, "PGRST102", "All object keys must match")
            return text, list(data[0].keys()), False
        return "[]", [], False

    def _typed_columns(self, table: Table, columns: list[str]) -> list[Column]:
        out = []
        for name in columns:
            col = table.columns.get(name)
            if col is None:
                raise ApiError(400, "PGRST204", f"Could not find the '{name}' column of '{table.name}' in the schema cache")
            out.append(col)
        return out

    def _body_source(self, text: str, cols: list[Column], is_object: bool, apply_defaults: bool) -> _Frag:
        """SqlFragment.fromJsonBodyF: a FROM item named pgrst_body with the payload's columns."""
        if not cols:
            if is_object:
                return _S("(VALUES (1)) pgrst_body")
            return "json_array_elements(" + _P(text) + "::json) pgrst_body"
        typed = ", ".join(_ident(c.name) + " " + c.nominal_type for c in cols)
        names = ", ".join(_ident(c.name) for c in cols)
        defaults = [c for c in cols if c.default is not None] if apply_defaults else []
        if apply_defaults:
            defs = "jsonb_build_object(" + ", ".join(_sql_literal(c.name) + ", " + c.default for c in defaults) + ")"
            if is_object:
                src = "jsonb_to_record(" + _S(defs + " || ") + _P(text) + "::jsonb)"
            else:
                src = "jsonb_to_recordset((SELECT jsonb_agg(" + _S(defs) + " || elem) FROM jsonb_array_elements(" + _P(text) + "::jsonb) elem))"
        else:
            fn = "json_to_record" if is_object else "json_to_recordset"
            src = (fn + "(") + _P(text) + "::json)"
        return "(SELECT " + _S(names) + " FROM " + src + (" AS _(" + typed + ")) pgrst_body")

    def _write_result(self, conn, mutation: _Frag, ret_cols: str, table: Table, qp: QueryParams, media: str, want_body: bool, want_location: bool, is_insert: bool):
        stmt = "WITH pgrst_source AS (" + mutation + (" RETURNING " + ret_cols + ") SELECT (SELECT pg_catalog.count(*) FROM pgrst_source)")
        stmt = stmt + (f", (SELECT pg_catalog.count(*) FROM pgrst_source WHERE {_ident(_INSERTED_FLAG)})" if is_insert else ", NULL::bigint")
        if want_body:
            sel = _select_sql("pgrst_source", table, qp.select, star_columns=list(table.columns))
            inner = "SELECT " + sel + " FROM pgrst_source" + _order_sql("pgrst_source", table, qp.order)
            stmt = stmt + ", (SELECT " + _body_expr(media) + " FROM (" + inner + ") _postgrest_t)"
        else:
            stmt = stmt + ", NULL::json"
        if want_location and table.pk_cols:
            keys = ", ".join(_sql_literal(c) for c in table.pk_cols)
            stmt = stmt + (
                ", (SELECT array_agg(k.key || '=' || coalesce('eq.' || k.value, 'is.null')) FROM "
                "(SELECT row_to_json(_) AS r FROM pgrst_source _ LIMIT 1) d CROSS JOIN json_each_text(d.r) k "
                f"WHERE k.key IN ({keys}))"
            )
        else:
            stmt = stmt + ", NULL::text[]"
        return conn.execute(stmt.sql, stmt.params).fetchone()

    def _rls_write_check(self, table: Table, auth: _Auth, affected: int) -> None:
        refuse = self.faults.rls_state(table.name)[1]
        if affected > 0 and (refuse or not auth.full_access):
            raise ApiError(
                403 if auth.authed else 401,
                "42501",
                f'new row violates row-level security policy for table "{table.name}"',
                headers=[] if auth.authed else [("WWW-Authenticate", "Bearer")],
            )

    def _check_singular(self, media: str, n: int) -> None:
        if media.startswith("object") and n != 1:
            raise ApiError(406, "PGRST116", "Cannot coerce the result to a single JSON object", f"The result contains {n} rows")

    def _write_headers(self, prefs: _Prefs, media: str, profile_hdr, want_body: bool) -> list[tuple[str, str]]:
        return ([("Content-Type", _content_type(media))] + profile_hdr) if want_body else []

    # -- POST
    def _insert(self, table: Table, qp: QueryParams, headers, body: bytes, prefs: _Prefs, auth: _Auth, profile_hdr) -> _Resp:
        media = _negotiate(headers.get("accept"))
        text, col_names, is_object = self._payload(table, qp, headers, body)
        cols = self._typed_columns(table, col_names)
        conflict_cols = qp.on_conflict if qp.on_conflict is not None else table.pk_cols
        resolution = prefs.resolution if conflict_cols else None
        qual = _qi(table)
        names = ", ".join(_ident(c.name) for c in cols)
        mutation = _S("INSERT INTO " + qual + (f"({names}) " if cols else " ")) + "SELECT " + _S(names) + " FROM " + self._body_source(text, cols, is_object, prefs.missing == "default")
        if resolution:
            mutation = mutation + (" ON CONFLICT(" + ", ".join(_ident(c) for c in conflict_cols) + ") ")
            if resolution == "ignore-duplicates" or not cols:
                mutation = mutation + "DO NOTHING"
            else:
                mutation = mutation + ("DO UPDATE SET " + ", ".join(f"{_ident(c.name)} = EXCLUDED.{_ident(c.name)}" for c in cols))
        want_body = prefs.representation == "representation"
        want_location = prefs.representation == "headers-only"
        # return=minimal returns no columns (Statements.hs: RETURNING 1 when nothing is selected): only counts
        kept = f"{qual}.*" if (want_body or want_location) else "1 AS pgrst_one"
        ret = f"{kept}, ({qual}.xmax = 0) AS {_ident(_INSERTED_FLAG)}"

        def work(conn):
            n, inserted, body_json, location = self._write_result(conn, mutation, ret, table, qp, media, want_body, want_location, True)
            self._rls_write_check(table, auth, n)
            self._check_singular(media, n)
            return n, inserted, body_json, location

        n, inserted, body_json, location = self._run(auth, False, work, prefs)
        status = 200 if (resolution == "merge-duplicates" and inserted <= 0) else 201
        hdrs: list[tuple[str, str]] = []
        if location and n == 1:
            pairs = [tuple(item.split("=", 1)) for item in location]
            hdrs.append(("Location", "/" + table.name + "?" + urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote, safe="")))
        hdrs.append(("Content-Range", _content_range(1, 0, n if prefs.count == "exact" else None)))
        applied = prefs.applied(resolution=resolution is not None, missing=True, representation=True)
        if applied:
            hdrs.append(("Preference-Applied", applied))
        if want_body:
            return _Resp(status, hdrs + self._write_headers(prefs, media, profile_hdr, True), body_json)
        return _Resp(status, hdrs, b"")

    # -- PATCH
    def _update(self, table: Table, qp: QueryParams, headers, body: bytes, prefs: _Prefs, auth: _Auth, profile_hdr) -> _Resp:
        media = _negotiate(headers.get("accept"))
        text, col_names, is_object = self._payload(table, qp, headers, body)
        cols = self._typed_columns(table, col_names)
        qual = _qi(table)
        hidden = not auth.full_access
        if cols:
            self._require_where("UPDATE", qp)
            sets = ", ".join(f"{_ident(c.name)} = pgrst_body.{_ident(c.name)}" for c in cols)
            mutation = ("UPDATE " + qual + " SET " + sets + " FROM ") + self._body_source(text, cols, is_object, prefs.missing == "default")
            mutation = mutation + _where_sql(qual, table, qp.filters, hidden)
            ret = qual + ".*"
        else:
            mutation = _S("SELECT " + qual + ".* FROM " + qual + " WHERE false")
            ret = None
        return self._finish_mutation("PATCH", table, qp, mutation, ret, media, prefs, auth, profile_hdr)

    # -- DELETE
    def _delete(self, table: Table, qp: QueryParams, headers, prefs: _Prefs, auth: _Auth, profile_hdr) -> _Resp:
        media = _negotiate(headers.get("accept"))
        self._require_where("DELETE", qp)
        qual = _qi(table)
        mutation = ("DELETE FROM " + qual) + _where_sql(qual, table, qp.filters, not auth.full_access)
        return self._finish_mutation("DELETE", table, qp, mutation, qual + ".*", media, prefs, auth, profile_hdr)

    def _require_where(self, verb: str, qp: QueryParams) -> None:
        """pg-safeupdate, which Supabase loads for API requests: an unfiltered UPDATE/DELETE is refused (21000, 400)."""
        if self.safeupdate and not qp.filters:
            raise ApiError(400, "21000", f"{verb} requires a WHERE clause")

    def _finish_mutation(self, method, table, qp, mutation, ret, media, prefs: _Prefs, auth: _Auth, profile_hdr) -> _Resp:
        want_body = prefs.representation == "representation"

        def work(conn):
            if ret is None:  # PATCH with an empty body: nothing to update
                stmt = "WITH pgrst_source AS (" + mutation + ") SELECT 0, NULL::bigint, " + (
                    ("'[]'::json" if not media.startswith("object") else "'null'::json") if want_body else "NULL::json"
                ) + ", NULL::text[]"
                row = conn.execute(stmt.sql, stmt.params).fetchone()
            else:
                row = self._write_result(conn, mutation, ret, table, qp, media, want_body, False, False)
            n = row[0]
            self._rls_write_check(table, auth, n)
            self._check_singular(media, n)
            if prefs.handling == "strict" and prefs.max_affected is not None and n > prefs.max_affected:
                raise ApiError(400, "PGRST124", "Query result exceeds max-affected preference constraint", f"The query affects {n} rows")
            return n, row[2]

        n, body_json = self._run(auth, False, work, prefs)
        total = n if prefs.count == "exact" else None
        content_range = _content_range(0, n - 1, total) if method == "PATCH" else _content_range(1, 0, total)
        hdrs = [("Content-Range", content_range)]
        applied = prefs.applied(missing=method == "PATCH", representation=True, max_affected=True)
        if applied:
            hdrs.append(("Preference-Applied", applied))
        if want_body:
            return _Resp(200, hdrs + self._write_headers(prefs, media, profile_hdr, True), body_json)
        return _Resp(204, hdrs, b"", no_length=True)

    # -- admin
    def handle_admin(self, method: str, path: str, raw_query: str, headers: dict[str, str], body: bytes) -> _Resp:
        auth = self._auth_or_none(headers)
        if auth is None or not auth.full_access:
            raise ApiError(401, "PGRST301", "the admin endpoints need the service key")
        q = dict(urllib.parse.parse_qsl(raw_query))
        if path == ADMIN_PREFIX + "/faults":
            if method == "GET":
                return _Resp(200, [("Content-Type", _JSON_CT)], _dumps({"faults": self.faults.list(), "requests_served": self.request_count}))
            if method == "POST":
                try:
                    spec = json.loads(body or b"{}")
                    specs = spec if isinstance(spec, list) else [spec]
                    added = [self.faults.add(s).to_dict() for s in specs]
                except (ValueError, TypeError) as exc:
                    raise ApiError(400, "PGRST102", f"bad fault spec: {exc}") from None
                return _Resp(201, [("Content-Type", _JSON_CT)], _dumps({"faults": added}))
            if method == "DELETE":
                self.faults.clear(int(q["id"]) if "id" in q else None)
                return _Resp(204, [], b"", no_length=True)
        if path == ADMIN_PREFIX + "/requests":
            if method == "GET":
                recs = [r.to_dict() for r in self.requests]
                return _Resp(200, [("Content-Type", _JSON_CT)], _dumps({"count": self.request_count, "requests": recs}))
            if method == "DELETE":
                self.clear_requests()
                return _Resp(204, [], b"", no_length=True)
        if path == ADMIN_PREFIX + "/reload-schema" and method == "POST":
            cache = self.reload_schema()
            return _Resp(200, [("Content-Type", _JSON_CT)], _dumps({"tables": sorted(cache.tables)}))
        raise ApiError(404, "PGRST125", "Invalid path specified in request URL")


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------------------


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    api: PostgrestServer

    def __init__(self, *args, **kwargs):
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self._clients_lock:
            self._clients.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._clients_lock:
            self._clients.discard(request)
        super().shutdown_request(request)

    def close_all_clients(self):
        with self._clients_lock:
            clients = list(self._clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without TCP_NODELAY each request waits ~40 ms for the
    # client's delayed acknowledgement (Nagle), which real PostgREST behind a proxy never does
    disable_nagle_algorithm = True
    server_version = f"postgrest/{POSTGREST_VERSION}"
    sys_version = ""
    server: _HTTPServer

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        log.debug("%s - " + format, self.client_address[0], *args)

    def log_request(self, code="-", size="-"):
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, resp: _Resp) -> None:
        self.send_response(resp.status)
        for k, v in resp.headers:
            self.send_header(k, v)
        if not resp.no_length:
            self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD" and resp.body and resp.status not in (204, 304):
            self.wfile.write(resp.body)

    def _dispatch(self) -> None:
        api = self.server.api
        started = time.monotonic()
        method = self.command
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        raw_query = split.query
        headers: dict[str, str] = {}
        prefer_values = []
        for k, v in self.headers.items():
            lk = k.lower()
            if lk == "prefer":
                prefer_values.append(v)
            else:
                headers[lk] = v
        if prefer_values:
            headers["prefer"] = ", ".join(prefer_values)
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        record = None
        resp: _Resp | None = None
        dropped = False
        fired: list[Fault] = []
        try:
            if api.max_url_length is not None and len(self.path) > api.max_url_length:
                if path == REST_PREFIX or path.startswith(REST_PREFIX + "/"):
                    record = api._record(method, path, None, raw_query, headers)
                resp = _Resp(414, [("Content-Type", "text/plain; charset=utf-8")], b"URI too long\n")
            elif path.startswith(ADMIN_PREFIX + "/") or path == ADMIN_PREFIX:
                resp = api.handle_admin(method, path, raw_query, headers, body)
            elif path == REST_PREFIX or path.startswith(REST_PREFIX + "/"):
                resource = path[len(REST_PREFIX) :]
                segments = [s for s in resource.split("/") if s]
                table = segments[0] if len(segments) == 1 else None
                record = api._record(method, path, table, raw_query, headers)
                fired = api.faults.take(method, table)
                if fired:
                    record.faults = [f"{f.kind}#{f.id}" for f in fired]
                for f in fired:
                    if f.kind == "delay" and f.when == "before":
                        _wait(f)
                for f in fired:
                    if f.when == "before" and f.kind == "drop":
                        raise _DropConnection()
                    if f.when == "before" and f.kind == "fail":
                        raise _fault_error(f)
                try:
                    resp = api.handle_rest(method, resource, raw_query, headers, body, record)
                except (ApiError, _GatewayError) as exc:
                    resp = exc.to_resp()
                for f in fired:
                    if f.kind == "delay" and f.when == "after":
                        _wait(f)
                for f in fired:
                    if f.when == "after" and f.kind == "drop":
                        raise _DropConnection()
                    if f.when == "after" and f.kind == "fail":
                        raise _fault_error(f)
            else:
                resp = _GatewayError(404, "no Route matched with those values").to_resp()
        except _DropConnection:
            dropped = True
        except (ApiError, _GatewayError) as exc:
            resp = exc.to_resp()
        except Exception as exc:  # a bug here: answer as PostgREST's internal error and log the traceback
            log.error("internal error on %s %s: %s\n%s", method, self.path, exc, traceback.format_exc())
            resp = ApiError(500, "PGRSTX00", f"internal error: {exc}").to_resp()
        elapsed = (time.monotonic() - started) * 1000
        if record is not None:
            record.duration_ms = round(elapsed, 3)
            record.dropped = dropped
            record.status = None if dropped else resp.status
        shown = self.path if "apikey=" not in self.path else re.sub(r"apikey=[^&]*", "apikey=<redacted>", self.path)
        tags = (" faults=" + ",".join(f"{f.kind}#{f.id}" for f in fired)) if fired else ""
        if dropped:
            log.warning('%s "%s %s" connection dropped%s %.1fms', self.client_address[0], method, shown, tags, elapsed)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        level = logging.INFO if resp.status < 500 else logging.WARNING
        log.log(level, '%s "%s %s" %d%s %.1fms', self.client_address[0], method, shown, resp.status, tags, elapsed)
        try:
            self._send(resp)
        except OSError:
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PATCH = do_DELETE = do_PUT = do_OPTIONS = _dispatch


def _wait(fault: Fault) -> None:
    if fault.event is not None:
        fault.event.wait(fault.seconds if fault.seconds > 0 else None)
    elif fault.seconds > 0:
        time.sleep(fault.seconds)


def _fault_error(fault: Fault) -> ApiError:
    return ApiError(
        fault.status,
        "PGRST000" if fault.status == 503 else f"PGRST{fault.status}",
        "Database connection error. Retrying the connection." if fault.status == 503 else f"Injected failure (HTTP {fault.status})",
        f"fault #{fault.id} injected by compliance_sync_tests.postgrest_server",
    )


# ---------------------------------------------------------------------------------------------------------------------
# Running it as a process
# ---------------------------------------------------------------------------------------------------------------------


def start_server_process(
    database_url: str,
    jwt_secret: str = DEFAULT_JWT_SECRET,
    max_rows: int | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    stderr: Any = subprocess.DEVNULL,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> tuple[str, str, subprocess.Popen]:
    """Start ``python -m compliance_sync_tests.postgrest_server`` (port 0: a free port) and read its two stdout lines.
    Returns ``(url, service_role_key, process)``; stop it with :func:`stop_server_process`. ``stderr`` receives the
    logs (a file object, ``subprocess.DEVNULL`` by default; never an unread pipe, which would block the server)."""
    args = [sys.executable, "-m", "compliance_sync_tests.postgrest_server", "--database-url", database_url, "--port", str(port), "--jwt-secret", jwt_secret, "--host", host]
    if max_rows is not None:
        args += ["--max-rows", str(max_rows)]
    run_env = dict(os.environ if env is None else env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run_env["PYTHONPATH"] = root + (os.pathsep + run_env["PYTHONPATH"] if run_env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, env=run_env)
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    buf = b""
    fd = proc.stdout.fileno()
    while len(lines) < 2:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stop_server_process(proc)
            raise RuntimeError(f"the server did not print its two lines within {timeout}s (got {lines!r})")
        ready, _, _ = _select.select([fd], [], [], min(remaining, 0.5))
        if not ready:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {proc.returncode} before listening (got {lines!r})")
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            proc.wait(timeout=5)
            raise RuntimeError(f"the server exited with status {proc.returncode} before listening (got {lines!r})")
        buf += chunk
        while b"\n" in buf and len(lines) < 2:
            line, buf = buf.split(b"\n", 1)
            lines.append(line.decode("utf-8"))
    url_line, key_line = lines
    if not url_line.startswith("NEXT_PUBLIC_SUPABASE_URL=") or not key_line.startswith("SUPABASE_SERVICE_ROLE_KEY="):
        stop_server_process(proc)
        raise RuntimeError(f"unexpected server output: {lines!r}")
    return url_line.split("=", 1)[1], key_line.split("=", 1)[1], proc


def stop_server_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM by PID, wait, return the exit status (SIGKILL if it does not stop within ``timeout``)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


@contextlib.contextmanager
def server_process(database_url: str, **kwargs):
    """``with server_process(db_url, max_rows=1000) as (url, key, proc): ...`` -- stopped by PID at the end."""
    url, key, proc = start_server_process(database_url, **kwargs)
    try:
        yield url, key, proc
    finally:
        stop_server_process(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compliance_sync_tests.postgrest_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwt-secret", required=True)
    parser.add_argument("--max-rows", type=int, default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--max-url-length", type=int, default=DEFAULT_MAX_URL_LENGTH, help="414 past this many bytes of request target (0: no limit)")
    args = parser.parse_args(argv)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = PostgrestServer(
        args.database_url, jwt_secret=args.jwt_secret, max_rows=args.max_rows, host=args.host, port=args.port, max_url_length=args.max_url_length or None
    )
    try:
        server.start()
    except Exception as exc:
        log.error("cannot start: %s", exc)
        return 1
    sys.stdout.write(f"NEXT_PUBLIC_SUPABASE_URL={server.url}\nSUPABASE_SERVICE_ROLE_KEY={server.service_role_key}\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
