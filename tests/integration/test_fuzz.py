"""A seeded fuzz of every route through Flask's test client (issue 8: "zero 5xx, zero tracebacks"):
hostile methods, query strings, form and JSON bodies and headers at each route of ``url_map``,
and stateful sequences that reach deep into the flow with real clients, pending authorizations,
codes, verifiers, tokens and bearer calls, each mutated (RFC 6749 §3.1: empty, repeated, unknown
parameters; RFC 7591; RFC 7009; RFC 7662; MCP Streamable HTTP).

Every answer must be below 500, carry no traceback text, leave no ERROR record in the log, and
on a JSON endpoint be an RFC 6749 §5.2 error object or a JSON-RPC error. A failure lists each
kind of problem with reproducers; ``FUZZ_SEED`` and ``FUZZ_SCALE`` rerun it differently by hand.
"""

from __future__ import annotations

import base64
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from flask import Flask
from werkzeug.routing import Rule
from werkzeug.test import TestResponse

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .conftest import environment_for
from .fuzzing import (
    CONTENT_TYPES,
    REDIRECT_URI,
    URIS,
    FuzzRequest,
    Fuzzer,
    attach_error_log,
    blueprint_of,
    clean,
    detach_error_log,
    encode_pairs,
    form_request,
    json_body,
    json_request,
    junk_bytes,
    mcp_message,
    parameter_names,
    random_headers,
    random_pairs,
    displayed_metadata,
    registration_document,
    scaled,
    seeded,
    with_body_framing,
)
from .oauth_flow import hidden_fields, pkce_pair

pytestmark = pytest.mark.slow

# Every route the app serves (path, endpoint, methods besides HEAD and OPTIONS): the fuzz reads
# url_map itself, and this says that the reading found them all.
EXPECTED_ROUTES = {
    ("/", "home.home", ("GET",)),
    ("/.well-known/oauth-authorization-server", "metadata.authorization_server", ("GET",)),
    ("/.well-known/openid-configuration", "metadata.authorization_server", ("GET",)),
    ("/.well-known/oauth-protected-resource", "metadata.protected_resource", ("GET",)),
    ("/.well-known/oauth-protected-resource/mcp", "metadata.protected_resource", ("GET",)),
    ("/healthz", "metadata.health", ("GET",)),
    ("/readyz", "readyz", ("GET",)),
    ("/metrics", "metrics", ("GET",)),
    ("/oauth/authorize", "authorization.authorize", ("GET",)),
    ("/authorize", "authorization.authorize", ("GET",)),
    ("/oauth/consent", "authorization.consent", ("POST",)),
    ("/oauth/callback", "authorization.callback", ("GET",)),
    ("/oauth/azure_callback", "authorization.callback", ("GET",)),
    ("/fake-idp/authorize", "fake_idp.sign_in_page", ("GET",)),
    ("/fake-idp/authorize", "fake_idp.sign_in", ("POST",)),
    ("/oauth/register", "registration.register", ("POST",)),
    ("/register", "registration.register", ("POST",)),
    ("/oauth/register/<client_id>", "registration.configuration", ("DELETE", "GET", "PUT")),
    ("/connections", "connections.connections_page", ("GET",)),
    ("/connections/sign-in", "connections.sign_in", ("GET",)),
    ("/connections/revoke", "connections.revoke", ("POST",)),
    ("/connections/sign-out", "connections.sign_out", ("POST",)),
    ("/oauth/token", "token.token", ("POST",)),
    ("/token", "token.token", ("POST",)),
    ("/oauth/revoke", "token.revoke", ("POST",)),
    ("/revoke", "token.revoke", ("POST",)),
    ("/oauth/introspect", "token.introspect", ("POST",)),
    ("/introspect", "token.introspect", ("POST",)),
    ("/mcp", "mcp.mcp_endpoint", ("POST",)),
    ("/mcp", "mcp.method_not_allowed", ("DELETE", "GET", "PATCH", "PUT")),
}
# Requests per route path in the stateless part (25 paths); rounds per scenario are in SCENARIOS.
REQUESTS_PER_PATH = 300
SHARDS = 3
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "get", "CONNECT", "X" * 300)
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def fuzz_app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(load_settings(environment_for(tmp_path), dotenv_path=None))
    yield app
    app.extensions["container"].storage_admin().close()


