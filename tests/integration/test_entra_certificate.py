"""Entra ID with a certificate credential instead of a client secret (Microsoft identity
platform, "certificate credentials"; RFC 7523 §2.2): the client assertion sent with the code
exchange and refresh, checked with the certificate's public key, and the start-up checks of
AZURE_CLIENT_CERTIFICATE_PATH / AZURE_CLIENT_CERTIFICATE_PASSWORD."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
import requests
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import RSAKey
from joserfc.jws import extract_compact

from mcp_oauth_bridge.adapters.identity.certificate import CertificateCredential
from mcp_oauth_bridge.adapters.identity.entra import EntraIdentityProvider
from mcp_oauth_bridge.adapters.system import SystemClock
from mcp_oauth_bridge.domain.ports import UpstreamIdentityError
from mcp_oauth_bridge.entrypoints.config import ConfigError, load_settings
from tests.fakes import FixedClock

from .certificates import certificate_for, certificate_pem, key_pem, rsa_key, sha256_thumbprint, write_credential
from .conftest import environment_for, run_check_config
from .entra_standin import USERNAME, EntraStandIn, s256
from .mcp_calls import MODERN
from .mcp_sdk_driver import (
    HeadlessBrowser,
    InMemoryTokenStorage,
    RequestLog,
    connected_client,
    oauth_provider,
    sign_in_with_redirecting_idp,
    text_of,
)
from .servers import running_server
from .idp_fixtures import (
    CLIENT_ID,
    CODE,
    CODE_VERIFIER,
    ENTRA_TENANT,
    NONCE,
    REDIRECT_URI,
    REFRESH_TOKEN,
    calls_to,
    entra_claims,
    entra_discovery,
    entra_jwks,
    entra_token_response,
    form_of,
    sign_id_token,
    signing_key,
)

NOW = 1_800_000_000
HOST = "https://login.microsoftonline.com"
TOKEN_ENDPOINT = f"{HOST}/{ENTRA_TENANT}/oauth2/v2.0/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def credential_file(tmp_path: Path) -> Path:
    return write_credential(tmp_path / "app.pem", rsa_key(), certificate_for(rsa_key()))


def entra(mock: responses.RequestsMock) -> None:
    """Entra's discovery, keys and a token endpoint answering every request with a login."""
    document = entra_discovery(host=HOST, tenant_path=ENTRA_TENANT, issuer_tenant=ENTRA_TENANT)
    assert document["token_endpoint"] == TOKEN_ENDPOINT
    mock.get(f"{HOST}/{ENTRA_TENANT}/v2.0/.well-known/openid-configuration", json=document)
    key = signing_key("entra")
    mock.get(str(document["jwks_uri"]), json=entra_jwks(key, host=HOST))
    id_token = sign_id_token(entra_claims(NOW), key, header={"x5t": key.x5t})
    mock.post(TOKEN_ENDPOINT, json=entra_token_response(id_token=id_token, scope="openid profile email"))


def provider(credential: CertificateCredential) -> EntraIdentityProvider:
    return EntraIdentityProvider(
        tenant=ENTRA_TENANT, client_id=CLIENT_ID, client_certificate=credential, redirect_uri=REDIRECT_URI,
        clock=FixedClock(NOW), session=requests.Session(),
    )  # fmt: skip


def checked_assertion(call: Any, *, certificate: x509.Certificate) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token request's client authentication: an assertion and nothing secret-based."""
    form = form_of(call)
    assert "client_secret" not in form
    assert "Authorization" not in call.request.headers
    assert form["client_id"] == CLIENT_ID
    assert form["client_assertion_type"] == ASSERTION_TYPE
    assertion = form["client_assertion"]
    header = dict(extract_compact(assertion.encode()).headers())
    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    token = jwt.decode(assertion, RSAKey.import_key(public_key), algorithms=["PS256"])
    return header, dict(token.claims)


def test_code_exchange_and_refresh_authenticate_with_a_client_assertion(mock: responses.RequestsMock, credential_file: Path) -> None:
    entra(mock)
    credential = CertificateCredential.from_file(str(credential_file))
    upstream = provider(credential)
    login = upstream.exchange_code(code=CODE, code_verifier=CODE_VERIFIER, nonce=NONCE)
    assert login.identity.subject.endswith(":" + entra_claims(NOW)["oid"])
    upstream.refresh(REFRESH_TOKEN)

    calls = calls_to(mock, TOKEN_ENDPOINT)
    assert [form_of(call)["grant_type"] for call in calls] == ["authorization_code", "refresh_token"]
    # What was uploaded to the app registration: the file's certificate.
    certificate = x509.load_pem_x509_certificate(credential_file.read_bytes())
    jtis = []
    for call in calls:
        header, claims = checked_assertion(call, certificate=certificate)
        assert header == {"alg": "PS256", "typ": "JWT", "x5t#S256": sha256_thumbprint(certificate)}
        assert claims["aud"] == TOKEN_ENDPOINT
        assert claims["iss"] == claims["sub"] == CLIENT_ID
        assert claims["nbf"] == claims["iat"] == NOW
        assert 0 < claims["exp"] - NOW <= 600
        jtis.append(claims["jti"])
    assert len(set(jtis)) == 2 and all(jtis)


