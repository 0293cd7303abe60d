"""The report's charts as inline SVG, drawn with matplotlib (a maintained plotting library that writes static
SVG: no JavaScript, no CDN, nothing to fetch when the page opens). Text is drawn as paths, so the page needs
no font either. matplotlib is imported here, on the report's path only, with the non-interactive Agg backend.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import pandas as pd

from compliance_sync.service.fy_report.tables import ReportTables

STATUS_COLOURS = {
    "Critical": "#c0392b",
    "At risk": "#e67e22",
    "Compliant": "#27ae60",
    "Exceeded": "#1e8449",
    "No requirement": "#95a5a6",
}
DUE, DONE = "#7f8c8d", "#2471a3"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(text: object) -> str:
    """A name as matplotlib shows it literally (a ``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def _svg(fig, name: str) -> str:
    """The figure as an ``<svg>`` element: no XML prolog, no metadata, ids salted per chart so that several
    charts in one page never share an id. ``name`` is one of this module's fixed chart names."""
    plt = _pyplot()
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": f"compliance-report-{name}", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg") :], count=1, flags=re.S)  # RDF, no drawing
    return svg.replace("<svg ", f'<svg role="img" aria-label="{name}" ', 1)


def _thresholds(ax, cuts: Sequence[float], horizontal: bool) -> None:
    for cut in cuts:
        (ax.axvline if horizontal else ax.axhline)(cut, color="#bbb", linewidth=0.8, linestyle="--", zorder=0)


def compliance_by_bu(tables: ReportTables, cuts: Sequence[float] = (50, 80)) -> str | None:
    """Each business unit's compliance, APAC's as a line."""
    frame = tables.business_units.dropna(subset=["Compliance %"])
    if frame.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(frame) + 1.1))
    names = [_label(n) for n in frame["Business unit"]][::-1]
    values = [float(v) for v in frame["Compliance %"]][::-1]
    ax.barh(names, values, color=DONE, height=0.6)
    for y, v in enumerate(values):
        ax.text(v + 1, y, f"{v:.2f}", va="center", fontsize=8)
    _thresholds(ax, cuts, horizontal=True)
    if tables.apac is not None:
        ax.axvline(float(tables.apac), color="#333", linewidth=1.2)
        ax.text(float(tables.apac), len(values) - 0.4, f" APAC {tables.apac}", fontsize=8, va="bottom")
    ax.set_xlim(0, max(105, max(values) + 10))
    ax.set_xlabel("compliance %")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig, "compliance by business unit")


def statuses(tables: ReportTables) -> str | None:
    """Clients per status (by their worst requirement)."""
    frame = tables.statuses
    if frame.empty or not frame["Clients"].sum():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 1.3))
    left = 0
    total = int(frame["Clients"].sum())
    for status, n in zip(frame["Status"], frame["Clients"]):
        if not n:
            continue
        ax.barh([0], [n], left=left, color=STATUS_COLOURS.get(status, "#999"), height=0.6, label=f"{status} ({n})")
        if n / total > 0.06:
            ax.text(left + n / 2, 0, str(n), ha="center", va="center", color="white", fontsize=9)
        left += n
    ax.set_xlim(0, total)
    ax.set_yticks([])
    ax.set_xlabel("clients")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.7), ncol=5, frameon=False, fontsize=8)
    ax.spines[["top", "right", "left"]].set_visible(False)
    return _svg(fig, "clients by status")


def pace(tables: ReportTables) -> str | None:
    """Per business unit: events due against events completed, cumulated per FY month up to as_of."""
    frame: pd.DataFrame = tables.pace
    if frame.empty:
        return None
    plt = _pyplot()
    units = list(dict.fromkeys(frame["Business unit"]))
    cols = min(3, len(units))
    rows = -(-len(units) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False, sharey=False)
    for ax, bu in zip(axes.flat, units):
        part = frame[frame["Business unit"] == bu]
        months = [m[2:] for m in part["Month"]]  # YY-MM
        ax.plot(months, part["Due to date"], color=DUE, linestyle="--", marker="o", markersize=3, label="due")
        ax.plot(months, part["Completed to date"], color=DONE, marker="o", markersize=3, label="completed")
        ax.set_title(_label(bu), fontsize=9)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in list(axes.flat)[len(units) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _svg(fig, "pace per business unit")
