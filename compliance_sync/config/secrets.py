"""Secrets never leave the process: every text shown to a person passes through :func:`redact`.

A secret is registered once (the database password, the service-role key, the alert webhook URL) in
several spellings (raw, percent-encoded, percent-decoded, form-encoded). :func:`redact` masks every
stretch of six or more characters that appears inside any registered spelling, so even a fragment of a
secret (a password cut in two by a URL parser, say) is masked. Masking too much is the safe failure.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus

from psycopg.conninfo import conninfo_to_dict

from compliance_sync import errors

MIN_FRAGMENT = 6
MASK = "***"
# Supabase's API-key prefixes: public words, not part of a key's secret (a message names the kind of key by them)
KEY_PREFIXES = ("sb_publishable_", "sb_secret_")
# Fixed words of the messages that name a key's kind: never masked where they stand whole in a text, even when a
# secret happens to contain them (what they say does not depend on any secret)
PUBLIC_WORDS = (*KEY_PREFIXES, "SUPABASE_SERVICE_ROLE_KEY", "service_role")

_lock = threading.Lock()
_short: set[str] = set()  # secrets shorter than MIN_FRAGMENT: masked when they appear whole
_grams: set[str] = set()  # every MIN_FRAGMENT-character window of every spelling of every secret


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Secrets registered inside are forgotten on exit; those registered before stay (a test suite runs many
    configurations in one process, and one test's secret must not mask words in the next test's messages)."""
    with _lock:
        saved = set(_short), set(_grams)
    try:
        yield
    finally:
        with _lock:
            _short.clear(), _grams.clear()
            _short.update(saved[0]), _grams.update(saved[1])


def _spellings(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret, safe=""), unquote(secret), unquote_plus(secret)}


def register(secret: str | None) -> None:
    """Remember a secret so that :func:`redact` masks it (and any fragment of six or more characters)."""
    if not secret:
        return
    with _lock:
        for s in _spellings(str(secret)):
            if len(s) < MIN_FRAGMENT:
                if len(s) >= 3:  # masking one or two characters everywhere would garble every line
                    _short.add(s)
                continue
            for i in range(len(s) - MIN_FRAGMENT + 1):
                _grams.add(s[i : i + MIN_FRAGMENT])


def register_api_key(key: str | None) -> None:
    """Remember a Supabase API key: an ``sb_…`` key's secret is what follows its public prefix (so that a message
    can still say ``sb_publishable_``); any other key (a JWT) whole."""
    if not key:
        return
    for prefix in KEY_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            register(key[len(prefix) :])
            return
    register(key)


def _public_spans(text: str) -> bytearray | None:
    """1 at every character of a whole :data:`PUBLIC_WORDS` occurrence in ``text``; None when there is none."""
    marks = None
    for word in PUBLIC_WORDS:
        start = text.find(word)
        while start >= 0:
            marks = marks or bytearray(len(text))
            marks[start : start + len(word)] = b"\x01" * len(word)
            start = text.find(word, start + 1)
    return marks


def redact(text: str) -> str:
    """``text`` with every fragment of a registered secret replaced by ``***``."""
    if not text or not (_grams or _short):
        return text
    covered = bytearray(len(text))
    n = MIN_FRAGMENT
    grams = _grams
    public = _public_spans(text)
    for i in range(len(text) - n + 1):
        if text[i : i + n] in grams and not (public and all(public[i : i + n])):
            covered[i : i + n] = b"\x01" * n
    for s in _short:
        start = text.find(s)
        while start >= 0:
            covered[start : start + len(s)] = b"\x01" * len(s)
            start = text.find(s, start + 1)
    if not any(covered):
        return text
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append(MASK)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def dsn_secrets(dsn: str) -> list[str]:
    """The password of a database URL or ``key=value`` string, however malformed, in every spelling a
    parser could cut it: after the first ``:`` of everything before the last ``@``, ``password=`` query
    parameters, and what libpq itself finds."""
    found: list[str] = []
    if "://" in dsn:
        rest = dsn.split("://", 1)[1]
        if "@" in rest:
            userinfo = rest[: rest.rfind("@")]
            if ":" in userinfo:
                found.append(userinfo.split(":", 1)[1])
        if "?" in rest:
            found += [
                v
                for k, v in parse_qsl(rest.split("?", 1)[1], keep_blank_values=True)
                if k.lower() in ("password", "sslpassword")
            ]
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        params = {}
    found += [str(params[k]) for k in ("password", "sslpassword") if params.get(k)]
    return [f for f in found if f]


def register_dsn(dsn: str | None) -> None:
    for secret in dsn_secrets(dsn or ""):
        register(secret)


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` of a database URL or ``key=value`` string: never its user or password, and
    only what stands after the last ``@`` (a password holding ``/`` or ``@`` cannot pass for a host)."""
    if "://" in dsn:
        rest = dsn.split("://", 1)[1]
        rest = rest[rest.rfind("@") + 1 :]
        hostspec, _, tail = rest.partition("/")
        hostspec = hostspec.split("?", 1)[0]
        dbname = tail.split("?", 1)[0]
        query = dict(parse_qsl(rest.split("?", 1)[1])) if "?" in rest else {}
        host = unquote(hostspec) or query.get("host") or "localhost"
        shown = f"{host}/{unquote(dbname) or query.get('dbname') or '?'}"
    else:
        try:
            params = conninfo_to_dict(dsn)
        except Exception:
            return "<database URL not shown>"
        host = params.get("host") or params.get("hostaddr") or "localhost"
        shown = f"{host}:{params.get('port') or '5432'}/{params.get('dbname') or params.get('user') or '?'}"
    return redact(shown)


errors.install_masker(redact)  # every error is masked when created; errors.py itself imports no layer
