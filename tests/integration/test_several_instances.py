"""Several instances on one PostgreSQL database, proven end to end (issue 9, parts 3 and 4).

First one gunicorn on PostgreSQL driven by the official MCP Python SDK client (RFC 9728 and
RFC 8414 discovery, RFC 7591 registration, authorization code with PKCE through the consent page,
the token endpoint, tools/list, tools/call, and the refresh grant of RFC 6749 §6 with rotation).

Then two separate instances (two gunicorn masters, their own ports and data directories; the same
database, PUBLIC_URL, ENCRYPTION_KEYS and TOKEN_HASH_KEY) behind a round-robin front without
stickiness (``round_robin.py``), which shows:
- the browser and client steps of one sign-in landing on alternating instances (the consent
  cookie, CSRF token and pending state of one step used by the other instance) and the flow
  completing;
- tool calls and refreshes alternating, and a refresh-token replay (OAuth 2.1 §4.3.1) presented
  to the instance that did not rotate the token revoking the grant everywhere;
- a grant revoked through one instance (RFC 7009) refused by the other at the next call;
- with the Entra ID stand-in, a burst of tool calls over both instances after the upstream token
  expired making exactly one upstream refresh (the lease in the shared database);
- one instance killed (SIGKILL, master and workers) during a load of sign-ins and refreshes
  losing no token a client was answered 200 for.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import anyio
import psycopg
import pytest
import requests
from mcp.shared.auth import OAuthClientInformationFull

from mcp_oauth_bridge.domain.services.upstream import REFRESH_MARGIN

from .entra_standin import SUBJECT, USERNAME, EntraStandIn, entra_standin  # noqa: F401
from .instances import Cluster, running_cluster
from .mcp_calls import MODERN, json_rpc_result, modern_tool_call
from .mcp_sdk_driver import (
    HeadlessBrowser,
    InMemoryTokenStorage,
    RequestLog,
    connected_client,
    oauth_provider,
    sign_in_with_redirecting_idp,
    text_of,
)
from .oauth_flow import HttpTransport, OAuthClient, Reply, hidden_fields, pkce_pair
from .postgres_server import fresh_database, postgres_server, postgres_url  # noqa: F401
from .round_robin import SERVED_BY, Forwarded
from .servers import running_server

pytestmark = [pytest.mark.slow, pytest.mark.serial]

# Short enough that the SDK client refreshes within the test (it refreshes before a call once
# its token has expired by its own clock), long enough to use the token at both instances first.
SHORT_ACCESS_TOKEN_TTL = 3
PAST_EXPIRY = SHORT_ACCESS_TOKEN_TTL + 1.2


def database_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as connection:
        return {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("clients", "grants", "access_tokens", "refresh_tokens")
        }


# ---------------------------------------------------------------------------------------------
# Part 3: one instance on PostgreSQL


def test_sdk_client_signs_in_calls_and_refreshes_over_gunicorn_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    with running_server(tmp_path, workers=2, STORAGE_URL=postgres_url, ACCESS_TOKEN_TTL=str(SHORT_ACCESS_TOKEN_TTL)) as server:
        mcp_url = server.base_url + "/mcp"
        storage = InMemoryTokenStorage()
        browser = HeadlessBrowser(username="erin")
        log = RequestLog()

        async def scenario() -> None:
            async with connected_client(mcp_url, oauth_provider(mcp_url, storage, browser), MODERN, log) as client:
                tools = await client.list_tools()
                assert "whoami" in [tool.name for tool in tools.tools]
                first = await client.call_tool("whoami", {})
                assert first.structured_content == {"subject": "fake:erin", "username": "erin"}
                await anyio.sleep(PAST_EXPIRY)
                second = await client.call_tool("whoami", {})
                assert second.structured_content == {"subject": "fake:erin", "username": "erin"}

        anyio.run(scenario)

    # Registered, authorized once, refreshed once (rotation: a new refresh token), never refused.
    paths = [entry.path for entry in log.entries]
    assert paths.count("/oauth/register") == 1
    assert browser.invocations == 1
    assert [entry.status for entry in log.token_requests("authorization_code")] == [200]
    assert [entry.status for entry in log.token_requests("refresh_token")] == [200]
    assert log.statuses("/mcp")[0] == 401 and 401 not in log.statuses("/mcp")[1:]
    first_tokens, refreshed = storage.token_history[0], storage.token_history[-1]
    assert refreshed.refresh_token and refreshed.refresh_token != first_tokens.refresh_token
    # All of it is in PostgreSQL: one client, one grant, two generations of each token; and no
    # SQLite database was created beside it.
    assert database_counts(postgres_url) == {"clients": 1, "grants": 1, "access_tokens": 2, "refresh_tokens": 2}
    assert not list((tmp_path / "data").glob("*.db"))


# ---------------------------------------------------------------------------------------------
# Part 4: two instances behind a round-robin front


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_server: str) -> Iterator[Cluster]:  # noqa: F811
    """Two instances with the fake identity provider, started at once on an empty database."""
    with fresh_database(postgres_server) as url:
        with running_cluster(
            tmp_path_factory.mktemp("cluster"), url, workers=2, env={"ACCESS_TOKEN_TTL": str(SHORT_ACCESS_TOKEN_TTL)}
        ) as running:
            yield running


def describe(entries: list[Forwarded]) -> str:
    """The front's log, for assertion messages."""
    return "\n".join(
        f"{e.sequence:5} instance-{e.instance} {e.method} {e.path}{' ' + e.grant_type if e.grant_type else ''} {e.status}"
        for e in entries
    )


