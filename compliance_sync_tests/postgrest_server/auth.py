"""Authentication as Supabase's gateway and PostgREST do it: the ``apikey`` check, API keys (``sb_secret_``,
``sb_publishable_``) and HS256/384/512 JWTs (``Auth/Jwt.hs``), giving the database role a request runs as and the
claims it sees."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta
from typing import Any

from .errors import ApiError, GatewayError, dumps

_HS_ALGS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_JWT_SKEW_SECONDS = 30


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _exp_value(exp: Any) -> int | None:
    if exp is None:
        return None
    if isinstance(exp, datetime):
        return int(exp.timestamp())
    if isinstance(exp, timedelta):
        return int(time.time() + exp.total_seconds())
    return int(exp)


def make_jwt(secret: str, role: str | None, exp: Any = None, algorithm: str = "HS256", **claims: Any) -> str:
    """An HS256 JWT with ``{"role": role, "iss": "supabase", **claims}``; ``exp`` is epoch seconds, a datetime or a
    timedelta from now (negative: already expired); None leaves it out."""
    payload: dict[str, Any] = {}
    if role is not None:
        payload["role"] = role
    payload["iss"] = "supabase"
    payload.update(claims)
    exp_v = _exp_value(exp)
    if exp_v is not None:
        payload["exp"] = exp_v
    header = {"alg": algorithm, "typ": "JWT"}
    signing_input = b64url(dumps(header)) + "." + b64url(dumps(payload))
    sig = hmac.new(secret.encode("utf-8"), signing_input.encode("ascii"), _HS_ALGS[algorithm]).digest()
    return signing_input + "." + b64url(sig)


def _jwt_decode_error(message: str, details: str | None = None) -> ApiError:
    hdr = ("WWW-Authenticate", f'Bearer error="invalid_token", error_description={json.dumps(message)}')
    return ApiError(401, "PGRST301", message, details, None, [hdr])


def _jwt_claims_error(message: str) -> ApiError:
    hdr = ("WWW-Authenticate", f'Bearer error="invalid_token", error_description={json.dumps(message)}')
    return ApiError(401, "PGRST303", message, None, None, [hdr])


def jwt_signature_ok(token: str, secret: str) -> bool:
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(_b64url_decode(parts[0]))
        alg = _HS_ALGS.get(header.get("alg"))
        if alg is None:
            return False
        expected = hmac.new(secret.encode("utf-8"), (parts[0] + "." + parts[1]).encode("ascii"), alg).digest()
        return hmac.compare_digest(expected, _b64url_decode(parts[2]))
    except (ValueError, TypeError, AttributeError):
        return False


def decode_jwt(token: str, secret: str, now: float | None = None) -> dict:
    """Verify and decode a token as PostgREST does; raises ApiError (401, PGRST301/PGRST303)."""
    if token == "":
        raise _jwt_decode_error("Empty JWT is sent in Authorization header")
    parts = token.split(".")
    if len(parts) != 3:
        raise _jwt_decode_error(f"Expected 3 parts in JWT; got {len(parts)}")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        if not isinstance(header, dict):
            raise ValueError
    except (ValueError, TypeError):
        raise _jwt_decode_error("JWT cryptographic operation failed") from None
    alg_name = header.get("alg")
    if alg_name == "none":
        raise _jwt_decode_error(
            "Wrong or unsupported encoding algorithm", "JWT is unsecured but expected 'alg' was not 'none'"
        )
    if not jwt_signature_ok(token, secret):
        raise _jwt_decode_error("No suitable key or wrong key type", "None of the keys was able to decode the JWT")
    try:
        claims = json.loads(_b64url_decode(parts[1]))
    except (ValueError, TypeError):
        raise _jwt_claims_error("Parsing claims failed") from None
    if not isinstance(claims, dict):
        raise _jwt_claims_error("Parsing claims failed")
    now_s = int(time.time() if now is None else now)

    def number(key: str, message: str):
        value = claims.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _jwt_claims_error(message)
        return int(value)

    exp = number("exp", "The JWT 'exp' claim must be a number")
    if exp is not None and now_s - _JWT_SKEW_SECONDS > exp:
        raise _jwt_claims_error("JWT expired")
    nbf = number("nbf", "The JWT 'nbf' claim must be a number")
    if nbf is not None and now_s + _JWT_SKEW_SECONDS < nbf:
        raise _jwt_claims_error("JWT not yet valid")
    iat = number("iat", "The JWT 'iat' claim must be a number")
    if iat is not None and now_s + _JWT_SKEW_SECONDS < iat:
        raise _jwt_claims_error("JWT issued at future")
    aud = claims.get("aud")
    if aud is not None and not (
        isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))
    ):
        raise _jwt_claims_error("The JWT 'aud' claim must be a string or an array of strings")
    return claims


@dataclasses.dataclass
class Auth:
    """Who a request runs as: the database role (``SET LOCAL ROLE``) and the claims ``request.jwt.claims`` holds
    (PostgREST adds the role to them); ``request`` carries the other ``request.*`` settings PostgREST sets."""

    role: str
    claims: dict
    request: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def authed(self) -> bool:
        return self.role != "anon"

    @property
    def full_access(self) -> bool:
        return self.role == "service_role"


def authenticate(headers: dict[str, str], query_apikey: str | None, jwt_secret: str) -> Auth:
    """Supabase's gateway (an ``apikey`` is required and must be one of the project's), then PostgREST: the bearer
    token, else the apikey, gives the role and claims (``anon`` without a ``role`` claim). Whether the role exists
    and may be switched to is PostgreSQL's answer when the request's transaction sets it, as with PostgREST."""
    apikey = headers.get("apikey") or query_apikey
    if not apikey:
        raise GatewayError(401, "No API key found in request", "No `apikey` request header or url param was found.")
    if not (
        apikey.startswith("sb_secret_") or apikey.startswith("sb_publishable_") or jwt_signature_ok(apikey, jwt_secret)
    ):
        raise GatewayError(401, "Invalid API key", "Double check your Supabase `anon` or `service_role` API key.")
    authz = headers.get("authorization")
    token = apikey
    if authz is not None:
        scheme, _, rest = authz.strip().partition(" ")
        if scheme.lower() == "bearer":
            token = rest.strip()
    if token.startswith("sb_secret_"):
        return Auth("service_role", {"role": "service_role"})
    if token.startswith("sb_publishable_"):
        return Auth("anon", {"role": "anon"})
    claims = decode_jwt(token, jwt_secret)
    role = claims.get("role", "anon")
    if not isinstance(role, str):
        role = json.dumps(role)
    return Auth(role, {**claims, "role": role})
