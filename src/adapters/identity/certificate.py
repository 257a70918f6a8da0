"""A certificate credential: client authentication with a signed JWT instead of a client secret
(RFC 7523 §2.2 and §3, OIDC Core 1.0 §9 ``private_key_jwt``), in the form Microsoft identity
platform's "certificate credentials" page prescribes for Entra ID:

- header: ``alg`` PS256, ``typ`` JWT, ``x5t#S256`` the base64url SHA-256 thumbprint of the
  certificate's DER encoding (how Entra finds the certificate uploaded to the app registration);
- claims: ``aud`` the token endpoint, ``iss`` = ``sub`` = the application (client) id, ``jti``
  unique, ``nbf`` = ``iat`` = now, ``exp`` a few minutes later;
- sent as ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and
  ``client_assertion`` with the token request.

The credential is read from one PEM file holding the certificate (and any chain) and its private
key; everything is checked when it is loaded, at start-up.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHM = "PS256"
# Seconds an assertion is valid: Microsoft asks for a short one (5-10 minutes after nbf); each
# token request signs a fresh one.
ASSERTION_LIFETIME = 300
# Entra ID accepts RSA keys of at least 2048 bits for certificate credentials.
MIN_RSA_KEY_SIZE = 2048
# Start-up and /readyz warn this many days before the certificate expires.
EXPIRY_WARNING_DAYS = 30
PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


class CertificatePasswordError(ValueError):
    """The private key's password is missing, wrong or given for a key that has none."""


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _private_key(blocks: list[tuple[str, bytes]], password: bytes | None) -> rsa.RSAPrivateKey:
    keys = [block for label, block in blocks if label.endswith("PRIVATE KEY")]
    if len(keys) != 1:
        raise ValueError(f"the PEM file must hold exactly one private key, it holds {len(keys)}")
    try:
        key = serialization.load_pem_private_key(keys[0], password=password)
    except TypeError:
        # cryptography's TypeError: a password for a plain key, or none for an encrypted one.
        if password is None:
            raise CertificatePasswordError("the private key is encrypted and no password was given") from None
        raise CertificatePasswordError("a password was given but the private key is not encrypted") from None
    except ValueError:
        if password is not None and b"ENCRYPTED" in keys[0]:
            raise CertificatePasswordError("the password does not decrypt the private key") from None
        raise ValueError("the private key cannot be read (not a PEM private key)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"the private key must be RSA (Entra ID signs with {ASSERTION_ALGORITHM}), it is {type(key).__name__}")
    if key.key_size < MIN_RSA_KEY_SIZE:
        raise ValueError(f"the RSA key must have at least {MIN_RSA_KEY_SIZE} bits, it has {key.key_size}")
    return key


def _matching_certificate(blocks: list[tuple[str, bytes]], key: rsa.RSAPrivateKey) -> x509.Certificate:
    """The certificate of ``key`` among those in the file (a chain may follow it)."""
    certificates = []
    for label, block in blocks:
        if label == "CERTIFICATE":
            try:
                certificates.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                raise ValueError("a CERTIFICATE block cannot be read") from None
    if not certificates:
        raise ValueError("the PEM file holds no CERTIFICATE")
    public = key.public_key().public_numbers()
    for certificate in certificates:
        candidate = certificate.public_key()
        if isinstance(candidate, rsa.RSAPublicKey) and candidate.public_numbers() == public:
            return certificate
    raise ValueError("no certificate in the PEM file matches its private key")


class CertificateCredential:
    """An application's certificate and private key, signing client assertions."""

    def __init__(self, certificate: x509.Certificate, private_key: rsa.RSAPrivateKey) -> None:
        self._certificate = certificate
        self._key = RSAKey.import_key(private_key)
        der = certificate.public_bytes(serialization.Encoding.DER)
        self._thumbprint_sha256 = _base64url(hashlib.sha256(der).digest())
        self._thumbprint_sha1_hex = hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - what the portal shows

    @classmethod
    def from_pem(cls, data: bytes, *, password: bytes | None = None) -> CertificateCredential:
        """The credential from PEM text holding the certificate and its private key (in either
        order, with any chain); ValueError (CertificatePasswordError for password problems)
        says what is wrong without repeating the file's content."""
        blocks = [(match.group(1).decode("ascii"), match.group(0)) for match in PEM_BLOCK.finditer(data)]
        key = _private_key(blocks, password)
        return cls(_matching_certificate(blocks, key), key)

    @classmethod
    def from_file(cls, path: str, *, password: bytes | None = None) -> CertificateCredential:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ValueError(f"cannot read {path!r} ({exc.strerror or type(exc).__name__})") from None
        return cls.from_pem(data, password=password)

    # -- what operators and /readyz read -------------------------------------------------------

    @property
    def thumbprint(self) -> str:
        """The SHA-256 thumbprint, base64url (the assertion's x5t#S256)."""
        return self._thumbprint_sha256

    @property
    def sha1_thumbprint(self) -> str:
        """The SHA-1 thumbprint in hex, as the Entra portal lists the uploaded certificate."""
        return self._thumbprint_sha1_hex

    @property
    def subject(self) -> str:
        return self._certificate.subject.rfc4514_string()

    @property
    def expires_at(self) -> datetime:
        """The certificate's notAfter (UTC)."""
        return self._certificate.not_valid_after_utc

    def days_left(self, now: datetime | None = None) -> float:
        """Days until the certificate expires (negative once it has)."""
        now = now or datetime.now(timezone.utc)
        return (self.expires_at - now).total_seconds() / 86400

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.days_left(now) <= 0

    def expiry_warning(self, now: datetime | None = None) -> str | None:
        """A sentence for logs and /readyz when the certificate expires within
        EXPIRY_WARNING_DAYS (or has expired), else None."""
        days = self.days_left(now)
        if days > EXPIRY_WARNING_DAYS:
            return None
        when = self.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        if days <= 0:
            return f"the client certificate (SHA-1 thumbprint {self.sha1_thumbprint}) expired on {when}"
        return (
            f"the client certificate (SHA-1 thumbprint {self.sha1_thumbprint}) expires on {when}, in "
            f"{int(days)} days: upload a new one to the app registration and replace the file"
        )

    def readiness(self, now: datetime | None = None) -> dict[str, object]:
        """The certificate's part of /readyz: when it expires, whole days left, and the warning
        (None while more than EXPIRY_WARNING_DAYS remain)."""
        return {
            "expires_at": self.expires_at.isoformat(),
            "days_left": int(self.days_left(now)),
            "warning": self.expiry_warning(now),
        }

    # -- the client assertion ------------------------------------------------------------------

    def client_assertion(self, *, client_id: str, audience: str, now: int) -> str:
        """A fresh assertion for one token request to ``audience`` (the token endpoint)."""
        header = {"alg": ASSERTION_ALGORITHM, "typ": "JWT", "x5t#S256": self._thumbprint_sha256}
        claims = {
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": str(uuid.uuid4()),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        return jwt.encode(header, claims, self._key, algorithms=[ASSERTION_ALGORITHM])

    def __repr__(self) -> str:
        return f"CertificateCredential(subject={self.subject!r}, sha1_thumbprint={self.sha1_thumbprint!r})"
