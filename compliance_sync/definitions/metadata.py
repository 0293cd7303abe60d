"""What a data engineer sees on a target in the Dagster UI: its column schema and row count, a preview as a
table, a few figures worth plotting (APAC and BU compliance, clients below compliance, rows written), the
counts and timings as one JSON each, and for a dry run the diff as a readable table."""

from __future__ import annotations

from typing import Any

import dagster as dg

from compliance_sync.definitions.tags import SUMMARY
from compliance_sync.domain.tables import (
    APAC,
    BUSINESS_UNIT,
    DATE,
    INT,
    JSONB,
    NUMERIC,
    REQUIREMENTS,
    TARGET_BY_NAME,
    TERRITORY,
    TIMESTAMPTZ,
    UUID,
)
from compliance_sync.service import diff_text as report
from compliance_sync.service.outcome import Mode, Outcome
from compliance_sync.service.summary import summary

PG_TYPES = {UUID: "uuid", INT: "integer", NUMERIC: "numeric", DATE: "date", JSONB: "jsonb", TIMESTAMPTZ: "timestamptz"}
PREVIEW_ROWS = 10
PREVIEW_COLUMNS = {
    REQUIREMENTS: (
        "client_name",
        "event_type_name",
        "segment",
        "required_count",
        "completed_count",
        "compliance_percentage",
        "status",
        "next_due_date",
    ),
    TERRITORY: (
        "territory",
        "cse_name",
        "total_clients",
        "total_required_events",
        "total_completed_events",
        "overall_compliance_percentage",
    ),
    BUSINESS_UNIT: ("bu_name", "overall_compliance_percentage", "clients_below_compliance", "territory_count"),
    APAC: ("fiscal_year", "actual_compliance", "below_compliance_accounts"),
}


def column_schema(name: str) -> dg.TableSchema:
    t = TARGET_BY_NAME[name]
    owned = set(t.owned)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c,
                PG_TYPES.get(kind, "text"),
                description="key" if c in t.key else "owned by the job" if c in owned else "set on every changed row",
                constraints=dg.TableColumnConstraints(nullable=c not in t.key),
            )
            for c, kind in t.types.items()
        ]
    )


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return format(value, "f") if hasattr(value, "as_tuple") else str(value)


def preview(name: str, outcome: Outcome) -> dg.MetadataValue:
    columns = PREVIEW_COLUMNS[name]
    rows = []
    for row in outcome.comp.wanted.rows(name):
        rows.append(dg.TableRecord({c: _cell(row.get(c)) for c in columns}))
        if len(rows) == PREVIEW_ROWS:
            break
    return dg.MetadataValue.table(rows, schema=dg.TableSchema(columns=[dg.TableColumn(c) for c in columns]))


def common(name: str, outcome: Outcome) -> dict[str, Any]:
    t = outcome.diff.targets[name]
    return {
        "fiscal_year": dg.MetadataValue.text(outcome.fy.key),
        "window": dg.MetadataValue.text(f"{outcome.fy.start} … {outcome.fy.end}"),
        # the as_of the run computed with (the reference date clamped to the FY's last day): a run launched
        # from the UI carries only the tags it was launched with
        "as_of": dg.MetadataValue.text(outcome.as_of.isoformat()),
        "backend": dg.MetadataValue.text(outcome.backend),
        "changes": dg.MetadataValue.json(t.counts()),
        "timings_s": dg.MetadataValue.json(outcome.timings),
    }


def live(name: str, outcome: Outcome, with_summary: bool) -> dict[str, Any]:
    """Metadata of a target's materialisation."""
    t = outcome.diff.targets[name]
    meta = common(name, outcome) | {
        "dagster/column_schema": dg.MetadataValue.table_schema(column_schema(name)),
        "dagster/row_count": t.current_count + t.null_keys + t.inserted - t.deleted,  # rows of the FY
    }
    meta["rows_written"] = t.changes
    meta["preview"] = preview(name, outcome)
    if name == BUSINESS_UNIT:
        for row in outcome.comp.wanted.business_units:
            if row["overall_compliance_percentage"] is not None:
                meta[f"compliance_{row['bu_name']}"] = float(row["overall_compliance_percentage"])
            meta[f"clients_below_{row['bu_name']}"] = int(row["clients_below_compliance"])
    if name == APAC:
        row = outcome.comp.wanted.apac[0]
        if row["actual_compliance"] is not None:
            meta["actual_compliance"] = float(row["actual_compliance"])
        meta["below_compliance_accounts"] = int(row["below_compliance_accounts"])
        meta["clients"] = dg.MetadataValue.json(
            {k: outcome.comp.stats[k] for k in outcome.comp.stats if k.startswith("clients_")}
        )
    if with_summary:
        meta[SUMMARY] = dg.MetadataValue.json(summary(outcome))
    return meta


def dry(name: str, outcome: Outcome, with_summary: bool) -> dict[str, Any]:
    """Metadata of a dry run's observation of a target: the diff as a table, nothing written."""
    t = outcome.diff.targets[name]
    schema = dg.TableSchema(columns=[dg.TableColumn(c) for c in ("action", "row", "key", "changes")])
    meta = common(name, outcome)
    meta["mode"] = dg.MetadataValue.text("dry run: nothing was written")
    meta["diff"] = dg.MetadataValue.table([dg.TableRecord(r) for r in report.records(t)], schema=schema)
    meta["not_listed"] = dg.MetadataValue.text(
        f"{t.hidden():,} more rows not listed" if t.hidden() else "every changed row is listed"
    )
    meta["guards"] = dg.MetadataValue.md(
        "\n".join(f"- a live run would stop: {g.message}" for g in outcome.stopping) or "none: a live run would write"
    )
    if with_summary:
        meta[SUMMARY] = dg.MetadataValue.json(summary(outcome))
    return meta


def for_target(name: str, outcome: Outcome, with_summary: bool = False) -> dict[str, Any]:
    return dry(name, outcome, with_summary) if outcome.mode == Mode.DRY_RUN else live(name, outcome, with_summary)
