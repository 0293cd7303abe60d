"""Backends: adapters behind one small port ("read the facts of FY N", "apply this diff to its targets").

``postgres.PostgresBackend`` talks to PostgreSQL directly (psycopg 3). Import it from its module so that
importing this package never pulls in a driver that is not needed.
"""
