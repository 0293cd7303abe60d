"""This checkout's command line against another commit's, interleaved on fresh clones of one dataset.

    .venv/bin/python benchmarks/compare_trees.py --base REV --template DB [--pairs 6]

For a refactor that must not cost speed: each pair runs both trees' first sync (a) and rerun (b) on a fresh clone
of the template (``CREATE DATABASE … TEMPLATE``), alternating which goes first, and reports the medians, the
median of the per-pair ratios and the peak RSS (GNU time). Make a template with ``benchmarks/run.py --datasets 20k
--only e --repeat 1 --keep-datasets`` (it prints ``cs_bench_tpl_20k_…``). The base commit is checked out in a
temporary git worktree, removed at the end; each tree runs as ``python -m`` of its own command-line module with
``PYTHONPATH`` set to that tree and run from its folder, so one virtual environment serves both.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

from psycopg.conninfo import make_conninfo

ROOT = pathlib.Path(__file__).resolve().parent.parent
SERVER = os.environ.get("COMPLIANCE_SYNC_TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


def cli_module(tree: pathlib.Path) -> str:
    """The command line's module in that tree (it moved when the package was layered)."""
    layered = (tree / "compliance_sync" / "entrypoints" / "cli.py").exists()
    return "compliance_sync.entrypoints.cli" if layered else "compliance_sync.cli"


def sql(statement: str) -> None:
    subprocess.run(["psql", SERVER, "-qAtc", statement], check=True, capture_output=True)


def one_run(tree: pathlib.Path, db_url: str) -> tuple[float, float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPLIANCE_SYNC_", "SUPABASE", "DAGSTER"))}
    env |= {
        "PYTHONPATH": str(tree),
        "SUPABASE_DB_URL": db_url,
        "COMPLIANCE_SYNC_BU_MAP": str(ROOT / "compliance_sync" / "bu_map.example.yaml"),
    }
    command = [sys.executable, "-m", cli_module(tree), "--year", "2026", "--as-of", "2026-11-20", "--json"]
    clock = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "RSS %M", *command], env=env, capture_output=True, text=True, cwd=tree
    )
    wall = time.perf_counter() - clock
    if done.returncode != 0:
        raise SystemExit(f"{tree}: exit {done.returncode}: {done.stderr[-1500:]}")
    rss_mb = int(re.search(r"RSS (\d+)", done.stderr).group(1)) / 1024
    return wall, rss_mb, json.loads(done.stdout)["status"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the commit to compare with (e.g. main's previous head)")
    p.add_argument("--template", required=True, help="a template database holding a dataset (see above)")
    p.add_argument("--pairs", type=int, default=6)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cs_compare_") as tmp:
        base = pathlib.Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), args.base], check=True)
        trees = {"base": base, "this": ROOT}
        found: dict[str, dict[str, list[float]]] = {k: {"a": [], "b": [], "rss": []} for k in trees}
        try:
            for i in range(args.pairs):
                for name in ("base", "this") if i % 2 == 0 else ("this", "base"):
                    db = f"cs_compare_{name}_{os.getpid()}_{i}"
                    sql(f"CREATE DATABASE {db} TEMPLATE {args.template}")
                    try:
                        url = make_conninfo(SERVER, dbname=db)
                        first, rss_a, status_a = one_run(trees[name], url)
                        rerun, rss_b, status_b = one_run(trees[name], url)
                    finally:
                        sql(f"DROP DATABASE IF EXISTS {db}")
                    found[name]["a"].append(first)
                    found[name]["b"].append(rerun)
                    found[name]["rss"].append(max(rss_a, rss_b))
                    print(f"pair {i} {name}: a {first:.2f} s ({status_a}), b {rerun:.2f} s ({status_b})", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    for name, runs in found.items():
        a, b, rss = statistics.median(runs["a"]), statistics.median(runs["b"]), max(runs["rss"])
        print(f"{name}: first sync median {a:.2f} s, rerun median {b:.2f} s, peak RSS {rss:.0f} MB")
    ratio_a = statistics.median(t / o for t, o in zip(found["this"]["a"], found["base"]["a"]))
    ratio_b = statistics.median(t / o for t, o in zip(found["this"]["b"], found["base"]["b"]))
    ratio_rss = max(found["this"]["rss"]) / max(found["base"]["rss"])
    print(
        f"this / base, median of the pairs: first sync {ratio_a:.3f}×, rerun {ratio_b:.3f}×, peak RSS {ratio_rss:.3f}×"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
