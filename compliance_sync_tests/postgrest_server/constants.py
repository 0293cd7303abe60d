"""Names and defaults the modules share: the PostgREST version emulated, URL prefixes, the exposed schema and the
server's logger."""

from __future__ import annotations

import logging

POSTGREST_VERSION = "14.1"
DOCS_VERSION = "v14"
REST_PREFIX = "/rest/v1"
ADMIN_PREFIX = "/__admin"
EXPOSED_SCHEMA = "public"
# Supabase's local-development secret (supabase/cli): handy when a test does not care.
DEFAULT_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
# Supabase's API roles: what a request may run as, and the role the server's connections become (PostgREST's
# "authenticator", a member of the three that owns nothing).
API_ROLES = ("anon", "authenticated", "service_role")
AUTHENTICATOR = "authenticator"
# Supabase's edge answers 414 "URI too long" past roughly 16 KiB of request target (supabase-js#766, postgrest-js#393,
# postgrest-py#365: a few hundred uuids in an in.(...) filter); PostgREST itself has no limit.
DEFAULT_MAX_URL_LENGTH = 16 * 1024
INSERTED_FLAG = "pgrst_inserted__"

log = logging.getLogger("compliance_sync_tests.postgrest_server")
