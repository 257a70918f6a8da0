"""Start the real server (gunicorn) on a loopback port for end-to-end tests."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Sequence

import requests
from cryptography.fernet import Fernet

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RunningServer:
    def __init__(self, base_url: str, log_path: Path, process: subprocess.Popen[bytes]) -> None:
        self.base_url = base_url
        self.log_path = log_path
        self.process = process

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def server_environment(data_dir: Path, port: int, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PUBLIC_URL=f"http://127.0.0.1:{port}",
        DATA_DIR=str(data_dir),
        ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        TOKEN_HASH_KEY="e2e-" + "k" * 40,
        LOG_LEVEL="DEBUG",
        # Tests drive many flows from one address; the rate-limit tests turn the limits on.
        RATE_LIMITS="off",
    )
    env.update(overrides)
    return env


@contextmanager
def running_server(
    tmp_path: Path,
    command: Sequence[str] | None = None,
    workers: int = 2,
    cwd: Path = REPO_ROOT,
    **env_overrides: str,
) -> Iterator[RunningServer]:
    """gunicorn serving wsgi:app with ``workers`` processes (or ``command``, where ``{port}``
    is replaced); stopped and reaped afterwards."""
    port = free_port()
    env = server_environment(tmp_path / "data", port, **env_overrides)
    command = command or [
        sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "wsgi:app",
    ]
    command = [part.replace("{port}", str(port)) for part in command]
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(f"http://127.0.0.1:{port}", log_path, process)
    try:
        _wait_until_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(server: RunningServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log_text()}")
        try:
            if requests.get(server.base_url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not start within {timeout}s:\n{server.log_text()}")


class LoopbackHttpServer:
    """A ThreadingHTTPServer on a free loopback port, served by a daemon thread until ``stop``
    (the test doubles' HTTP side: the Entra stand-in, the round-robin front). With ``tls`` it
    speaks HTTPS (the handshake happens in the connection's own thread, on its first read)."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], *, name: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
