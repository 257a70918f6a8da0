"""Self-signed application certificates for the certificate-credential tests (what an operator
makes with ``openssl req -x509`` and uploads to the Entra app registration), written as the PEM
file AZURE_CLIENT_CERTIFICATE_PATH names."""

from __future__ import annotations

import base64
import functools
import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@functools.lru_cache(maxsize=4)
def rsa_key(name: str = "app", bits: int = 2048) -> rsa.RSAPrivateKey:
    """One key per name for the whole run (generating RSA keys is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def certificate_for(key: PrivateKey, *, days: float = 365, not_before_days: float = -1, name: str = "mcp-oauth-bridge") -> x509.Certificate:
    now = datetime.now(timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + timedelta(days=not_before_days))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def key_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_credential(
    path: Path, key: PrivateKey, certificate: x509.Certificate, *, password: bytes | None = None, extra: bytes = b""
) -> Path:
    """The certificate then its private key in one PEM file (what openssl's -nodes/-out give)."""
    path.write_bytes(certificate_pem(certificate) + key_pem(key, password) + extra)
    return path


def sha256_thumbprint(certificate: x509.Certificate) -> str:
    """x5t#S256 (RFC 7515 §4.1.8): base64url SHA-256 of the DER certificate."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")
