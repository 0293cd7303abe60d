"""The OpenAPI (Swagger 2.0) document served at ``/rest/v1/``, shaped as PostgREST's ``Response/OpenAPI.hs`` renders
the schema cache (property types and formats as described in docs/postgrest-test-server.md)."""

from __future__ import annotations

import json
from typing import Any

from .constants import DOCS_VERSION, POSTGREST_VERSION, REST_PREFIX
from .schema_cache import Column, SchemaCache, Table

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
    mimes = [
        "application/json",
        "application/vnd.pgrst.object+json;nulls=stripped",
        "application/vnd.pgrst.object+json",
        "text/csv",
    ]
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
        "range": {
            "name": "Range",
            "description": "Limiting and Pagination",
            "required": False,
            "in": "header",
            "type": "string",
        },
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
        parameters["body." + tn] = {
            "name": tn,
            "description": tn,
            "required": False,
            "in": "body",
            "schema": {"$ref": "#/definitions/" + tn},
        }
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
                "parameters": row_filters
                + refs(["select", "order", "range", "rangeUnit", "offset", "limit", "preferCount"]),
                "responses": {
                    "200": {"description": "OK", "schema": {"items": {"$ref": "#/definitions/" + tn}, "type": "array"}},
                    "206": {"description": "Partial Content"},
                },
            }
        }
        if t.insertable or t.updatable or t.deletable:
            item["post"] = {
                **base_op,
                "parameters": refs(["body." + tn, "select", "preferPost"]),
                "responses": {"201": {"description": "Created"}},
            }
            item["delete"] = {
                **base_op,
                "parameters": row_filters + refs(["preferReturn"]),
                "responses": {"204": {"description": "No Content"}},
            }
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
        "externalDocs": {
            "description": "PostgREST Documentation",
            "url": f"https://postgrest.org/en/{DOCS_VERSION}/references/api.html",
        },
    }
