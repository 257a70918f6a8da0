"""Upstream identity-provider doubles for `responses`: RSA keys with certificates, JWKS, signed
ID tokens, and discovery / token payloads shaped like Google's, Keycloak's, Okta's, Auth0's and
Entra ID's real ones (import what you need explicitly)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs

import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
CLIENT_SECRET = "Qx8Q~s3cr3t.VALUE-that_must~never.leak"
REDIRECT_URI = "https://mcp.example.com/oauth/callback"
NONCE = "mob_n_nonce-0000000000000000000000000000000000"
CODE = "upstream-authorization-code-0.AXEAd3QpFIuWo0-secret"
CODE_VERIFIER = "mob_pv_verifier-000000000000000000000000000000000"
ACCESS_TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6ImFjY2Vzcy10b2tlbiJ9.upstream-access-token"
REFRESH_TOKEN = "1.AXEAupstream-refresh-token-0000000000000000000"
ROTATED_REFRESH_TOKEN = "1.AXEAupstream-refresh-token-rotated-111111111111"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# -- keys ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair with a self-signed certificate, as identity providers publish them."""

    kid: str
    private: RSAKey
    certificate_der: bytes

    @property
    def x5t(self) -> str:
        return b64url(hashlib.sha1(self.certificate_der).digest())

    @property
    def x5t_s256(self) -> str:
        return b64url(hashlib.sha256(self.certificate_der).digest())

    @property
    def x5c(self) -> str:
        return base64.b64encode(self.certificate_der).decode("ascii")

    def public_jwk(self, **members: Any) -> dict[str, Any]:
        jwk = dict(self.private.as_dict(private=False))
        jwk.pop("kid", None)
        return {"kty": "RSA", "kid": self.kid, **{k: v for k, v in jwk.items() if k in ("n", "e")}, **members}


@lru_cache(maxsize=None)
def signing_key(name: str, kid: str | None = None) -> SigningKey:
    """A key per name, generated once per test session (RSA generation is slow)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.idp.example")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(private, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    key = RSAKey.import_key(private)
    # Entra's kid is the certificate thumbprint (the same value as x5t).
    return SigningKey(kid=kid or b64url(hashlib.sha1(der).digest()), private=key, certificate_der=der)


def sign_id_token(
    claims: Mapping[str, Any],
    key: SigningKey,
    *,
    kid: str | None = "",
    alg: str = "RS256",
    header: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWS over ``claims``; ``kid=""`` uses the key's own kid, None leaves it out."""
    headers: dict[str, Any] = {"typ": "JWT", "alg": alg, **(header or {})}
    if kid is not None:
        headers["kid"] = kid or key.kid
    return jwt.encode(headers, dict(claims), key.private, algorithms=[alg])


def sign_with_secret(claims: Mapping[str, Any], secret: str, *, kid: str | None = None) -> str:
    """An HS256 token keyed with a shared secret (what an alg-confusion attacker would send)."""
    headers: dict[str, Any] = {"typ": "JWT", "alg": "HS256"}
    if kid:
        headers["kid"] = kid
    return jwt.encode(headers, dict(claims), OctKey.import_key(secret.encode()), algorithms=["HS256"])


def unsigned_token(claims: Mapping[str, Any], *, kid: str) -> str:
    """An ``alg: none`` token (RFC 7519 §6): header.payload with an empty signature."""
    header = b64url(json.dumps({"alg": "none", "kid": kid}).encode())
    return f"{header}.{b64url(json.dumps(dict(claims)).encode())}."


# -- JWKS shapes -----------------------------------------------------------------------------------


def google_jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk(alg="RS256", use="sig") for key in keys]}


def okta_jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.public_jwk(alg="RS256", use="sig") for key in keys]}


def auth0_jwks(*keys: SigningKey) -> dict[str, Any]:
    return {
        "keys": [key.public_jwk(use="sig", x5t=key.x5t, x5c=[key.x5c], alg="RS256") for key in keys]
    }


def keycloak_jwks(*keys: SigningKey, encryption_key: SigningKey | None = None) -> dict[str, Any]:
    """Keycloak publishes its encryption key (RSA-OAEP, use enc) beside the signing keys."""
    published = [
        key.public_jwk(alg="RS256", use="sig", x5c=[key.x5c], x5t=key.x5t, **{"x5t#S256": key.x5t_s256})
        for key in keys
    ]
    if encryption_key is not None:
        published.append(encryption_key.public_jwk(alg="RSA-OAEP", use="enc", x5c=[encryption_key.x5c]))
    return {"keys": published}


