"""Refresh the README's picture of the report, ``docs/report.png``: the top of a report page in headless Chromium.

    .venv/bin/compliance-sync demo --as-of 2025-09-30    # a first sync of FY2025 (the ledger's previous run)
    .venv/bin/compliance-sync demo                       # FY2025 as_of its end; writes the report
    .venv/bin/python scripts/report_screenshot.py .compliance_sync/dagster_home/reports/compliance_report_FY2025.html

Needs Debian's ``chromium`` and ``.venv/bin/pip install playwright`` (never ``playwright install``). The page is
opened with the network cut off, as the browser test does; the picture is reduced to a 64-colour palette to keep
it small.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the top of a report page into docs/report.png.")
    parser.add_argument("html", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)

    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": args.height})
            page.route(
                "**/*", lambda route: route.continue_() if route.request.url.startswith("file://") else route.abort()
            )
            page.goto(args.html.resolve().as_uri(), wait_until="load", timeout=30_000)
            page.screenshot(path=str(args.out))
        finally:
            browser.close()
    Image.open(args.out).convert("RGB").quantize(colors=64).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