def test_the_header_thumbprint_is_the_certificates_sha256(tmp_path: Path) -> None:
    certificate = certificate_for(rsa_key())
    path = write_credential(tmp_path / "app.pem", rsa_key(), certificate)
    credential = CertificateCredential.from_file(str(path))
    assert credential.thumbprint == sha256_thumbprint(certificate)
    assertion = credential.client_assertion(client_id=CLIENT_ID, audience=TOKEN_ENDPOINT, now=NOW)
    assert extract_compact(assertion.encode()).headers()["x5t#S256"] == sha256_thumbprint(certificate)
    # Signed with the certificate's key and no other.
    other = rsa_key("other").public_key()
    with pytest.raises(BadSignatureError):
        jwt.decode(assertion, RSAKey.import_key(other), algorithms=["PS256"])
    assert jwt.decode(assertion, RSAKey.import_key(certificate.public_key()), algorithms=["PS256"]).claims["aud"] == TOKEN_ENDPOINT


# -- start-up checks ---------------------------------------------------------------------------------


def entra_environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    return environment_for(tmp_path, IDP_PROVIDER="azure", AZURE_TENANT_ID=ENTRA_TENANT, AZURE_CLIENT_ID=CLIENT_ID, **overrides)


def test_a_certificate_replaces_the_client_secret(tmp_path: Path, credential_file: Path) -> None:
    settings = load_settings(entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(credential_file)), dotenv_path=None)
    assert settings.entra is not None and settings.entra.client_secret == ""
    assert settings.entra.client_certificate is not None
    uploaded = x509.load_pem_x509_certificate(credential_file.read_bytes())
    assert settings.entra.client_certificate.thumbprint == sha256_thumbprint(uploaded)
    assert "PRIVATE" not in repr(settings)


def test_exactly_one_credential_is_required(tmp_path: Path, credential_file: Path) -> None:
    with pytest.raises(ConfigError, match="AZURE_CLIENT_SECRET .*or AZURE_CLIENT_CERTIFICATE_PATH .*is required"):
        load_settings(entra_environment(tmp_path), dotenv_path=None)
    both = entra_environment(tmp_path, AZURE_CLIENT_SECRET="s3cret", AZURE_CLIENT_CERTIFICATE_PATH=str(credential_file))
    with pytest.raises(ConfigError, match="AZURE_CLIENT_SECRET and AZURE_CLIENT_CERTIFICATE_PATH are both set"):
        load_settings(both, dotenv_path=None)
    with pytest.raises(ConfigError, match="AZURE_CLIENT_CERTIFICATE_PASSWORD is set without AZURE_CLIENT_CERTIFICATE_PATH"):
        load_settings(entra_environment(tmp_path, AZURE_CLIENT_SECRET="s3cret", AZURE_CLIENT_CERTIFICATE_PASSWORD="pw"), dotenv_path=None)


def test_the_key_may_come_first_and_a_chain_may_follow(tmp_path: Path) -> None:
    leaf = certificate_for(rsa_key())
    issuer = certificate_for(rsa_key("issuer"), name="issuing CA")
    path = tmp_path / "app.pem"
    path.write_bytes(key_pem(rsa_key()) + certificate_pem(issuer) + certificate_pem(leaf))
    settings = load_settings(entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(path)), dotenv_path=None)
    assert settings.entra is not None and settings.entra.client_certificate is not None
    assert settings.entra.client_certificate.thumbprint == sha256_thumbprint(leaf)


def test_an_encrypted_key_needs_its_password(tmp_path: Path) -> None:
    path = write_credential(tmp_path / "app.pem", rsa_key(), certificate_for(rsa_key()), password=b"correct horse")
    (tmp_path / "password").write_text("correct horse\n")
    settings = load_settings(
        entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(path), AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE=str(tmp_path / "password")),
        dotenv_path=None,
    )
    assert settings.entra is not None and settings.entra.client_certificate is not None
    with pytest.raises(ConfigError, match="AZURE_CLIENT_CERTIFICATE_PASSWORD: the private key is encrypted and no password was given"):
        load_settings(entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(path)), dotenv_path=None)
    with pytest.raises(ConfigError, match="AZURE_CLIENT_CERTIFICATE_PASSWORD: the password does not decrypt") as wrong:
        load_settings(entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(path), AZURE_CLIENT_CERTIFICATE_PASSWORD="hunter2"), dotenv_path=None)
    assert "hunter2" not in str(wrong.value)


