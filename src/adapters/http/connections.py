"""``/connections``: a person signs in through the configured identity provider and sees, and can
revoke, their own connections (grants), as Keycloak's account console does.

Two signed cookies carry the state (nothing is stored server-side for the page): the sign-in
under way (state, nonce and PKCE verifier, ten minutes) and, after it, who signed in with a CSRF
token for the revoke forms (thirty minutes). Both are HttpOnly, SameSite=Lax and, over https,
``__Host-`` cookies. The identity provider sends the browser back to the one registered callback
(``/oauth/callback``), which hands the request here when its state is this browser's sign-in."""

from __future__ import annotations

import logging
import secrets
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Mapping

from flask import Blueprint, Response, current_app, redirect, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from ...domain.errors import OAuthError
from ...domain.ports import UpstreamIdentityError
from ...domain.services.connections import SIGN_IN_TTL, AccountSignIn, Connection
from ...domain.uris import redirect_destination
from .consent_page import SELF_DECLARED, client_trust
from .errors import error_page, render_page
from .pages import cookie_name, served_over_https
from .schemas import form_params, query_params
from .scope_descriptions import describe_scopes
from .services import services

log = logging.getLogger(__name__)
bp = Blueprint("connections", __name__)

CONNECTIONS_PATH = "/connections"
SIGN_IN_COOKIE = "mob_account_sign_in"
SESSION_COOKIE = "mob_account"
SESSION_TTL = 1800
# Both cookies are signed with a key derived from TOKEN_HASH_KEYS (app.secret_key), each with its
# own salt so that one can never be presented as the other.
SIGN_IN_SALT = "mob-account-sign-in"
SESSION_SALT = "mob-account-session"


def _secure() -> bool:
    return served_over_https(services().policy())


def _cookie_name(name: str) -> str:
    return cookie_name(name, services().policy())


def _serializer(salt: str) -> URLSafeTimedSerializer:
    # itsdangerous signs with the last key and verifies with any: the older keys first.
    keys = [*current_app.config["SECRET_KEY_FALLBACKS"], current_app.secret_key]
    return URLSafeTimedSerializer(keys, salt=salt)


def _read(name: str, salt: str, max_age: int) -> dict[str, Any] | None:
    raw = request.cookies.get(_cookie_name(name))
    if not raw:
        return None
    try:
        value = _serializer(salt).loads(raw, max_age=max_age)
    except BadSignature:
        return None
    return value if isinstance(value, dict) else None


def _set(response: BaseResponse, name: str, salt: str, value: Mapping[str, Any], max_age: int) -> None:
    response.set_cookie(
        _cookie_name(name),
        _serializer(salt).dumps(dict(value)),
        max_age=max_age,
        path="/",
        secure=_secure(),
        httponly=True,
        samesite="Lax",
    )


def _clear(response: BaseResponse, name: str) -> None:
    response.delete_cookie(_cookie_name(name), path="/", secure=_secure(), httponly=True, samesite="Lax")


def _no_store(response: BaseResponse) -> BaseResponse:
    response.headers["Cache-Control"] = "no-store"
    return response


def pending_sign_in() -> AccountSignIn | None:
    value = _read(SIGN_IN_COOKIE, SIGN_IN_SALT, SIGN_IN_TTL)
    try:
        return AccountSignIn(**value) if value is not None else None
    except TypeError:
        return None


def _session() -> dict[str, Any] | None:
    value = _read(SESSION_COOKIE, SESSION_SALT, SESSION_TTL)
    if value is None or not isinstance(value.get("sub"), str) or not isinstance(value.get("csrf"), str):
        return None
    return value


@bp.errorhandler(OAuthError)
def connections_error_page(error: OAuthError) -> BaseResponse:
    # A request the page cannot take (a body cut short, say): a page, as on every browser step.
    return error_page("This request cannot be completed", error.description or error.error, 400)


