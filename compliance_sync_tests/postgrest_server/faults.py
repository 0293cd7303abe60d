"""Fault hooks and the request log: failures a real deployment produces (an error status, a dropped connection, a
delay, row-level security that hides rows or refuses writes), set from Python or over ``/__admin/faults``, and the
record of every API request served, so tests can provoke failures and see what reached the server."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import TYPE_CHECKING

from .constants import log
from .errors import ApiError

if TYPE_CHECKING:
    from .server import PostgrestServer


@dataclasses.dataclass
class Fault:
    """One fault rule. ``nth``: the first matching request it hits (1 = the next one), counted from when it was set;
    ``times``: how many consecutive matching requests it hits (None: every one from ``nth`` on)."""

    id: int
    kind: str  # fail | drop | delay | rls
    nth: int = 1
    times: int | None = 1
    method: str | None = None
    table: str | None = None
    when: str = "before"  # before executing, or after executing and committing
    status: int = 503
    seconds: float = 0.0
    tables: tuple[str, ...] = ()
    refuse_writes: bool = False
    event: threading.Event | None = dataclasses.field(default=None, repr=False)
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, table: str | None) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return not (self.table is not None and self.table != table)

    def to_dict(self) -> dict:
        d = {
            "id": self.id,
            "kind": self.kind,
            "nth": self.nth,
            "times": self.times,
            "method": self.method,
            "table": self.table,
            "when": self.when,
            "seen": self.seen,
            "fired": self.fired,
        }
        if self.kind == "fail":
            d["status"] = self.status
        if self.kind == "delay":
            d["seconds"] = self.seconds
        if self.kind == "rls":
            d = {"id": self.id, "kind": "rls", "tables": list(self.tables), "refuse_writes": self.refuse_writes}
        return d


class FaultInjector:
    """Fault rules of one server. Also reachable over HTTP: ``POST /__admin/faults`` (a spec object or a list),
    ``GET /__admin/faults``, ``DELETE /__admin/faults[?id=N]``."""

    def __init__(self, server: PostgrestServer):
        self._server = server
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1

    # -- setting
    def add(self, spec: dict) -> Fault:
        """Add a fault from a JSON-like spec: ``{"kind": "fail"|"drop"|"delay"|"rls", "nth": 1, "times": 1,
        "method": "DELETE", "table": "t", "when": "before"|"after", "status": 503, "seconds": 2.0,
        "tables": ["t"], "refuse_writes": false}``."""
        spec = dict(spec)
        kind = spec.pop("kind", None)
        if kind not in ("fail", "drop", "delay", "rls"):
            raise ValueError(f"unknown fault kind {kind!r} (fail, drop, delay, rls)")
        if "count" in spec and "times" not in spec:
            spec["times"] = spec.pop("count")
        allowed = {"nth", "times", "method", "table", "when", "status", "seconds", "tables", "refuse_writes", "event"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault field(s): {sorted(unknown)}")
        when = spec.get("when", "before")
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        nth = int(spec.get("nth", 1))
        if nth < 1:
            raise ValueError("nth counts from 1")
        times = spec.get("times", 1)
        times = None if times is None else int(times)
        tables = spec.get("tables", ())
        if isinstance(tables, str):
            tables = (tables,)
        with self._lock:
            fault = Fault(
                id=self._next_id,
                kind=kind,
                nth=nth,
                times=times,
                method=spec.get("method"),
                table=spec.get("table"),
                when=when,
                status=int(spec.get("status", 503)),
                seconds=float(spec.get("seconds", 0.0)),
                tables=tuple(tables),
                refuse_writes=bool(spec.get("refuse_writes", False)),
                event=spec.get("event"),
            )
            self._next_id += 1
            self._faults.append(fault)
        log.info("fault set: %s", json.dumps(fault.to_dict()))
        return fault

    def fail(
        self,
        nth: int = 1,
        *,
        times: int | None = 1,
        method: str | None = None,
        table: str | None = None,
        status: int = 503,
        when: str = "before",
    ) -> Fault:
        """Answer the nth matching request (and the next ``times - 1``) with ``status`` and a JSON error; with
        ``when="after"`` the request is executed and committed first."""
        return self.add(
            {
                "kind": "fail",
                "nth": nth,
                "times": times,
                "method": method,
                "table": table,
                "status": status,
                "when": when,
            }
        )

    def drop(
        self,
        nth: int = 1,
        *,
        times: int | None = 1,
        method: str | None = None,
        table: str | None = None,
        when: str = "before",
    ) -> Fault:
        """Close the connection of the nth matching request without any response, before executing it or after
        executing and committing it (the client sees a failed write that happened)."""
        return self.add({"kind": "drop", "nth": nth, "times": times, "method": method, "table": table, "when": when})

    def delay(
        self,
        seconds: float,
        nth: int = 1,
        *,
        times: int | None = 1,
        method: str | None = None,
        table: str | None = None,
        when: str = "before",
        event: threading.Event | None = None,
    ) -> Fault:
        """Hold the nth matching request ``seconds`` before (or after) executing it; with ``event``, hold it until the
        event is set (at most ``seconds``)."""
        return self.add(
            {
                "kind": "delay",
                "seconds": seconds,
                "nth": nth,
                "times": times,
                "method": method,
                "table": table,
                "when": when,
                "event": event,
            }
        )

    def rls(self, *tables: str, refuse_writes: bool = False) -> Fault:
        """Make these tables read empty for every key, the service key included (row-level security that hides rows);
        with ``refuse_writes`` every POST/PATCH/DELETE on them that touches a row fails with 42501."""
        return self.add({"kind": "rls", "tables": list(tables), "refuse_writes": refuse_writes})

    def clear(self, fault_id: int | None = None) -> None:
        with self._lock:
            if fault_id is None:
                self._faults.clear()
            else:
                self._faults = [f for f in self._faults if f.id != fault_id]

    def list(self) -> list[dict]:
        with self._lock:
            return [f.to_dict() for f in self._faults]

    @property
    def requests_served(self) -> int:
        return self._server.request_count

    # -- applying
    def take(self, method: str, table: str | None) -> list[Fault]:
        """The non-RLS faults that fire for this request (counting it against every matching rule)."""
        fired = []
        with self._lock:
            for f in self._faults:
                if f.kind == "rls" or not f.matches(method, table):
                    continue
                f.seen += 1
                end = None if f.times is None else f.nth + f.times
                if f.seen >= f.nth and (end is None or f.seen < end):
                    f.fired += 1
                    fired.append(f)
        return fired

    def rls_state(self, table: str) -> tuple[bool, bool]:
        hidden = refuse = False
        with self._lock:
            for f in self._faults:
                if f.kind == "rls" and table in f.tables:
                    hidden = True
                    refuse = refuse or f.refuse_writes
        return hidden, refuse


@dataclasses.dataclass
class RequestRecord:
    """One API request as served (admin requests are not recorded)."""

    seq: int
    time: float
    method: str
    path: str
    table: str | None
    query: str  # the raw query string
    params: list[tuple[str, str]]  # form-decoded query parameters
    headers: dict[str, str]  # lower-cased names; apikey and authorization redacted
    status: int | None = None
    role: str | None = None
    faults: list[str] = dataclasses.field(default_factory=list)
    dropped: bool = False
    duration_ms: float | None = None

    @property
    def prefer(self) -> str:
        return self.headers.get("prefer", "")

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["params"] = [list(p) for p in self.params]
        return d


def wait_fault(fault: Fault) -> None:
    if fault.event is not None:
        fault.event.wait(fault.seconds if fault.seconds > 0 else None)
    elif fault.seconds > 0:
        time.sleep(fault.seconds)


def fault_error(fault: Fault) -> ApiError:
    return ApiError(
        fault.status,
        "PGRST000" if fault.status == 503 else f"PGRST{fault.status}",
        "Database connection error. Retrying the connection."
        if fault.status == 503
        else f"Injected failure (HTTP {fault.status})",
        f"fault #{fault.id} injected by compliance_sync_tests.postgrest_server",
    )
