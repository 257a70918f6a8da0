"""A local stand-in for Microsoft Entra ID (v2.0 endpoints) and Microsoft Graph, on loopback.

The real Entra adapter is pointed at it with ``AZURE_AUTHORITY_HOST=http://127.0.0.1:PORT`` and
the Graph mail tools with ``GRAPH_BASE_URL=http://127.0.0.1:PORT/v1.0``. It serves:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration``: Entra's discovery document (issuer
  ``http://127.0.0.1:PORT/{tenant}/v2.0``) and ``GET /{tenant}/discovery/v2.0/keys``: the JWKS;
- ``GET /{tenant}/oauth2/v2.0/authorize``: a person who is already signed in: redirects at once
  to ``redirect_uri`` with a code and the ``state``, remembering ``nonce`` and ``code_challenge``;
- ``POST /{tenant}/oauth2/v2.0/token``: ``authorization_code`` (client secret, or with
  ``client_certificate`` set a client assertion checked as Entra does: signature with the
  certificate's key, its x5t#S256 thumbprint, aud the token endpoint, iss = sub = the client id,
  times, a jti not seen before; PKCE S256,
  redirect URI, single-use code) and ``refresh_token`` (single-use, rotated; a reused one is
  ``invalid_grant``), answering with RSA-signed ID tokens with Entra's claims and opaque access
  tokens;
- ``GET /v1.0/me/messages``: a Graph message list for a currently valid access token, Graph's
  ``401 InvalidAuthenticationToken`` otherwise;
- ``POST /v1.0/me/checkMemberGroups``: which of the ``groupIds`` the person is a member of.

The person's ``groups`` and app ``roles`` go into the ID tokens it issues; with
``group_overage`` the ID token carries Entra's overage claims (``_claim_names``/``_claim_sources``)
instead, and membership is only known through Graph. Both can change between sign-in and a
refresh (``set_membership``), as when an administrator removes someone from a group.

Everything it sees is recorded (thread-safe) for the test to assert on; anything a real Entra
would refuse is answered with Entra's error *and* recorded in ``violations``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterator, Mapping
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from joserfc.jws import extract_compact

from .idp_fixtures import entra_discovery, entra_jwks, sign_id_token, signing_key
from .servers import LoopbackHttpServer

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "0f5d6a3c-2b1e-4c8d-9f7a-6e5d4c3b2a10"
CLIENT_SECRET = "Xy8Q~stand-in.secret_VALUE~0123456789"
USER_OID = "00000000-0000-0000-66f3-3332eca7ea81"
USERNAME = "adele.vance@contoso.onmicrosoft.com"
DISPLAY_NAME = "Adele Vance"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

MESSAGES: tuple[dict[str, Any], ...] = (
    {
        "@odata.etag": 'W/"CQAAABYAAAB2cHBfWLjDQqT"',
        "id": "AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OABGAAAAAAAiQ8W967B7TKBjgx9rVEURBwAiIsqMbYjsT5e-T7KzowPTAAAAAAEMAAAiIsqMbYjsT5e-T7KzowPTAAAYbvZDAAA=",
        "subject": "Quarterly report: Contoso Q3 numbers",
        "receivedDateTime": "2024-10-02T08:15:00Z",
        "bodyPreview": "Hi Adele, the Q3 numbers are attached. Revenue is up 12%.",
        "isRead": False,
        "hasAttachments": True,
        "from": {"emailAddress": {"name": "Megan Bowen", "address": "MeganB@contoso.onmicrosoft.com"}},
    },
    {
        "@odata.etag": 'W/"CQAAABYAAAB2cHBfWLjDQqU"',
        "id": "AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OABGAAAAAAAiQ8W967B7TKBjgx9rVEURBwAiIsqMbYjsT5e-T7KzowPTAAAAAAEMAAAiIsqMbYjsT5e-T7KzowPTAAAYbvZEAAA=",
        "subject": "Re: Quarterly report review meeting",
        "receivedDateTime": "2024-10-01T16:40:00Z",
        "bodyPreview": "Thursday at 10 works for me.",
        "isRead": True,
        "hasAttachments": False,
        "from": {"emailAddress": {"name": "Alex Wilber", "address": "AlexW@contoso.onmicrosoft.com"}},
    },
)
SUBJECT = MESSAGES[0]["subject"]


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


@dataclass
class PendingCode:
    client_id: str
    redirect_uri: str
    nonce: str | None
    code_challenge: str
    scope: str


@dataclass(frozen=True)
class TokenCall:
    grant_type: str
    status: int
    error: str | None
    at: float


@dataclass(frozen=True)
class GraphCall:
    path: str
    query: Mapping[str, list[str]]
    token: str | None
    valid: bool
    consistency_level: str | None


@dataclass
class EntraStandIn:
    """Entra ID + Graph on 127.0.0.1; ``start()``/``stop()`` (or the ``entra_standin`` fixture)."""

    tenant: str = TENANT_ID
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    # expires_in for the authorization code exchange and for refreshes (seconds).
    code_expires_in: int = 3600
    refresh_expires_in: int = 3600
    # Seconds a refresh takes, like a real round trip: long enough for concurrent requests to
    # overlap it, so a missing per-grant lock would show as a second refresh.
    refresh_delay: float = 0.0
    # Seconds Graph takes to answer, like an upstream API that has stalled: each tool call then
    # holds its server thread (until the Graph client's own timeout). stop() cuts stalls short.
    graph_delay: float = 0.0
    key_name: str = "entra-standin"
    # The certificate uploaded to the app registration: token requests must then authenticate
    # with a client assertion signed by its key (and may not send the client secret).
    client_certificate: x509.Certificate | None = None
    # The claims of every client assertion accepted.
    assertions: list[dict[str, Any]] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_calls: list[TokenCall] = field(default_factory=list)
    graph_calls: list[GraphCall] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # When each authorization code was redeemed (time.time()), in order.
    code_exchanges: list[float] = field(default_factory=list)
    # The person's group object ids and app role values (set_membership changes them).
    groups: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    # Too many groups for a token: overage claims in the ID token instead of groups.
    group_overage: bool = False
    # An outage: the token endpoint answers 503 temporarily_unavailable.
    token_outage: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._codes: dict[str, PendingCode] = {}
        self._refresh_tokens: dict[str, str] = {}  # live refresh token -> scope
        self._spent_refresh_tokens: set[str] = set()
        self._access_tokens: dict[str, float] = {}  # access token -> expires at (time.time())
        self._key = signing_key(self.key_name)
        self._http: LoopbackHttpServer | None = None
        self._stopping = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> EntraStandIn:
        stand_in = self

        class Handler(_Handler):
            owner = stand_in

        self._http = LoopbackHttpServer(Handler, name="entra-standin")
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._http is not None:
            self._http.stop()

    @property
    def port(self) -> int:
        assert self._http is not None, "not started"
        return self._http.port

    @property
    def authority_host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.authority_host}/{self.tenant}/v2.0"

    @property
    def graph_base_url(self) -> str:
        return f"{self.authority_host}/v1.0"

    @property
    def token_endpoint(self) -> str:
        return f"{self.authority_host}/{self.tenant}/oauth2/v2.0/token"

    def server_environment(self, toolsets: str = "identity,mail", *, certificate_path: str | None = None) -> dict[str, str]:
        """The variables that point the real Entra adapter and Graph tools here (with the
        certificate credential at ``certificate_path`` instead of the client secret)."""
        credential = {"AZURE_CLIENT_CERTIFICATE_PATH": certificate_path} if certificate_path else {"AZURE_CLIENT_SECRET": self.client_secret}
        return {
            "IDP_PROVIDER": "azure",
            "AZURE_TENANT_ID": self.tenant,
            "AZURE_CLIENT_ID": self.client_id,
            **credential,
            "AZURE_AUTHORITY_HOST": self.authority_host,
            "GRAPH_BASE_URL": self.graph_base_url,
            "TOOLSETS": toolsets,
        }

    # -- what the tests read -------------------------------------------------------------------

    def refresh_calls(self) -> list[TokenCall]:
        with self._lock:
            return [call for call in self.token_calls if call.grant_type == "refresh_token"]

    @property
    def refresh_count(self) -> int:
        return len(self.refresh_calls())

    def graph_snapshot(self) -> list[GraphCall]:
        with self._lock:
            return list(self.graph_calls)

    def set_membership(self, *, groups: list[str] | None = None, roles: list[str] | None = None) -> None:
        with self._lock:
            if groups is not None:
                self.groups = list(groups)
            if roles is not None:
                self.roles = list(roles)

    def expire_access_tokens(self) -> None:
        """Graph stops accepting every access token issued so far (revocation, early expiry)."""
        with self._lock:
            for token in self._access_tokens:
                self._access_tokens[token] = 0.0

    # -- Entra's answers -----------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        return entra_discovery(host=self.authority_host, tenant_path=self.tenant, issuer_tenant=self.tenant)

    def jwks(self) -> dict[str, Any]:
        return entra_jwks(self._key, host=self.authority_host)

    def authorize(self, params: Mapping[str, str]) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self.authorize_requests.append(dict(params))
        redirect_uri = params.get("redirect_uri", "")
        problems = []
        if "resource" in params:
            problems.append("AADSTS901002: The 'resource' request parameter is not supported.")
        if params.get("client_id") != self.client_id:
            problems.append("AADSTS700016: Application not found in the directory.")
        if params.get("response_type") != "code":
            problems.append("unsupported response_type")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            problems.append("PKCE S256 expected")
        if "openid" not in params.get("scope", "").split():
            problems.append("scope without openid")
        if not redirect_uri.startswith("http"):
            problems.append("AADSTS50011: The redirect URI specified in the request does not match.")
        if problems:
            self._violation(f"/authorize: {'; '.join(problems)}")
            return 400, {}, {"error": "invalid_request", "error_description": "; ".join(problems)}
        code = "0.AXEA" + secrets.token_urlsafe(32)
        with self._lock:
            self._codes[code] = PendingCode(
                client_id=params["client_id"],
                redirect_uri=redirect_uri,
                nonce=params.get("nonce"),
                code_challenge=params["code_challenge"],
                scope=params["scope"],
            )
        query = {"code": code, "session_state": str(uuid.uuid4())}
        if "state" in params:
            query["state"] = params["state"]
        separator = "&" if "?" in redirect_uri else "?"
        return 302, {"Location": redirect_uri + separator + urlencode(query)}, None

    def token(self, form: Mapping[str, str], authorization: str | None) -> tuple[int, Any]:
        grant_type = form.get("grant_type", "")
        status, body = self._token(grant_type, form, authorization)
        with self._lock:
            self.token_calls.append(TokenCall(grant_type, status, body.get("error"), time.time()))
        return status, body

    def _token(self, grant_type: str, form: Mapping[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        if self.token_outage:
            return 503, _error("temporarily_unavailable", "AADSTS90033", "A transient error has occurred. Please try again.")
        if "resource" in form:
            self._violation("token request carried resource")
            return 400, _error("invalid_request", "AADSTS901002", "The 'resource' request parameter is not supported.")
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            pair = base64.b64decode(authorization[6:]).decode()
            client_id, _, client_secret = (unquote(part) for part in pair.partition(":"))
        if client_id != self.client_id:
            return 400, _error("unauthorized_client", "AADSTS700016", "Application not found in the directory.")
        if self.client_certificate is not None:
            problem = self._assertion_problem(form)
            if problem is not None:
                self._violation(f"client assertion: {problem}")
                return 401, _error("invalid_client", "AADSTS700027", f"Client assertion failed validation: {problem}.")
        elif client_secret != self.client_secret:
            return 401, _error("invalid_client", "AADSTS7000215", "Invalid client secret provided.")
        if grant_type == "authorization_code":
            return self._redeem_code(form)
        if grant_type == "refresh_token":
            return self._refresh(form)
        return 400, _error("unsupported_grant_type", "AADSTS70003", "The app requested an unsupported grant type.")

    def _assertion_problem(self, form: Mapping[str, str]) -> str | None:
        """What Entra would refuse in the request's client assertion (certificate credentials),
        or None; the accepted assertion's claims are recorded."""
        assert self.client_certificate is not None
        if "client_secret" in form:
            return "a client_secret was sent as well"
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            return f"client_assertion_type is {form.get('client_assertion_type')!r}"
        assertion = form.get("client_assertion", "")
        public_key = self.client_certificate.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        try:
            header = dict(extract_compact(assertion.encode()).headers())
            claims = dict(jwt.decode(assertion, RSAKey.import_key(public_key), algorithms=["PS256", "RS256"]).claims)
        except (JoseError, ValueError) as exc:
            return f"not signed by the registered certificate ({type(exc).__name__})"
        der = self.client_certificate.public_bytes(serialization.Encoding.DER)
        thumbprints = {
            "x5t#S256": base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode(),
            "x5t": base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode(),  # noqa: S324
        }
        if not any(header.get(name) == value for name, value in thumbprints.items()):
            return "the header names no registered certificate thumbprint"
        now = time.time()
        with self._lock:
            seen = any(previous.get("jti") == claims.get("jti") for previous in self.assertions)
        if claims.get("aud") != self.token_endpoint:
            return f"aud {claims.get('aud')!r} is not the token endpoint"
        if not (claims.get("iss") == claims.get("sub") == self.client_id):
            return "iss and sub must be the client id"
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            return "expired"
        if not isinstance(claims.get("nbf"), int) or claims["nbf"] > now + 300:
            return "not yet valid"
        if not claims.get("jti") or seen:
            return "jti missing or replayed"
        with self._lock:
            self.assertions.append(claims)
        return None

    def _redeem_code(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            pending = self._codes.pop(form.get("code", ""), None)
        if pending is None:
            return 400, _error("invalid_grant", "AADSTS54005", "OAuth2 Authorization code was already redeemed.")
        if form.get("redirect_uri") != pending.redirect_uri:
            self._violation("code redeemed with another redirect_uri")
            return 400, _error("invalid_grant", "AADSTS50148", "The redirect_uri does not match the one of the authorization request.")
        verifier = form.get("code_verifier", "")
        if not verifier or s256(verifier) != pending.code_challenge:
            self._violation("PKCE verification failed")
            return 400, _error("invalid_grant", "AADSTS501481", "The Code_Verifier does not match the code_challenge.")
        with self._lock:
            self.code_exchanges.append(time.time())
        return 200, self._issue(pending.scope, nonce=pending.nonce, expires_in=self.code_expires_in)

    def _refresh(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        refresh_token = form.get("refresh_token", "")
        time.sleep(self.refresh_delay)
        with self._lock:
            scope = self._refresh_tokens.pop(refresh_token, None)
            reused = scope is None and refresh_token in self._spent_refresh_tokens
            if scope is not None:
                self._spent_refresh_tokens.add(refresh_token)
        if scope is None:
            if reused:
                self._violation("a spent refresh token was used again")
            return 400, _error("invalid_grant", "AADSTS70000", "The provided grant has expired or was already used.")
        return 200, self._issue(form.get("scope") or scope, nonce=None, expires_in=self.refresh_expires_in)

    def _issue(self, scope: str, *, nonce: str | None, expires_in: int) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": self.client_id,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "aio": "AXQAi/8WAAAA3s4F0xLq",
            "name": DISPLAY_NAME,
            "oid": USER_OID,
            "preferred_username": USERNAME,
            "rh": "0.AXEAv4j5cvGGr0GRqy180BHbR3bedjGmFK5Jl7xuumkUOR5xAAA.",
            "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
            "tid": self.tenant,
            "uti": secrets.token_urlsafe(16),
            "ver": "2.0",
        }
        if nonce is not None:
            claims["nonce"] = nonce
        with self._lock:
            groups, roles = list(self.groups), list(self.roles)
        if roles:
            claims["roles"] = roles
        if self.group_overage:
            claims["_claim_names"] = {"groups": "src1"}
            claims["_claim_sources"] = {
                "src1": {"endpoint": f"https://graph.windows.net/{self.tenant}/users/{USER_OID}/getMemberObjects"}
            }
        elif groups:
            claims["groups"] = groups
        access_token = "eyJ0eXAiOiJKV1QiLCJub25jZSI6I." + secrets.token_urlsafe(32)
        refresh_token = "1.AXEA" + secrets.token_urlsafe(48)
        with self._lock:
            self._access_tokens[access_token] = time.time() + expires_in
            self._refresh_tokens[refresh_token] = scope
        # Entra returns the API scopes it granted (not openid/profile/email/offline_access).
        granted = " ".join(s for s in scope.split() if "/" in s) or scope
        return {
            "token_type": "Bearer",
            "scope": granted,
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access_token,
            "refresh_token": refresh_token,
            "id_token": sign_id_token(claims, self._key),
        }

    # -- Graph ---------------------------------------------------------------------------------

    def graph(
        self, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        authorization = headers.get("Authorization") or ""
        token = authorization[7:] if authorization.startswith("Bearer ") else None
        with self._lock:
            valid = token is not None and self._access_tokens.get(token, 0.0) > time.time()
            self.graph_calls.append(GraphCall(path, dict(query), token, valid, headers.get("ConsistencyLevel")))
        if self.graph_delay > 0:
            self._stopping.wait(self.graph_delay)
        request_id = str(uuid.uuid4())
        reply_headers = {"request-id": request_id, "client-request-id": request_id}
        if not valid:
            code = "InvalidAuthenticationToken"
            message = "Access token is empty." if token is None else "Lifetime validation failed, the token is expired."
            return 401, reply_headers, _graph_error(code, message, request_id)
        if path == "/v1.0/me/checkMemberGroups" and body is not None:
            asked = body.get("groupIds") if isinstance(body, dict) else None
            if not isinstance(asked, list) or len(asked) > 20:
                return 400, reply_headers, _graph_error("Request_BadRequest", "Invalid groupIds.", request_id)
            with self._lock:
                members = [group for group in asked if group in self.groups]
            return 200, reply_headers, {
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(Edm.String)",
                "value": members,
            }
        if path != "/v1.0/me/messages" or body is not None:
            return 404, reply_headers, _graph_error("ResourceNotFound", "Resource not found.", request_id)
        top = int((query.get("$top") or ["10"])[0])
        return 200, reply_headers, {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('me')/messages",
            "value": list(MESSAGES[:top]),
        }

    def _violation(self, what: str) -> None:
        with self._lock:
            self.violations.append(what)


def _error(error: str, code: str, message: str) -> dict[str, Any]:
    return {
        "error": error,
        "error_description": f"{code}: {message} Trace ID: {uuid.uuid4()} Correlation ID: {uuid.uuid4()} Timestamp: 2024-10-02 08:15:00Z",
        "error_codes": [int(code.removeprefix("AADSTS"))],
        "timestamp": "2024-10-02 08:15:00Z",
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }


def _graph_error(code: str, message: str, request_id: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": "2024-10-02T08:15:00", "request-id": request_id, "client-request-id": request_id},
        }
    }


class _Handler(BaseHTTPRequestHandler):
    owner: EntraStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        tenant = self.owner.tenant
        if parts.path == f"/{tenant}/v2.0/.well-known/openid-configuration":
            self._send(200, self.owner.discovery())
        elif parts.path == f"/{tenant}/discovery/v2.0/keys":
            self._send(200, self.owner.jwks())
        elif parts.path == f"/{tenant}/oauth2/v2.0/authorize":
            status, headers, body = self.owner.authorize({k: v[0] for k, v in query.items()})
            self._send(status, body, headers)
        elif parts.path.startswith("/v1.0/"):
            status, headers, body = self.owner.graph(parts.path, query, self.headers)  # type: ignore[arg-type]
            self._send(status, body, headers)
        else:
            self._send(404, {"error": "not_found", "error_description": self.path})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        parts = urlsplit(self.path)
        if parts.path.startswith("/v1.0/"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            status, headers, answer = self.owner.graph(parts.path, parse_qs(parts.query), self.headers, body)  # type: ignore[arg-type]
            self._send(status, answer, headers)
            return
        if parts.path != f"/{self.owner.tenant}/oauth2/v2.0/token":
            self._send(404, {"error": "not_found"})
            return
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        status, body = self.owner.token(form, self.headers.get("Authorization"))
        self._send(status, body)


@pytest.fixture
def entra_standin() -> Iterator[EntraStandIn]:
    stand_in = EntraStandIn().start()
    try:
        yield stand_in
    finally:
        stand_in.stop()