def only(entries: list[Forwarded], method: str, path: str) -> Forwarded:
    found = [entry for entry in entries if (entry.method, entry.path) == (method, path)]
    assert len(found) == 1, describe(entries)
    return found[0]


def whoami_at(base_url: str, access_token: str) -> requests.Response:
    return modern_tool_call(base_url, access_token, "whoami", {}, 1)


def refresh_at(base_url: str, client: OAuthClientInformationFull, refresh_token: str) -> requests.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client.client_id,
            "client_secret": client.client_secret or ""}  # fmt: skip
    return requests.post(base_url + "/oauth/token", data=form, timeout=30)


def revoke_at(base_url: str, client: OAuthClientInformationFull, token: str, hint: str) -> requests.Response:
    form = {"token": token, "token_type_hint": hint, "client_id": client.client_id, "client_secret": client.client_secret or ""}
    return requests.post(base_url + "/oauth/revoke", data=form, timeout=30)


def assert_accepted(reply: requests.Response) -> None:
    assert reply.status_code == 200, reply.text
    assert json_rpc_result(reply)["result"]["isError"] is False, reply.text


def assert_refused_as_revoked(reply: requests.Response) -> None:
    """RFC 6750 §3.1: 401 invalid_token, and revoked is the reason (not an expiry)."""
    assert reply.status_code == 401, reply.text
    challenge = reply.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in challenge and "revoked" in challenge, challenge


def sign_in(cluster: Cluster, username: str) -> tuple[InMemoryTokenStorage, OAuthClientInformationFull]:
    """The SDK client's whole flow through the front, ending with one whoami; its storage."""
    storage = InMemoryTokenStorage()
    browser = HeadlessBrowser(username=username)

    async def scenario() -> None:
        async with connected_client(cluster.mcp_url, oauth_provider(cluster.mcp_url, storage, browser), MODERN) as client:
            result = await client.call_tool("whoami", {})
            assert result.structured_content == {"subject": f"fake:{username}", "username": username}

    anyio.run(scenario)
    assert storage.client_info is not None and storage.tokens is not None
    return storage, storage.client_info


