"""Planning over REST: the targets' current rows (read last) compared with the wanted rows by the shared pure diff
(:func:`compliance_sync.domain.diff.diff_rows`), which also yields the upserts and deletes :mod:`.write` sends."""

from __future__ import annotations

import dataclasses

from compliance_sync.backends import schema
from compliance_sync.domain.diff import ChangeSet, SyncDiff, diff_rows
from compliance_sync.domain.fiscal import FiscalYear
from compliance_sync.domain.tables import TARGETS
from compliance_sync.domain.wanted import WantedRows, longest_texts


class Planning:
    """The session's plan (a mixin of :class:`~compliance_sync.backends.rest.RestSession`; the current rows come
    from :class:`~compliance_sync.backends.rest.read.Reading`)."""

    fy: FiscalYear
    read_only: bool
    report: schema.SchemaReport | None
    _event_ids: dict | None
    _changes: dict[str, ChangeSet]
    _planned: SyncDiff | None

    def plan(self, wanted: WantedRows, limit: int) -> SyncDiff:
        if self.report is None or self.read_only:
            raise RuntimeError("read_facts() first: the plan compares against the schema it checked")
        schema.check_lengths(self.report.varchar_limits, longest_texts(wanted))
        wanted.requirements = dataclasses.replace(wanted.requirements, event_ids=self._event_ids or {})
        targets = {}
        for t in TARGETS:
            backed = t.name not in self.report.missing_keys
            targets[t.name], self._changes[t.name] = diff_rows(t, self._current(t), wanted.rows(t.name), limit, backed)
        self._planned = SyncDiff(self.fy.year, targets)
        return self._planned
