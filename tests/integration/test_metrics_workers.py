"""/metrics across gunicorn workers (issue 11 §4): plain `gunicorn -c gunicorn.conf.py wsgi:app`
with 2 workers counts every request whichever worker served it, and a worker killed and
restarted by gunicorn neither loses nor doubles its counts."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .servers import RunningServer, running_server

HEALTHZ = {"endpoint": "metadata.health", "method": "GET", "status": "200"}
COUNT = "mcp_oauth_bridge_http_request_duration_seconds_count"
REQUESTS = 60


def healthz_count(server: RunningServer) -> float:
    reply = requests.get(server.base_url + "/metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            if sample.name == COUNT and sample.labels == HEALTHZ:
                return sample.value
    return 0.0


def worker_pids(server: RunningServer) -> set[int]:
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def counting_pids(directory: Path) -> set[int]:
    # prometheus_client names each process's files <kind>_<pid>.db.
    return {int(path.stem.rsplit("_", 1)[1]) for path in directory.glob("*.db")}


def hit_healthz(server: RunningServer, times: int) -> None:
    for _ in range(times):
        # A connection per request, so that the workers share them.
        assert requests.get(server.base_url + "/healthz", timeout=10, headers={"Connection": "close"}).status_code == 200


def wait_for_workers(server: RunningServer, expected: int, other_than: set[int] = frozenset(), timeout: float = 30) -> set[int]:  # type: ignore[assignment]
    deadline = time.monotonic() + timeout
    while True:
        pids = worker_pids(server)
        if len(pids) == expected and not (pids & other_than):
            return pids
        assert time.monotonic() < deadline, f"workers now {pids}"
        time.sleep(0.1)


@pytest.mark.slow
def test_every_workers_requests_are_counted_and_survive_a_restart(tmp_path: Path) -> None:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    # Left over from an earlier run: wiped at start, never counted.
    (multiproc / "counter_999999.db").write_bytes(b"stale")
    with running_server(tmp_path, workers=2, PROMETHEUS_MULTIPROC_DIR=str(multiproc)) as server:
        workers = wait_for_workers(server, 2)
        before = healthz_count(server)
        # Until both workers have served (and counted) some: the kernel hands connections to
        # whichever worker accepts first, and on a busy machine one may take a whole round.
        made = 0
        while made < 20 * REQUESTS and not workers <= counting_pids(multiproc):
            hit_healthz(server, REQUESTS)
            made += REQUESTS
        assert workers <= counting_pids(multiproc), (workers, counting_pids(multiproc))
        assert healthz_count(server) == before + made
        assert 999999 not in counting_pids(multiproc)

        # gunicorn replaces a killed worker; what it counted stays counted, once.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for_workers(server, 2, other_than={victim})
        assert healthz_count(server) == before + made
        hit_healthz(server, REQUESTS)
        assert healthz_count(server) == before + made + REQUESTS
        # Scrapes in between are not double-counted either.
        assert healthz_count(server) == before + made + REQUESTS
    log = server.log_text()
    # The application's own lines reach the log under plain gunicorn, with a request id slot.
    assert "storage is ready" in log


@pytest.mark.slow
def test_under_plain_gunicorn_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=1, LOG_FORMAT="json", LOG_LEVEL="INFO") as server:
        registration = {"client_name": "Log Test", "redirect_uris": ["http://127.0.0.1:9999/cb"], "token_endpoint_auth_method": "none"}
        # From loopback, the default trusted proxy: its request id is kept.
        reply = requests.post(
            server.base_url + "/register", json=registration, headers={"X-Request-ID": "from-the-proxy-1"}, timeout=10
        )
        assert reply.status_code == 201, reply.text
        assert reply.headers["X-Request-ID"] == "from-the-proxy-1"
        assert requests.get(server.base_url + "/healthz?code=secret-in-query", timeout=10).status_code == 200
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.strip()]
    # gunicorn's own lines, the access log and the application's: all JSON.
    assert any(line.get("logger") == "gunicorn.error" and "Booting worker" in line["message"] for line in lines)
    assert any(line.get("logger") == "gunicorn.access" for line in lines)
    registered = [line for line in lines if line.get("logger") == "mcp_oauth_bridge.adapters.http.registration"]
    assert registered and registered[0]["request_id"] == "from-the-proxy-1"
    # Query strings never reach the log.
    assert "secret-in-query" not in server.log_text()