@pytest.fixture
def fuzzer(fuzz_app: Flask) -> Iterator[Fuzzer]:
    log = attach_error_log()
    try:
        yield Fuzzer(fuzz_app, log)
    finally:
        detach_error_log(log)


def routes(app: Flask) -> set[tuple[str, str, tuple[str, ...]]]:
    return {
        (rule.rule, rule.endpoint, tuple(sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})))
        for rule in app.url_map.iter_rules()
    }


def paths(app: Flask) -> dict[str, list[Rule]]:
    by_path: dict[str, list[Rule]] = {}
    for rule in app.url_map.iter_rules():
        by_path.setdefault(rule.rule, []).append(rule)
    return dict(sorted(by_path.items()))


def test_the_fuzz_reaches_every_route(fuzz_app: Flask) -> None:
    assert routes(fuzz_app) == EXPECTED_ROUTES


# -- stateless: every route, hostile everything -------------------------------------------------


def concrete_path(rng: random.Random, path: str) -> str:
    """The route's path, with its variable parts (``<path:filename>``) filled with junk."""
    return re.sub(
        r"<[^>]+>",
        lambda _: rng.choice(("x.css", "../../etc/passwd", "a/b", ".", "%00", "a" * 300))
        if rng.random() < 0.6
        else junk_bytes(rng).replace(b"/", b"").decode("latin-1") or "x",
        path,
    )


def route_request(rng: random.Random, path: str, rules: list[Rule]) -> FuzzRequest:
    allowed = sorted({method for rule in rules for method in rule.methods or ()} - {"HEAD", "OPTIONS"})
    method = rng.choice(allowed) if rng.random() < 0.75 else rng.choice(METHODS)
    endpoints = [rule.endpoint for rule in rules if method in (rule.methods or ())] or [rules[0].endpoint]
    endpoint = endpoints[0]
    names = parameter_names(endpoint) or parameter_names(rules[-1].endpoint)
    blueprint = blueprint_of(endpoint)
    request = FuzzRequest(method, concrete_path(rng, path), headers=random_headers(rng, mcp=blueprint == "mcp"))
    if method in ("GET", "HEAD") or rng.random() < 0.2:
        request.query = encode_pairs(rng, random_pairs(rng, names))
    if method not in ("GET", "HEAD") or rng.random() < 0.1:
        if blueprint == "registration" or (blueprint == "mcp" and rng.random() < 0.9):
            document = registration_document(rng) if blueprint == "registration" else mcp_message(rng)
            request.body = json_body(rng, document)
            content_type = "application/json" if rng.random() < 0.8 else rng.choice(CONTENT_TYPES)
        else:
            request.body = encode_pairs(rng, random_pairs(rng, names))
            content_type = FORM if rng.random() < 0.75 else rng.choice(CONTENT_TYPES)
        if rng.random() < 0.95:
            request.headers.append(("Content-Type", content_type))
    return with_body_framing(rng, request)


@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_route_survives_hostile_requests(fuzzer: Fuzzer, shard: int) -> None:
    all_paths = paths(fuzzer.app)
    mine = list(all_paths.items())[shard::SHARDS]
    assert mine
    for path, rules in mine:
        rng = seeded("route", path)
        for _ in range(scaled(REQUESTS_PER_PATH)):
            fuzzer.send(clean(rng, lambda r: route_request(r, path, rules)))
    fuzzer.assert_no_findings()


# -- stateful: real clients, real flows, mutated steps -----------------------------------------


