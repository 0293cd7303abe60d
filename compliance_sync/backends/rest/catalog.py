"""The schema check over REST: the tables and columns from PostgREST's OpenAPI description, and each target's
unique key probed with a zero-row upsert (the description does not show indexes).

The checks themselves are the shared :mod:`compliance_sync.backends.schema`; this module only gathers what it
needs the way the REST API can tell it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from compliance_sync.backends import schema
from compliance_sync.backends.catalog import Column, Relation
from compliance_sync.backends.rest.client import MINIMAL, NOT_POSTGREST, RELOAD_HINT, RestClient
from compliance_sync.domain.tables import TARGETS, TargetTable
from compliance_sync.errors import ConnectionFailure, DataError

if TYPE_CHECKING:
    from compliance_sync.backends.rest import RestBackend

# PostgREST's OpenAPI `format` (no typmods) -> the pg_type names the schema check knows
FORMATS = {
    "uuid": "uuid",
    "text": "text",
    "character varying": "varchar",
    "character": "bpchar",
    "integer": "int4",
    "int32": "int4",
    "smallint": "int2",
    "bigint": "int8",
    "int64": "int8",
    "boolean": "bool",
    "date": "date",
    "numeric": "numeric",
    "jsonb": "jsonb",
    "json": "json",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "double precision": "float8",
    "real": "float4",
}


@dataclasses.dataclass
class ApiDescription:
    """The tables the API exposes (columns, types, NOT NULL) and their primary keys."""

    relations: dict[str, Relation]
    pks: dict[str, list[str]]

    def nullable(self, table: str, columns: Sequence[str]) -> set[str]:
        """The columns of ``columns`` that may hold NULL (NOT NULL columns are in the API description's
        ``required``; a primary key never holds NULL)."""
        relation = self.relations.get(table)
        if relation is None:
            return set(columns)
        return {
            c
            for c in columns
            if not (c in relation.columns and relation.columns[c].not_null) and c not in self.pks.get(table, ())
        }


def describe(client: RestClient) -> ApiDescription:
    """The tables the API exposes, from PostgREST's OpenAPI description at the API root (read once per client)."""
    if client.description is None:
        rest = client.rest
        response = client.call(
            "reading the API description",
            lambda: rest.session.get(
                f"{rest.base_url}/", headers={**rest.headers, "Accept": "application/openapi+json"}
            ),
        )
        try:
            doc = response.json()
        except ValueError:
            raise ConnectionFailure(f"reading the API description of {client.backend.where}: {NOT_POSTGREST}") from None
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("definitions"), dict)
            or not ("swagger" in doc or "openapi" in doc)
        ):
            raise ConnectionFailure(f"reading the API description of {client.backend.where}: {NOT_POSTGREST}")
        relations: dict[str, Relation] = {}
        pks: dict[str, list[str]] = {}
        for table, definition in doc["definitions"].items():
            props = definition.get("properties") or {}
            required = set(definition.get("required") or ())
            columns = {}
            for name, p in props.items():
                fmt = str(p.get("format", ""))
                base = "enum" if p.get("enum") else FORMATS.get(fmt, fmt)
                shown = f"{fmt}({p['maxLength']})" if "maxLength" in p else fmt
                columns[name] = Column(base, shown, name in required)
            relations[table] = Relation(table, "r", columns)
            pks[table] = [n for n, p in props.items() if "<pk/>" in str(p.get("description", ""))]
        client.description = ApiDescription(relations, pks)
    return client.description


class SchemaCheck:
    """The session's schema check (a mixin of :class:`~compliance_sync.backends.rest.RestSession`, whose
    ``_warn`` it uses)."""

    backend: RestBackend
    client: RestClient
    read_only: bool
    keys_required: bool

    def _probe_key(self, target: TargetTable) -> bool:
        """A zero-row upsert on the key: PostgreSQL answers 42P10 when no unique index backs it."""
        try:
            self.client.call(
                f"checking the unique key of {target.name}",
                lambda: (
                    self.client.rest.from_(target.name)
                    .upsert([], on_conflict=",".join(target.key), returning=MINIMAL)
                    .execute()
                ),
            )
        except DataError as exc:
            if "42P10" in str(exc):
                return False
            raise
        return True

    def check_schema(self) -> schema.SchemaReport:
        relations = describe(self.client).relations
        probe = (lambda t: True) if self.read_only else self._probe_key  # nothing is written: keys do not matter
        keys = {
            t.name: probe(t)
            for t in TARGETS
            if t.name in relations and all(c in relations[t.name].columns for c in t.key)
        }
        try:
            report = schema.check(relations, keys, f"{self.backend.where} (REST API)", self.keys_required)
        except DataError as exc:
            text = str(exc)
            if " does not exist" in text or " is missing" in text:  # or PostgREST's schema cache is stale
                text += (
                    " (over the REST API a table or column created recently also looks missing until PostgREST "
                    f"reloads its schema cache: {RELOAD_HINT})"
                )
            raise DataError(text) from None
        for w in report.warnings:
            self._warn(w)
        return report
