"""Writing the report: by the file's extension, one self-contained HTML page (Jinja2 with autoescape: every
name from the data is escaped; charts as inline SVG; no script, no link, nothing fetched), an Excel workbook
with one sheet per table (pandas + openpyxl), or a CSV of the clients below compliance. Files are written
to a temporary name beside the target and renamed, so a reader never sees half a report.
"""

from __future__ import annotations

import contextlib
import decimal
import os
import pathlib
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import jinja2
import pandas as pd

from compliance_sync.errors import SettingsError
from compliance_sync.service.fy_report.tables import ReportTables

FORMATS = (".html", ".xlsx", ".csv")
DASH = "–"

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Compliance report FY{{ r.fiscal_year }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0 auto;
       max-width: 1280px; padding: 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.muted { color: #666; } .headline { display: flex; gap: 2.5em; align-items: baseline; flex-wrap: wrap; margin: 1em 0; }
.figure { font-size: 2.6em; font-weight: 600; } .up { color: #1e8449; } .down { color: #c0392b; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td { vertical-align: top; } td.list { white-space: nowrap; font-size: 0.9em; }
svg { max-width: 100%; height: auto; }
</style>
</head>
<body>
{%- macro table(frame, id, numeric=()) %}
{%- if frame.empty %}<p class="muted">None.</p>{% else %}
<table id="{{ id }}">
<thead><tr>{% for c in frame.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{%- for row in frame.itertuples(index=False) %}
<tr>{% for v in row %}{% set column = frame.columns[loop.index0] -%}
<td{% if is_number(v) %} class="num"{% elif column == "Missing events" %} class="list"{% endif %}>
{%- if column in lists and v %}
{%- for part in v.split("; ") %}{{ part }}{% if not loop.last %}<br>{% endif %}{% endfor %}
{%- else %}{{ cell(v) }}{% endif %}</td>{% endfor %}</tr>
{%- endfor %}
</tbody>
</table>
{%- endif %}
{%- endmacro %}
<h1>Compliance report FY{{ r.fiscal_year }}</h1>
<p class="muted">{{ r.window[0] }} … {{ r.window[1] }}, as_of {{ r.as_of }}; generated {{ generated }}.
{%- if r.in_sync is true %} The planning tables hold these figures.{% elif r.in_sync is false %} The planning tables
differ from these figures until the next sync (see "Targets").{% endif %}</p>

<div class="headline">
<div><div class="muted">APAC compliance</div>
<div class="figure" id="apac-figure" data-value="{{ cell(r.apac) }}">
{{- cell(r.apac) }}{% if r.apac is not none %} %{% endif %}</div></div>
<div><div class="muted">Change since the previous run</div>
{%- if r.change is not none %}
<div class="figure {{ 'up' if r.change > 0 else 'down' if r.change < 0 else '' }}" id="apac-change">
{{- signed(r.change) }} pts</div>
<div class="muted">from {{ cell(r.previous.figure) }} %, {{ r.previous.describe(r.generated_at.tzinfo) }}</div>
{%- else %}
<div class="figure muted" id="apac-change">{{ DASH }}</div>
<div class="muted">{{ r.ledger_note or "no earlier run in the ledger" }}</div>
{%- endif %}</div>
<div><div class="muted">Clients</div><div class="figure">{{ r.clients }}</div></div>
<div><div class="muted">Below compliance</div><div class="figure" id="below-count">{{ r.below }}</div></div>
</div>

<h2>Business units</h2>
{{ charts.bu | safe if charts.bu else "" }}
{{ table(r.business_units, "business-units") }}

<h2>Territories</h2>
{{ table(r.territories, "territories") }}

<h2>Statuses</h2>
<p class="muted">Clients by their worst requirement; requirements once per client (not per plan).</p>
{{ charts.statuses | safe if charts.statuses else "" }}
{{ table(r.statuses, "statuses") }}

<h2>Clients below compliance</h2>
<p class="muted">At risk or critical, largest shortfall (required − credited events) first.</p>
{{ table(below, "below-compliance") }}

<h2>Pace</h2>
<p class="muted">Per business unit: events due against events completed, cumulated per fiscal-year month up to
as_of.</p>
{{ charts.pace | safe if charts.pace else "" }}
{{ table(pace, "pace") }}

<h2>Data-quality warnings</h2>
{{ table(r.warnings, "warnings") }}

<h2>Targets</h2>
<p class="muted">What a sync run now would change in each planning table (a dry run; nothing was written).</p>
{{ table(r.targets, "targets") }}
</body>
</html>
"""


def cell(value: Any) -> str:
    """A table cell as text: percentages with their two decimals, missing values as a dash."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return DASH
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def signed(value: decimal.Decimal) -> str:
    return f"+{value}" if value > 0 else str(value)


def pace_wide(pace: pd.DataFrame) -> pd.DataFrame:
    """The pace as the page shows it: per business unit, due and completed to date, one column per FY month."""
    rows = []
    for bu, part in pace.groupby("Business unit", sort=False):
        for label, column in (("due to date", "Due to date"), ("completed to date", "Completed to date")):
            rows.append({"Business unit": bu, "Events": label, **dict(zip(part["Month"], part[column].astype(int)))})
    return pd.DataFrame(rows)


def render_html(tables: ReportTables, cuts: Sequence[float] = (50, 80)) -> str:
    from compliance_sync.service.fy_report import charts

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
    env.globals.update(cell=cell, is_number=is_number, signed=signed, DASH=DASH, lists=("Missing events", "Examples"))
    below = tables.below_compliance[[c for c in tables.below_compliance.columns if not c.startswith("Missing: ")]]
    return env.from_string(TEMPLATE).render(
        r=tables,
        below=below,
        pace=pace_wide(tables.pace),
        charts={
            "bu": charts.compliance_by_bu(tables, cuts),
            "statuses": charts.statuses(tables),
            "pace": charts.pace(tables),
        },
        generated=tables.generated_at.strftime("%Y-%m-%d %H:%M %Z").strip(),
    )


def write_xlsx(tables: ReportTables, path: pathlib.Path) -> None:
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, frame in tables.sheets().items():
            frame.to_excel(writer, sheet_name=name, index=False)
            sheet = writer.sheets[name]
            for i, column in enumerate(frame.columns, start=1):
                width = max([len(str(column)), *(len(cell(v)) for v in frame[column].head(200))]) + 2
                sheet.column_dimensions[sheet.cell(row=1, column=i).column_letter].width = min(width, 60)
            sheet.freeze_panes = "A2"


def write_csv(tables: ReportTables, path: pathlib.Path) -> None:
    tables.below_compliance.to_csv(path, index=False)


def check_out(out: str | os.PathLike, name: str = "--out") -> pathlib.Path:
    """The output path, refused (exit 2, naming the flag) unless it ends in .html, .xlsx or .csv."""
    path = pathlib.Path(out)
    if path.suffix.lower() not in FORMATS:
        raise SettingsError(f"{name} must end in .html, .xlsx or .csv, got {str(out)!r}")
    return path


def _atomic(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(pathlib.Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_report(
    tables: ReportTables, out: str | os.PathLike, cuts: Sequence[float] = (50, 80), name: str = "--out"
) -> pathlib.Path:
    """Write the report in the format its extension names; a file that cannot be written is a settings error
    naming ``name`` (the flag or setting that chose the path)."""
    path = check_out(out)
    suffix = path.suffix.lower()
    try:
        if suffix == ".html":
            text = render_html(tables, cuts)
            _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))
        elif suffix == ".xlsx":
            _atomic(path, lambda p: write_xlsx(tables, p))
        else:
            _atomic(path, lambda p: write_csv(tables, p))
    except OSError as exc:
        raise SettingsError(f"{name}: cannot write {str(path)!r}: {exc.strerror or exc}") from None
    return path.resolve()
