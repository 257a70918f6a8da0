"""A throwaway PostgreSQL server for the PostgreSQL storage backend's tests (issue 9, part 3).

The test command starts it itself from the machine's binaries (``initdb`` and ``postgres`` of the
directory ``pg_config --bindir`` names, else Debian's newest ``/usr/lib/postgresql/<major>/bin``)
in a fresh temporary directory, listening on a free loopback port only, and stops it afterwards.
When the machine has no PostgreSQL binaries and the tests run as root with apt-get (CI: a fresh
Debian machine with only the project's files), Debian's ``postgresql`` package is installed first;
otherwise the tests fail with one message saying how to install it. Nothing is skipped.

PostgreSQL refuses to run as root (CI runs as root): then initdb and the server run as an
unprivileged account (``postgres`` from the Debian package, else a dedicated system user),
which owns the temporary directory.

Fixtures (import them explicitly, as ``redis_url`` is):
- ``postgres_server`` (session): the admin URL ``postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres``
  of this pytest process's own server (each xdist worker starts its own, so workers never meet);
- ``postgres_url`` (function): ``postgresql://postgres:PASSWORD@127.0.0.1:PORT/test_…``, a fresh,
  empty database for this test only, dropped afterwards (open connections and all).

Outside pytest (benchmarks, tests that stop the database): ``start_postgres()`` and
``fresh_database()``, which raise ``PostgresUnavailable`` (a RuntimeError) instead of failing a test.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, TypedDict
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from .servers import free_port

DEBIAN_PACKAGE = "postgresql"
INSTALL_HINT = (
    "the PostgreSQL storage tests need PostgreSQL's server programs (initdb, pg_ctl, postgres): "
    f"install them (Debian/Ubuntu: sudo apt-get install {DEBIAN_PACKAGE}; elsewhere your system's "
    "PostgreSQL server package) so that `pg_config --bindir` or /usr/lib/postgresql/<version>/bin has them"
)
REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres")
DEBIAN_VERSIONS_ROOT = Path("/usr/lib/postgresql")
# xdist workers may all want it at once: one installs, the others wait and find it.
INSTALL_LOCK = Path("/tmp/mcp-oauth-bridge-postgresql-install.lock")
APT_OPTIONS = ("-o", "DPkg::Lock::Timeout=300", "-o", "Acquire::Retries=3")
# Used only when we are root and the machine has no `postgres` account (binaries not from Debian).
DEDICATED_USER = "mcp-oauth-bridge-pg"
SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
PORT_ATTEMPTS = 3
# A throwaway server: durability off (nothing survives the run anyway), room for the concurrency
# tests (8 processes) and for two app instances with a pool each, plus the per-test databases.
SETTINGS: Mapping[str, str] = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    # Every CREATE DATABASE writes the template's few MB to the WAL: checkpoint (cheap without
    # fsync) rather than let the WAL grow, for the cluster may live in memory (see below).
    "max_wal_size": "256MB",
}
# A database per test is copied from this one (created empty from template0 once per server):
# nothing a test does to template1 can leak into the next test.
TEMPLATE_DATABASE = "test_template"
# A cluster in memory makes a test's database several times cheaper (measured under load: create,
# connect, drop ~65 ms instead of ~330 ms on disk), so /dev/shm is used when it is a roomy tmpfs
# (not Docker's default 64 MB); the system's temporary directory otherwise.
MEMORY_DIRECTORY = Path("/dev/shm")
MEMORY_DIRECTORY_MIN_FREE_BYTES = 1 << 30


class PostgresUnavailable(RuntimeError):
    """The binaries are missing, or the server could not be set up or started; says why."""


# ---------------------------------------------------------------------------------------------
# Finding the binaries


def pg_config_bindir() -> Path | None:
    """What ``pg_config --bindir`` says, if pg_config is on PATH (Debian's names the newest server)."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    output = result.stdout.strip()
    return Path(output) if result.returncode == 0 and output else None


def debian_bindirs(root: Path = DEBIAN_VERSIONS_ROOT) -> list[Path]:
    """Debian's per-version ``<root>/<version>/bin`` directories, newest first (13 before 9.6)."""
    if not root.is_dir():
        return []
    versions = [entry for entry in root.iterdir() if re.fullmatch(r"\d+(\.\d+)*", entry.name)]
    versions.sort(key=lambda entry: tuple(int(part) for part in entry.name.split(".")), reverse=True)
    return [entry / "bin" for entry in versions]


def default_search_locations() -> list[Path]:
    """pg_config's choice first, then Debian's versions, then whatever PATH's initdb really is
    (resolved: /usr/local/bin/initdb may be a symlink or wrapper, its directory lacks postgres)."""
    locations = [bindir for bindir in [pg_config_bindir()] if bindir is not None]
    locations += debian_bindirs()
    on_path = shutil.which("initdb")
    if on_path is not None:
        locations.append(Path(os.path.realpath(on_path)).parent)
    return locations


def find_bindir(locations: Iterable[Path]) -> Path:
    """The first of ``locations`` holding initdb, pg_ctl and postgres; PostgresUnavailable otherwise."""
    searched = []
    for location in locations:
        searched.append(str(location))
        if all(os.access(location / program, os.X_OK) and (location / program).is_file() for program in REQUIRED_PROGRAMS):
            return location
    where = ", ".join(searched) if searched else "no pg_config on PATH, nothing under /usr/lib/postgresql"
    raise PostgresUnavailable(f"{INSTALL_HINT} (looked in: {where})")


def postgres_bindir() -> Path:
    """The machine's PostgreSQL binaries; installs Debian's package first when it has none and
    we may (root with apt-get, i.e. CI on a fresh machine)."""
    try:
        return find_bindir(default_search_locations())
    except PostgresUnavailable:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return find_bindir(default_search_locations())  # another worker installed it meanwhile
        except PostgresUnavailable:
            _apt_install(DEBIAN_PACKAGE)
    return find_bindir(default_search_locations())


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", *APT_OPTIONS, "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode == 0:
        return
    # A fresh machine may have no package lists yet.
    for command in (["apt-get", *APT_OPTIONS, "update"], install):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{' '.join(command)} failed ({result.returncode}) while installing PostgreSQL for the tests:\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )


