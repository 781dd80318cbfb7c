"""Signing keys, JWKS files and JWTs for tests, including the hostile tokens a verifier must reject.

Typical use::

    factory = TokenFactory.create(tmp_path)         # writes a JWKS file with the primary RSA key
    factory.token()                                 # valid RS256 token for factory.audience
    factory.token(exp=OMIT, aud="someone-else")     # claim overrides; OMIT leaves a claim out
    factory.token(signing_key=rsa_signing_key("other"), headers={"kid": factory.signing_key.kid})
    factory.unsigned_token()                        # alg "none"
    factory.hs256_with_public_key()                 # HMAC keyed with the RSA public key PEM

Keys are generated once per name and process, because RSA generation is slow.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt

OMIT: Any = object()
"""Pass as a claim or header value to leave that member out of the token."""

DEFAULT_ISSUER = "https://accounts.google.com"
DEFAULT_AUDIENCE = "test-client-id.apps.example"
DEFAULT_NOW = 1_700_000_000.0
DEFAULT_LIFETIME_SECONDS = 600


@dataclass(frozen=True)
class SigningKey:
    """A test key pair with its PEM forms and its public JWK (kid, alg and use included)."""

    kid: str
    algorithm: str
    private_pem: bytes
    public_pem: bytes
    public_jwk: dict[str, Any]


@functools.cache
def rsa_signing_key(name: str = "primary", algorithm: str = "RS256") -> SigningKey:
    """Return the 2048-bit RSA key called `name`, generated on first use, with kid `test-<name>`."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _signing_key(private_key, f"test-{name}", algorithm)


@functools.cache
def ec_signing_key(name: str = "ec") -> SigningKey:
    """Return the P-256 key called `name`, generated on first use, with kid `test-<name>`."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    return _signing_key(private_key, f"test-{name}", "ES256")


def _signing_key(
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, algorithm: str
) -> SigningKey:
    private_pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    public_jwk = jwk.construct(public_pem, algorithm).to_dict()
    public_jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return SigningKey(kid, algorithm, private_pem, public_pem, public_jwk)


def write_jwks(directory: Path, keys: Iterable[Mapping[str, Any]], name: str = "jwks.json") -> str:
    """Write `{"keys": [...]}` to `directory/name` (replacing it) and return its file:// URL."""
    path = directory / name
    path.write_text(json.dumps({"keys": [dict(key) for key in keys]}), encoding="utf-8")
    return path.as_uri()


def base64url(data: bytes) -> str:
    """Encode bytes as unpadded base64url, as JWS compact serialization requires."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact_jws(
    header: Mapping[str, Any], payload: Mapping[str, Any] | bytes, signature: bytes = b""
) -> str:
    """Assemble `header.payload.signature` from raw parts, without signing anything."""
    payload_bytes = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return ".".join(
        (base64url(json.dumps(header).encode()), base64url(payload_bytes), base64url(signature))
    )


@dataclass
class TokenFactory:
    """Mints tokens for one signing key, issuer and audience, at a fixed `now`."""

    signing_key: SigningKey
    jwks_url: str
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    now: float = DEFAULT_NOW

    @classmethod
    def create(
        cls, directory: Path, signing_key: SigningKey | None = None, **fields: Any
    ) -> TokenFactory:
        """Write a JWKS file containing only `signing_key` and return a factory for it.

        The signing key defaults to the primary RSA key.
        """
        key = signing_key if signing_key is not None else rsa_signing_key()
        return cls(signing_key=key, jwks_url=write_jwks(directory, [key.public_jwk]), **fields)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Return valid iss, aud, sub, iat and exp claims with `overrides` applied.

        An override of OMIT removes that claim.
        """
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "user-123",
            "iat": int(self.now),
            "exp": int(self.now) + DEFAULT_LIFETIME_SECONDS,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not OMIT}

    def token(
        self,
        *,
        signing_key: SigningKey | None = None,
        algorithm: str | None = None,
        headers: Mapping[str, Any] | None = None,
        **claim_overrides: Any,
    ) -> str:
        """Sign the claims with python-jose and return the compact token.

        The header's kid is the signing key's unless `headers` sets another, and a header value of
        OMIT leaves that member out. `algorithm` defaults to the signing key's.
        """
        key = signing_key if signing_key is not None else self.signing_key
        header_members = {"kid": key.kid, **(headers or {})}
        header_members = {
            name: value for name, value in header_members.items() if value is not OMIT
        }
        return jwt.encode(
            self.claims(**claim_overrides),
            key.private_pem,
            algorithm=algorithm or key.algorithm,
            headers=header_members,
        )

    def unsigned_token(self, alg: str = "none", **claim_overrides: Any) -> str:
        """Return a token with an empty signature and `alg` "none", or a variant such as "NONE"."""
        header = {"alg": alg, "typ": "JWT", "kid": self.signing_key.kid}
        return compact_jws(header, self.claims(**claim_overrides))

    def hs256_with_public_key(self, **claim_overrides: Any) -> str:
        """Return an HS256 token whose HMAC secret is the signing key's public PEM.

        This is the algorithm-confusion attack: a verifier that takes the algorithm from the
        token and the key from the JWKS would accept it.
        """
        header = {"alg": "HS256", "typ": "JWT", "kid": self.signing_key.kid}
        signing_input = compact_jws(header, self.claims(**claim_overrides)).rsplit(".", 1)[0]
        signature = hmac.new(
            self.signing_key.public_pem, signing_input.encode(), hashlib.sha256
        ).digest()
        return f"{signing_input}.{base64url(signature)}"
