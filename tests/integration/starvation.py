"""The starvation scenario of issue 8: while connections trickle request heads and bodies a byte
a second and MCP tool calls wait on a stalled upstream API (Microsoft Graph, played by the local
Entra stand-in), probe requests — the authorization server metadata and a refresh grant — must
keep getting their normal answer.

The tests run it against the default configuration; by hand it runs against any gunicorn
worker model, to compare (figures in bench/README.md)::

    python -m tests.integration.starvation                                   # the default
    python -m tests.integration.starvation --gunicorn=--worker-class=sync --gunicorn=--threads=1
    python -m tests.integration.starvation --gunicorn=--worker-class=gthread --gunicorn=--threads=32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import urlencode, urlsplit

import requests

from .entra_standin import USERNAME, EntraStandIn
from .mcp_sdk_driver import REDIRECT_URI, sign_in_with_redirecting_idp
from .oauth_flow import pkce_pair
from .servers import REPO_ROOT, RunningServer, running_server
from .slow_clients import TrickleStats, Tricklers
from .mcp_calls import modern_tool_call

METADATA = "/.well-known/oauth-authorization-server"
# The Graph client's own timeout (src/adapters/tools/graph_mail.py): how long a stalled call
# holds its server thread.
UPSTREAM_TIMEOUT = 15.0
REFRESH_PROBE_INTERVAL = 2.5


@dataclass(frozen=True)
class Grant:
    client_id: str
    client_secret: str
    access_token: str
    refresh_token: str


@dataclass(frozen=True)
class Probe:
    kind: str  # "metadata" or "refresh"
    status: int | None  # None: no answer within the probe timeout (or the connection failed)
    started: float  # seconds since the scenario began
    seconds: float


@dataclass(frozen=True)
class ToolCall:
    status: int | None
    finished: float  # seconds since the scenario began


@dataclass
class ScenarioResult:
    probes: list[Probe] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    # Graph calls that had arrived (and stalled) when the probe window opened, and at its end.
    stalled_at_start: int = 0
    stalled_at_end: int = 0
    # Tool calls already answered when the window closed (0: all of them held their threads).
    tool_calls_done_at_end: int = 0
    window: tuple[float, float] = (0.0, 0.0)
    tricklers_open_at_end: int = 0
    trickles: TrickleStats = field(default_factory=TrickleStats)

    def summary(self) -> str:
        lines = [
            f"probe window {self.window[0]:.1f}-{self.window[1]:.1f} s; Graph calls stalled at its start "
            f"{self.stalled_at_start}, at its end {self.stalled_at_end} ({self.tool_calls_done_at_end} answered); "
            f"tricklers open at its end "
            f"{self.tricklers_open_at_end} (opened {self.trickles.opened})"
        ]
        for kind in ("metadata", "refresh"):
            probes = [p for p in self.probes if p.kind == kind]
            answered = [p for p in probes if p.status is not None]
            seconds = [p.seconds for p in answered]
            statuses = sorted({str(p.status) for p in probes})
            lines.append(
                f"{kind}: {len(probes)} probes, {len(answered)} answered ({', '.join(statuses)}), "
                + (f"median {statistics.median(seconds):.3f} s, max {max(seconds):.3f} s" if seconds else "no answer")
            )
        finished = sorted(call.finished for call in self.tool_calls)
        lines.append(
            f"tool calls: {len(self.tool_calls)}, statuses {sorted({str(c.status) for c in self.tool_calls})}, "
            f"finished {finished[0]:.1f}-{finished[-1]:.1f} s" if finished else "tool calls: none"
        )
        lifetimes = self.trickles.lifetimes
        for kind in ("head", "body"):
            if lifetimes[kind]:
                lines.append(
                    f"{kind} tricklers closed: {len(lifetimes[kind])}, after {min(lifetimes[kind]):.1f}-"
                    f"{max(lifetimes[kind]):.1f} s"
                )
        statuses = sorted(set(self.trickles.statuses))
        lines.append(f"trickler answers: {statuses or 'none'}; silent closes {self.trickles.silent_closes}")
        return "\n".join(lines)


def sign_in(base_url: str) -> Grant:
    """Register, authorize (consent, the stand-in signs the person in at once), redeem the code."""
    registered = requests.post(
        base_url + "/oauth/register",
        json={"client_name": "Starvation probe", "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "client_secret_post"},
        timeout=30,
    )
    assert registered.status_code == 201, registered.text
    client = registered.json()
    verifier, challenge = pkce_pair()
    query = urlencode({
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "starvation",
        "resource": base_url + "/mcp",
    })
    back = sign_in_with_redirecting_idp(requests.Session(), f"{base_url}/oauth/authorize?{query}", USERNAME)
    issued = requests.post(base_url + "/oauth/token", data={
        "grant_type": "authorization_code",
        "code": back["code"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
        "client_id": client["client_id"],
        "client_secret": client["client_secret"],
    }, timeout=30)
    assert issued.status_code == 200, issued.text
    tokens = issued.json()
    return Grant(client["client_id"], client["client_secret"], tokens["access_token"], tokens["refresh_token"])


def run_scenario(
    server: RunningServer,
    entra: EntraStandIn,
    *,
    heads: int = 100,
    bodies: int = 100,
    tool_calls: int = 20,
    stall: float = 20.0,
    window: float = 12.0,
    probe_timeout: float = 5.0,
) -> ScenarioResult:
    base_url = server.base_url
    grant = sign_in(base_url)
    refresh_token = grant.refresh_token
    graph_before = len(entra.graph_snapshot())
    entra.graph_delay = stall
    result = ScenarioResult()
    port = urlsplit(base_url).port
    assert port is not None
    began = time.monotonic()

    def call_tool(number: int) -> ToolCall:
        try:
            reply = modern_tool_call(base_url, grant.access_token, "mail_search", {"query": "quarterly"}, number)
            status: int | None = reply.status_code
        except requests.RequestException:
            status = None
        return ToolCall(status, time.monotonic() - began)

    def stalled() -> int:
        return len(entra.graph_snapshot()) - graph_before

    with ThreadPoolExecutor(max_workers=tool_calls) as pool, Tricklers("127.0.0.1", port, heads=heads, bodies=bodies) as tricklers:
        calls: list[Future[ToolCall]] = [pool.submit(call_tool, n) for n in range(1, tool_calls + 1)]
        # The window opens once every tool call waits on Graph (or after 10 s: a starved server
        # may never get that far).
        deadline = time.monotonic() + 10
        while stalled() < tool_calls and time.monotonic() < deadline:
            time.sleep(0.1)
        result.stalled_at_start = stalled()
        opened = time.monotonic()
        # The window closes before the first stalled call can end (the Graph client gives up
        # after 15 s), so the calls hold their threads throughout.
        window = min(window, began + min(stall, UPSTREAM_TIMEOUT) - 0.5 - opened)
        next_refresh = opened
        while time.monotonic() - opened < window:
            result.probes.append(_probe_metadata(base_url, began, probe_timeout))
            if time.monotonic() >= next_refresh:
                # Paced under the default rate limit of the refresh grant (30 a minute per grant).
                next_refresh = time.monotonic() + REFRESH_PROBE_INTERVAL
                probe, refresh_token = _probe_refresh(base_url, grant, refresh_token, began, probe_timeout)
                result.probes.append(probe)
        result.window = (opened - began, time.monotonic() - began)
        result.stalled_at_end = stalled()
        result.tool_calls_done_at_end = sum(call.done() for call in calls)
        result.tricklers_open_at_end = tricklers.open_count()
        result.trickles = tricklers.snapshot()
        result.tool_calls = [call.result() for call in calls]
    return result


def _probe_metadata(base_url: str, began: float, timeout: float) -> Probe:
    started = time.monotonic()
    try:
        status: int | None = requests.get(base_url + METADATA, timeout=timeout).status_code
    except requests.RequestException:
        status = None
    return Probe("metadata", status, started - began, time.monotonic() - started)


def _probe_refresh(base_url: str, grant: Grant, refresh_token: str, began: float, timeout: float) -> tuple[Probe, str]:
    started = time.monotonic()
    try:
        reply = requests.post(base_url + "/oauth/token", data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": grant.client_id,
            "client_secret": grant.client_secret,
            "resource": base_url + "/mcp",
        }, timeout=timeout)
        status: int | None = reply.status_code
        if status == 200:
            refresh_token = reply.json()["refresh_token"]
    except requests.RequestException:
        status = None
    return Probe("refresh", status, started - began, time.monotonic() - started), refresh_token


def gunicorn_command(extra: Sequence[str]) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:{port}",
        "--workers", "2", *extra, "wsgi:app",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gunicorn", action="append", default=[], help="an extra gunicorn argument (repeat)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server (repeat)")
    parser.add_argument("--window", type=float, default=12.0)
    parser.add_argument("--probe-timeout", type=float, default=30.0, help="seconds a probe may wait (the test uses 5)")
    parser.add_argument("--heads", type=int, default=100)
    parser.add_argument("--bodies", type=int, default=100)
    parser.add_argument("--tool-calls", type=int, default=20)
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    entra = EntraStandIn().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with running_server(Path(tmp), command=gunicorn_command(args.gunicorn), cwd=REPO_ROOT,
                                **entra.server_environment(), **{"LOG_LEVEL": "INFO", "RATE_LIMITS": "on", **env}) as server:
                result = run_scenario(server, entra, heads=args.heads, bodies=args.bodies, tool_calls=args.tool_calls,
                                      window=args.window, probe_timeout=args.probe_timeout)
                print(f"gunicorn {' '.join(args.gunicorn) or '(defaults)'} {' '.join(args.env)}")
                print(result.summary())
    finally:
        entra.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
