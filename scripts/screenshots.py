"""Refresh the README's pictures of the Dagster UI: ``docs/asset-graph.png`` and ``docs/materialization.png``.

    .venv/bin/python scripts/screenshots.py [--out docs] [--port N] [--keep]

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and ``.venv/bin/pip install playwright`` (never
``playwright install``: the browser is /usr/bin/chromium). Starts ``compliance-sync demo --ui --year 2026``
in a temporary working folder with a fresh embedded PostgreSQL, then drives headless Chromium as a newcomer
would (``compliance_sync_tests/ui_driver.py``): the planning group's asset graph, ``business_unit_planning``'s
"Materialize…" for FY2025, the run until it succeeds, FY2025's materialisation metadata. Saves the two
pictures, stops the demo with Ctrl-C (SIGINT, by PID) and deletes the temporary folder and its database
(``--keep`` keeps them and prints where). About two minutes; exit 0 when both pictures were written.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

from compliance_sync.config import logs
from compliance_sync.config.logs import log
from compliance_sync_tests import ui_driver

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Refresh docs/asset-graph.png and docs/materialization.png from the demo's Dagster UI."
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=ROOT / "docs",
        help="folder for the pictures (default: docs/ of this checkout)",
    )
    parser.add_argument("--port", type=int, default=0, help="the UI's port (default: a free one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working folder and the demo database")
    args = parser.parse_args(argv)

    logs.configure()
    missing = ui_driver.missing_requirements()
    if missing:
        log.error("cannot take the pictures: %s", missing)
        return 2
    work = pathlib.Path(tempfile.mkdtemp(prefix="compliance-sync-screenshots-"))
    demo = ui_driver.DemoUi(workdir=work / "work", data_dir=work / "pgdata", port=args.port or ui_driver.free_port())
    shots = work / "screenshots"
    try:
        demo.start()
        demo.wait_ready()
        result = ui_driver.tour(demo.base_url, shots)
        if result.status != "SUCCESS":
            log.error(
                "the run launched from the UI (%s) ended %s; pictures not replaced. Last lines of the demo:\n%s",
                result.run_id,
                result.status,
                demo.tail(),
            )
            return 1
        code, took, left = demo.interrupt()
        log.info(
            "demo stopped by Ctrl-C in %.1f s (exit %d)%s",
            took,
            code,
            f"; still running: {sorted(left)}" if left else "",
        )
        args.out.mkdir(parents=True, exist_ok=True)
        for name, path in result.screenshots.items():
            target = args.out / path.name
            shutil.copyfile(path, target)
            log.info("%s: %s (%s bytes)", name, target, f"{target.stat().st_size:,}")
        return 0
    except Exception as exc:  # noqa: BLE001 - a browser or demo failure: one line, then what the demo said
        log.error("%s: %s", type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        if (shots / "failure.png").exists():
            log.error("the browser's last page: %s", shots / "failure.png")
        log.error("last lines of the demo (%s):\n%s", demo.stdout_path, demo.tail())
        return 1
    finally:
        demo.cleanup(remove_data=not args.keep)
        if args.keep:
            log.info("kept %s (the demo's folder; its database stays under the data dir %s)", work, demo.data_dir)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
