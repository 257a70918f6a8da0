"""A scripted OAuth client and browser for the tests: registration, consent, fake sign-in,
callback and token requests, over either Flask's test client or real HTTP (requests)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol
from urllib.parse import parse_qs, urlsplit

REDIRECT_URI = "http://127.0.0.1:9999/callback"
HIDDEN_INPUT = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        import json

        return json.loads(self.text)

    @property
    def location(self) -> str:
        return self.headers["Location"]

    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).query).items()}


class Transport(Protocol):
    def get(self, url: str) -> Reply: ...

    def post(self, url: str, data: Mapping[str, str] | None = None, json: Any = None, headers: Mapping[str, str] | None = None) -> Reply: ...


class FlaskTransport:
    """Flask's test client: paths only, cookies kept, redirects not followed."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @staticmethod
    def _path(url: str) -> str:
        parts = urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def get(self, url: str) -> Reply:
        r = self.client.get(self._path(url))
        return Reply(r.status_code, r.headers, r.get_data(as_text=True))

    def post(self, url: str, data: Mapping[str, str] | None = None, json: Any = None, headers: Mapping[str, str] | None = None) -> Reply:
        r = self.client.post(self._path(url), data=data, json=json, headers=dict(headers or {}))
        return Reply(r.status_code, r.headers, r.get_data(as_text=True))


class HttpTransport:
    """Real HTTP with requests: absolute URLs, a cookie jar, redirects not followed."""

    def __init__(self, base_url: str) -> None:
        import requests

        self.base_url = base_url
        self.session = requests.Session()

    def _url(self, url: str) -> str:
        return url if url.startswith("http") else self.base_url + url

    def get(self, url: str) -> Reply:
        r = self.session.get(self._url(url), allow_redirects=False, timeout=30)
        return Reply(r.status_code, r.headers, r.text)

    def post(self, url: str, data: Mapping[str, str] | None = None, json: Any = None, headers: Mapping[str, str] | None = None) -> Reply:
        r = self.session.post(self._url(url), data=data, json=json, headers=dict(headers or {}), allow_redirects=False, timeout=30)
        return Reply(r.status_code, r.headers, r.text)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def hidden_fields(html: str) -> dict[str, str]:
    return dict(HIDDEN_INPUT.findall(html))


@dataclass
class OAuthClient:
    """One registered client driving the flow like an MCP client plus its user's browser."""

    http: Transport
    client_id: str = ""
    client_secret: str | None = None
    redirect_uri: str = REDIRECT_URI
    registration: dict[str, Any] = field(default_factory=dict)

    def register(self, **metadata: Any) -> Reply:
        body = {"client_name": "Test Client", "redirect_uris": [self.redirect_uri], "token_endpoint_auth_method": "client_secret_post"}
        body.update(metadata)
        reply = self.http.post("/oauth/register", json=body)
        if reply.status == 201:
            self.registration = reply.json()
            self.client_id = self.registration["client_id"]
            self.client_secret = self.registration.get("client_secret")
        return reply

    def authorize(self, challenge: str, state: str = "client-state", **extra: str) -> Reply:
        from urllib.parse import urlencode

        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state,
        }
        params.update(extra)
        return self.http.get("/oauth/authorize?" + urlencode({k: v for k, v in params.items() if v is not None}))

    def consent(self, consent_page: Reply, decision: str = "approve", **override: str) -> Reply:
        form = hidden_fields(consent_page.text)
        form["decision"] = decision
        form.update(override)
        return self.http.post("/oauth/consent", data=form)

    def fake_sign_in(self, idp_redirect: Reply, username: str = "alice", **details: str) -> Reply:
        page = self.http.get(idp_redirect.location)
        assert page.status == 200, page.text
        form = hidden_fields(page.text)
        form.update({"action": "sign_in", "username": username, **details})
        path = urlsplit(idp_redirect.location).path
        return self.http.post(path, data=form)

    def login(self, username: str = "alice", state: str = "client-state", **extra: str) -> tuple[str, str]:
        """Authorize → consent → fake sign-in → callback; return (code, verifier)."""
        verifier, challenge = pkce_pair()
        page = self.authorize(challenge, state=state, **extra)
        assert page.status == 200, page.text
        to_idp = self.consent(page)
        assert to_idp.status == 303, to_idp.text
        to_callback = self.fake_sign_in(to_idp, username)
        assert to_callback.status == 303, to_callback.text
        back = self.http.get(to_callback.location)
        assert back.status == 302, back.text
        query = back.query()
        assert query["state"] == state
        return query["code"], verifier

    def _auth(self) -> dict[str, str]:
        data = {"client_id": self.client_id}
        if self.client_secret:
            data["client_secret"] = self.client_secret
        return data

    def token(self, **params: str) -> Reply:
        return self.http.post("/oauth/token", data={**self._auth(), **params})

    def exchange(self, code: str, verifier: str, **extra: str) -> Reply:
        return self.token(grant_type="authorization_code", code=code, redirect_uri=self.redirect_uri, code_verifier=verifier, **extra)

    def refresh(self, refresh_token: str, **extra: str) -> Reply:
        return self.token(grant_type="refresh_token", refresh_token=refresh_token, **extra)

    def introspect(self, token: str) -> dict[str, Any]:
        reply = self.http.post("/oauth/introspect", data={**self._auth(), "token": token})
        assert reply.status == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def revoke(self, token: str) -> Reply:
        return self.http.post("/oauth/revoke", data={**self._auth(), "token": token})
