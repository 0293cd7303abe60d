"""Dagster assets: the external source tables, the four-target writer, and its checks."""
