"""Answers and errors: PostgREST's JSON error body, Supabase's gateway answers, and PostgREST's mapping of SQLSTATEs
to HTTP statuses (``Error.hs``), so every failure reads as the real service's."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

import psycopg

JSON_CT = "application/json; charset=utf-8"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclasses.dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    no_length: bool = False  # HEAD and 204: no Content-Length header


class ApiError(Exception):
    """An error answered with PostgREST's JSON body ``{"code","details","hint","message"}``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None, hint: Any = None, headers=()):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = list(headers)

    def body(self) -> bytes:
        return dumps({"code": self.code, "details": self.details, "hint": self.hint, "message": self.message})

    def to_resp(self) -> Resp:
        body = self.body()
        headers = [("Content-Type", JSON_CT), ("Proxy-Status", f"PostgREST; error={self.code}")]
        return Resp(self.status, headers + self.headers, body)


class GatewayError(Exception):
    """An answer of Supabase's gateway (Kong), before PostgREST: ``{"message","hint"}``."""

    def __init__(self, status: int, message: str, hint: str | None = None):
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint

    def to_resp(self) -> Resp:
        payload = {"message": self.message}
        if self.hint is not None:
            payload["hint"] = self.hint
        return Resp(self.status, [("Content-Type", JSON_CT)], dumps(payload))


class DropConnection(Exception):
    """Close the client's socket without any response."""


def pg_status(sqlstate: str, message: str, authed: bool) -> int:
    """PostgREST's ``mapSQLtoHTTP`` (src/library/PostgREST/Error.hs)."""
    c = sqlstate or ""
    if c.startswith("08"):
        return 503
    if c.startswith("09"):
        return 500
    if c.startswith("0L") or c.startswith("0P"):
        return 403
    if c in ("23503", "23505"):
        return 409
    if c == "25006":
        return 405
    if c == "21000":
        return 400 if message.endswith("requires a WHERE clause") else 500
    if c == "22023":
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if c.startswith("25"):
        return 500
    if c.startswith("28"):
        return 403
    if c[:2] in ("2D", "38", "39", "3B", "40"):
        return 500
    if c == "53400":
        return 500
    if c.startswith("53"):
        return 503
    if c[:2] in ("54", "55"):
        return 500
    if c == "57P01":
        return 503
    if c[:2] in ("57", "58", "F0", "HV"):
        return 500
    if c == "P0001":
        return 400
    if c.startswith("P0") or c.startswith("XX"):
        return 500
    if c == "42883":
        return 406 if message.startswith("function xmlagg(") else 404
    if c == "42P01":
        return 404
    if c == "42P17":
        return 500
    if c == "42501":
        return 403 if authed else 401
    if c.startswith("PT"):
        try:
            return int(c[2:])
        except ValueError:
            return 500
    return 400


def pg_error(exc: psycopg.Error, authed: bool) -> ApiError:
    sqlstate = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    if not sqlstate:
        # the connection broke (server gone, socket closed): PostgREST's PGRST001, 503
        return ApiError(503, "PGRST001", "Database client error. Retrying the connection.", str(exc).strip() or None)
    message = (diag.message_primary if diag else None) or str(exc)
    details = diag.message_detail if diag else None
    hint = diag.message_hint if diag else None
    status = pg_status(sqlstate, message, authed)
    headers = [("WWW-Authenticate", "Bearer")] if status == 401 else []
    return ApiError(status, sqlstate, message, details, hint, headers)


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def fuzzy_hint(name: str, candidates: Iterable[str]) -> str | None:
    """Data.FuzzySet's getOneWithMinScore 0.75, approximated by normalised Levenshtein similarity (case-insensitive)."""
    best, best_score = None, 0.0
    for cand in candidates:
        a, b = name.lower(), cand.lower()
        score = 1.0 - _levenshtein(a, b) / max(len(a), len(b), 1)
        if score > best_score:
            best, best_score = cand, score
    return best if best is not None and best_score >= 0.75 else None
