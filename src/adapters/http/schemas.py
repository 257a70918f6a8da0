"""Request parsing for the form-encoded endpoints (RFC 6749 §3.1, §3.2, §2.3.1) with marshmallow."""

from __future__ import annotations

import base64
import binascii
import functools
from typing import IO, Any, Mapping
from urllib.parse import parse_qsl, unquote_plus

from flask import request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing, validate
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from ...domain.errors import InvalidClient, InvalidRequest
from ...domain.services.tokens import ClientCredentials

MAX_PARAMETER_LENGTH = 4096
# The largest form body read (every parameter of every endpoint fits many times over).
MAX_FORM_BODY = 64 * 1024


def _text(**kwargs: Any) -> fields.String:
    return fields.String(validate=validate.Length(max=MAX_PARAMETER_LENGTH), **kwargs)


class _FormSchema(Schema):
    """A form's or query's parameters: plain ``fields.String`` with validators, no hooks (parse()
    checks such a schema without ``Schema.load``; see ``_string_fields``)."""

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

    Read from the WSGI input and decoded with the standard library: on the token and
    introspection hot paths werkzeug's request stream and form parser cost several times more
    than the request's own work.
    """
    content_type = request.environ.get("CONTENT_TYPE", "")
    if content_type.partition(";")[0].strip().lower() != FORM_CONTENT_TYPE:
        return MultiDict()
    return MultiDict(parse_qsl(_form_body().decode("utf-8", "replace"), keep_blank_values=True))


def query_params() -> "MultiDict[str, str]":
    """The query parameters (RFC 6749 §3.1), decoded as leniently as ``form_params``.

    werkzeug's ``request.args`` decodes the raw query string strictly, so one byte that is not
    UTF-8 (``?client_id=%ff`` is fine, a raw 0xff is not) raises UnicodeDecodeError: a 500.
    """
    return MultiDict(parse_qsl(request.query_string.decode("utf-8", "replace"), keep_blank_values=True))


def read_body(stream: IO[bytes], size: int = -1) -> bytes:
    """``stream.read(size)``, where a body the server cannot deliver is ``invalid_request``.

    PEP 3333 leaves read errors to the server, and none of them is a fault of ours: gunicorn
    raises its own ParseException subclasses for broken chunked framing (a bad chunk size, a
    missing CRLF, a body cut short), others OSError or ValueError.
    """
    try:
        return stream.read(size)
    except HTTPException:
        # werkzeug's own answers (413 past the size limit, 400 when the client went away).
        raise
    except Exception:  # noqa: BLE001 - any other failure to read the input is the request's
        raise InvalidRequest("the request body could not be read: its framing is malformed or it was cut short") from None


def _form_body() -> bytes:
    """The whole body, at most ``MAX_FORM_BODY`` bytes: by its Content-Length, or up to the end
    of a chunked body (the server marks such a stream ``wsgi.input_terminated``)."""
    environ = request.environ
    stream = environ["wsgi.input"]
    length = request.content_length
    if length is not None:
        if length > MAX_FORM_BODY:
            raise InvalidRequest(f"the request body is larger than {MAX_FORM_BODY} bytes")
        body = read_body(stream, length) if length else b""
        if len(body) != length:
            raise InvalidRequest("the request body is shorter than its Content-Length")
        return body
    if environ.get("wsgi.input_terminated"):
        # Read one byte more than allowed: getting it means the body was too large.
        body = read_body(stream, MAX_FORM_BODY + 1)
        if len(body) > MAX_FORM_BODY:
            raise InvalidRequest(f"the request body is larger than {MAX_FORM_BODY} bytes")
        return body
    # Neither a length nor a terminated stream: WSGI gives no safe way to read (PEP 3333).
    return b""


@functools.cache
def _instance(schema: type[Schema]) -> Schema:
    # Building a schema deep-copies its fields; loading with a shared instance is safe.
    return schema()


@functools.cache
def _string_fields(schema: type[Schema]) -> tuple[tuple[str, fields.Field[Any]], ...] | None:
    """The fields of a form schema when every one is a plain string (no other name, no default,
    no None): the values of a form are strings already, so loading is only the required check
    and the fields' own validators, which parse() runs directly. Schema.load does the same
    work through several layers of calls per field: on the token and introspection hot paths
    it costs about 20 us a request, five times the checks themselves. None for any other schema."""
    if not issubclass(schema, _FormSchema):
        return None
    loaded = tuple(_instance(schema).load_fields.items())
    for name, field in loaded:
        plain = type(field) is fields.String and field.data_key is None and field.attribute is None
        if not plain or field.allow_none or field.load_default is not missing:
            return None
    return loaded


def _load(schema: type[Schema], data: dict[str, str]) -> dict[str, Any]:
    string_fields = _string_fields(schema)
    if string_fields is None:
        loaded: dict[str, Any] = _instance(schema).load(data)
        return loaded
    result: dict[str, Any] = {}
    errors: dict[str, list[Any]] = {}
    for name, field in string_fields:
        value = data.get(name)
        if value is None:
            if field.required:
                errors[name] = [field.error_messages["required"]]
            continue
        problems: list[Any] = []
        for validator in field.validators:
            # As Field._validate_all: every validator runs; returning False is a failure too.
            try:
                if validator(value) is False:
                    problems.append(field.error_messages["validator_failed"])
            except ValidationError as exc:
                problems.extend(exc.messages if isinstance(exc.messages, list) else [exc.messages])
        if problems:
            errors[name] = problems
        else:
            result[name] = value
    if errors:
        raise ValidationError(errors)
    return result


def parse(schema: type[Schema], params: "MultiDict[str, str]") -> dict[str, Any]:
    """Load single-valued parameters; a repeated, malformed or missing required parameter is
    ``invalid_request`` (an empty value counts as missing)."""
    # One pass: the parameters sent with a value, and the names sent more than once.
    present: dict[str, str] = {}
    repeated: list[str] = []
    for key, values in params.lists():
        if len(values) > 1:
            repeated.append(key)
        elif values[0]:
            # RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if they were
            # omitted from the request." So an empty required parameter is a missing one.
            present[key] = values[0]
    if repeated:
        # RFC 6749 §3.1: "Request and response parameters MUST NOT be included more than once."
        raise InvalidRequest(f"parameter repeated: {', '.join(sorted(repeated))}")
    try:
        return _load(schema, present)
    except ValidationError as exc:
        raise InvalidRequest(_describe(exc.messages)) from None


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
