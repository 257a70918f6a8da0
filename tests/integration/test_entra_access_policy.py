"""The Entra ID adapter's access-policy claims (issue 11 §1) against `responses` doubles shaped
like Entra's: the ``groups`` claim, group overage (``_claim_names``/``_claim_sources``,
``hasgroups``) answered by Microsoft Graph ``POST /me/checkMemberGroups``, app ``roles``, and the
same after a refresh; Graph failures fail closed."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import responses

from mcp_oauth_bridge.adapters.identity.entra import EntraIdentityProvider
from mcp_oauth_bridge.domain.access_policy import AccessPolicy, ClaimRequirement
from mcp_oauth_bridge.domain.model import UpstreamTokens
from mcp_oauth_bridge.domain.ports import UpstreamIdentityError
from tests.fakes import FixedClock

from .idp_fixtures import (
    ACCESS_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    CODE,
    CODE_VERIFIER,
    ENTRA_TENANT,
    NONCE,
    REDIRECT_URI,
    SigningKey,
    calls_to,
    entra_claims,
    entra_discovery,
    entra_jwks,
    entra_token_response,
    sign_id_token,
    signing_key,
)

NOW = 1_800_000_000
HOST = "https://login.microsoftonline.com"
GRAPH = "https://graph.microsoft.com/v1.0"
CHECK_MEMBER_GROUPS = f"{GRAPH}/me/checkMemberGroups"
MCP_USERS = "8f1c2a55-2d8e-4b8f-9a53-1c3e0f4b7d21"
ADMINS = "1d9a7c33-5b2e-4f0a-8c61-7e2b9d0c4a58"
UNRELATED = "c4e2b1a0-9f8d-4c7b-a6e5-d4c3b2a1f0e9"
SCOPE = "openid profile email https://graph.microsoft.com/User.Read"
# What Entra puts in an ID token in place of groups when there are too many (the v2.0 form).
OVERAGE = {
    "_claim_names": {"groups": "src1"},
    "_claim_sources": {
        "src1": {"endpoint": f"https://graph.windows.net/{ENTRA_TENANT}/users/00000000-0000-0000-66f3-3332eca7ea81/getMemberObjects"}
    },
}
POLICY = AccessPolicy.of(
    [
        ClaimRequirement("groups", frozenset({MCP_USERS, ADMINS}), case_insensitive=True),
        ClaimRequirement("roles", frozenset({"MCP.User"})),
    ]
)


@pytest.fixture
def key(mock: responses.RequestsMock) -> SigningKey:
    key = signing_key("entra")
    document = entra_discovery(host=HOST, tenant_path=ENTRA_TENANT, issuer_tenant=ENTRA_TENANT)
    mock.get(f"{HOST}/{ENTRA_TENANT}/v2.0/.well-known/openid-configuration", json=document)
    mock.get(str(document["jwks_uri"]), json=entra_jwks(key, host=HOST))
    return key


@pytest.fixture
def provider() -> EntraIdentityProvider:
    return EntraIdentityProvider(
        tenant=ENTRA_TENANT,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
        clock=FixedClock(NOW),
        scopes=("User.Read",),
        allowed_groups=(MCP_USERS, ADMINS.upper()),
        graph_base_url=GRAPH,
        session=requests.Session(),
    )


def _id_token(key: SigningKey, *, nonce: str | None = NONCE, **extra: Any) -> str:
    claims = entra_claims(NOW)
    if nonce is None:
        del claims["nonce"]
    claims.update(extra)
    return sign_id_token(claims, key, header={"x5t": key.x5t})


def _answer_login(mock: responses.RequestsMock, key: SigningKey, **extra: Any) -> None:
    token_endpoint = f"{HOST}/{ENTRA_TENANT}/oauth2/v2.0/token"
    mock.post(token_endpoint, json=entra_token_response(id_token=_id_token(key, **extra), scope=SCOPE))


def _login_claims(provider: EntraIdentityProvider) -> Any:
    return provider.exchange_code(code=CODE, code_verifier=CODE_VERIFIER, nonce=NONCE).identity


def test_groups_and_roles_from_the_id_token(mock: responses.RequestsMock, key: SigningKey, provider: EntraIdentityProvider) -> None:
    _answer_login(mock, key, groups=[UNRELATED, MCP_USERS.upper()], roles=["MCP.User", "Other"])
    identity = _login_claims(provider)
    assert identity.policy_claims == {"groups": [UNRELATED, MCP_USERS], "roles": ["MCP.User", "Other"]}
    assert POLICY.evaluate(identity.policy_claims).allowed
    # Nothing asked of Graph, and nothing of the policy stored with the grant.
    assert calls_to(mock, CHECK_MEMBER_GROUPS) == []
    assert "groups" not in identity.claims and "roles" not in identity.claims


def test_no_role_assigned_is_refused(mock: responses.RequestsMock, key: SigningKey, provider: EntraIdentityProvider) -> None:
    _answer_login(mock, key, groups=[MCP_USERS])
    identity = _login_claims(provider)
    assert identity.policy_claims["roles"] == []
    assert POLICY.evaluate(identity.policy_claims).unmet == ("roles",)


@pytest.mark.parametrize("signal", [OVERAGE, {"hasgroups": True}, {}], ids=["claim-sources", "hasgroups", "no-groups-claim"])
def test_group_overage_is_answered_by_graph_check_member_groups(
    mock: responses.RequestsMock, key: SigningKey, provider: EntraIdentityProvider, signal: dict[str, Any]
) -> None:
    _answer_login(mock, key, roles=["MCP.User"], **signal)
    mock.post(CHECK_MEMBER_GROUPS, json={"@odata.context": f"{GRAPH}/$metadata#Collection(Edm.String)", "value": [ADMINS]})
    identity = _login_claims(provider)
    assert identity.policy_claims["groups"] == [ADMINS]
    assert POLICY.evaluate(identity.policy_claims).allowed
    (call,) = calls_to(mock, CHECK_MEMBER_GROUPS)
    # Only the allowed groups are asked about, with the person's own upstream access token.
    assert json.loads(call.request.body) == {"groupIds": [MCP_USERS, ADMINS]}
    assert call.request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"


def test_a_person_in_none_of_the_groups_has_no_groups(mock: responses.RequestsMock, key: SigningKey, provider: EntraIdentityProvider) -> None:
    _answer_login(mock, key, roles=["MCP.User"], **OVERAGE)
    mock.post(CHECK_MEMBER_GROUPS, json={"value": []})
    identity = _login_claims(provider)
    assert POLICY.evaluate(identity.policy_claims).unmet == ("groups",)


def test_more_than_twenty_allowed_groups_are_asked_in_batches(mock: responses.RequestsMock, key: SigningKey) -> None:
    groups = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(45)]
    provider = EntraIdentityProvider(
        tenant=ENTRA_TENANT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URI,
        clock=FixedClock(NOW), allowed_groups=groups, graph_base_url=GRAPH, session=requests.Session(),
    )
    _answer_login(mock, key, **OVERAGE)
    mock.post(CHECK_MEMBER_GROUPS, json={"value": [groups[44]]})
    identity = _login_claims(provider)
    calls = calls_to(mock, CHECK_MEMBER_GROUPS)
    assert [len(json.loads(call.request.body)["groupIds"]) for call in calls] == [20, 20, 5]
    assert identity.policy_claims["groups"] == [groups[44]] * 3


@pytest.mark.parametrize(
    "status, body, temporary",
    [
        (403, {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}}, False),
        (401, {"error": {"code": "InvalidAuthenticationToken", "message": "Access token validation failure."}}, False),
        (200, {"unexpected": True}, False),
        (503, {"error": {"code": "serviceNotAvailable", "message": "Service unavailable"}}, True),
        (429, {"error": {"code": "TooManyRequests", "message": "Too many requests"}}, True),
    ],
)
def test_graph_failures_fail_closed(
    mock: responses.RequestsMock, key: SigningKey, provider: EntraIdentityProvider, status: int, body: dict[str, Any], temporary: bool
) -> None:
    _answer_login(mock, key, **OVERAGE)
    mock.post(CHECK_MEMBER_GROUPS, json=body, status=status)
    with pytest.raises(UpstreamIdentityError) as raised:
        _login_claims(provider)
    assert raised.value.temporary is temporary
    assert ACCESS_TOKEN not in str(raised.value)
    if status == 403:
        assert "User.Read" in str(raised.value)


def test_graph_unreachable_is_temporary(mock: responses.RequestsMock, key: SigningKey, provider: EntraIdentityProvider) -> None:
    _answer_login(mock, key, **OVERAGE)
    mock.post(CHECK_MEMBER_GROUPS, body=requests.ConnectionError("refused"))
    with pytest.raises(UpstreamIdentityError) as raised:
        _login_claims(provider)
    assert raised.value.temporary


def test_after_a_refresh_the_claims_come_from_the_new_id_token_and_graph(
    mock: responses.RequestsMock, key: SigningKey, provider: EntraIdentityProvider
) -> None:
    mock.post(CHECK_MEMBER_GROUPS, json={"value": []})
    tokens = UpstreamTokens(
        access_token="refreshed-access-token", expires_at=NOW + 3600, id_token=_id_token(key, nonce=None, roles=["MCP.User"], **OVERAGE)
    )
    identity = provider.identity_after_refresh(tokens)
    assert identity.subject == f"{ENTRA_TENANT}:00000000-0000-0000-66f3-3332eca7ea81"
    assert POLICY.evaluate(identity.policy_claims).unmet == ("groups",)
    (call,) = calls_to(mock, CHECK_MEMBER_GROUPS)
    assert call.request.headers["Authorization"] == "Bearer refreshed-access-token"


def test_a_refresh_without_an_id_token_cannot_be_checked(provider: EntraIdentityProvider) -> None:
    with pytest.raises(UpstreamIdentityError) as raised:
        provider.identity_after_refresh(UpstreamTokens(access_token="at", expires_at=NOW + 3600))
    assert not raised.value.temporary


def test_without_allowed_groups_graph_is_never_asked(mock: responses.RequestsMock, key: SigningKey) -> None:
    provider = EntraIdentityProvider(
        tenant=ENTRA_TENANT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URI,
        clock=FixedClock(NOW), session=requests.Session(),
    )
    _answer_login(mock, key, roles=["MCP.User"], **OVERAGE)
    identity = _login_claims(provider)
    assert identity.policy_claims == {"roles": ["MCP.User"]}
    assert calls_to(mock, CHECK_MEMBER_GROUPS) == []


def test_allowed_groups_must_be_object_ids() -> None:
    with pytest.raises(ValueError, match="allowed_groups"):
        EntraIdentityProvider(
            tenant=ENTRA_TENANT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URI,
            clock=FixedClock(NOW), allowed_groups=["MCP Users"],
        )
