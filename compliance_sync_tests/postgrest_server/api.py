"""The REST API proper: routing of ``/rest/v1/...`` to a table, and the handlers for reads (GET/HEAD), inserts and
upserts (POST), updates (PATCH) and deletes (DELETE), the OpenAPI root, OPTIONS and the admin endpoints, each answered
with PostgREST's statuses and headers (``App.hs``, ``Response.hs``)."""

from __future__ import annotations

import contextlib
import http.cookies
import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import psycopg

from .auth import Auth
from .constants import ADMIN_PREFIX, INSERTED_FLAG
from .database import run_transaction
from .errors import JSON_CT, ApiError, Resp, dumps, fuzzy_hint
from .faults import RequestRecord
from .grammar import EmbedRequested, Prefs, QueryParams, parse_query
from .negotiation import OBJECT_MT, Range, content_range, content_type, negotiate, parse_accept
from .openapi import build_openapi
from .schema_cache import Column, Table
from .sql import Frag, P, S, body_expr, ident, order_sql, qi, select_sql, sql_literal, where_sql


class RestHandlers:
    """The request handlers of :class:`~.server.PostgrestServer` (a mixin: they read its settings, pool, schema cache
    and fault rules)."""

    # -- the API proper
    def handle_rest(
        self, method: str, resource: str, raw_query: str, headers: dict[str, str], body: bytes, record: RequestRecord
    ) -> Resp:
        query_apikey = None
        for k, v in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
            if k == "apikey":
                query_apikey = v
        if method == "OPTIONS":
            return self._options(resource)
        auth = self.authenticate(headers, query_apikey)
        auth.request = _request_settings(method, resource, headers)
        record.role = auth.role
        segments = [s for s in resource.split("/") if s != ""]
        profile_header = "Accept-Profile" if method in ("GET", "HEAD") else "Content-Profile"
        profile = headers.get(profile_header.lower())
        if profile is not None and profile != self.schema:
            raise ApiError(
                406,
                "PGRST106",
                f"Invalid schema: {profile}",
                None,
                f"Only the following schemas are exposed: {self.schema}",
            )
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
                f"Searched for the function {self.schema}.{segments[1]} without parameters, "
                "but no matches were found in the schema cache.",
            )
        if len(segments) != 1:
            raise ApiError(404, "PGRST125", "Invalid path specified in request URL")
        cache = self.schema_cache
        table = cache.tables.get(segments[0])
        if table is None:
            hint = fuzzy_hint(segments[0], cache.tables)
            raise ApiError(
                404,
                "PGRST205",
                f"Could not find the table '{self.schema}.{segments[0]}' in the schema cache",
                None,
                None if hint is None else f"Perhaps you meant the table '{self.schema}.{hint}'",
            )
        prefs = Prefs.parse([v for k, v in headers.items() if k == "prefer"])
        if prefs.handling == "strict" and prefs.invalid:
            raise ApiError(
                400,
                "PGRST122",
                "Invalid preferences given with handling=strict",
                "Invalid preferences: " + ", ".join(prefs.invalid),
            )
        try:
            qp = parse_query(raw_query)
        except EmbedRequested as e:  # no embedding here: as PostgREST without a relationship (NoRelBetween)
            raise ApiError(
                400,
                "PGRST200",
                f"Could not find a relationship between '{table.name}' and '{e.name}' in the schema cache",
                f"Searched for a foreign key relationship between '{table.name}' and '{e.name}' in the schema "
                f"'{self.schema}', but no matches were found.",
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

    def _options(self, resource: str) -> Resp:
        segments = [s for s in resource.split("/") if s != ""]
        if not segments:
            allow = "OPTIONS,GET,HEAD"
        else:
            table = self.schema_cache.tables.get(segments[0])
            if table is None:
                raise ApiError(
                    404, "PGRST205", f"Could not find the table '{self.schema}.{segments[0]}' in the schema cache"
                )
            allow = ",".join(
                ["OPTIONS,GET,HEAD"]
                + (["POST"] if table.insertable else [])
                + (["PUT"] if table.insertable and table.updatable and table.pk_cols else [])
                + (["PATCH"] if table.updatable else [])
                + (["DELETE"] if table.deletable else [])
            )
        return Resp(200, [("Access-Control-Allow-Origin", "*"), ("Allow", allow)], b"")

    def _root(self, method: str, headers: dict[str, str], profile_hdr) -> Resp:
        accept = headers.get("accept")
        ok = False
        for mt in parse_accept(accept):
            if mt.split(";")[0] in ("application/openapi+json", "application/json", "*/*"):
                ok = True
                break
        if not ok:
            raise ApiError(406, "PGRST107", "None of these media types are available: " + (accept or ""))
        doc = build_openapi(self.schema_cache, self.host, self.port)
        body = dumps(doc)
        hdrs = [("Content-Type", "application/openapi+json; charset=utf-8")] + profile_hdr
        if method == "HEAD":
            return Resp(200, hdrs, b"", no_length=True)
        return Resp(200, hdrs, body)

    # -- transactions
    def _run(self, auth: Auth, read_only: bool, fn: Callable[[psycopg.Connection], Any], prefs: Prefs) -> Any:
        return run_transaction(self._pool, auth, read_only, fn, prefs)

    # -- reads
    def _ranges(self, method: str, qp: QueryParams, headers: dict[str, str]) -> Range:
        """ApiRequest.getRanges + Plan.treeRestrictRange (max-rows)."""
        offset = qp.offset if qp.offset is not None else 0
        limit_range = Range(offset, None if qp.limit is None else offset + qp.limit - 1)
        header_range = Range()
        if method == "GET" and "range" in headers:
            m = re.match(r"^([0-9]+)-([0-9]*)$", headers["range"].strip())
            if m:
                header_range = Range(int(m.group(1)), int(m.group(2)) if m.group(2) else None)
        limit_zero = qp.limit == 0
        top = Range(0, -1) if limit_zero else header_range.intersect(limit_range)
        if top.empty and not limit_zero:
            details = (
                "The lower boundary must be lower than or equal to the upper boundary in the Range header."
                if header_range.empty
                else "Limit should be greater than or equal to zero."
            )
            raise ApiError(416, "PGRST103", "Requested range not satisfiable", details)
        if self.max_rows is not None and not limit_zero:
            top = top.intersect(Range(0, top.lower + self.max_rows - 1))
        return top

    def _read(self, method: str, table: Table, qp: QueryParams, headers, prefs: Prefs, auth: Auth, profile_hdr) -> Resp:
        media = negotiate(headers.get("accept"))
        hidden = self.faults.rls_state(table.name)[0]
        rng = self._ranges(method, qp, headers)
        qual = qi(table)
        where = where_sql(qual, table, qp.filters, hidden)
        inner = (
            "SELECT "
            + select_sql(qual, table, qp.select)
            + (" FROM " + qual)
            + where
            + order_sql(qual, table, qp.order)
        )
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
            total_sql = S("NULL::bigint")
        body_sql = "NULL::json" if method == "HEAD" else body_expr(media)
        stmt = (
            "SELECT "
            + total_sql
            + ", pg_catalog.count(_postgrest_t), "
            + body_sql
            + " FROM ("
            + inner
            + ") _postgrest_t"
        )

        def work(conn):
            row = conn.execute(stmt.sql, stmt.params).fetchone()
            total = row[0]
            if count in ("planned", "estimated") and (
                count == "planned" or (self.max_rows is not None and total > self.max_rows)
            ):
                plan_q = "EXPLAIN (FORMAT JSON) SELECT 1 FROM " + qual + where
                plan = conn.execute(plan_q.sql, plan_q.params).fetchone()[0]
                planned = int(json.loads(plan)[0]["Plan"]["Plan Rows"])
                total = planned if count == "planned" else max(total, planned)
            return total, row[1], row[2]

        total, page_total, body = self._run(auth, True, work, prefs)
        if media.startswith("object") and page_total != 1:
            raise ApiError(
                406,
                "PGRST116",
                "Cannot coerce the result to a single JSON object",
                f"The result contains {page_total} rows",
            )
        lower = rng.lower
        upper = lower + page_total - 1
        status = 200
        if total is not None:
            if lower > total:
                status = 416
            elif (1 + upper - lower) < total:
                status = 206
        hdrs = [("Content-Range", content_range(lower, upper, total))]
        hdrs.append(("Content-Location", "/" + table.name + ("?" + qp.canonical if qp.canonical else "")))
        if status == 416:
            err = ApiError(
                416,
                "PGRST103",
                "Requested range not satisfiable",
                f"An offset of {lower} was requested, but there are only {total} rows.",
            )
            return Resp(416, hdrs + [("Content-Type", JSON_CT)], err.body())
        hdrs.append(("Content-Type", content_type(media)))
        hdrs += profile_hdr
        applied = prefs.applied()
        if applied:
            hdrs.append(("Preference-Applied", applied))
        if method == "HEAD":
            return Resp(status, hdrs, b"", no_length=True)
        return Resp(status, hdrs, body)

    # -- payloads
    def _payload(self, table: Table, qp: QueryParams, headers, body: bytes) -> tuple[str, list[str], bool]:
        """ApiRequest/Payload.hs: (json text, columns, is_object)."""
        ctype = (headers.get("content-type") or "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", OBJECT_MT, "application/vnd.pgrst.object"):
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
                raise ApiError(
                    400, "PGRST204", f"Could not find the '{name}' column of '{table.name}' in the schema cache"
                )
            out.append(col)
        return out

    def _body_source(self, text: str, cols: list[Column], is_object: bool, apply_defaults: bool) -> Frag:
        """SqlFragment.fromJsonBodyF: a FROM item named pgrst_body with the payload's columns."""
        if not cols:
            if is_object:
                return S("(VALUES (1)) pgrst_body")
            return "json_array_elements(" + P(text) + "::json) pgrst_body"
        typed = ", ".join(ident(c.name) + " " + c.nominal_type for c in cols)
        names = ", ".join(ident(c.name) for c in cols)
        defaults = [c for c in cols if c.default is not None] if apply_defaults else []
        if apply_defaults:
            defs = "jsonb_build_object(" + ", ".join(sql_literal(c.name) + ", " + c.default for c in defaults) + ")"
            if is_object:
                src = "jsonb_to_record(" + S(defs + " || ") + P(text) + "::jsonb)"
            else:
                src = (
                    "jsonb_to_recordset((SELECT jsonb_agg("
                    + S(defs)
                    + " || elem) FROM jsonb_array_elements("
                    + P(text)
                    + "::jsonb) elem))"
                )
        else:
            fn = "json_to_record" if is_object else "json_to_recordset"
            src = (fn + "(") + P(text) + "::json)"
        return "(SELECT " + S(names) + " FROM " + src + (" AS _(" + typed + ")) pgrst_body")

    def _write_result(
        self,
        conn,
        mutation: Frag,
        ret_cols: str,
        table: Table,
        qp: QueryParams,
        media: str,
        want_body: bool,
        want_location: bool,
        is_insert: bool,
    ):
        stmt = (
            "WITH pgrst_source AS ("
            + mutation
            + (" RETURNING " + ret_cols + ") SELECT (SELECT pg_catalog.count(*) FROM pgrst_source)")
        )
        stmt = stmt + (
            f", (SELECT pg_catalog.count(*) FROM pgrst_source WHERE {ident(INSERTED_FLAG)})"
            if is_insert
            else ", NULL::bigint"
        )
        if want_body:
            sel = select_sql("pgrst_source", table, qp.select, star_columns=list(table.columns))
            inner = "SELECT " + sel + " FROM pgrst_source" + order_sql("pgrst_source", table, qp.order)
            stmt = stmt + ", (SELECT " + body_expr(media) + " FROM (" + inner + ") _postgrest_t)"
        else:
            stmt = stmt + ", NULL::json"
        if want_location and table.pk_cols:
            keys = ", ".join(sql_literal(c) for c in table.pk_cols)
            stmt = stmt + (
                ", (SELECT array_agg(k.key || '=' || coalesce('eq.' || k.value, 'is.null')) FROM "
                "(SELECT row_to_json(_) AS r FROM pgrst_source _ LIMIT 1) d CROSS JOIN json_each_text(d.r) k "
                f"WHERE k.key IN ({keys}))"
            )
        else:
            stmt = stmt + ", NULL::text[]"
        return conn.execute(stmt.sql, stmt.params).fetchone()

    def _rls_write_check(self, table: Table, auth: Auth, affected: int) -> None:
        refuse = self.faults.rls_state(table.name)[1]
        if affected > 0 and refuse:
            raise ApiError(
                403 if auth.authed else 401,
                "42501",
                f'new row violates row-level security policy for table "{table.name}"',
                headers=[] if auth.authed else [("WWW-Authenticate", "Bearer")],
            )

    def _check_singular(self, media: str, n: int) -> None:
        if media.startswith("object") and n != 1:
            raise ApiError(
                406, "PGRST116", "Cannot coerce the result to a single JSON object", f"The result contains {n} rows"
            )

    def _write_headers(self, prefs: Prefs, media: str, profile_hdr, want_body: bool) -> list[tuple[str, str]]:
        return ([("Content-Type", content_type(media))] + profile_hdr) if want_body else []

    # -- POST
    def _insert(
        self, table: Table, qp: QueryParams, headers, body: bytes, prefs: Prefs, auth: Auth, profile_hdr
    ) -> Resp:
        media = negotiate(headers.get("accept"))
        text, col_names, is_object = self._payload(table, qp, headers, body)
        cols = self._typed_columns(table, col_names)
        conflict_cols = qp.on_conflict if qp.on_conflict is not None else table.pk_cols
        resolution = prefs.resolution if conflict_cols else None
        qual = qi(table)
        names = ", ".join(ident(c.name) for c in cols)
        mutation = (
            S("INSERT INTO " + qual + (f"({names}) " if cols else " "))
            + "SELECT "
            + S(names)
            + " FROM "
            + self._body_source(text, cols, is_object, prefs.missing == "default")
        )
        if resolution:
            mutation = mutation + (" ON CONFLICT(" + ", ".join(ident(c) for c in conflict_cols) + ") ")
            if resolution == "ignore-duplicates" or not cols:
                mutation = mutation + "DO NOTHING"
            else:
                mutation = mutation + (
                    "DO UPDATE SET " + ", ".join(f"{ident(c.name)} = EXCLUDED.{ident(c.name)}" for c in cols)
                )
        want_body = prefs.representation == "representation"
        want_location = prefs.representation == "headers-only"
        # return=minimal returns no columns (Statements.hs: RETURNING 1 when nothing is selected): only counts
        kept = f"{qual}.*" if (want_body or want_location) else "1 AS pgrst_one"
        # only a merging upsert needs to know which rows were inserted (200 when none was); reading xmax needs the
        # SELECT privilege, which a plain INSERT ... RETURNING 1 does not (as PostgREST's)
        merging = resolution == "merge-duplicates"
        ret = f"{kept}, ({qual}.xmax = 0) AS {ident(INSERTED_FLAG)}" if merging else kept

        def work(conn):
            n, inserted, body_json, location = self._write_result(
                conn, mutation, ret, table, qp, media, want_body, want_location, merging
            )
            self._rls_write_check(table, auth, n)
            self._check_singular(media, n)
            return n, inserted, body_json, location

        n, inserted, body_json, location = self._run(auth, False, work, prefs)
        status = 200 if (merging and inserted <= 0) else 201
        hdrs: list[tuple[str, str]] = []
        if location and n == 1:
            pairs = [tuple(item.split("=", 1)) for item in location]
            hdrs.append(
                (
                    "Location",
                    "/" + table.name + "?" + urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote, safe=""),
                )
            )
        hdrs.append(("Content-Range", content_range(1, 0, n if prefs.count == "exact" else None)))
        applied = prefs.applied(resolution=resolution is not None, missing=True, representation=True)
        if applied:
            hdrs.append(("Preference-Applied", applied))
        if want_body:
            return Resp(status, hdrs + self._write_headers(prefs, media, profile_hdr, True), body_json)
        return Resp(status, hdrs, b"")

    # -- PATCH
    def _update(
        self, table: Table, qp: QueryParams, headers, body: bytes, prefs: Prefs, auth: Auth, profile_hdr
    ) -> Resp:
        media = negotiate(headers.get("accept"))
        text, col_names, is_object = self._payload(table, qp, headers, body)
        cols = self._typed_columns(table, col_names)
        qual = qi(table)
        if cols:
            self._require_where("UPDATE", qp)
            sets = ", ".join(f"{ident(c.name)} = pgrst_body.{ident(c.name)}" for c in cols)
            mutation = ("UPDATE " + qual + " SET " + sets + " FROM ") + self._body_source(
                text, cols, is_object, prefs.missing == "default"
            )
            mutation = mutation + where_sql(qual, table, qp.filters, False)
            ret = qual + ".*"
        else:
            mutation = S("SELECT " + qual + ".* FROM " + qual + " WHERE false")
            ret = None
        return self._finish_mutation("PATCH", table, qp, mutation, ret, media, prefs, auth, profile_hdr)

    # -- DELETE
    def _delete(self, table: Table, qp: QueryParams, headers, prefs: Prefs, auth: Auth, profile_hdr) -> Resp:
        media = negotiate(headers.get("accept"))
        self._require_where("DELETE", qp)
        qual = qi(table)
        mutation = ("DELETE FROM " + qual) + where_sql(qual, table, qp.filters, False)
        return self._finish_mutation("DELETE", table, qp, mutation, qual + ".*", media, prefs, auth, profile_hdr)

    def _require_where(self, verb: str, qp: QueryParams) -> None:
        """pg-safeupdate, which Supabase loads for API requests: an unfiltered UPDATE/DELETE is refused (21000, 400)."""
        if self.safeupdate and not qp.filters:
            raise ApiError(400, "21000", f"{verb} requires a WHERE clause")

    def _finish_mutation(self, method, table, qp, mutation, ret, media, prefs: Prefs, auth: Auth, profile_hdr) -> Resp:
        want_body = prefs.representation == "representation"

        def work(conn):
            if ret is None:  # PATCH with an empty body: nothing to update
                stmt = (
                    "WITH pgrst_source AS ("
                    + mutation
                    + ") SELECT 0, NULL::bigint, "
                    + (
                        ("'[]'::json" if not media.startswith("object") else "'null'::json")
                        if want_body
                        else "NULL::json"
                    )
                    + ", NULL::text[]"
                )
                row = conn.execute(stmt.sql, stmt.params).fetchone()
            else:
                row = self._write_result(conn, mutation, ret, table, qp, media, want_body, False, False)
            n = row[0]
            self._rls_write_check(table, auth, n)
            self._check_singular(media, n)
            if prefs.handling == "strict" and prefs.max_affected is not None and n > prefs.max_affected:
                raise ApiError(
                    400,
                    "PGRST124",
                    "Query result exceeds max-affected preference constraint",
                    f"The query affects {n} rows",
                )
            return n, row[2]

        n, body_json = self._run(auth, False, work, prefs)
        total = n if prefs.count == "exact" else None
        crange = content_range(0, n - 1, total) if method == "PATCH" else content_range(1, 0, total)
        hdrs = [("Content-Range", crange)]
        applied = prefs.applied(missing=method == "PATCH", representation=True, max_affected=True)
        if applied:
            hdrs.append(("Preference-Applied", applied))
        if want_body:
            return Resp(200, hdrs + self._write_headers(prefs, media, profile_hdr, True), body_json)
        return Resp(204, hdrs, b"", no_length=True)

    # -- admin
    def handle_admin(self, method: str, path: str, raw_query: str, headers: dict[str, str], body: bytes) -> Resp:
        auth = self._auth_or_none(headers)
        if auth is None or not auth.full_access:
            raise ApiError(401, "PGRST301", "the admin endpoints need the service key")
        q = dict(urllib.parse.parse_qsl(raw_query))
        if path == ADMIN_PREFIX + "/faults":
            if method == "GET":
                return Resp(
                    200,
                    [("Content-Type", JSON_CT)],
                    dumps({"faults": self.faults.list(), "requests_served": self.request_count}),
                )
            if method == "POST":
                try:
                    spec = json.loads(body or b"{}")
                    specs = spec if isinstance(spec, list) else [spec]
                    added = [self.faults.add(s).to_dict() for s in specs]
                except (ValueError, TypeError) as exc:
                    raise ApiError(400, "PGRST102", f"bad fault spec: {exc}") from None
                return Resp(201, [("Content-Type", JSON_CT)], dumps({"faults": added}))
            if method == "DELETE":
                self.faults.clear(int(q["id"]) if "id" in q else None)
                return Resp(204, [], b"", no_length=True)
        if path == ADMIN_PREFIX + "/requests":
            if method == "GET":
                recs = [r.to_dict() for r in self.requests]
                return Resp(200, [("Content-Type", JSON_CT)], dumps({"count": self.request_count, "requests": recs}))
            if method == "DELETE":
                self.clear_requests()
                return Resp(204, [], b"", no_length=True)
        if path == ADMIN_PREFIX + "/reload-schema" and method == "POST":
            cache = self.reload_schema()
            return Resp(200, [("Content-Type", JSON_CT)], dumps({"tables": sorted(cache.tables)}))
        raise ApiError(404, "PGRST125", "Invalid path specified in request URL")


def _request_settings(method: str, path: str, headers: dict[str, str]) -> dict[str, str]:
    """The ``request.*`` settings PostgREST gives the transaction: method, path, headers and cookies as JSON."""
    cookies = http.cookies.SimpleCookie()
    with contextlib.suppress(http.cookies.CookieError):
        cookies.load(headers.get("cookie", ""))
    return {
        "request.method": method,
        "request.path": path or "/",
        "request.headers": json.dumps(headers, separators=(",", ":")),
        "request.cookies": json.dumps({k: m.value for k, m in cookies.items()}, separators=(",", ":")),
    }
