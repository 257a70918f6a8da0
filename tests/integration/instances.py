"""Several server instances on one PostgreSQL database behind a round-robin front (issue 9, part 4).

Each instance is its own gunicorn master with its own workers, port, data directory and log, in a
process group of its own (so that ``kill()`` reaches the master and every worker with one
SIGKILL). All share what the README says every instance must share: ``STORAGE_URL``,
``PUBLIC_URL`` (the front's address), ``ENCRYPTION_KEYS`` and ``TOKEN_HASH_KEY``; they trust the
front's ``X-Forwarded-For`` through ``FORWARDED_ALLOW_IPS``. They start at once, against a
database that may be empty, as a deploy starts them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import urlsplit

import requests
from cryptography.fernet import Fernet

from .round_robin import RoundRobinFront
from .servers import REPO_ROOT, RunningServer, _wait_until_ready, free_port, server_environment

# The front and the instances are all on this machine.
FORWARDED_ALLOW_IPS = "127.0.0.1"
STOP_TIMEOUT = 20.0
# A worker whose first schema check met another instance's migration answers 503 until it
# retries: an instance is ready once every worker has answered a storage-backed request.
READY_TIMEOUT = 60.0
READY_STREAK = 6
METADATA_PATH = "/.well-known/oauth-authorization-server"


class Instance(RunningServer):
    """A running instance: ``base_url`` addresses it directly, bypassing the front."""

    def __init__(self, name: str, base_url: str, log_path: Path, process: subprocess.Popen[bytes]) -> None:
        super().__init__(base_url, log_path, process)
        self.name = name

    def kill(self) -> None:
        """SIGKILL to the master and every worker at once (its process group): no shutdown at
        all. Returns once the port refuses connections: until the last worker is gone, the
        kernel still completes handshakes on the listening socket they share."""
        _signal_group(self.process, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._accepts_connections():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} still accepts connections after SIGKILL")
            time.sleep(0.01)

    def _accepts_connections(self) -> bool:
        address = urlsplit(self.base_url)
        try:
            socket.create_connection((address.hostname, address.port), timeout=1).close()
        except OSError:
            return False
        return True

    def terminate(self) -> None:
        """Asks the master for a graceful stop (it stops its workers)."""
        if self.process.poll() is None:
            self.process.terminate()

    def reap(self) -> None:
        """Waits for the master to exit (SIGKILL if it takes too long), then makes sure no
        process of its group is left (workers orphaned by a killed master)."""
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait()
        _signal_group(self.process, signal.SIGKILL)


def stop_all(instances: list[Instance]) -> None:
    """All at once: a graceful stop takes a second or so each."""
    for instance in instances:
        instance.terminate()
    for instance in instances:
        instance.reap()


def _signal_group(process: subprocess.Popen[bytes], how: signal.Signals) -> None:
    try:
        os.killpg(process.pid, how)  # start_new_session: the group's id is the master's pid
    except ProcessLookupError:
        pass


@dataclass
class Cluster:
    front: RoundRobinFront
    instances: list[Instance]

    @property
    def public_url(self) -> str:
        return self.front.base_url

    @property
    def mcp_url(self) -> str:
        return self.front.base_url + "/mcp"


def shared_settings(public_url: str, storage_url: str) -> dict[str, str]:
    """What every instance must be given alike."""
    return {
        "PUBLIC_URL": public_url,
        "STORAGE_URL": storage_url,
        "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "TOKEN_HASH_KEY": "several-instances-" + "k" * 40,
        "FORWARDED_ALLOW_IPS": FORWARDED_ALLOW_IPS,
    }


def start_instance(directory: Path, name: str, port: int, workers: int, env: dict[str, str]) -> Instance:
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "wsgi:app",
    ]  # fmt: skip
    log_path = directory / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=server_environment(directory / "data", port, **env),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return Instance(name, f"http://127.0.0.1:{port}", log_path, process)


def wait_until_serving(instance: Instance, timeout: float = READY_TIMEOUT) -> None:
    """Alive (/healthz), then answering a storage-backed request several times in a row."""
    _wait_until_ready(instance, timeout)
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < READY_STREAK:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{instance.name} did not serve within {timeout}s:\n{instance.log_text()[-4000:]}")
        try:
            ok = requests.get(instance.base_url + METADATA_PATH, timeout=5).status_code == 200
        except requests.RequestException:
            ok = False
        streak = streak + 1 if ok else 0
        if not ok:
            time.sleep(0.2)


@contextmanager
def running_cluster(
    tmp_path: Path, storage_url: str, *, count: int = 2, workers: int = 2, env: Mapping[str, str] | None = None
) -> Iterator[Cluster]:
    """``count`` instances on ``storage_url`` behind a round-robin front, with ``env`` added to
    each one's environment; everything stopped afterwards, whatever happened."""
    ports = [free_port() for _ in range(count)]
    with ExitStack() as stack:
        front = RoundRobinFront([f"http://127.0.0.1:{port}" for port in ports]).start()
        stack.callback(front.stop)
        settings = {**shared_settings(front.base_url, storage_url), **(env or {})}
        instances: list[Instance] = []
        stack.callback(stop_all, instances)
        for number, port in enumerate(ports):
            instances.append(start_instance(tmp_path / f"instance-{number}", f"instance-{number}", port, workers, settings))
        for instance in instances:
            wait_until_serving(instance)
        yield Cluster(front, instances)