def test_one_sign_in_lands_on_alternating_instances_and_completes(cluster: Cluster) -> None:
    storage = InMemoryTokenStorage()
    browser = HeadlessBrowser(username="erin")
    log = RequestLog()
    mark = cluster.front.mark()

    async def scenario() -> None:
        async with connected_client(cluster.mcp_url, oauth_provider(cluster.mcp_url, storage, browser), MODERN, log) as client:
            tools = await client.list_tools()
            assert "whoami" in [tool.name for tool in tools.tools]
            result = await client.call_tool("whoami", {})
            assert result.structured_content == {"subject": "fake:erin", "username": "erin"}

    anyio.run(scenario)

    entries = cluster.front.entries_since(mark)
    trace = describe(entries)
    # Successive requests went to alternating instances, and none was refused.
    assert [entry.instance for entry in entries] == [(entries[0].instance + n) % 2 for n in range(len(entries))], trace
    assert all(entry.status < 400 for entry in entries[1:]), trace
    register = only(entries, "POST", "/oauth/register")
    authorize = only(entries, "GET", "/oauth/authorize")
    consent = only(entries, "POST", "/oauth/consent")
    callback = only(entries, "GET", "/oauth/callback")
    token = only(entries, "POST", "/oauth/token")
    # Each step was served by another instance than the one that stored what it needs: the
    # client registered (authorize), the pending authorization with its CSRF token and browser
    # cookie (consent), the upstream transaction (callback), the authorization code (token).
    for made, used in ((register, authorize), (authorize, consent), (consent, callback), (callback, token)):
        assert made.instance != used.instance, trace
    assert (register.status, authorize.status, consent.status, callback.status, token.status) == (201, 200, 303, 302, 200)
    # And the flow completed: one authorization, tools listed and called on both instances.
    assert browser.invocations == 1
    assert storage.client_info is not None and storage.client_info.issuer == cluster.public_url
    mcp_answered = {entry.instance for entry in entries if entry.path == "/mcp" and entry.status == 200}
    assert mcp_answered == {0, 1}, trace


def test_tool_calls_and_refreshes_alternate_and_a_replay_at_the_other_instance_revokes_the_grant(cluster: Cluster) -> None:
    storage = InMemoryTokenStorage()
    browser = HeadlessBrowser(username="frank")
    marks: dict[str, int] = {}

    async def scenario() -> None:
        async with connected_client(cluster.mcp_url, oauth_provider(cluster.mcp_url, storage, browser), MODERN) as client:
            await client.call_tool("whoami", {})  # signs in
            marks["calls"] = cluster.front.mark()
            for pause in (0, 0, PAST_EXPIRY, 0, PAST_EXPIRY):
                # The SDK refreshes before a call once its access token has expired.
                await anyio.sleep(pause)
                result = await client.call_tool("whoami", {})
                assert result.structured_content == {"subject": "fake:frank", "username": "frank"}

    anyio.run(scenario)
    assert storage.client_info is not None and storage.tokens is not None
    client, current = storage.client_info, storage.tokens
    entries = cluster.front.entries_since(marks["calls"])
    trace = describe(entries)
    calls = [entry for entry in entries if entry.path == "/mcp"]
    refreshes = [entry for entry in entries if entry.grant_type == "refresh_token"]
    assert [entry.status for entry in calls] == [200] * 5, trace
    assert {entry.instance for entry in calls} == {0, 1}, trace
    # Two refreshes, one at each instance: the second rotated what the first issued elsewhere.
    assert [entry.status for entry in refreshes] == [200, 200], trace
    assert {entry.instance for entry in refreshes} == {0, 1}, trace
    assert browser.invocations == 1
    generations = [tokens.refresh_token for tokens in storage.token_history]
    assert len(generations) == 3 and len(set(generations)) == 3 and generations[-1] == current.refresh_token

    # The newest tokens work at both instances.
    instances = cluster.instances
    for instance in instances:
        assert_accepted(whoami_at(instance.base_url, current.access_token))
    # The first refresh token, presented again at the instance that did not rotate it, after its
    # successor was itself used (outside the grace rule): a replay, which revokes the grant.
    first_refresh_token = generations[0]
    assert first_refresh_token is not None and current.refresh_token is not None
    other = instances[1 - refreshes[0].instance]
    replay = refresh_at(other.base_url, client, first_refresh_token)
    assert replay.status_code == 400, replay.text
    assert replay.json()["error"] == "invalid_grant" and "revoked" in replay.json()["error_description"]
    # Revoked everywhere, at once: the newest access token and refresh token are refused by both.
    for instance in instances:
        assert_refused_as_revoked(whoami_at(instance.base_url, current.access_token))
        refused = refresh_at(instance.base_url, client, current.refresh_token)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text


