"""A PostgREST look-alike over a real PostgreSQL database, served the way Supabase exposes it under ``/rest/v1``.

It lets the REST backend's tests and the benchmarks run against a real HTTP server and a real database without Docker:
each request is one transaction, built and answered as PostgREST builds and answers it, with fault hooks for the
failures a real deployment produces. The command line, the Python API and the conformance table (what follows
PostgREST and Supabase, what deviates, with sources) are in docs/postgrest-test-server.md.

Modules, one concern each: ``http_server`` (HTTP and routing), ``api`` (the handlers), ``grammar`` (query string and
``Prefer``), ``negotiation`` (``Accept`` and ranges), ``sql`` (SQL generation), ``auth`` (keys and JWTs), ``database``
(pool, per-request transaction), ``schema_cache``, ``openapi``, ``faults`` (fault hooks and the request log), ``server``
(the server object) and ``process`` (command line, subprocess helpers).
"""

from .auth import decode_jwt, make_jwt
from .constants import DEFAULT_JWT_SECRET
from .errors import ApiError
from .faults import Fault, FaultInjector, RequestRecord
from .grammar import parse_query
from .openapi import build_openapi
from .process import main, server_process, start_server_process, stop_server_process
from .schema_cache import load_schema_cache
from .server import PostgrestServer

__all__ = [
    "PostgrestServer",
    "FaultInjector",
    "Fault",
    "RequestRecord",
    "ApiError",
    "start_server_process",
    "stop_server_process",
    "server_process",
    "make_jwt",
    "decode_jwt",
    "parse_query",
    "build_openapi",
    "load_schema_cache",
    "DEFAULT_JWT_SECRET",
    "main",
]