@pytest.mark.parametrize(
    "content, reason",
    [
        (lambda: certificate_pem(certificate_for(rsa_key())), "exactly one private key, it holds 0"),
        (lambda: key_pem(rsa_key()), "holds no CERTIFICATE"),
        (lambda: certificate_pem(certificate_for(rsa_key("other"))) + key_pem(rsa_key()), "no certificate in the PEM file matches its private key"),
        (lambda: b"hunter2 is not PEM\n", "exactly one private key, it holds 0"),
        (lambda: certificate_pem(certificate_for(rsa_key("small", 1024))) + key_pem(rsa_key("small", 1024)), "at least 2048 bits"),
    ],
)
def test_an_unusable_pem_file_is_refused_at_start_up(tmp_path: Path, content: Any, reason: str) -> None:
    path = tmp_path / "app.pem"
    path.write_bytes(content())
    with pytest.raises(ConfigError, match="AZURE_CLIENT_CERTIFICATE_PATH") as refused:
        load_settings(entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(path)), dotenv_path=None)
    assert reason in str(refused.value)
    assert "hunter2" not in str(refused.value) and "BEGIN" not in str(refused.value)


def test_an_ec_key_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = write_credential(tmp_path / "app.pem", key, certificate_for(key))
    with pytest.raises(ConfigError, match="AZURE_CLIENT_CERTIFICATE_PATH.*must be RSA"):
        load_settings(entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(path)), dotenv_path=None)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AZURE_CLIENT_CERTIFICATE_PATH.*cannot read"):
        load_settings(entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(tmp_path / "absent.pem")), dotenv_path=None)


def test_an_expired_certificate_is_refused_and_one_close_to_expiry_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expired = write_credential(tmp_path / "expired.pem", rsa_key(), certificate_for(rsa_key(), days=-1, not_before_days=-30))
    with pytest.raises(ConfigError, match="AZURE_CLIENT_CERTIFICATE_PATH: the client certificate .* expired on"):
        load_settings(entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(expired)), dotenv_path=None)

    soon = write_credential(tmp_path / "soon.pem", rsa_key(), certificate_for(rsa_key(), days=10))
    with caplog.at_level(logging.WARNING, logger="mcp_oauth_bridge.entrypoints.config"):
        settings = load_settings(entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(soon)), dotenv_path=None)
    warnings = [record.getMessage() for record in caplog.records if "AZURE_CLIENT_CERTIFICATE_PATH" in record.getMessage()]
    assert len(warnings) == 1 and "expires on" in warnings[0] and "in 9 days" in warnings[0]
    credential = settings.entra.client_certificate if settings.entra else None
    assert credential is not None and 9 < credential.days_left() < 10
    assert credential.expiry_warning() == warnings[0].removeprefix("AZURE_CLIENT_CERTIFICATE_PATH: ")

    caplog.clear()
    later = write_credential(tmp_path / "later.pem", rsa_key(), certificate_for(rsa_key(), days=31))
    with caplog.at_level(logging.WARNING, logger="mcp_oauth_bridge.entrypoints.config"):
        settings = load_settings(entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(later)), dotenv_path=None)
    assert not [record for record in caplog.records if "AZURE_CLIENT_CERTIFICATE_PATH" in record.getMessage()]
    assert settings.entra is not None and settings.entra.client_certificate is not None
    assert settings.entra.client_certificate.expiry_warning() is None
    in_two_days = datetime.now(timezone.utc) + timedelta(days=2)
    assert settings.entra.client_certificate.expiry_warning(in_two_days) is not None


# -- against the local Entra stand-in ------------------------------------------------------------


def standin_provider(stand_in: EntraStandIn, credential: CertificateCredential) -> EntraIdentityProvider:
    return EntraIdentityProvider(
        tenant=stand_in.tenant, client_id=stand_in.client_id, client_certificate=credential,
        redirect_uri="http://127.0.0.1:8000/oauth/callback", clock=SystemClock(), authority_host=stand_in.authority_host,
    )  # fmt: skip


