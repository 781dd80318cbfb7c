"""Create and use the RSA key that signs development tokens for the `dev` stage.

The private key is stored in a local PEM file that is created on first use. Only the `dev` stage
should trust its public JWK.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

logger = logging.getLogger(__name__)

DEV_ISSUER = "plan-api-dev"
DEV_KEY_ID = "plan-api-dev-key"
DEV_KEY_ALGORITHM = "RS256"
DEV_KEY_BITS = 2048


@dataclass(frozen=True)
class DevKey:
    """The development signing key: the private key as PEM and its public JWK."""

    private_pem: bytes = field(repr=False)
    public_jwk: dict[str, Any]


def load_or_create_dev_key(path: str) -> DevKey:
    """Load the development key from the PEM file at `path`, creating it first if it is missing.

    A new key is written with mode 0600, and its missing parent directories with mode 0700.
    Raises ValueError when the file contains anything but an unencrypted RSA private key,
    and OSError when it cannot be read or written.
    """
    try:
        with open(path, "rb") as file:
            private_pem = file.read()
    except FileNotFoundError:
        private_pem = _create_key_file(path)
    else:
        _warn_if_readable_by_others(path)

    try:
        private_key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{path} is not an unencrypted PEM private key ({exc}); delete it to create a new key"
        ) from None
    if isinstance(private_key, rsa.RSAPrivateKey):
        public_jwk = jwk.construct(private_pem, DEV_KEY_ALGORITHM).public_key().to_dict()
        public_jwk.update({"kid": DEV_KEY_ID, "alg": DEV_KEY_ALGORITHM, "use": "sig"})
        return DevKey(private_pem=private_pem, public_jwk=public_jwk)

    raise ValueError(
        f"{path} contains a {type(private_key).__name__}, not an RSA private key; "
        "delete it to create a new key"
    )


def mint_dev_token(
    key: DevKey,
    audience: str,
    subject: str = "developer",
    ttl_seconds: int = 3600,
    now: float | None = None,
) -> str:
    """Sign a token for `audience` with the development key, valid for `ttl_seconds` from `now`.

    Raises ValueError when `ttl_seconds` is not positive.
    """
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
    issued_at = int(time.time() if now is None else now)
    claims = {
        "iss": DEV_ISSUER,
        "aud": audience,
        "sub": subject,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
    }
    return jwt.encode(
        claims, key.private_pem, algorithm=DEV_KEY_ALGORITHM, headers={"kid": DEV_KEY_ID}
    )


def _create_key_file(path: str) -> bytes:
    """Generate a key and write it to `path` atomically, unless another process wrote one first.

    Returns the PEM that ends up at `path`.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)

    private_key = rsa.generate_private_key(public_exponent=65537, key_size=DEV_KEY_BITS)
    private_pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )

    # mkstemp creates the file with mode 0600. os.link fails if `path` exists, so two processes
    # starting together (the local server and the token script) end up with the same key.
    descriptor, temporary_path = tempfile.mkstemp(dir=directory, prefix=".dev-key-", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(private_pem)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary_path, path)
        except FileExistsError:
            with open(path, "rb") as file:
                return file.read()
    finally:
        os.unlink(temporary_path)

    logger.info("Created development signing key at %s", path, extra={"key_path": path})
    return private_pem


def _warn_if_readable_by_others(path: str) -> None:
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "Development signing key %s has mode %o; run chmod 600 on it",
            path,
            stat.S_IMODE(mode),
            extra={"key_path": path},
        )
