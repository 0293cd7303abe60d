"""The change sensor's cost per tick and fiscal year: the direct path's source fingerprint, timed.

    .venv/bin/python benchmarks/sensor_tick.py --database-url postgresql://…/db [--year 2026] [--repeat 5]

Prints the median wall time of ``PostgresBackend.fingerprint`` (one aggregate per source table over the FY's
rows) and the FY's event count, so the cost can be read against the dataset's size.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from compliance_sync.backends.postgres import PostgresBackend
from compliance_sync.domain.fiscal import FiscalYear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--year", type=int, default=2026)
    parser.add_argument("--start-month", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    fy = FiscalYear(args.year, args.start_month)
    backend = PostgresBackend(args.database_url)
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        backend.fingerprint(fy)
        times.append(time.perf_counter() - started)
    with psycopg.connect(args.database_url) as conn:
        events = conn.execute(
            "SELECT count(*) FROM segmentation_events WHERE event_date BETWEEN %s AND %s", (fy.start, fy.end)
        ).fetchone()[0]
    print(
        f"FY{fy.year}: {events:,} events in the FY; "
        f"fingerprint median {statistics.median(times):.3f} s over {args.repeat} ticks"
    )


if __name__ == "__main__":
    main()
