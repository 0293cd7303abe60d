"""Benchmark scripts (plain scripts; the package makes ``benchmarks.pure_sql`` importable from tests)."""
