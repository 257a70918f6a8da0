"""Configuration of who may connect (issue 11 §1): AZURE_ALLOWED_GROUPS, AZURE_REQUIRED_APP_ROLES,
OIDC_REQUIRED_CLAIMS, OIDC_PROMPT_CONSENT, ACCESS_DENIED_CONTACT, GRANT_MAX_LIFETIME."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_oauth_bridge.domain.access_policy import ClaimRequirement
from mcp_oauth_bridge.entrypoints.config import ConfigError, load_settings

from .conftest import environment_for

GROUP = "8f1c2a55-2d8e-4b8f-9a53-1c3e0f4b7d21"
AZURE = {
    "IDP_PROVIDER": "azure",
    "AZURE_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "AZURE_CLIENT_ID": "6731de76-14a6-49ae-97bc-6eba6914391e",
    "AZURE_CLIENT_SECRET": "secret",
}
OIDC = {"IDP_PROVIDER": "oidc", "OIDC_ISSUER": "https://op.example", "OIDC_CLIENT_ID": "c", "OIDC_CLIENT_SECRET": "s"}


def test_entra_groups_and_roles_make_the_policy(tmp_path: Path) -> None:
    settings = load_settings(
        environment_for(tmp_path, **AZURE, AZURE_ALLOWED_GROUPS=f" {GROUP.upper()} ,{GROUP}", AZURE_REQUIRED_APP_ROLES="MCP.User, MCP.Admin"),
        dotenv_path=None,
    )
    assert settings.entra is not None
    assert settings.entra.allowed_groups == (GROUP,)
    assert settings.access_policy.requirements == (
        ClaimRequirement("groups", frozenset({GROUP}), case_insensitive=True),
        ClaimRequirement("roles", frozenset({"MCP.User", "MCP.Admin"})),
    )


def test_oidc_required_claims_and_prompt(tmp_path: Path) -> None:
    settings = load_settings(
        environment_for(tmp_path, **OIDC, OIDC_REQUIRED_CLAIMS="groups=mcp-users,email_verified=true", OIDC_PROMPT_CONSENT="Never"),
        dotenv_path=None,
    )
    assert settings.oidc is not None
    assert settings.oidc.prompt_consent == "never"
    assert settings.access_policy.claims == ("groups", "email_verified")
    assert settings.access_policy.evaluate({"groups": ["mcp-users"], "email_verified": True}).allowed


def test_defaults_admit_everyone_for_thirty_days(tmp_path: Path) -> None:
    settings = load_settings(environment_for(tmp_path, **OIDC), dotenv_path=None)
    assert not settings.access_policy.restricts
    assert settings.grant_max_lifetime == 30 * 24 * 3600
    assert settings.oidc is not None and settings.oidc.prompt_consent == "auto"
    assert settings.access_denied_contact == ""


def test_contact_and_lifetime(tmp_path: Path) -> None:
    settings = load_settings(
        environment_for(tmp_path, ACCESS_DENIED_CONTACT=" the IT service desk ", GRANT_MAX_LIFETIME="86400"), dotenv_path=None
    )
    assert settings.access_denied_contact == "the IT service desk"
    assert settings.grant_max_lifetime == 86400


@pytest.mark.parametrize(
    "overrides, variable",
    [
        ({**AZURE, "AZURE_ALLOWED_GROUPS": "MCP Users"}, "AZURE_ALLOWED_GROUPS"),
        ({**AZURE, "AZURE_ALLOWED_GROUPS": GROUP, "AZURE_SCOPES": "api://other/.default"}, "AZURE_ALLOWED_GROUPS"),
        ({**AZURE, "AZURE_REQUIRED_APP_ROLES": "MCP User"}, "AZURE_REQUIRED_APP_ROLES"),
        ({**OIDC, "OIDC_REQUIRED_CLAIMS": "groups"}, "OIDC_REQUIRED_CLAIMS"),
        ({**OIDC, "OIDC_PROMPT_CONSENT": "sometimes"}, "OIDC_PROMPT_CONSENT"),
        # A policy variable for another provider would silently restrict nothing.
        ({**OIDC, "AZURE_ALLOWED_GROUPS": GROUP}, "AZURE_ALLOWED_GROUPS"),
        ({**AZURE, "OIDC_REQUIRED_CLAIMS": "groups=x"}, "OIDC_REQUIRED_CLAIMS"),
        ({"OIDC_REQUIRED_CLAIMS": "groups=x"}, "OIDC_REQUIRED_CLAIMS"),
        ({"GRANT_MAX_LIFETIME": "0"}, "GRANT_MAX_LIFETIME"),
        ({"GRANT_MAX_LIFETIME": "30d"}, "GRANT_MAX_LIFETIME"),
        ({"ACCESS_DENIED_CONTACT": "ask\nme"}, "ACCESS_DENIED_CONTACT"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(environment_for(tmp_path, **overrides), dotenv_path=None)
