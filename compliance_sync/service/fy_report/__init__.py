"""The per-FY report (SPEC §7 "Report"): one self-contained HTML page (or an Excel workbook, or a CSV of the
clients below compliance) for people who do not open Dagster.

It is a view over one FY's computation and the targets, not a second computation: :mod:`.service` runs the
sync's own code as a dry run (nothing written, no ledger row) and reads the run ledger for the previous APAC
figure; :mod:`.tables` turns that computation into pandas tables (pure); :mod:`.charts` draws static SVG
charts with matplotlib; :mod:`.output` writes HTML, XLSX or CSV. pandas and matplotlib are imported only
here, and this package only on the report's path, so the sync's import time is unchanged.
"""
