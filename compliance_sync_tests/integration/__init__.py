"""Tests against a real PostgreSQL server and the PostgREST-protocol test server over it: the backends, SPEC §6's
errors, faults, concurrency, migrations, the demo and the embedded server."""