def test_the_entra_standin_accepts_the_assertions_and_refuses_another_certificate(tmp_path: Path) -> None:
    uploaded = certificate_for(rsa_key())
    path = write_credential(tmp_path / "app.pem", rsa_key(), uploaded)
    stand_in = EntraStandIn(client_certificate=uploaded).start()
    try:
        upstream = standin_provider(stand_in, CertificateCredential.from_file(str(path)))
        verifier = "v" * 43
        sign_in = requests.get(upstream.authorization_url(state="st", nonce="nc", code_challenge=s256(verifier)), allow_redirects=False, timeout=10)
        code = parse_qs(urlsplit(sign_in.headers["Location"]).query)["code"][0]
        login = upstream.exchange_code(code=code, code_verifier=verifier, nonce="nc")
        assert login.tokens.refresh_token is not None
        refreshed = upstream.refresh(login.tokens.refresh_token)
        assert [(call.grant_type, call.status) for call in stand_in.token_calls] == [("authorization_code", 200), ("refresh_token", 200)]
        assert stand_in.violations == []
        assert [claims["aud"] for claims in stand_in.assertions] == [stand_in.token_endpoint] * 2

        # A certificate that was not uploaded to the app registration: Entra's AADSTS700027, explained.
        stranger = certificate_for(rsa_key("other"))
        other_path = write_credential(tmp_path / "other.pem", rsa_key("other"), stranger)
        impostor = standin_provider(stand_in, CertificateCredential.from_file(str(other_path)))
        assert refreshed.refresh_token is not None
        with pytest.raises(UpstreamIdentityError, match="AADSTS700027") as refused:
            impostor.refresh(refreshed.refresh_token)
        assert "Certificates & secrets" in str(refused.value)
        assert stand_in.violations == ["client assertion: not signed by the registered certificate (BadSignatureError)"]
    finally:
        stand_in.stop()


@pytest.mark.slow
def test_a_server_configured_with_a_certificate_signs_people_in_through_entra(tmp_path: Path) -> None:
    """gunicorn with AZURE_CLIENT_CERTIFICATE_PATH and no secret: the MCP SDK client registers,
    the person signs in at the stand-in, and whoami answers; Entra saw only assertions."""
    uploaded = certificate_for(rsa_key())
    path = write_credential(tmp_path / "app.pem", rsa_key(), uploaded)
    stand_in = EntraStandIn(client_certificate=uploaded).start()
    try:
        environment = stand_in.server_environment(toolsets="identity", certificate_path=str(path))
        with running_server(tmp_path, **environment) as server:
            mcp_url = server.base_url + "/mcp"
            browser = HeadlessBrowser(username=USERNAME, sign_in=sign_in_with_redirecting_idp)

            async def scenario() -> str:
                provider = oauth_provider(mcp_url, InMemoryTokenStorage(), browser)
                async with connected_client(mcp_url, provider, MODERN, RequestLog()) as client:
                    return text_of(await client.call_tool("whoami", {}))

            text = anyio.run(scenario)
        assert USERNAME in text
        assert [(call.grant_type, call.status) for call in stand_in.token_calls] == [("authorization_code", 200)]
        assert len(stand_in.assertions) == 1 and stand_in.violations == []
    finally:
        stand_in.stop()


def test_check_config_shows_the_certificate_the_portal_lists(tmp_path: Path) -> None:
    uploaded = certificate_for(rsa_key(), days=100)
    path = write_credential(tmp_path / "app.pem", rsa_key(), uploaded)
    result = run_check_config(tmp_path, entra_environment(tmp_path, AZURE_CLIENT_CERTIFICATE_PATH=str(path)))
    assert result.returncode == 0, result.stderr
    sha1 = uploaded.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - the portal's thumbprint
    assert f"AZURE_CLIENT_CERTIFICATE_PATH: CN=mcp-oauth-bridge, thumbprint {sha1}, expires {uploaded.not_valid_after_utc:%Y-%m-%d}" in result.stdout
    assert "PRIVATE KEY" not in result.stdout + result.stderr


def test_the_readiness_report_warns_within_thirty_days(tmp_path: Path) -> None:
    path = write_credential(tmp_path / "app.pem", rsa_key(), certificate_for(rsa_key(), days=45))
    credential = CertificateCredential.from_file(str(path))
    now = datetime.now(timezone.utc)
    calm = credential.readiness(now)
    assert calm == {"expires_at": credential.expires_at.isoformat(), "days_left": 44, "warning": None}
    close = credential.readiness(now + timedelta(days=20))
    assert close["days_left"] == 24 and "expires on" in str(close["warning"])
    assert "expired on" in str(credential.readiness(now + timedelta(days=46))["warning"])
