"""Token endpoint (RFC 6749 §3.2, §4.1.3, §6), revocation (RFC 7009 §2) and introspection
(RFC 7662 §2)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from ...domain.errors import InvalidClient, UnsupportedGrantType
from ...domain.model import Client
from ...domain.services.tokens import ClientAuthenticator
from .errors import NO_STORE_HEADERS, json_response
from .ratelimit import RateLimits, rate_limits, refresh_limit_key
from .schemas import TokenReferenceSchema, TokenRequestSchema, client_credentials, form_params, parse
from .services import services

bp = Blueprint("token", __name__)


def _authenticated(form: dict[str, Any], authenticator: ClientAuthenticator, limits: RateLimits) -> Client:
    credentials = client_credentials(request.headers.get("Authorization"), form)
    # Only a presented secret is a guess. A public client identifies itself without one: were
    # those requests checked or counted, anyone could lock out a public client id that every
    # Claude user may share, by sending it a few bogus secrets.
    guess = bool(credentials.client_secret)
    if guess:
        # A client id that failed too often is refused before its secret is looked at.
        limits.check_client_authentication(credentials.client_id)
    try:
        return authenticator.authenticate(credentials)
    except InvalidClient:
        if guess:
            limits.client_authentication_failed(credentials.client_id)
        raise


@bp.post("/oauth/token")
@bp.post("/token")
def token() -> Response:
    form = parse(TokenRequestSchema, form_params())
    grant_type = form["grant_type"]
    if grant_type not in ("authorization_code", "refresh_token"):
        raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported")
    limits = rate_limits()
    app_services = services()
    tokens = app_services.token_service()
    client = _authenticated(form, app_services.client_authenticator(), limits)
    if grant_type == "authorization_code":
        limits.charge(limits.code_exchange, client.client_id, "too many code exchanges by this client; try again later")
        issued = tokens.exchange_code(
            client,
            code=form.get("code"),
            redirect_uri=form.get("redirect_uri"),
            code_verifier=form.get("code_verifier"),
            resource=form.get("resource"),
        )
    else:
        if form.get("refresh_token"):
            limits.charge(limits.refresh, refresh_limit_key(form["refresh_token"], app_services.hasher()), "too many refreshes of this grant; try again later")
        issued = tokens.refresh(
            client,
            refresh_token=form.get("refresh_token"),
            scope=form.get("scope"),
            resource=form.get("resource"),
        )
    body: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": issued.token_type,
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    if issued.refresh_token is not None:
        body["refresh_token"] = issued.refresh_token
    return json_response(body, no_store=True)


@bp.post("/oauth/revoke")
@bp.post("/revoke")
def revoke() -> Response:
    form = parse(TokenReferenceSchema, form_params())
    limits = rate_limits()
    app_services = services()
    client = _authenticated(form, app_services.client_authenticator(), limits)
    limits.charge(limits.revoke, client.client_id, "too many revocation requests by this client; try again later")
    app_services.token_service().revoke(client, token=form["token"], token_type_hint=form.get("token_type_hint"))
    # RFC 7009 §2.2: 200 whether or not the token was valid.
    return Response(status=200, headers=NO_STORE_HEADERS)


@bp.post("/oauth/introspect")
@bp.post("/introspect")
def introspect() -> Response:
    form = parse(TokenReferenceSchema, form_params())
    limits = rate_limits()
    app_services = services()
    client = _authenticated(form, app_services.client_authenticator(), limits)
    limits.charge(limits.introspect, client.client_id, "too many introspection requests by this client; try again later")
    result = app_services.token_service().introspect(client, token=form["token"], token_type_hint=form.get("token_type_hint"))
    return json_response(result.as_dict(), no_store=True)
