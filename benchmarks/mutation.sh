#!/usr/bin/env bash
# Mutation testing of the pure core of SPEC §4-5 (issue 12): mutmut mutates compliance_sync/domain/rules/,
# diff.py, fiscal.py and invariants.py (comparison operators flipped, constants off by one, // and / swapped,
# and/or, boundaries, strings, ...) and runs the default suite's fast tests against each mutant: the unit tests
# of those modules, the property tests (the rules against the independent oracle on random worlds, in
# process) and the boundary tests (FULL=1 adds the command line against the oracle over PostgreSQL). A
# mutant no test fails "survives"; docs/mutation.md explains each known survivor.
#
#   bash benchmarks/mutation.sh            # prints the survivors, one "name: survived" per line, then their diffs
#   KEEP=1 bash benchmarks/mutation.sh     # keeps the work folder (mutmut browse / show there)
#
# It works on a copy of the repository in a temporary folder: the working tree is never modified (other
# people and the tests may be using it). Needs mutmut in the venv (.venv/bin/pip install mutmut) and the
# tests' PostgreSQL (COMPLIANCE_SYNC_TEST_DATABASE_URL or 127.0.0.1:5432). Takes minutes on 2 CPUs (FULL=1: much longer).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
work="$(mktemp -d "${TMPDIR:-/tmp}/cs-mutation.XXXXXX")"
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; else echo "work folder: $work" >&2; fi

tar -C "$repo" --exclude=.venv --exclude=.git --exclude=mutants --exclude=.pytest_cache --exclude=.ruff_cache \
    --exclude=.hypothesis --exclude='*.pyc' -cf - . | tar -C "$work" -xf -

"$venv/bin/python" - "$work" <<'PY'
import os
import pathlib
import sys

work = pathlib.Path(sys.argv[1])
mutated = sorted(p.relative_to(work).as_posix() for p in (work / "compliance_sync/domain/rules").glob("*.py"))
mutated += [f"compliance_sync/domain/{name}.py" for name in ("diff", "fiscal", "invariants")]
tests = ["unit/test_rules.py", "unit/test_fiscal.py", "unit/test_diff.py", "unit/test_invariants.py", "unit/test_core_edges.py", "integration/test_properties.py", "integration/test_boundaries.py"]
if os.environ.get("FULL"):  # also the command line against the oracle over PostgreSQL (hours, not minutes)
    tests.append("test_oracle.py")
others = sorted(p.relative_to(work).as_posix() for p in (work / "compliance_sync").rglob("*.py") if p.relative_to(work).as_posix() not in mutated)
lines = ["[mutmut]", "source_paths=compliance_sync/", "do_not_mutate="]
lines += [f"    {p}" for p in others]
lines += ["also_copy=", "    compliance_sync_tests/", "    benchmarks/", "pytest_add_cli_args_test_selection="]
lines += [f"    compliance_sync_tests/{t}" for t in tests]
(work / "setup.cfg").write_text("\n".join(lines) + "\n")
PY

cd "$work"
"$venv/bin/mutmut" run --max-children "${JOBS:-2}" >"$work/run.log" 2>&1 || { tail -c 3000 "$work/run.log" >&2; exit 1; }
"$venv/bin/mutmut" results --all true >"$work/results.txt"
grep -E ': (survived|no tests|timeout|suspicious)' "$work/results.txt" || true
echo "=== $(grep -c ': killed' "$work/results.txt" || true) killed, $(grep -cE ': (survived|no tests|timeout|suspicious)' "$work/results.txt" || true) not killed, of $(wc -l <"$work/results.txt")"
for name in $(grep -E ': (survived|no tests)' "$work/results.txt" | cut -d: -f1); do
    "$venv/bin/mutmut" show "$name" || true
done
