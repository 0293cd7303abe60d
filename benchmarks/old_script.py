"""(f) of ``benchmarks/run.py``: the old script's request pattern over the REST API, for one fiscal year.

    NEXT_PUBLIC_SUPABASE_URL=... SUPABASE_SERVICE_ROLE_KEY=... \\
        COMPLIANCE_SYNC_BU_MAP=compliance_sync/bu_map.example.yaml \\
        python benchmarks/old_script.py --year 2026 --as-of 2026-11-20

Reads and computes exactly as the product's REST backend does (``RestBackend.session().read_facts()`` and
``rules.compute``; the session's ``plan`` is not used, the old script read no current rows), then writes the
way the old supabase-js script did, over one keep-alive ``httpx.Client``:

- per plan: one DELETE of its requirement rows of the FY, then one POST inserting all of them;
- per territory: one GET of its existing row, then one POST (insert) or PATCH (update);
- one PATCH per business unit;
- one PATCH of the APAC row.

Prints one JSON line: ``{"read_s", "compute_s", "write_s", "requests", "requirement_rows", ...}`` (the
write phase is timed on its own: from the first write request to the last answer).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--as-of", type=dt.date.fromisoformat, required=True)
    args = p.parse_args(argv)

    import httpx

    from compliance_sync.backends.rest import RestBackend
    from compliance_sync.config.settings import load_settings
    from compliance_sync.domain.diff import to_json
    from compliance_sync.domain.fiscal import FiscalYear
    from compliance_sync.domain.rules import compute
    from compliance_sync.domain.tables import TERRITORY

    settings = load_settings()
    key = settings.service_role_key.get_secret_value()
    backend = RestBackend(
        settings.supabase_url, key, settings.rest_page_size, settings.rest_timeout_s, settings.rest_retries
    )
    fy = FiscalYear(args.year, settings.fy_start_month)
    as_of = fy.as_of(args.as_of)
    bu_map = settings.bu_map()

    with backend.session(fy, as_of) as session:
        clock = time.perf_counter()
        facts = session.read_facts()
        read_s = time.perf_counter() - clock
        event_ids = session._event_ids  # the session keeps them aside until it plans (not used here)

    clock = time.perf_counter()
    comp = compute(facts, settings.thresholds, bu_map)
    wanted = comp.wanted
    wanted.requirements.event_ids = event_ids or {}
    by_plan: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in wanted.requirements:
        by_plan[row["plan_id"]].append(row)
    plan_ids = [p.plan_id for p in wanted.requirements.plans]
    compute_s = time.perf_counter() - clock

    base = settings.supabase_url.rstrip("/") + "/rest/v1/"
    headers = {
        "apikey": key,
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Prefer": "return=minimal",
    }
    year = f"eq.{fy.year}"
    stamp = dt.datetime.now(dt.UTC).isoformat()
    requests = 0

    def send(client: httpx.Client, method: str, table: str, params: dict[str, str], body: Any = None) -> httpx.Response:
        nonlocal requests
        content = None if body is None else to_json(body).encode()
        response = client.request(method, base + table, params=params, content=content)
        requests += 1
        if not response.is_success:
            raise SystemExit(f"{method} {table}: HTTP {response.status_code} {response.text[:300]}")
        return response

    clock = time.perf_counter()
    with httpx.Client(headers=headers, timeout=httpx.Timeout(60.0)) as client:  # keep-alive, as supabase-js
        for plan_id in plan_ids:
            send(client, "DELETE", "account_plan_event_requirements", {"plan_id": f"eq.{plan_id}", "fiscal_year": year})
            rows = [dict(r, updated_at=stamp) for r in by_plan.get(plan_id, ())]
            if rows:
                send(client, "POST", "account_plan_event_requirements", {}, rows)
        for row in wanted.territories:
            flt = {"territory_strategy_id": f"eq.{row['territory_strategy_id']}", "fiscal_year": year}
            existing = send(client, "GET", TERRITORY, {"select": "id", **flt}).json()
            if existing:
                values = {k: v for k, v in row.items() if k not in ("territory_strategy_id", "fiscal_year")}
                send(client, "PATCH", TERRITORY, flt, dict(values, updated_at=stamp))
            else:
                send(client, "POST", TERRITORY, {}, [dict(row, updated_at=stamp)])
        for row in wanted.business_units:
            values = {k: v for k, v in row.items() if k not in ("bu_name", "fiscal_year")}
            send(
                client,
                "PATCH",
                "business_unit_planning",
                {"bu_name": f"eq.{row['bu_name']}", "fiscal_year": year},
                dict(values, updated_at=stamp),
            )
        for row in wanted.apac:
            values = {k: v for k, v in row.items() if k != "fiscal_year"}
            send(client, "PATCH", "apac_planning_goals", {"fiscal_year": year}, dict(values, updated_at=stamp))
    write_s = time.perf_counter() - clock

    print(
        json.dumps(
            {
                "read_s": round(read_s, 3),
                "compute_s": round(compute_s, 3),
                "write_s": round(write_s, 3),
                "requests": requests,
                "plans": len(plan_ids),
                "requirement_rows": sum(len(v) for v in by_plan.values()),
                "territories": len(wanted.territories),
                "business_units": len(wanted.business_units),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
