"""Microsoft Entra ID (Azure AD) on the v2.0 endpoints: the OpenID Connect adapter with Entra's
tenant rules (multi-tenant ``{tenantid}`` issuer, ``tid``/``oid`` subject), scope forms and
AADSTS error codes.

References: Microsoft identity platform — OpenID Connect on the v2.0 endpoint, ID-token claims
reference ("Validate the issuer" for multi-tenant apps), authentication and authorization error
codes (AADSTS).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

import requests

from ...domain.model import UpstreamIdentity, UpstreamTokens
from ...domain.ports import Clock, UpstreamIdentityError
from .certificate import CertificateCredential
from .oidc import (
    DEFAULT_LEEWAY,
    DEFAULT_TIMEOUT,
    OidcIdentityProvider,
    invalid_id_token,
    require_secure_url,
)

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_GRAPH_RESOURCE = "https://graph.microsoft.com"
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"
# Microsoft Graph, user: checkMemberGroups takes at most 20 group ids per request.
CHECK_MEMBER_GROUPS_BATCH = 20
# offline_access: without it Entra returns no refresh token.
BASE_SCOPES = ("openid", "profile", "email", "offline_access")
OIDC_SCOPES = frozenset(BASE_SCOPES)
MULTI_TENANT_AUTHORITIES = frozenset({"common", "organizations", "consumers"})
# The multi-tenant discovery document's issuer carries this placeholder for the token's tid.
TENANT_PLACEHOLDER = "{tenantid}"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
AADSTS = re.compile(r"AADSTS(\d+)")
OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")

# What an operator (or the person signing in) must do for each AADSTS code worth explaining.
AADSTS_FIXES: Mapping[str, str] = {
    "50011": "the redirect URI is not registered for the application: add PUBLIC_URL + "
    "/oauth/callback as a 'Web' redirect URI in the Entra ID app registration (Authentication)",
    "9002325": "the redirect URI is registered as a single-page application: register it under "
    "the 'Web' platform of the app registration instead",
    "700025": "the app registration treats this redirect URI as a public client: register it "
    "under the 'Web' platform, not 'Mobile and desktop applications'",
    "65001": "the application has no consent for the requested permissions: an administrator "
    "must grant admin consent (app registration, API permissions, 'Grant admin consent')",
    "650056": "the application's permissions are misconfigured: add the delegated permissions "
    "(openid profile email offline_access and the API scopes) and grant admin consent",
    "7000215": "the client secret is wrong: set AZURE_CLIENT_SECRET to the secret's Value (not "
    "its Secret ID) from Certificates & secrets",
    "7000222": "the client secret has expired: create a new one under Certificates & secrets and "
    "update AZURE_CLIENT_SECRET",
    "7000218": "no client secret reached Entra ID: set AZURE_CLIENT_SECRET",
    "700027": "Entra ID did not accept the client certificate's assertion: upload the certificate "
    "(its public part only) under Certificates & secrets, Certificates, and check that "
    "AZURE_CLIENT_CERTIFICATE_PATH holds that same certificate and that it has not expired",
    "700024": "the client assertion is outside its valid time range: check this server's clock",
    "700016": "the application was not found in the tenant: check AZURE_CLIENT_ID and "
    "AZURE_TENANT_ID (a single-tenant app cannot sign in users of another tenant)",
    "90002": "the tenant does not exist: check AZURE_TENANT_ID",
    "50194": "the application is single-tenant but AZURE_TENANT_ID is 'common' or "
    "'organizations': set AZURE_TENANT_ID to the tenant id, or make the app multi-tenant",
    "90072": "the account is not in the application's tenant: sign in with an account of that "
    "organisation, or have an administrator invite it as a guest",
    "50020": "the account is not in the application's tenant: sign in with an account of that "
    "organisation, or have an administrator invite it as a guest",
    "50105": "the account is not assigned to the application: an administrator must assign it "
    "(Enterprise applications, Users and groups) or turn off 'Assignment required'",
    "53003": "a Conditional Access policy blocked the sign-in: ask an administrator",
    "70011": "a requested scope is invalid: check AZURE_SCOPES",
    "28000": "the requested scopes belong to more than one API: Entra ID issues a token for one "
    "API per request, so keep AZURE_SCOPES to one API",
    "500011": "an API in the requested scopes is not known in the tenant: check AZURE_SCOPES or "
    "have an administrator consent to that API",
    "50076": "multi-factor authentication is required: sign in again",
    "70008": "the sign-in or its refresh token has expired: sign in again",
    "700082": "the refresh token expired after a period of inactivity: sign in again",
}

# Sentences for the authorization-response errors (RFC 6749 §4.1.2.1, OIDC Core 1.0 §3.1.2.6).
AUTHORIZATION_ERRORS: Mapping[str, str] = {
    "access_denied": "Sign-in with Microsoft was cancelled, or the requested permissions were declined.",
    "consent_required": "The application needs consent for the requested permissions: an "
    "administrator must grant admin consent in the Entra ID app registration.",
    "interaction_required": "Microsoft needs an interactive sign-in (for example multi-factor "
    "authentication): start the connection again.",
    "login_required": "Microsoft needs you to sign in again: start the connection again.",
    "invalid_request": "Microsoft rejected the sign-in request: check the Entra ID app "
    "registration (redirect URI on the 'Web' platform) and AZURE_TENANT_ID.",
    "unauthorized_client": "The application may not sign users in this way: check AZURE_CLIENT_ID "
    "and that the app registration has a 'Web' platform with this server's redirect URI.",
    "invalid_scope": "Microsoft rejected the requested permissions: check AZURE_SCOPES.",
    "unsupported_response_type": "The app registration does not allow the authorization code "
    "flow: check its 'Web' platform settings.",
    "server_error": "Microsoft sign-in failed on Microsoft's side: try again in a few minutes.",
    "temporarily_unavailable": "Microsoft sign-in is temporarily unavailable: try again in a few minutes.",
}


def aadsts_code(description: str | None) -> str | None:
    """The number of the first AADSTS code in an error_description, if any."""
    match = AADSTS.search(description or "")
    return match.group(1) if match else None


def describe_upstream_error(error: str, description: str | None) -> str:
    """One readable sentence for an error Entra ID sent to the callback (RFC 6749 §4.1.2.1).

    The description is used only to find the AADSTS code: the callback's query string is
    anyone's to write, so its free text is never echoed back.
    """
    code = aadsts_code(description)
    suffix = f" (AADSTS{code})" if code else ""
    fix = AADSTS_FIXES.get(code or "")
    if fix:
        return f"Sign-in with Microsoft failed: {fix}.{suffix}"
    if error in AUTHORIZATION_ERRORS:
        return AUTHORIZATION_ERRORS[error] + suffix
    shown = error if OAUTH_ERROR.match(error) else "unknown error"
    return f"Sign-in with Microsoft failed ({shown}).{suffix}"


def validate_tenant(tenant: str) -> str:
    """A tenant id (GUID), a verified domain, or common / organizations / consumers."""
    value = tenant.strip().lower()
    if value in MULTI_TENANT_AUTHORITIES or GUID.match(value) or DOMAIN.match(value):
        return value
    raise ValueError(
        f"tenant must be a tenant id (GUID), a domain such as contoso.onmicrosoft.com, "
        f"'organizations' or 'common', got {tenant!r}"
    )


def validate_authority_host(authority_host: str) -> str:
    """The authority host without a trailing slash: https, or http on loopback only."""
    host = require_secure_url(authority_host.rstrip("/"), what="authority_host")
    if not urlsplit(host).hostname:
        raise ValueError(f"authority_host has no host: {authority_host!r}")
    return host


def _scope_resource(scope: str) -> str | None:
    return scope.rsplit("/", 1)[0] if "/" in scope else None


def entra_scopes(
    extra: Iterable[str], *, graph_resource: str = DEFAULT_GRAPH_RESOURCE, reads_groups: bool = False
) -> tuple[str, ...]:
    """``openid profile email offline_access`` plus the API scopes, short Graph names
    (``Mail.Read``) made full (``https://graph.microsoft.com/Mail.Read``), then what reading
    group membership from Graph needs when ``reads_groups`` (allowed groups are set).

    Entra ID issues an access token for one API per request (AADSTS28000), so the API scopes
    must all belong to one resource.
    """
    resource_prefix = graph_resource.rstrip("/") + "/"
    scopes = list(BASE_SCOPES)
    # Groups overage: checkMemberGroups for the signed-in person needs only User.Read (no admin
    # consent), in the same token as the other API scopes.
    for scope in (*extra, *(("User.Read",) if reads_groups else ())):
        scope = scope.strip()
        if not scope:
            continue
        if scope not in OIDC_SCOPES and "/" not in scope and ":" not in scope:
            scope = resource_prefix + scope
        if scope not in scopes:
            scopes.append(scope)
    resources = sorted({resource for scope in scopes if (resource := _scope_resource(scope))})
    if len(resources) > 1:
        raise ValueError(f"scopes for more than one API ({', '.join(resources)}): Entra ID allows one per request")
    return tuple(scopes)


def _string_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise invalid_id_token(f"{name} claim missing")
    return value


class EntraIdentityProvider(OidcIdentityProvider):
    """Entra ID as the upstream provider (single- or multi-tenant app, any cloud)."""

    name = "azure"

    def describe_error(self, error: str, description: str | None) -> str:
        return describe_upstream_error(error, description)

    def __init__(
        self,
        *,
        tenant: str,
        client_id: str,
        client_secret: str = "",
        redirect_uri: str,
        clock: Clock,
        scopes: Iterable[str] = (),
        authority_host: str = DEFAULT_AUTHORITY_HOST,
        graph_resource: str = DEFAULT_GRAPH_RESOURCE,
        allowed_tenants: Iterable[str] = (),
        allowed_groups: Iterable[str] = (),
        graph_base_url: str = DEFAULT_GRAPH_BASE_URL,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        leeway: int = DEFAULT_LEEWAY,
        client_certificate: CertificateCredential | None = None,
    ) -> None:
        self._tenant = validate_tenant(tenant)
        groups = tuple(dict.fromkeys(value.strip().lower() for value in allowed_groups))
        for value in groups:
            if not GUID.match(value):
                raise ValueError(f"allowed_groups holds group object ids (GUIDs), got {value!r}")
        # The groups the access policy admits: the only ones whose membership is ever asked.
        self._allowed_groups = groups
        self._graph_base_url = require_secure_url(graph_base_url.rstrip("/"), what="graph_base_url")
        self._authority_host = validate_authority_host(authority_host)
        allowed = tuple(value.strip().lower() for value in allowed_tenants)
        for value in allowed:
            if not GUID.match(value):
                raise ValueError(f"allowed_tenants holds tenant ids (GUIDs), got {value!r}")
        self._allowed_tenants = frozenset(allowed)
        super().__init__(
            # v2.0 endpoints: discovery at {host}/{tenant}/v2.0/.well-known/openid-configuration.
            issuer=f"{self._authority_host}/{self._tenant}/v2.0",
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            clock=clock,
            scopes=entra_scopes(scopes, graph_resource=graph_resource, reads_groups=bool(groups)),
            session=session,
            timeout=timeout,
            leeway=leeway,
            client_certificate=client_certificate,
        )

    @property
    def tenant(self) -> str:
        return self._tenant

    @property
    def allowed_tenants(self) -> frozenset[str]:
        return self._allowed_tenants

    def _check_discovered_issuer(self, discovered: str) -> None:
        """Entra's issuer is not the discovery prefix: a domain tenant is named by its GUID, and
        common/organizations carry ``{tenantid}``. The document came from the configured
        authority, so its issuer is taken as is; only a multi-tenant authority may be templated."""
        if TENANT_PLACEHOLDER in discovered and self._tenant not in MULTI_TENANT_AUTHORITIES:
            raise ValueError(f"tenant {self._tenant!r} published a multi-tenant issuer {discovered!r}")

    def _check_issuer(self, claims: Mapping[str, Any]) -> None:
        """iss equals the discovered issuer, with ``{tenantid}`` replaced by the token's tid
        for multi-tenant apps; tid must be in allowed_tenants when that is set."""
        issuer = self.metadata().issuer
        tid = _string_claim(claims, "tid").lower()
        if not GUID.match(tid):
            raise invalid_id_token(f"tid {tid!r} is not a tenant id")
        expected = issuer.replace(TENANT_PLACEHOLDER, tid)
        iss = claims.get("iss")
        if iss != expected:
            raise invalid_id_token(f"iss {iss!r} is not the expected issuer {expected!r}")
        if self._allowed_tenants and tid not in self._allowed_tenants:
            raise invalid_id_token(f"tenant {tid} is not one of the allowed tenants")

    def _identity(self, claims: Mapping[str, Any]) -> UpstreamIdentity:
        """The subject is tid + oid: oid is the same for the user in every app of the tenant,
        while Entra's sub is pairwise per application."""
        tid = _string_claim(claims, "tid").lower()
        oid = _string_claim(claims, "oid").lower()
        shown: dict[str, Any] = {"tid": tid, "oid": oid}
        for name in ("preferred_username", "name"):
            if isinstance(claims.get(name), str):
                shown[name] = claims[name]
        email = claims.get("email")
        username = claims.get("preferred_username")
        if isinstance(email, str) and email:
            shown["email"] = email
        elif isinstance(username, str) and "@" in username:
            shown["email"] = username
        return UpstreamIdentity(subject=f"{tid}:{oid}", claims=shown)

    # -- the access policy's claims: groups and app roles ---------------------------------------

    def identity_after_refresh(self, tokens: UpstreamTokens) -> UpstreamIdentity:
        """Entra ID returns an ID token with every refresh that asks for openid; its subject
        (tid + oid) cannot be read from userinfo, so without one the claims are unreadable."""
        if not tokens.id_token:
            raise UpstreamIdentityError("Entra ID returned no valid ID token with the refreshed tokens", temporary=False)
        claims = self.validate_id_token(tokens.id_token, nonce=None)
        return self._identity_with_policy_claims(claims, tokens)

    def _completed_claims(self, claims: Mapping[str, Any], access_token: str) -> Mapping[str, Any]:
        # Entra's userinfo adds nothing the ID token lacks (and no oid or tid).
        return claims

    def _policy_claims(self, claims: Mapping[str, Any], tokens: UpstreamTokens) -> Mapping[str, Any]:
        """``roles`` (app roles assigned to the person, ID-token claims reference) and ``groups``
        as group object ids, from the ID token or, when it does not carry them, from Graph."""
        roles = claims.get("roles")
        policy: dict[str, Any] = {"roles": [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []}
        if self._allowed_groups:
            policy["groups"] = self._groups(claims, tokens.access_token)
        return policy

    def _groups(self, claims: Mapping[str, Any], access_token: str) -> list[str]:
        """The groups claim, unless Entra signals overage (more groups than a token holds:
        ``_claim_names``/``_claim_sources`` name ``groups``, or ``hasgroups``) or the app
        registration emits no groups claim: then Microsoft Graph answers for the allowed groups."""
        names = claims.get("_claim_names")
        overage = (isinstance(names, dict) and "groups" in names) or claims.get("hasgroups") is True
        groups = claims.get("groups")
        if isinstance(groups, list) and not overage:
            return [g.lower() for g in groups if isinstance(g, str)]
        return self._member_groups(access_token)

    def _member_groups(self, access_token: str) -> list[str]:
        """``POST /me/checkMemberGroups`` (Microsoft Graph v1.0, user: checkMemberGroups): which
        of the allowed groups the person is a member of, transitively, in at most 20 ids per
        call; for the signed-in user it needs only the delegated User.Read. Fails closed: no
        answer, no groups (and groups whose membership is hidden from the caller are left out)."""
        url = f"{self._graph_base_url}/me/checkMemberGroups"
        members: list[str] = []
        for start in range(0, len(self._allowed_groups), CHECK_MEMBER_GROUPS_BATCH):
            batch = list(self._allowed_groups[start : start + CHECK_MEMBER_GROUPS_BATCH])
            try:
                status, body = self._call(
                    "POST", url, json={"groupIds": batch}, headers={"Authorization": f"Bearer {access_token}"}
                )
            except requests.RequestException as exc:
                raise UpstreamIdentityError(f"Microsoft Graph unreachable for group membership ({type(exc).__name__})") from None
            if status >= 500 or status == 429:
                raise UpstreamIdentityError(f"Microsoft Graph answered HTTP {status} for group membership")
            if status in (401, 403):
                raise UpstreamIdentityError(
                    f"Microsoft Graph refused to read group membership (HTTP {status}): the app registration needs "
                    "the delegated Microsoft Graph permission User.Read, and AZURE_SCOPES must be Microsoft Graph "
                    "scopes (one API per token)",
                    temporary=False,
                )
            value = body.get("value") if isinstance(body, dict) else None
            if status != 200 or not isinstance(value, list):
                raise UpstreamIdentityError(f"Microsoft Graph answered HTTP {status} without group membership", temporary=False)
            members.extend(g.lower() for g in value if isinstance(g, str))
        return members

    def _describe_token_error(self, error: str, description: str | None) -> str:
        """What the operator must fix, for the AADSTS codes that have a known fix."""
        code = aadsts_code(description)
        fix = AADSTS_FIXES.get(code or "")
        if code == "50011":
            fix = f"the redirect URI {self.redirect_uri} is not registered for the application: add it as a 'Web' redirect URI in the Entra ID app registration"
        elif code in ("65001", "650056"):
            fix = f"{fix} (requested: {self.scope})"
        head = f"Entra ID token endpoint refused the request: {error}"
        if code:
            head += f" (AADSTS{code})"
        detail = f"{fix}; Entra ID said: {description}" if fix else description
        return f"{head}: {detail}" if detail else head