# ---------------------------------------------------------------------------------------------
# The account the server runs as


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def server_account() -> Account:
    """Ourselves, unless we are root: PostgreSQL refuses root, so then Debian's ``postgres``
    account (the package creates it), else a dedicated system user created for the purpose."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return Account(entry.pw_name, os.geteuid(), os.getegid())
    for name in (SUPERUSER, DEDICATED_USER):
        account = _unprivileged_account(name)
        if account is not None:
            return account
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _unprivileged_account(DEDICATED_USER) is None:
            command = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                       "--shell", "/usr/sbin/nologin", "--user-group", DEDICATED_USER]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            if result.returncode != 0:
                raise PostgresUnavailable(
                    f"PostgreSQL does not run as root and there is no `{SUPERUSER}` account; creating "
                    f"`{DEDICATED_USER}` failed ({' '.join(command)}): {result.stderr.strip()}"
                )
    account = _unprivileged_account(DEDICATED_USER)
    if account is None:
        raise PostgresUnavailable(f"useradd created no usable account `{DEDICATED_USER}`")
    return account


def _unprivileged_account(name: str) -> Account | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if entry.pw_uid == 0:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _reachable_by(path: Path, account: Account) -> bool:
    """Whether ``account`` may traverse every directory down to ``path`` (pytest's own temporary
    directories are 0700 root's, for instance)."""
    groups = {account.gid, *(group.gr_gid for group in _groups_of(account.name))}
    for directory in [*reversed(path.parents), path]:
        status = directory.stat()
        if status.st_uid == account.uid:
            bit = stat.S_IXUSR
        elif status.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not status.st_mode & bit:
            return False
    return True


def _groups_of(user: str) -> list[grp.struct_group]:
    return [group for group in grp.getgrall() if user in group.gr_mem]


# ---------------------------------------------------------------------------------------------
# The server


class AccountOptions(TypedDict):
    """subprocess options that run a program as the server's account."""

    env: dict[str, str]
    cwd: Path
    user: int | None
    group: int | None
    extra_groups: list[int] | None


class PostgresServer:
    """A running throwaway server: ``admin_url``, ``port``, ``url_for(database)``, ``log_path``.
    ``stop()`` and ``start()`` (same port, same data) let a test take the database away and
    bring it back."""

    def __init__(self, bindir: Path, account: Account, directory: Path, password: str, settings: Mapping[str, str]) -> None:
        self.bindir = bindir
        self.account = account
        self.directory = directory
        self.data_directory = directory / "data"
        self.socket_directory = directory / "socket"
        self.log_path = directory / "server.log"
        self.settings = dict(settings)
        self.password = password
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def log_tail(self, characters: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return "(no server log)"

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[bytes]:
        """A PostgreSQL program as the server's account (never root), its output to the log."""
        with open(self.log_path, "ab") as log:
            return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=300, **self._as_account())

    def _as_account(self) -> AccountOptions:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        # initdb and the server would otherwise look at root's home and the caller's locale.
        env.update(HOME=str(self.directory), LC_ALL="C", LANG="C")
        if os.geteuid() != 0:
            return AccountOptions(env=env, cwd=self.directory, user=None, group=None, extra_groups=None)
        return AccountOptions(env=env, cwd=self.directory, user=self.account.uid, group=self.account.gid, extra_groups=[])

    def initialise(self) -> None:
        password_file = self.directory / "password"
        password_file.write_text(self.password + "\n")
        self._hand_over(password_file)
        self.socket_directory.mkdir(mode=0o700)
        self._hand_over(self.socket_directory)
        command = [
            str(self.bindir / "initdb"), "--pgdata", str(self.data_directory), "--username", SUPERUSER,
            f"--pwfile={password_file}", "--auth-host=scram-sha-256", "--auth-local=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        ]  # fmt: skip
        result = self.run(command)
        password_file.unlink()
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({result.returncode}); its output:\n{self.log_tail()}")

    def _hand_over(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.account.uid, self.account.gid)

    def start(self) -> None:
        """Starts the server (on a free port the first time, on the same one afterwards) and waits
        until it accepts connections."""
        first_start = self.port == 0
        for attempt in range(PORT_ATTEMPTS if first_start else 1):
            if first_start:
                self.port = free_port()
            self._spawn()
            try:
                self._wait_until_ready()
                return
            except PostgresUnavailable:
                self._terminate(signal.SIGQUIT)
                # Someone took the free port between free_port() and the server's bind: try another.
                if first_start and attempt + 1 < PORT_ATTEMPTS and "could not bind" in self.log_tail(2000):
                    continue
                raise

    def _spawn(self) -> None:
        command = [str(self.bindir / "postgres"), "-D", str(self.data_directory), "-c", f"port={self.port}",
                   "-c", f"unix_socket_directories={self.socket_directory}"]  # fmt: skip
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **self._as_account())

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self._process.poll() is not None:
                raise PostgresUnavailable(
                    f"postgres exited with {self._process.returncode} at start-up; the end of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
                return
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise PostgresUnavailable(
                        f"postgres did not accept connections within {START_TIMEOUT_SECONDS:.0f}s ({error}); "
                        f"the end of {self.log_path}:\n{self.log_tail()}"
                    ) from error
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (sessions ended, a clean checkpoint): ``start()`` brings it back with its data."""
        self._terminate(signal.SIGINT)

    def _terminate(self, how: signal.Signals) -> None:
        # SIGINT is pg_ctl's "fast" mode, SIGQUIT its "immediate" mode.
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Immediate shutdown: nothing needs to survive."""
        self._terminate(signal.SIGQUIT)


def default_parent() -> Path:
    """Where a server's directory goes unless the caller says: memory if there is room."""
    try:
        status = os.statvfs(MEMORY_DIRECTORY)
    except OSError:
        return Path(tempfile.gettempdir())
    roomy = status.f_bavail * status.f_frsize >= MEMORY_DIRECTORY_MIN_FREE_BYTES
    return MEMORY_DIRECTORY if roomy and os.access(MEMORY_DIRECTORY, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())


@contextmanager
def start_postgres(parent: Path | None = None, **settings: str) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL server on 127.0.0.1 at a free port, in a new directory under ``parent``
    (default: /dev/shm if roomy, else the system's temporary directory), stopped and removed afterwards. ``settings``
    add to or override the server settings (e.g. ``shared_buffers="256MB"``). Yields a
    PostgresServer (``server.admin_url``, ``server.port``); raises PostgresUnavailable saying why
    when there are no binaries or the server does not start."""
    bindir = postgres_bindir()
    account = server_account()
    base = Path(parent) if parent is not None else default_parent()
    if account.uid != os.geteuid() and not _reachable_by(base.resolve(), account):
        raise PostgresUnavailable(
            f"{base} is not reachable by {account.name}, the account PostgreSQL runs as (it refuses root): "
            "give start_postgres a directory every user may traverse, or none"
        )
    directory = Path(tempfile.mkdtemp(prefix="mcp-oauth-bridge-pg-", dir=base))
    try:
        os.chmod(directory, 0o700)
        if account.uid != os.geteuid():
            os.chown(directory, account.uid, account.gid)
        server = PostgresServer(bindir, account, directory, secrets.token_urlsafe(18), {**SETTINGS, **settings})
        server.initialise()
        server.start()
        try:
            _create_template(server.admin_url)
            yield server
        finally:
            server.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# A database per test


def _create_template(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 IS_TEMPLATE true").format(sql.Identifier(TEMPLATE_DATABASE)))


def database_url(admin_url: str, name: str) -> str:
    return urlsplit(admin_url)._replace(path="/" + name).geturl()


def create_database(admin_url: str, name: str | None = None, template: str = TEMPLATE_DATABASE) -> str:
    """A new empty database (a copy of ``template``) on the server of ``admin_url``; its URL."""
    name = name or f"test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return database_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drops it even while a test's pool still holds connections to it."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        if admin.info.server_version >= 130000:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            return
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [name])
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new empty database for the duration of the block; yields its URL."""
    url = create_database(admin_url)
    try:
        yield url
    finally:
        drop_database(admin_url, urlsplit(url).path.lstrip("/"))


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The admin URL of this pytest process's own throwaway server (each xdist worker has one)."""
    with ExitStack() as stack:
        try:
            server = stack.enter_context(start_postgres())
        except PostgresUnavailable as error:
            pytest.fail(str(error), pytrace=False)
        yield server.admin_url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database for this test alone, dropped afterwards; yields its URL."""
    with fresh_database(postgres_server) as url:
        yield url
