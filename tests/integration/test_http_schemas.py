"""The form schemas: parse() checks plain-string schemas without Schema.load, with the same
result and the same messages as marshmallow's load."""

from __future__ import annotations

import random
from typing import Any

import pytest
from marshmallow import Schema, ValidationError, fields, validate

from mcp_oauth_bridge.adapters.http import fake_idp  # noqa: F401  (declares the sign-in schemas)
from mcp_oauth_bridge.adapters.http.schemas import (
    MAX_PARAMETER_LENGTH,
    TokenReferenceSchema,
    TokenRequestSchema,
    _FormSchema,
    _instance,
    _load,
    _string_fields,
)


def _form_schemas() -> list[type[Schema]]:
    found: list[type[Schema]] = []
    pending: list[type[Schema]] = [_FormSchema]
    while pending:
        schema = pending.pop()
        found.extend(schema.__subclasses__())
        pending.extend(schema.__subclasses__())
    return sorted(set(found) - {_FormSchema}, key=lambda schema: schema.__name__)


FORM_SCHEMAS = _form_schemas()


def _values_for(field: fields.Field[Any], rng: random.Random) -> str:
    choices = [v.choices for v in field.validators if isinstance(v, validate.OneOf)]
    if choices and rng.random() < 0.5:
        return str(rng.choice(list(choices[0])))
    return rng.choice(["", "x", "approve", "sign_in"]) if rng.random() < 0.3 else "y" * rng.choice(
        [1, 40, MAX_PARAMETER_LENGTH - 1, MAX_PARAMETER_LENGTH, MAX_PARAMETER_LENGTH + 1, 5000]
    )


def _outcome(load: Any, schema: type[Schema], data: dict[str, str]) -> tuple[str, Any]:
    try:
        return "ok", load(schema, data)
    except ValidationError as exc:
        return "error", exc.messages


def test_the_form_schemas_are_found() -> None:
    names = {schema.__name__ for schema in FORM_SCHEMAS}
    assert {"TokenRequestSchema", "TokenReferenceSchema", "ConsentSchema", "SignInSchema"} <= names


@pytest.mark.parametrize("schema", [TokenRequestSchema, TokenReferenceSchema], ids=lambda s: s.__name__)
def test_the_hot_path_schemas_skip_schema_load(schema: type[Schema]) -> None:
    assert _string_fields(schema) is not None


@pytest.mark.parametrize("schema", FORM_SCHEMAS, ids=lambda s: s.__name__)
def test_form_schemas_declare_no_hooks(schema: type[Schema]) -> None:
    # A pre_load/post_load/validates_schema hook would be skipped by the direct check.
    assert not any(_instance(schema)._hooks.values())


@pytest.mark.parametrize("schema", FORM_SCHEMAS, ids=lambda s: s.__name__)
def test_direct_check_matches_schema_load(schema: type[Schema]) -> None:
    rng = random.Random(schema.__name__)
    declared = _instance(schema).load_fields
    for _ in range(400):
        data = {name: _values_for(field, rng) for name, field in declared.items() if rng.random() < 0.7}
        if rng.random() < 0.3:
            data["unknown_parameter"] = "ignored"
        expected = _outcome(lambda s, d: _instance(s).load(d), schema, data)
        assert _outcome(_load, schema, data) == expected, data


def test_a_schema_that_is_not_plain_strings_goes_through_load() -> None:
    class WithInteger(_FormSchema):
        count = fields.Integer()

    class Renamed(_FormSchema):
        name = fields.String(data_key="other")

    class WithDefault(_FormSchema):
        name = fields.String(load_default="x")

    for schema in (WithInteger, Renamed, WithDefault):
        assert _string_fields(schema) is None
    assert _load(WithInteger, {"count": "3"}) == {"count": 3}
    assert _load(Renamed, {"other": "a"}) == {"name": "a"}
    assert _load(WithDefault, {}) == {"name": "x"}
