"""The browser-facing part of the flow: authorization endpoint (RFC 6749 §4.1.1), consent, and the
upstream identity provider's callback (RFC 6749 §4.1.2 with RFC 9207 ``iss``)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from ...domain.errors import (
    AuthorizationRedirect,
    OAuthError,
    RefusedAuthorizationRequest,
    SignInNotAllowed,
    UpstreamSignInFailed,
)
from ...domain.ports import UpstreamIdentityError
from ...domain.policy import ServerPolicy
from ...domain.services.authorization import ConsentPrompt
from ...domain.services.connections import ConnectionsService
from ...domain.services.redirects import ClientRedirect
from . import connections
from .consent_page import consent_view
from .errors import error_page, render_page
from .pages import cookie_name, served_over_https
from .schemas import AuthorizationRequestSchema, CallbackSchema, ConsentSchema, form_params, parse, query_params
from .services import services

log = logging.getLogger(__name__)
bp = Blueprint("authorization", __name__)

BROWSER_COOKIE = "mob_browser"
BROWSER_COOKIE_MAX_AGE = 30 * 24 * 3600
CONSENT_PATH = "/oauth/consent"


def _cookie_name(policy: ServerPolicy) -> str:
    return cookie_name(BROWSER_COOKIE, policy)


def _browser_id(policy: ServerPolicy) -> str | None:
    return request.cookies.get(_cookie_name(policy))


@bp.errorhandler(OAuthError)
def authorization_error_page(error: OAuthError) -> BaseResponse:
    # Before the client and redirect URI are established an error must not redirect anywhere.
    return error_page("This sign-in request cannot be completed", error.description or error.error, 400)


@bp.errorhandler(RefusedAuthorizationRequest)
def refused_authorization_request(exc: RefusedAuthorizationRequest) -> BaseResponse:
    # RFC 9700 §4.11.2: nobody has seen the consent page, so the person chooses whether to go
    # back to the client; the link carries what an error redirect would (RFC 6749 §4.1.2.1).
    params = {"error": exc.error.error}
    if exc.error.description:
        params["error_description"] = exc.error.description
    back = ClientRedirect.build(exc.redirect_uri, issuer=services().policy().issuer, state=exc.state, **params)
    return error_page(
        "This sign-in request cannot be completed",
        exc.error.description or exc.error.error,
        400,
        return_url=back.url(),
        destination=exc.destination,
    )


@bp.errorhandler(UpstreamIdentityError)
def identity_provider_unavailable(error: UpstreamIdentityError) -> BaseResponse:
    log.error("identity provider failure: %s", error)
    return error_page(
        "The sign-in service is unavailable",
        "The identity provider could not be reached or gave an unusable answer. Try again in a moment.",
        503,
    )


@bp.errorhandler(UpstreamSignInFailed)
def upstream_sign_in_failed(error: UpstreamSignInFailed) -> BaseResponse:
    log.warning("sign-in failed at the identity provider: %s", error.explanation)
    # 400, not 502: what reached the callback (a code the provider refused, an error it sent)
    # came through the browser; the page says what to fix either way.
    return error_page("Sign-in did not work", error.explanation, 400, return_url=error.return_url)


@bp.errorhandler(SignInNotAllowed)
def sign_in_not_allowed(error: SignInNotAllowed) -> BaseResponse:
    log.info("sign-in refused: the account is outside the access policy")
    return error_page("You are not allowed to connect", error.explanation, 403, return_url=error.return_url)


@bp.errorhandler(AuthorizationRedirect)
def authorization_error_redirect(exc: AuthorizationRedirect) -> BaseResponse:
    if isinstance(exc.__cause__, UpstreamIdentityError):
        # The adapter's message says what to fix and carries no secret.
        log.warning("sign-in failed at the identity provider: %s", exc.__cause__)
    params = {"error": exc.error.error}
    if exc.error.description:
        params["error_description"] = exc.error.description
    target = ClientRedirect.build(exc.redirect_uri, issuer=services().policy().issuer, state=exc.state, **params)
    return _redirect(target.url())


def _redirect(url: str) -> BaseResponse:
    response = redirect(url, code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/oauth/authorize")
@bp.get("/authorize")
def authorize() -> BaseResponse:
    service, policy = services().authorization_service(), services().policy()
    params = parse(AuthorizationRequestSchema, query_params())
    prompt = service.start(params, browser_id=_browser_id(policy))
    response = Response(_render_consent(prompt), content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(
        _cookie_name(policy),
        prompt.browser_id,
        max_age=BROWSER_COOKIE_MAX_AGE,
        path="/",
        secure=served_over_https(policy),
        httponly=True,
        # Lax: sent on the top-level navigation back from the identity provider, not on
        # cross-site POSTs.
        samesite="Lax",
    )
    return response


def _render_consent(prompt: ConsentPrompt) -> bytes:
    return render_page(
        "consent.html",
        # Who asks, as far as it is known (consent_page.py); where the browser goes back to is
        # the domain's WHATWG parse, never the raw string.
        view=consent_view(prompt, services().web_urls()),
        pending_id=prompt.pending_id,
        csrf_token=prompt.csrf_token,
        consent_path=CONSENT_PATH,
    )


@bp.post(CONSENT_PATH)
def consent() -> BaseResponse:
    service, policy = services().authorization_service(), services().policy()
    form = parse(ConsentSchema, form_params())
    target = service.decide(
        pending_id=form["pending_id"],
        csrf_token=form["csrf_token"],
        browser_id=_browser_id(policy),
        approved=form["decision"] == "approve",
    )
    # 303: the browser follows a form POST with a GET.
    response = redirect(target, code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/oauth/callback")
@bp.get("/oauth/azure_callback")
def callback() -> BaseResponse:
    service, policy = services().authorization_service(), services().policy()
    params = parse(CallbackSchema, query_params())
    sign_in = connections.pending_sign_in()
    if ConnectionsService.is_its_callback(sign_in, params.get("state")):
        # The answer to this browser's sign-in on the connections page, not to an authorization.
        assert sign_in is not None
        return connections.finish_sign_in(sign_in, params)
    if params.get("error"):
        log.warning("identity provider returned error %r: %r", params["error"], params.get("error_description"))
    target = service.complete_upstream_login(
        state=params.get("state"),
        code=params.get("code"),
        error=params.get("error"),
        error_description=params.get("error_description"),
        browser_id=_browser_id(policy),
    )
    return _redirect(target)
