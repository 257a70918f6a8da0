"""Request parsing for the form-encoded endpoints (RFC 6749 §3.1, §3.2, §2.3.1) with marshmallow."""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote_plus

from flask import request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate
from werkzeug.datastructures import MultiDict

from ...domain.errors import InvalidClient, InvalidRequest
from ...domain.services.tokens import ClientCredentials

MAX_PARAMETER_LENGTH = 4096


def _text(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(max=MAX_PARAMETER_LENGTH), **kwargs)


class _FormSchema(Schema):
    class Meta:
        # RFC 6749 §3.1: "The authorization server MUST ignore unrecognized request parameters."
        unknown = EXCLUDE


class AuthorizationRequestSchema(_FormSchema):
    client_id = _text()
    redirect_uri = _text()
    response_type = _text()
    scope = _text()
    state = _text()
    code_challenge = _text()
    code_challenge_method = _text()
    resource = _text()


class ConsentSchema(_FormSchema):
    pending_id = _text(required=True)
    csrf_token = _text(required=True)
    decision = fields.String(required=True, validate=validate.OneOf(("approve", "deny")))


class CallbackSchema(_FormSchema):
    state = _text()
    code = _text()
    error = _text()
    error_description = _text()


class ClientCredentialsSchema(_FormSchema):
    client_id = _text()
    client_secret = _text()


class TokenRequestSchema(ClientCredentialsSchema):
    grant_type = _text(required=True)
    code = _text()
    redirect_uri = _text()
    code_verifier = _text()
    refresh_token = _text()
    scope = _text()
    resource = _text()


class TokenReferenceSchema(ClientCredentialsSchema):
    """RFC 7009 §2.1 / RFC 7662 §2.1 request body."""

    token = _text(required=True)
    token_type_hint = _text()


FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def form_params() -> "MultiDict[str, str]":
    """The body parameters of a form POST (RFC 6749 §3.2: application/x-www-form-urlencoded).

    Decoded with the standard library: on the token and introspection hot paths werkzeug's
    streaming form parser costs several times more than the request's own work.
    """
    if request.mimetype != FORM_CONTENT_TYPE:
        return MultiDict()
    body = request.get_data(cache=False).decode("utf-8", "replace")
    return MultiDict(parse_qsl(body, keep_blank_values=True))


@functools.cache
def _instance(schema: type[Schema]) -> Schema:
    # Building a schema deep-copies its fields; loading with a shared instance is safe.
    return schema()


def parse(schema: type[Schema], params: "MultiDict[str, str]") -> dict[str, Any]:
    """Load single-valued parameters; a repeated or malformed parameter is ``invalid_request``."""
    repeated = sorted(key for key in params if len(params.getlist(key)) > 1)
    if repeated:
        # RFC 6749 §3.1: "Request and response parameters MUST NOT be included more than once."
        raise InvalidRequest(f"parameter repeated: {', '.join(repeated)}")
    try:
        loaded: dict[str, Any] = _instance(schema).load(params.to_dict())
    except ValidationError as exc:
        raise InvalidRequest(_describe(exc.messages)) from None
    return {key: value for key, value in loaded.items() if value != ""}


def _describe(messages: Any) -> str:
    if isinstance(messages, Mapping):
        return "; ".join(f"{name}: {' '.join(map(str, problems))}" for name, problems in messages.items())
    return str(messages)


def client_credentials(authorization: str | None, form: Mapping[str, Any]) -> ClientCredentials:
    """RFC 6749 §2.3.1: HTTP Basic (client_secret_basic) or body parameters (client_secret_post),
    or only client_id for public clients (none)."""
    if authorization and authorization[:6].lower() == "basic ":
        if form.get("client_secret"):
            # RFC 6749 §2.3: "The client MUST NOT use more than one authentication method."
            raise InvalidRequest("use either HTTP Basic or client_secret in the body, not both")
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
            raw_id, raw_secret = decoded.split(":", 1)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidClient("malformed HTTP Basic credentials") from None
        basic_id = unquote_plus(raw_id)
        if form.get("client_id") and form["client_id"] != basic_id:
            raise InvalidRequest("client_id in the body differs from HTTP Basic")
        return ClientCredentials(client_id=basic_id, client_secret=unquote_plus(raw_secret), method="client_secret_basic")
    client_id = form.get("client_id")
    if not client_id:
        raise InvalidClient("client authentication is required")
    secret = form.get("client_secret")
    return ClientCredentials(
        client_id=str(client_id),
        client_secret=str(secret) if secret else None,
        method="client_secret_post" if secret else "none",
    )
