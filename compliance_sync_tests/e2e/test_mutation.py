"""Mutation testing of the pure core (slow, outside the default run): every mutant mutmut makes of
rules.py, diff.py, fiscal.py and invariants.py is killed by the default suite's fast tests, or explained
in docs/mutation.md (one line per survivor). Run it with ``pytest -m slow compliance_sync_tests/e2e/test_mutation.py``
or directly with ``bash benchmarks/mutation.sh``."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("mutmut") is None, reason="mutmut is not installed (.venv/bin/pip install mutmut)"
)
def test_every_mutant_is_killed_or_explained():
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "mutation.sh")], capture_output=True, text=True, timeout=4 * 3600, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    survivors = re.findall(r"^\s*(compliance_sync\.\S+): (?:survived|no tests|timeout|suspicious)$", proc.stdout, re.M)
    explained = set(
        re.findall(r"`(compliance_sync\.[^`]+)`", (REPO / "docs" / "mutation.md").read_text(encoding="utf-8"))
    )
    unexplained = [s for s in survivors if s not in explained]
    assert not unexplained, "surviving mutants without an explanation in docs/mutation.md:\n" + "\n".join(unexplained)