@bp.get(CONNECTIONS_PATH)
def connections_page() -> BaseResponse:
    session = _session()
    if session is None:
        return _no_store(Response(render_page("connections.html", signed_in=False), content_type="text/html; charset=utf-8"))
    listed = [_row(connection) for connection in services().connections_service().connections(session["sub"])]
    page = render_page(
        "connections.html",
        signed_in=True,
        who=session.get("name") or session["sub"],
        connections=listed,
        csrf_token=session["csrf"],
        revoked=query_params().get("revoked") == "1",
    )
    return _no_store(Response(page, content_type="text/html; charset=utf-8"))


def _row(connection: Connection) -> dict[str, Any]:
    """What the page shows of a connection: the client as far as it is known (the consent
    page's words), when, and what it may do."""
    grant, client = connection.grant, connection.client
    trust, host = SELF_DECLARED, None
    if client is not None:
        trust, host = client_trust(client, services().web_urls())
        if trust == SELF_DECLARED and client.redirect_uris:
            # As its consent page did: the host it sends people back to.
            host = _destination(client.redirect_uris[0])
    return {
        "grant_id": grant.grant_id,
        "name": client.client_name if client is not None and client.client_name else None,
        "trust": trust,
        "host": host,
        "created": _when(grant.created_at),
        "last_used": _when(connection.last_used_at) if connection.last_used_at is not None else None,
        "scopes": describe_scopes(grant.scopes),
    }


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _destination(uri: str) -> Any:
    try:
        return redirect_destination(uri, services().web_urls())
    except OAuthError:
        return None


@bp.get(CONNECTIONS_PATH + "/sign-in")
def sign_in() -> BaseResponse:
    sign_in, url = services().connections_service().start_sign_in()
    response = _no_store(redirect(url, code=302))
    _set(response, SIGN_IN_COOKIE, SIGN_IN_SALT, asdict(sign_in), SIGN_IN_TTL)
    return response


def finish_sign_in(sign_in: AccountSignIn, params: Mapping[str, Any]) -> BaseResponse:
    """The identity provider's callback for an account sign-in (called by the callback view)."""
    response: BaseResponse
    try:
        identity = services().connections_service().finish_sign_in(sign_in, code=params.get("code"), error=params.get("error"))
    except OAuthError as error:
        response = error_page("Sign-in did not work", error.description or error.error, 400)
    except UpstreamIdentityError as error:
        log.warning("account sign-in failed at the identity provider: %s", error)
        response = error_page(
            "Sign-in did not work", "The identity provider could not confirm who you are. Try again in a moment.", 503 if error.temporary else 400
        )
    else:
        claims = identity.claims
        name = claims.get("name") or claims.get("preferred_username") or claims.get("email")
        response = _no_store(redirect(CONNECTIONS_PATH, code=303))
        session = {"sub": identity.subject, "name": name if isinstance(name, str) else None, "csrf": secrets.token_urlsafe(32)}
        _set(response, SESSION_COOKIE, SESSION_SALT, session, SESSION_TTL)
    # Single use, whatever happened.
    _clear(response, SIGN_IN_COOKIE)
    return response


def _checked_session(form: Mapping[str, str]) -> dict[str, Any] | None:
    """The session, if the form carries its CSRF token."""
    session = _session()
    token = form.get("csrf_token", "")
    if session is None or not secrets.compare_digest(token.encode(), session["csrf"].encode()):
        return None
    return session


@bp.post(CONNECTIONS_PATH + "/revoke")
def revoke() -> BaseResponse:
    form = form_params()
    session = _checked_session(form)
    if session is None:
        return error_page("This page has expired", "Open your connections again and sign in.", 400)
    grant_id = form.get("grant_id", "")
    if not services().connections_service().revoke(session["sub"], grant_id):
        return error_page("Nothing to revoke", "This connection is not one of yours, or it was already revoked.", 404)
    log.info("grant %s revoked by its owner on the connections page", grant_id)
    return _no_store(redirect(CONNECTIONS_PATH + "?revoked=1", code=303))


@bp.post(CONNECTIONS_PATH + "/sign-out")
def sign_out() -> BaseResponse:
    response = _no_store(redirect(CONNECTIONS_PATH, code=303))
    if _checked_session(form_params()) is not None:
        _clear(response, SESSION_COOKIE)
    return response
