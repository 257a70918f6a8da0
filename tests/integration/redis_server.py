"""A real redis-server on a loopback port in a temporary directory, for the Redis rate-limit
backend's tests (import the fixture ``redis_url`` explicitly).

When the machine has no redis-server and the tests run as root (CI: a fresh Debian machine with
only the project's files), it is installed with apt-get first; otherwise the tests fail with
what to install. Nothing is skipped.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import redis

from .servers import free_port

DEBIAN_PACKAGE = "redis-server"
# xdist workers may all want it at once: one installs, the others wait and find it.
INSTALL_LOCK = Path("/tmp/mcp-oauth-bridge-redis-install.lock")
APT_OPTIONS = ("-o", "DPkg::Lock::Timeout=300", "-o", "Acquire::Retries=3")
START_TIMEOUT_SECONDS = 15.0


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"redis-server is needed by the Redis rate-limit tests: install it (e.g. apt-get install {DEBIAN_PACKAGE})")
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not shutil.which("redis-server"):
            _apt_install(DEBIAN_PACKAGE)
    found = shutil.which("redis-server")
    if not found:
        pytest.fail(f"apt-get installed {DEBIAN_PACKAGE} but redis-server is not on PATH")
    return found


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", *APT_OPTIONS, "install", "-y", "--no-install-recommends", package]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode == 0:
        return
    # A fresh machine may have no package lists yet.
    for command in (["apt-get", *APT_OPTIONS, "update"], install):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


@contextmanager
def running_redis(directory: Path) -> Iterator[str]:
    """redis-server on 127.0.0.1 at a free port, nothing persisted; yields its redis:// URL."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        redis_server_binary(),
        "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
        "--save", "", "--appendonly", "no", "--dir", str(directory),
        "--logfile", str(directory / "redis.log"), "--daemonize", "no",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_until_ready(url, process, directory / "redis.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(url: str, process: "subprocess.Popen[bytes]", log: Path) -> None:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}: {log.read_text(errors='replace') if log.exists() else ''}")
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT_SECONDS}s")
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def empty_redis(redis_url: str) -> str:
    """The session's Redis, emptied for this test."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_url