@dataclass
class RealClient:
    client_id: str
    secret: str | None
    method: str

    def credentials(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(body pairs, headers) that authenticate this client the way it registered."""
        if self.method == "client_secret_basic":
            basic = base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
            return [], [("Authorization", f"Basic {basic}")]
        pairs = [("client_id", self.client_id)]
        if self.secret:
            pairs.append(("client_secret", self.secret))
        return pairs, []


@dataclass
class Consent:
    client: RealClient
    pending_id: str
    csrf_token: str
    cookie: str
    verifier: str


@dataclass
class SignIn:
    consent: Consent
    state: str
    nonce: str
    code_challenge: str


@dataclass
class Callback:
    consent: Consent
    code: str
    state: str


@dataclass
class Flow:
    """The real flow, step by step (each step is checked like any fuzzed request), and a pool of
    the real values it produced, to be sent where they do not belong."""

    fuzzer: Fuzzer
    rng: random.Random
    clients: list[RealClient] = field(default_factory=list)
    pool: dict[str, list[str]] = field(default_factory=dict)
    access_tokens: list[str] = field(default_factory=list)
    refresh_tokens: list[str] = field(default_factory=list)

    def remember(self, kind: str, value: str) -> str:
        values = self.pool.setdefault(kind, [])
        values.append(value)
        del values[:-20]
        return value

    def real_value(self) -> str:
        kind = self.rng.choice(sorted(self.pool))
        return self.rng.choice(self.pool[kind])

    def send(self, request: FuzzRequest) -> TestResponse:
        return self.fuzzer.send(request)

    def expect(self, request: FuzzRequest, status: int) -> TestResponse:
        response = self.send(request)
        assert response.status_code == status, (request.describe(), response.status_code, response.get_data(as_text=True)[:300])
        return response

    def register(self, method: str) -> RealClient:
        document = {"client_name": "Fuzz", "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": method}
        registered = self.expect(json_request("/oauth/register", document), 201).get_json()
        client = RealClient(registered["client_id"], registered.get("client_secret"), method)
        self.clients.append(client)
        self.remember("client_id", client.client_id)
        if client.secret:
            self.remember("client_secret", client.secret)
        return client

    def client(self) -> RealClient:
        return self.rng.choice(self.clients)

    def authorization_params(self, client: RealClient, challenge: str) -> dict[str, str]:
        return {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": REDIRECT_URI,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s-" + str(self.rng.randrange(10**6)),
            "scope": "User.Read",
        }

    def authorize(self, client: RealClient, cookie: str | None = None) -> Consent:
        verifier, challenge = pkce_pair()
        self.remember("code_verifier", verifier)
        self.remember("code_challenge", challenge)
        headers = [("Cookie", cookie)] if cookie else []
        page = self.expect(form_request("GET", "/oauth/authorize", self.authorization_params(client, challenge).items(), headers), 200)
        fields = hidden_fields(page.get_data(as_text=True))
        set_cookie = page.headers.get("Set-Cookie", "")
        cookie = set_cookie.split(";", 1)[0]
        self.remember("cookie", cookie.partition("=")[2])
        self.remember("pending_id", fields["pending_id"])
        self.remember("csrf_token", fields["csrf_token"])
        return Consent(client, fields["pending_id"], fields["csrf_token"], cookie, verifier)

    def consent_pairs(self, consent: Consent, decision: str = "approve") -> dict[str, str]:
        return {"pending_id": consent.pending_id, "csrf_token": consent.csrf_token, "decision": decision}

    def approve(self, consent: Consent) -> SignIn:
        to_idp = self.expect(form_request("POST", "/oauth/consent", self.consent_pairs(consent).items(), [("Cookie", consent.cookie)]), 303)
        query = {k: v[0] for k, v in parse_qs(urlsplit(to_idp.headers["Location"]).query).items()}
        for kind in ("state", "nonce", "code_challenge"):
            self.remember("upstream_" + kind, query[kind])
        return SignIn(consent, query["state"], query["nonce"], query["code_challenge"])

    def sign_in_pairs(self, sign_in: SignIn) -> dict[str, str]:
        return {
            "state": sign_in.state, "nonce": sign_in.nonce, "code_challenge": sign_in.code_challenge,
            "action": "sign_in", "username": "alice", "email": "alice@example.com", "name": "Alice",
        }

    def sign_in(self, sign_in: SignIn) -> Callback:
        back = self.expect(form_request("POST", "/fake-idp/authorize", self.sign_in_pairs(sign_in).items()), 303)
        query = {k: v[0] for k, v in parse_qs(urlsplit(back.headers["Location"]).query).items()}
        self.remember("upstream_code", query["code"])
        return Callback(sign_in.consent, query["code"], query["state"])

    def callback(self, callback: Callback) -> str:
        back = self.expect(
            form_request("GET", "/oauth/callback", {"code": callback.code, "state": callback.state}.items(), [("Cookie", callback.consent.cookie)]),
            302,
        )
        code = parse_qs(urlsplit(back.headers["Location"]).query)["code"][0]
        return self.remember("code", code)

    def token_pairs(self, client: RealClient, code: str, verifier: str) -> dict[str, str]:
        return {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier}

    def token_request(self, client: RealClient, pairs: list[tuple[bytes, bytes]], *, tidy: bool) -> FuzzRequest:
        auth_pairs, headers = client.credentials()
        body = encode_pairs(self.rng, [(k.encode(), v.encode()) for k, v in auth_pairs] + pairs, tidy=tidy)
        return FuzzRequest("POST", "/oauth/token", body=body, headers=[("Content-Type", FORM), *headers])

    def exchange(self, consent: Consent, code: str) -> dict[str, Any]:
        pairs = [(k.encode(), v.encode()) for k, v in self.token_pairs(consent.client, code, consent.verifier).items()]
        tokens: dict[str, Any] = self.expect(self.token_request(consent.client, pairs, tidy=True), 200).get_json()
        self.access_tokens.append(self.remember("access_token", tokens["access_token"]))
        self.refresh_tokens.append(self.remember("refresh_token", tokens["refresh_token"]))
        return tokens

    def login(self) -> tuple[Consent, str]:
        consent = self.authorize(self.client())
        return consent, self.callback(self.sign_in(self.approve(consent)))

    # -- mutations --

    def mutate(self, params: dict[str, str], names: list[str]) -> list[tuple[bytes, bytes]]:
        """The valid parameters with one to three things wrong."""
        rng = self.rng
        pairs = [(k.encode(), v.encode()) for k, v in params.items()]
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(9)
            index = rng.randrange(len(pairs)) if pairs else None
            if op == 0 and index is not None:
                del pairs[index]
            elif op == 1 and index is not None:
                pairs[index] = (pairs[index][0], b"")
            elif op == 2 and index is not None:
                pairs[index] = (pairs[index][0], junk_bytes(rng))
            elif op == 3 and index is not None and self.pool:
                pairs[index] = (pairs[index][0], self.real_value().encode())
            elif op == 4 and index is not None:
                pairs.append((pairs[index][0], rng.choice((pairs[index][1], b"", junk_bytes(rng)))))
            elif op == 6 and index is not None and b"://" in pairs[index][1]:
                # A URI the parsers disagree on, where a URI belongs.
                pairs[index] = (pairs[index][0], rng.choice(URIS))
            elif op == 5 and index is not None:
                name, value = pairs[index]
                pairs[index] = (name, rng.choice((value + b"x", value[:-1], value.upper(), b" " + value, value + b"\x00")))
            else:
                pairs += random_pairs(rng, names, count=1)
        rng.shuffle(pairs)
        return pairs

    def encoded(self, pairs: list[tuple[bytes, bytes]]) -> bytes:
        return encode_pairs(self.rng, pairs, tidy=self.rng.random() < 0.6)

    def cookie_header(self, cookie: str) -> list[tuple[str, str]]:
        roll = self.rng.random()
        if roll < 0.6:
            return [("Cookie", cookie)]
        if roll < 0.75:
            return []
        if roll < 0.9 and "cookie" in self.pool:
            return [("Cookie", "mob_browser=" + self.rng.choice(self.pool["cookie"]))]
        return random_headers(self.rng)


def authorize_scenario(flow: Flow) -> None:
    client = flow.client()
    verifier, challenge = pkce_pair()
    params = flow.authorization_params(client, challenge)
    if flow.rng.random() < 0.25:
        # Only the URI is wrong, so the request reaches the redirect URI and resource checks.
        params[flow.rng.choice(("redirect_uri", "resource"))] = flow.rng.choice(URIS).decode("utf-8", "surrogateescape")
        pairs = [(k.encode(), v.encode("utf-8", "surrogateescape")) for k, v in params.items()]
    else:
        pairs = flow.mutate(params, parameter_names("authorization.authorize"))
    headers = flow.cookie_header("mob_browser=" + flow.rng.choice(flow.pool.get("cookie", ["x"])))
    flow.send(FuzzRequest("GET", flow.rng.choice(("/oauth/authorize", "/authorize")), query=flow.encoded(pairs), headers=headers))


def consent_scenario(flow: Flow) -> None:
    consent = flow.authorize(flow.client())
    params = flow.consent_pairs(consent, flow.rng.choice(("approve", "deny")))
    pairs = flow.mutate(params, parameter_names("authorization.consent"))
    flow.send(FuzzRequest("POST", "/oauth/consent", body=flow.encoded(pairs), headers=[("Content-Type", FORM), *flow.cookie_header(consent.cookie)]))
    if flow.rng.random() < 0.3:
        # The genuine answer after the mutated one (and sometimes twice).
        for _ in range(flow.rng.randint(1, 2)):
            flow.send(form_request("POST", "/oauth/consent", params.items(), [("Cookie", consent.cookie)]))


def sign_in_scenario(flow: Flow) -> None:
    sign_in = flow.approve(flow.authorize(flow.client()))
    names = parameter_names("fake_idp.sign_in")
    if flow.rng.random() < 0.4:
        params = {"state": sign_in.state, "nonce": sign_in.nonce, "code_challenge": sign_in.code_challenge}
        flow.send(FuzzRequest("GET", "/fake-idp/authorize", query=flow.encoded(flow.mutate(params, names))))
    else:
        params = flow.sign_in_pairs(sign_in)
        params["action"] = flow.rng.choice(("sign_in", "cancel"))
        flow.send(FuzzRequest("POST", "/fake-idp/authorize", body=flow.encoded(flow.mutate(params, names)), headers=[("Content-Type", FORM)]))


def callback_scenario(flow: Flow) -> None:
    callback = flow.sign_in(flow.approve(flow.authorize(flow.client())))
    params = {"code": callback.code, "state": callback.state}
    if flow.rng.random() < 0.2:
        params["error"] = flow.rng.choice(("access_denied", "temporarily_unavailable", "server_error", "invalid_scope", "x y", ""))
        params["error_description"] = junk_bytes(flow.rng).decode("utf-8", "replace")
    pairs = flow.mutate(params, parameter_names("authorization.callback"))
    path = flow.rng.choice(("/oauth/callback", "/oauth/azure_callback"))
    flow.send(FuzzRequest("GET", path, query=flow.encoded(pairs), headers=flow.cookie_header(callback.consent.cookie)))
    if flow.rng.random() < 0.3:
        flow.send(form_request("GET", path, {"code": callback.code, "state": callback.state}.items(), [("Cookie", callback.consent.cookie)]))


def token_code_scenario(flow: Flow) -> None:
    consent, code = flow.login()
    client = consent.client if flow.rng.random() < 0.8 else flow.client()
    params = flow.token_pairs(client, code, consent.verifier)
    if flow.rng.random() < 0.2:
        params["resource"] = flow.rng.choice(("http://127.0.0.1:8000/mcp", "http://127.0.0.1:8000/mcp/", "https://other.example/mcp", ""))
    pairs = flow.mutate(params, parameter_names("token.token"))
    request = flow.token_request(client, pairs, tidy=flow.rng.random() < 0.6)
    if flow.rng.random() < 0.2:
        request.headers = [h for h in request.headers if h[0] != "Authorization"] + random_headers(flow.rng, basics=[(c.client_id, c.secret or "") for c in flow.clients])
    flow.send(with_body_framing(flow.rng, request))
    if flow.rng.random() < 0.5:
        # The genuine exchange afterwards: it may succeed once, or be refused as a replay.
        valid = [(k.encode(), v.encode()) for k, v in flow.token_pairs(consent.client, code, consent.verifier).items()]
        response = flow.send(flow.token_request(consent.client, valid, tidy=True))
        if response.status_code == 200:
            tokens = response.get_json()
            flow.access_tokens.append(flow.remember("access_token", tokens["access_token"]))
            flow.refresh_tokens.append(flow.remember("refresh_token", tokens["refresh_token"]))


def refresh_scenario(flow: Flow) -> None:
    if not flow.refresh_tokens or flow.rng.random() < 0.15:
        consent, code = flow.login()
        flow.exchange(consent, code)
    refresh_token = flow.rng.choice(flow.refresh_tokens)
    client = flow.client()
    params = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if flow.rng.random() < 0.3:
        params["scope"] = flow.rng.choice(("User.Read", "openid", "", "User.Read User.Read", "Mail.Read"))
    pairs = flow.mutate(params, parameter_names("token.token")) if flow.rng.random() < 0.7 else [(k.encode(), v.encode()) for k, v in params.items()]
    response = flow.send(flow.token_request(client, pairs, tidy=flow.rng.random() < 0.6))
    if response.status_code == 200:
        tokens = response.get_json()
        flow.access_tokens.append(flow.remember("access_token", tokens["access_token"]))
        flow.refresh_tokens.append(flow.remember("refresh_token", tokens["refresh_token"]))


def revoke_and_introspect_scenario(flow: Flow) -> None:
    if not flow.access_tokens or flow.rng.random() < 0.1:
        consent, code = flow.login()
        flow.exchange(consent, code)
    client = flow.client()
    token = flow.rng.choice(flow.access_tokens + flow.refresh_tokens)
    params = {"token": token}
    if flow.rng.random() < 0.5:
        params["token_type_hint"] = flow.rng.choice(("access_token", "refresh_token", "authorization_code", "", "x"))
    pairs = flow.mutate(params, parameter_names("token.revoke")) if flow.rng.random() < 0.7 else [(k.encode(), v.encode()) for k, v in params.items()]
    auth_pairs, headers = client.credentials()
    body = flow.encoded([(k.encode(), v.encode()) for k, v in auth_pairs] + pairs)
    path = flow.rng.choice(("/oauth/revoke", "/revoke", "/oauth/introspect", "/introspect"))
    flow.send(with_body_framing(flow.rng, FuzzRequest("POST", path, body=body, headers=[("Content-Type", FORM), *headers])))


def mcp_scenario(flow: Flow) -> None:
    if not flow.access_tokens or flow.rng.random() < 0.05:
        consent, code = flow.login()
        flow.exchange(consent, code)
    token = flow.rng.choice(flow.access_tokens)
    headers = [("Authorization", f"Bearer {token}")] if flow.rng.random() < 0.9 else []
    headers += random_headers(flow.rng, mcp=True, bearers=flow.access_tokens)
    if flow.rng.random() < 0.9:
        headers.append(("Content-Type", "application/json" if flow.rng.random() < 0.8 else flow.rng.choice(CONTENT_TYPES)))
    request = FuzzRequest("POST", "/mcp", body=json_body(flow.rng, mcp_message(flow.rng)), headers=headers)
    if flow.rng.random() < 0.05:
        request.method = flow.rng.choice(METHODS)
    flow.send(with_body_framing(flow.rng, request))


def register_then_authorize_scenario(flow: Flow) -> None:
    """Metadata the registration accepted must not break the pages that show it."""
    document = displayed_metadata(flow.rng) if flow.rng.random() < 0.7 else registration_document(flow.rng)
    request = FuzzRequest("POST", flow.rng.choice(("/oauth/register", "/register")), body=json_body(flow.rng, document), headers=[("Content-Type", "application/json")])
    response = flow.send(request)
    if response.status_code != 201:
        return
    registered = response.get_json()
    redirect_uris = registered.get("redirect_uris") or [""]
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code", "client_id": registered["client_id"], "redirect_uri": redirect_uris[0],
        "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
    }
    # A surrogate in a registered URI is sent as its (invalid) UTF-8 bytes, percent-encoded.
    query = "&".join(f"{k}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}" for k, v in params.items())
    flow.fuzzer.send(FuzzRequest("GET", "/oauth/authorize", query=query.encode()), after=request)


SCENARIOS: dict[str, tuple[Callable[[Flow], None], int]] = {
    "authorize": (authorize_scenario, 400),
    "consent": (consent_scenario, 250),
    "sign_in": (sign_in_scenario, 150),
    "callback": (callback_scenario, 120),
    "token_code": (token_code_scenario, 120),
    "refresh": (refresh_scenario, 400),
    "revoke_and_introspect": (revoke_and_introspect_scenario, 400),
    "mcp": (mcp_scenario, 800),
    "register_then_authorize": (register_then_authorize_scenario, 300),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_real_flows_survive_mutated_steps(fuzzer: Fuzzer, scenario: str) -> None:
    run, rounds = SCENARIOS[scenario]
    flow = Flow(fuzzer, seeded("scenario", scenario))
    for method in ("none", "client_secret_post", "client_secret_basic"):
        flow.register(method)
    for _ in range(scaled(rounds)):
        before = fuzzer.sent
        run(flow)
        assert fuzzer.sent > before
    fuzzer.assert_no_findings()