def entra_jwks(*keys: SigningKey, host: str = "https://login.microsoftonline.com") -> dict[str, Any]:
    cloud = host.split("login.", 1)[-1]
    return {
        "keys": [
            key.public_jwk(
                use="sig",
                x5t=key.x5t,
                x5c=[key.x5c],
                cloud_instance_name=cloud,
                issuer=f"{host}/{{tenantid}}/v2.0",
            )
            for key in keys
        ]
    }


# -- discovery documents ---------------------------------------------------------------------------


def google_discovery() -> dict[str, Any]:
    return {
        "issuer": "https://accounts.google.com",
        "authorization_endpoint": "https://accounts.google.com/o/oauth2/v2/auth",
        "device_authorization_endpoint": "https://oauth2.googleapis.com/device/code",
        "token_endpoint": "https://oauth2.googleapis.com/token",
        "userinfo_endpoint": "https://openidconnect.googleapis.com/v1/userinfo",
        "revocation_endpoint": "https://oauth2.googleapis.com/revoke",
        "jwks_uri": "https://www.googleapis.com/oauth2/v3/certs",
        "response_types_supported": ["code", "token", "id_token", "code token", "code id_token", "token id_token", "code token id_token", "none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["aud", "email", "email_verified", "exp", "family_name", "given_name", "iat", "iss", "name", "picture", "sub"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
    }


def keycloak_discovery(base: str = "https://kc.example/realms/acme") -> dict[str, Any]:
    oidc = f"{base}/protocol/openid-connect"
    return {
        "issuer": base,
        "authorization_endpoint": f"{oidc}/auth",
        "token_endpoint": f"{oidc}/token",
        "introspection_endpoint": f"{oidc}/token/introspect",
        "userinfo_endpoint": f"{oidc}/userinfo",
        "end_session_endpoint": f"{oidc}/logout",
        "frontchannel_logout_session_supported": True,
        "frontchannel_logout_supported": True,
        "jwks_uri": f"{oidc}/certs",
        "check_session_iframe": f"{oidc}/login-status-iframe.html",
        "grant_types_supported": ["authorization_code", "implicit", "refresh_token", "password", "client_credentials", "urn:openid:params:grant-type:ciba", "urn:ietf:params:oauth:grant-type:device_code"],
        "acr_values_supported": ["0", "1"],
        "response_types_supported": ["code", "none", "id_token", "token", "id_token token", "code id_token", "code token", "code id_token token"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["PS384", "RS384", "EdDSA", "ES384", "HS256", "HS512", "ES256", "RS256", "HS384", "ES512", "PS256", "PS512", "RS512"],
        "id_token_encryption_alg_values_supported": ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"],
        "userinfo_signing_alg_values_supported": ["PS384", "RS384", "EdDSA", "ES384", "HS256", "HS512", "ES256", "RS256", "HS384", "ES512", "PS256", "PS512", "RS512", "none"],
        "request_object_signing_alg_values_supported": ["PS384", "RS384", "EdDSA", "ES384", "HS256", "HS512", "ES256", "RS256", "HS384", "ES512", "PS256", "PS512", "RS512", "none"],
        "response_modes_supported": ["query", "fragment", "form_post", "query.jwt", "fragment.jwt", "form_post.jwt", "jwt"],
        "registration_endpoint": f"{base}/clients-registrations/openid-connect",
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post", "tls_client_auth", "client_secret_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["PS384", "RS384", "EdDSA", "ES384", "HS256", "HS512", "ES256", "RS256", "HS384", "ES512", "PS256", "PS512", "RS512"],
        "claims_supported": ["aud", "sub", "iss", "auth_time", "name", "given_name", "family_name", "preferred_username", "email", "acr"],
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": True,
        "scopes_supported": ["openid", "profile", "email", "offline_access", "roles", "web-origins", "acr", "address", "phone", "microprofile-jwt", "basic"],
        "request_parameter_supported": True,
        "request_uri_parameter_supported": True,
        "require_request_uri_registration": True,
        "code_challenge_methods_supported": ["plain", "S256"],
        "tls_client_certificate_bound_access_tokens": True,
        "revocation_endpoint": f"{oidc}/revoke",
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "device_authorization_endpoint": f"{oidc}/auth/device",
        "pushed_authorization_request_endpoint": f"{oidc}/ext/par/request",
        "require_pushed_authorization_requests": False,
        "authorization_response_iss_parameter_supported": True,
    }


def okta_discovery(base: str = "https://acme.okta.com/oauth2/default") -> dict[str, Any]:
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/v1/authorize",
        "token_endpoint": f"{base}/v1/token",
        "userinfo_endpoint": f"{base}/v1/userinfo",
        "registration_endpoint": "https://acme.okta.com/oauth2/v1/clients",
        "jwks_uri": f"{base}/v1/keys",
        "response_types_supported": ["code", "id_token", "code id_token", "code token", "id_token token", "code id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post", "okta_post_message"],
        "grant_types_supported": ["authorization_code", "implicit", "refresh_token", "password", "urn:ietf:params:oauth:grant-type:device_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "address", "phone", "offline_access", "device_sso"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt", "none"],
        "claims_supported": ["iss", "ver", "sub", "aud", "iat", "exp", "jti", "auth_time", "amr", "idp", "nonce", "name", "preferred_username", "email", "email_verified", "at_hash", "c_hash"],
        "code_challenge_methods_supported": ["S256"],
        "introspection_endpoint": f"{base}/v1/introspect",
        "revocation_endpoint": f"{base}/v1/revoke",
        "end_session_endpoint": f"{base}/v1/logout",
        "request_parameter_supported": True,
        "request_object_signing_alg_values_supported": ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"],
        "device_authorization_endpoint": f"{base}/v1/device/authorize",
        "pushed_authorization_request_endpoint": f"{base}/v1/par",
    }


def auth0_discovery(domain: str = "https://acme.auth0.com") -> dict[str, Any]:
    """Auth0's issuer ends with a slash; its endpoints do not."""
    return {
        "issuer": f"{domain}/",
        "authorization_endpoint": f"{domain}/authorize",
        "token_endpoint": f"{domain}/oauth/token",
        "device_authorization_endpoint": f"{domain}/oauth/device/code",
        "userinfo_endpoint": f"{domain}/userinfo",
        "mfa_challenge_endpoint": f"{domain}/mfa/challenge",
        "jwks_uri": f"{domain}/.well-known/jwks.json",
        "registration_endpoint": f"{domain}/oidc/register",
        "revocation_endpoint": f"{domain}/oauth/revoke",
        "scopes_supported": ["openid", "profile", "offline_access", "name", "given_name", "family_name", "nickname", "email", "email_verified", "picture", "created_at", "identities", "phone", "address"],
        "response_types_supported": ["code", "token", "id_token", "code token", "code id_token", "token id_token", "code token id_token"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["public"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "claims_supported": ["aud", "auth_time", "created_at", "email", "email_verified", "exp", "family_name", "given_name", "iat", "identities", "iss", "name", "nickname", "phone_number", "picture", "sub"],
        "request_uri_parameter_supported": False,
        "request_parameter_supported": False,
        "id_token_signing_alg_values_supported": ["HS256", "RS256", "PS256"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "PS256"],
        "end_session_endpoint": f"{domain}/oidc/logout",
    }


def entra_discovery(
    *,
    host: str = "https://login.microsoftonline.com",
    tenant_path: str,
    issuer_tenant: str,
) -> dict[str, Any]:
    """Entra's v2.0 document: endpoints under the requested tenant segment (a domain tenant is
    answered with its GUID), issuer with the tenant id or the literal ``{tenantid}``."""
    cloud = host.split("login.", 1)[-1]
    graph_host = "graph.microsoft.us" if cloud == "microsoftonline.us" else "graph.microsoft.com"
    base = f"{host}/{tenant_path}"
    return {
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{host}/{issuer_tenant}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"https://{graph_host}/oidc/userinfo",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": f"{base}/kerberos",
        "tenant_region_scope": "EU" if issuer_tenant != "{tenantid}" else None,
        "cloud_instance_name": cloud,
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": graph_host,
        "rbac_url": "https://pas.windows.net",
    }


# -- ID-token claims -------------------------------------------------------------------------------


def google_claims(now: int, *, nonce: str = NONCE, client_id: str = CLIENT_ID) -> dict[str, Any]:
    return {
        "iss": "https://accounts.google.com",
        "azp": client_id,
        "aud": client_id,
        "sub": "110169484474386276334",
        "email": "alice@example.com",
        "email_verified": True,
        "at_hash": "HK6E_P6Dh8Y93mRNtsDB1Q",
        "nonce": nonce,
        "name": "Alice Example",
        "picture": "https://lh3.googleusercontent.com/a/alice",
        "given_name": "Alice",
        "family_name": "Example",
        "iat": now,
        "exp": now + 3599,
    }


def keycloak_claims(now: int, *, nonce: str = NONCE, client_id: str = CLIENT_ID) -> dict[str, Any]:
    return {
        "exp": now + 300,
        "iat": now,
        "auth_time": now - 5,
        "jti": "f7c6a2f1-8d5e-4b47-9d0e-7a9e5b3b2c11",
        "iss": "https://kc.example/realms/acme",
        "aud": client_id,
        "sub": "3d5f8a41-6b0e-4c7b-9f1a-2a6c0c6f9e27",
        "typ": "ID",
        "azp": client_id,
        "nonce": nonce,
        "sid": "0b5c6f2e-8d0a-4f5e-b1c2-7e9a3d4f5a6b",
        "at_hash": "3bDQ5n4B6o0qK8qkY1xJvA",
        "acr": "1",
        "email_verified": True,
        "name": "Alice Example",
        "preferred_username": "alice",
        "given_name": "Alice",
        "family_name": "Example",
        "email": "alice@acme.example",
    }


def okta_claims(now: int, *, nonce: str = NONCE, client_id: str = CLIENT_ID) -> dict[str, Any]:
    return {
        "sub": "00uid4BxXw6I6TV4m0g3",
        "name": "Alice Example",
        "email": "alice@acme.example",
        "ver": 1,
        "iss": "https://acme.okta.com/oauth2/default",
        "aud": client_id,
        "iat": now,
        "exp": now + 3600,
        "jti": "ID.4eAWJOCMB3SX8XewDfVR",
        "amr": ["pwd"],
        "idp": "00ok1u7AsAkrwdZL3z0g3",
        "nonce": nonce,
        "preferred_username": "alice@acme.example",
        "auth_time": now - 10,
        "at_hash": "preview_at_hash",
    }


def auth0_claims(now: int, *, nonce: str = NONCE, client_id: str = CLIENT_ID) -> dict[str, Any]:
    return {
        "nickname": "alice",
        "name": "alice@acme.example",
        "picture": "https://s.gravatar.com/avatar/alice.png",
        "updated_at": "2024-05-01T10:00:00.000Z",
        "email": "alice@acme.example",
        "email_verified": True,
        "iss": "https://acme.auth0.com/",
        "aud": client_id,
        "sub": "auth0|64f1c2d3e4b5a6978899aabb",
        "iat": now,
        "exp": now + 36000,
        "sid": "pH1YoLZ9Y1vCkU2cSxTeYr6bP3LL2s9o",
        "nonce": nonce,
    }


ENTRA_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
ENTRA_OID = "00000000-0000-0000-66f3-3332eca7ea81"


def entra_claims(
    now: int,
    *,
    tenant: str = ENTRA_TENANT,
    issuer_host: str = "https://login.microsoftonline.com",
    nonce: str = NONCE,
    client_id: str = CLIENT_ID,
    oid: str = ENTRA_OID,
) -> dict[str, Any]:
    """A v2.0 ID token's claims (the email claim only appears with the optional claim set up)."""
    return {
        "aud": client_id,
        "iss": f"{issuer_host}/{tenant}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "aio": "AXQAi/8WAAAA3s4F0xLq",
        "name": "Alice Example",
        "nonce": nonce,
        "oid": oid,
        "preferred_username": "alice@contoso.onmicrosoft.com",
        "rh": "0.AXEAv4j5cvGGr0GRqy180BHbR3bedjGmFK5Jl7xuumkUOR5xAAA.",
        "sid": "003a2c6e-5c5a-4f4e-b1f4-0d8b5c2f0f1a",
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "tid": tenant,
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "2.0",
    }


# -- token responses -------------------------------------------------------------------------------


def token_response(
    *,
    id_token: str | None,
    refresh_token: str | None = REFRESH_TOKEN,
    scope: str | None = "openid profile email",
    expires_in: int = 3599,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": expires_in}
    if scope is not None:
        body["scope"] = scope
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    if id_token is not None:
        body["id_token"] = id_token
    body.update(extra)
    return body


def entra_token_response(*, id_token: str | None, scope: str, refresh_token: str | None = REFRESH_TOKEN) -> dict[str, Any]:
    return token_response(id_token=id_token, refresh_token=refresh_token, scope=scope, expires_in=4220, ext_expires_in=4220)


def entra_error(error: str, code: str, message: str, *, status: int = 400) -> dict[str, Any]:
    """Entra's token-endpoint error body (error_codes, trace and correlation ids)."""
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {message} Trace ID: 0a1b2c3d-0000-4e5f-8a9b-0c1d2e3f4a5b "
        "Correlation ID: 11111111-2222-3333-4444-555555555555 Timestamp: 2026-11-02 10:00:00Z",
        "error_codes": [int(code)],
        "timestamp": "2026-11-02 10:00:00Z",
        "trace_id": "0a1b2c3d-0000-4e5f-8a9b-0c1d2e3f4a5b",
        "correlation_id": "11111111-2222-3333-4444-555555555555",
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


# -- inspecting what the adapter sent ----------------------------------------------------------------


def form_of(call: Any) -> dict[str, str]:
    """The form body of a recorded `responses` call, one value per field."""
    body = call.request.body
    text = body.decode() if isinstance(body, bytes) else str(body or "")
    return {name: values[0] for name, values in parse_qs(text, keep_blank_values=True).items()}


def calls_to(mock: responses.RequestsMock, url: str) -> list[Any]:
    return [call for call in mock.calls if (call.request.url or "").split("?", 1)[0] == url]


ClaimsFactory = Callable[..., dict[str, Any]]