@pytest.mark.parametrize("revoking", [0, 1])
def test_a_grant_revoked_through_one_instance_is_refused_by_the_other_at_the_next_call(
    cluster: Cluster, revoking: int
) -> None:
    storage, client = sign_in(cluster, f"heidi{revoking}")
    tokens = storage.tokens
    assert tokens is not None and tokens.refresh_token is not None
    through, other = cluster.instances[revoking], cluster.instances[1 - revoking]
    # The other instance serves the grant, right up to the revocation.
    assert_accepted(whoami_at(other.base_url, tokens.access_token))

    # RFC 7009 §2.1: revoking the refresh token invalidates the grant and its access tokens.
    assert revoke_at(through.base_url, client, tokens.refresh_token, "refresh_token").status_code == 200

    assert_refused_as_revoked(whoami_at(other.base_url, tokens.access_token))
    refused = refresh_at(other.base_url, client, tokens.refresh_token)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text


# ---------------------------------------------------------------------------------------------
# The upstream refresh lease across instances (Entra ID and Graph stand-in)

# The code exchange's upstream access token is fresh (more than REFRESH_MARGIN left) for this
# many seconds after sign-in, then due for refresh: for the server, expired.
WINDOW = 8
BURST = 8


def burst_of_mail_searches(cluster: Cluster, access_token: str, query: str) -> tuple[list[requests.Response], list[Forwarded]]:
    """BURST tools/call mail_search through the front at once; the replies and the front's log
    of them."""
    barrier = threading.Barrier(BURST)

    def one_call(number: int) -> requests.Response:
        barrier.wait(timeout=30)
        return modern_tool_call(cluster.public_url, access_token, "mail_search", {"query": query}, number)

    mark = cluster.front.mark()
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        replies = list(pool.map(one_call, range(1, BURST + 1)))
    return replies, cluster.front.entries_since(mark)


def assert_found_the_message(reply: requests.Response) -> None:
    assert reply.status_code == 200, reply.text
    result = json_rpc_result(reply)["result"]
    assert result["isError"] is False, result
    assert SUBJECT in "\n".join(block.get("text", "") for block in result["content"])


