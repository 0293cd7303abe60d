"""The session's schema check (SPEC §3, §3.3, §6): tables, columns, the targets' unique keys, row-level security.

It runs in the session's transaction, before the first read, through the catalog queries both the check and the
migrations share (:mod:`compliance_sync.backends.catalog`); the verdict is the backend-neutral
:func:`compliance_sync.backends.schema.check`.
"""

from __future__ import annotations

import psycopg

from compliance_sync.backends import catalog, schema
from compliance_sync.backends.postgres.connection import SessionBase
from compliance_sync.domain.tables import LEDGER_TABLE, SOURCES, TARGETS
from compliance_sync.errors import DataError


class CatalogPart(SessionBase):
    """The schema check of a session; it fills ``relations`` (the stage's column types come from them)."""

    def check_schema(self) -> schema.SchemaReport:
        names = [s.name for s in SOURCES] + [t.name for t in TARGETS] + [LEDGER_TABLE]
        try:
            relations = catalog.relations(self.conn, names, self.schema)
            keys = {
                t.name: catalog.find_key_index(self.conn, t.name, t.key, self.schema) is not None
                for t in TARGETS
                if t.name in relations and all(c in relations[t.name].columns for c in t.key)
            }
            secured = [n for n in names if n in relations and n != LEDGER_TABLE]
            hidden = catalog.rls_hidden(self.conn, secured, self.schema)
            user = self.conn.execute("SELECT current_user").fetchone()[0]
        except psycopg.Error as exc:
            raise self._fail(exc, "checking the schema") from None
        if self.read_only:  # nothing is written: a missing unique key does not stop a read
            keys = dict.fromkeys(keys, True)
        report = schema.check(relations, keys, f"{self.backend.where} (schema {self.schema})", self.keys_required)
        self.relations = relations
        if hidden:
            raise DataError(
                f"row-level security is enabled on {', '.join(hidden)} and role {user!r} neither owns "
                f"{'it' if len(hidden) == 1 else 'them'} nor has BYPASSRLS, so a read would return only the rows a "
                "policy lets it see; connect as the tables' owner or a role with BYPASSRLS (on Supabase: the "
                "postgres role), or use the REST API with the service-role key"
            )
        for w in report.warnings:
            self._warn(w)
        return report
