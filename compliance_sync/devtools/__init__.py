"""Developer tooling, not needed at run time: the demo dataset and the embedded PostgreSQL server."""