def test_a_burst_over_both_instances_after_the_upstream_token_expired_refreshes_it_once(
    tmp_path: Path, postgres_url: str, entra_standin: EntraStandIn  # noqa: F811
) -> None:
    entra = entra_standin
    entra.code_expires_in = REFRESH_MARGIN + WINDOW
    # A refresh takes as long as a real round trip, so that the burst's calls overlap it.
    entra.refresh_delay = 1.0
    with running_cluster(tmp_path, postgres_url, workers=2, env=entra.server_environment(toolsets="identity,mail")) as cluster:
        storage = InMemoryTokenStorage()
        browser = HeadlessBrowser(username=USERNAME, sign_in=sign_in_with_redirecting_idp)

        async def scenario() -> None:
            async with connected_client(cluster.mcp_url, oauth_provider(cluster.mcp_url, storage, browser), MODERN) as client:
                result = await client.call_tool("mail_search", {"query": "quarterly report"})
                assert result.is_error is False and SUBJECT in text_of(result), text_of(result)

        anyio.run(scenario)
        assert storage.tokens is not None and browser.invocations == 1
        assert [call.grant_type for call in entra.token_calls] == ["authorization_code"]
        bearer = storage.tokens.access_token

        # 1. The upstream token comes due (by the server's whole-second clock): the burst's
        # calls, spread over both instances, wait for one refresh and share its result.
        time.sleep(max(0.0, entra.code_exchanges[0] + WINDOW + 1.5 - time.time()))
        replies, entries = burst_of_mail_searches(cluster, bearer, "quarterly")
        for reply in replies:
            assert_found_the_message(reply)
        assert sorted(entry.instance for entry in entries) == [0] * (BURST // 2) + [1] * (BURST // 2), describe(entries)
        assert [call.status for call in entra.refresh_calls()] == [200]
        burst_graph = entra.graph_snapshot()[1:]
        assert len(burst_graph) == BURST and all(call.valid for call in burst_graph)
        assert len({call.token for call in burst_graph}) == 1  # the refreshed one, shared

        # 2. Graph declares that token expired before its time: every call of the next burst is
        # refused once, and the retries, on both instances, again make a single refresh.
        entra.expire_access_tokens()
        graph_before = len(entra.graph_snapshot())
        replies, entries = burst_of_mail_searches(cluster, bearer, "quarterly")
        for reply in replies:
            assert_found_the_message(reply)
        assert sorted(entry.instance for entry in entries) == [0] * (BURST // 2) + [1] * (BURST // 2), describe(entries)
        assert [call.status for call in entra.refresh_calls()] == [200, 200]
        retried = [call for call in entra.graph_snapshot()[graph_before:] if call.valid]
        assert len(retried) == BURST and len({call.token for call in retried}) == 1
        assert entra.violations == []


# ---------------------------------------------------------------------------------------------
# An instance killed mid-run

CLIENTS = 4
REFRESHES_PER_CHAIN = 4
# Bounds: requests per client, and seconds before and after the kill.
MAX_REQUESTS_PER_CLIENT = 400
PHASE_SECONDS = 20.0
# Tokens acknowledged (answered 200) before the kill, of which some by the instance killed,
# and after it.
ACKNOWLEDGED_BEFORE = 60
ACKNOWLEDGED_BY_VICTIM = 15
ACKNOWLEDGED_AFTER = 60
VICTIM = 1


@dataclass
class Chain:
    """The tokens of one grant a client was answered 200 for, and the instance that answered."""

    access_tokens: list[tuple[str, int]] = field(default_factory=list)
    refresh_token: str = ""
    refreshes: int = 0
    # Refreshes answered 200 after the same refresh token had been answered 502.
    recovered: int = 0
    _unanswered: bool = False


@dataclass
class LoadClient:
    """A registered client signing in (fake IdP) and refreshing through the front, recording
    what it was answered 200 for; a 502 (the instance died under the request) is retried with
    the same refresh token, as a client does when it got no answer."""

    oauth: OAuthClient
    chains: list[Chain] = field(default_factory=list)
    unanswered: int = 0
    # Anything else than a 200 or a 502: the test fails on it.
    problems: list[str] = field(default_factory=list)
    requests_sent: int = 0

    def acknowledged(self) -> list[tuple[str, int]]:
        return [token for chain in self.chains for token in chain.access_tokens]

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set() and self.requests_sent < MAX_REQUESTS_PER_CLIENT and not self.problems:
            chain = self.chains[-1] if self.chains else None
            if chain is None or chain.refreshes >= REFRESHES_PER_CHAIN:
                self._sign_in()
            else:
                self._refresh(chain)

    def _step(self, reply: Reply, expected: int, step: str) -> bool:
        self.requests_sent += 1
        if reply.status == expected:
            return True
        if reply.status == 502:
            self.unanswered += 1
        else:
            self.problems.append(f"{step}: {reply.status} {reply.text[:300]}")
        return False

    def _sign_in(self) -> None:
        """Authorize → consent → fake sign-in → callback → code exchange; any 502 starts over
        (a code whose exchange got no answer is never presented again: that would be a replay)."""
        http = self.oauth.http
        verifier, challenge = pkce_pair()
        page = self.oauth.authorize(challenge)
        if not self._step(page, 200, "authorize"):
            return
        to_idp = self.oauth.consent(page)
        if not self._step(to_idp, 303, "consent"):
            return
        sign_in_page = http.get(to_idp.location)
        if not self._step(sign_in_page, 200, "sign-in page"):
            return
        form = {**hidden_fields(sign_in_page.text), "action": "sign_in", "username": "load"}
        to_callback = http.post(urlsplit(to_idp.location).path, data=form)
        if not self._step(to_callback, 303, "sign-in"):
            return
        back = http.get(to_callback.location)
        if not self._step(back, 302, "callback"):
            return
        exchanged = self.oauth.exchange(back.query()["code"], verifier)
        if self._step(exchanged, 200, "code exchange"):
            self.chains.append(self._chain_from(Chain(), exchanged))

    def _refresh(self, chain: Chain) -> None:
        reply = self.oauth.refresh(chain.refresh_token)
        if self._step(reply, 200, "refresh"):
            self._chain_from(chain, reply)
            chain.refreshes += 1
            chain.recovered += chain._unanswered
            chain._unanswered = False
        else:
            chain._unanswered = reply.status == 502

    @staticmethod
    def _chain_from(chain: Chain, reply: Reply) -> Chain:
        body = reply.json()
        chain.access_tokens.append((body["access_token"], int(reply.headers[SERVED_BY])))
        chain.refresh_token = body["refresh_token"]
        return chain


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_killing_an_instance_mid_run_loses_no_acknowledged_token(tmp_path: Path, postgres_url: str) -> None:
    with running_cluster(tmp_path, postgres_url, workers=2) as cluster:
        clients = []
        for _ in range(CLIENTS):
            oauth = OAuthClient(HttpTransport(cluster.public_url))
            assert oauth.register(grant_types=["authorization_code", "refresh_token"]).status == 201
            clients.append(LoadClient(oauth))

        def acknowledged() -> list[tuple[str, int]]:
            return [token for client in clients for token in client.acknowledged()]

        stop = threading.Event()
        threads = [threading.Thread(target=client.run, args=(stop,), daemon=True) for client in clients]
        survivor, victim = cluster.instances[1 - VICTIM], cluster.instances[VICTIM]
        try:
            started = time.monotonic()
            for thread in threads:
                thread.start()
            wait_for(
                lambda: len(acknowledged()) >= ACKNOWLEDGED_BEFORE
                and sum(1 for _, by in acknowledged() if by == VICTIM) >= ACKNOWLEDGED_BY_VICTIM,
                PHASE_SECONDS,
            )
            # The victim's last refresh is acted on (rotated) but its answer is lost with it: the
            # client presents the refresh token again, which the grace rule accepts once.
            lost = cluster.front.lose_next_answer(VICTIM, "refresh_token")
            assert lost.wait(PHASE_SECONDS), "no refresh reached the victim"
            victim.kill()  # master and workers, mid-request for some of them
            killed = time.monotonic()
            after_kill = cluster.front.mark()
            before = len(acknowledged())
            wait_for(lambda: len(acknowledged()) >= before + ACKNOWLEDGED_AFTER, PHASE_SECONDS)
            finished = time.monotonic()
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)

        tokens = acknowledged()
        chains = [chain for client in clients for chain in client.chains]
        problems = [problem for client in clients for problem in client.problems]
        assert problems == []
        # The run had tokens from both instances before the kill, and went on without the victim.
        assert sum(1 for _, by in tokens if by == VICTIM) >= ACKNOWLEDGED_BY_VICTIM
        assert len(tokens) >= before + ACKNOWLEDGED_AFTER, (len(tokens), before)
        after = cluster.front.entries_since(after_kill)
        assert after and {entry.instance for entry in after} == {1 - VICTIM}, describe(after)
        assert victim.process.poll() is not None

        # Every access token answered 200 is accepted by the survivor ...
        with ThreadPoolExecutor(max_workers=4) as pool:
            replies = list(pool.map(lambda token: whoami_at(survivor.base_url, token[0]), tokens))
        refused = [(token, reply.status_code) for token, reply in zip(tokens, replies) if reply.status_code != 200]
        assert refused == [], refused[:5]
        for reply in replies:
            assert json_rpc_result(reply)["result"]["isError"] is False
        # ... and the newest refresh token of every chain still refreshes there.
        for client in clients:
            for chain in client.chains:
                rotated = client.oauth.http.post(
                    survivor.base_url + "/oauth/token",
                    data={"grant_type": "refresh_token", "refresh_token": chain.refresh_token, **client.oauth._auth()},
                )
                assert rotated.status == 200, rotated.text
        # The refresh whose answer was lost (the victim rotated the token) was presented again
        # and accepted: the grace rule's one retry.
        assert [entry.lost_status for entry in cluster.front.entries() if entry.lost_status] == [200]
        recovered = sum(chain.recovered for chain in chains)
        assert recovered >= 1
        print(
            f"killed after {killed - started:.1f}s of load, {finished - killed:.1f}s more; {len(tokens)} tokens "
            f"acknowledged over {len(chains)} grants, {sum(1 for _, by in tokens if by == VICTIM)} by the killed "
            f"instance; {sum(client.unanswered for client in clients)} requests answered 502; {recovered} refreshes retried"
        )
