"""The fake identity provider's sign-in page: type a username, go back to /oauth/callback."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, Response, redirect, render_template
from werkzeug.wrappers import Response as BaseResponse
from marshmallow import fields, validate

from ...domain.errors import OAuthError
from ..identity.fake import SIGN_IN_PATH, FakeIdentityProvider
from .errors import error_page
from .schemas import _FormSchema, _text, form_params, parse, query_params
from .services import services

bp = Blueprint("fake_idp", __name__)

MAX_FIELD = 200


class SignInRequestSchema(_FormSchema):
    state = _text(required=True)
    nonce = _text(required=True)
    code_challenge = _text(required=True)


class SignInSchema(SignInRequestSchema):
    action = fields.String(required=True, validate=validate.OneOf(("sign_in", "cancel")))
    username = fields.String(validate=validate.Length(max=MAX_FIELD))
    email = fields.String(validate=validate.Length(max=MAX_FIELD))
    name = fields.String(validate=validate.Length(max=MAX_FIELD))


@bp.errorhandler(OAuthError)
def sign_in_error_page(error: OAuthError) -> BaseResponse:
    # A page in a browser: a malformed sign-in request is shown, not answered with JSON.
    return error_page("This sign-in request cannot be completed", error.description or error.error, 400)


def _back_to_callback(idp: FakeIdentityProvider, **params: str) -> BaseResponse:
    response = redirect(f"{idp.callback_url}?{urlencode(params)}", code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(params: dict[str, str], error: str | None = None, status: int = 200) -> BaseResponse:
    response = Response(render_template("fake_signin.html", error=error, **params), status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get(SIGN_IN_PATH)
def sign_in_page() -> BaseResponse:
    return _page(parse(SignInRequestSchema, query_params()))


def _fake_identity_provider() -> FakeIdentityProvider:
    idp = services().identity_provider()
    if not isinstance(idp, FakeIdentityProvider):
        # create_app registers this blueprint only with IDP_PROVIDER=fake.
        raise RuntimeError(f"the fake sign-in page is served with the {idp.name!r} identity provider")
    return idp


@bp.post(SIGN_IN_PATH)
def sign_in() -> BaseResponse:
    idp = _fake_identity_provider()
    form = parse(SignInSchema, form_params())
    state = form["state"]
    if form["action"] == "cancel":
        return _back_to_callback(idp, error="access_denied", state=state)
    username = (form.get("username") or "").strip()
    if not username:
        request_params = {k: form[k] for k in ("state", "nonce", "code_challenge")}
        return _page(request_params, error="Type a username to sign in as.", status=400)
    code = idp.issue_code(
        username=username,
        email=(form.get("email") or "").strip() or None,
        name=(form.get("name") or "").strip() or None,
        nonce=form["nonce"],
        code_challenge=form["code_challenge"],
    )
    return _back_to_callback(idp, code=code, state=state)
