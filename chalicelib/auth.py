"""Verify OAuth 2.0 bearer JWTs against a cached JWKS for the API's authorizer.

The accepted signing algorithms are fixed here and never taken from a token, so `alg: none`
and HMAC tokens (including one keyed with an RSA public key) are rejected before any key is used.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException, HTTPMessage
from typing import IO, Any

from jose import jwk, jwt
from jose.backends.base import Key
from jose.exceptions import JOSEError

logger = logging.getLogger(__name__)

RSA_ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "RS512")
EC_ALGORITHMS: tuple[str, ...] = ("ES256",)
ACCEPTED_ALGORITHMS: tuple[str, ...] = RSA_ALGORITHMS + EC_ALGORITHMS

MAX_LEEWAY_SECONDS = 60

# An unknown `kid` or a cache older than MAX_JWKS_CACHE_AGE_SECONDS triggers a fetch, but at most
# one per MIN_REFETCH_INTERVAL_SECONDS, so tokens with made-up key ids cannot flood the issuer.
MIN_REFETCH_INTERVAL_SECONDS = 60.0
MAX_JWKS_CACHE_AGE_SECONDS = 3600.0

# Until a JWKS has loaded, every request is rejected, so retry sooner than the refetch interval.
MIN_INITIAL_RETRY_INTERVAL_SECONDS = 10.0

JWKS_FETCH_TIMEOUT_SECONDS = 5.0

# A JWKS of a few keys is a few KB, so a body near this size is not a key set.
MAX_JWKS_BYTES = 1024 * 1024

# Bounds the parsing work spent on an unauthenticated request. Google ID tokens are about 1 KB.
MAX_TOKEN_LENGTH = 8192

_REQUIRED_CLAIMS = ("exp", "aud", "iss")
_BEARER_HEADER = re.compile(r"\A\s*bearer[ \t]+(\S+)\s*\Z", re.IGNORECASE)
_COMPACT_JWS = re.compile(r"\A[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\Z")
_HTTP_SCHEMES = ("http", "https")

# Only these members are copied from a JWK, so private key material in it is never loaded.
_PUBLIC_MEMBERS_BY_KEY_TYPE: dict[str, tuple[str, ...]] = {
    "RSA": ("n", "e"),
    "EC": ("crv", "x", "y"),
}
_ALGORITHMS_BY_KEY_TYPE: dict[str, tuple[str, ...]] = {"RSA": RSA_ALGORITHMS, "EC": EC_ALGORITHMS}

# python-jose reads the wall clock for exp, nbf and iat and reports a missing required claim as a
# generic JWTError, so the verifier checks every registered claim itself with its injected clock.
# at_hash is off because Google ID tokens carry it and the API never receives the access token.
_SIGNATURE_ONLY_OPTIONS: dict[str, bool] = {
    "verify_signature": True,
    "verify_aud": False,
    "verify_iat": False,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "verify_at_hash": False,
}


class InvalidToken(Exception):
    """A bearer token failed verification.

    str(exc) is a short reason that is safe to log; it never contains the token.
    """


class JWKSFetchError(Exception):
    """The JWKS could not be fetched or is not a usable key set."""


class UnusableKeyError(ValueError):
    """A JWK that this verifier cannot use; str(exc) gives the reason."""


@dataclass(frozen=True)
class AuthSettings:
    """Token verification settings: the key sources, accepted issuers, audience and clock skew.

    A token signed by a JWKS key must carry one of `issuers`. A token signed by one of
    `extra_public_keys` must carry one of `extra_issuers`, or of `issuers` when that is empty.
    `leeway_seconds` is clamped to 0..MAX_LEEWAY_SECONDS.
    """

    jwks_url: str
    issuers: tuple[str, ...]
    client_id: str
    leeway_seconds: int = 30
    extra_public_keys: tuple[dict[str, Any], ...] = ()
    extra_issuers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.jwks_url:
            raise ValueError("jwks_url is empty; set it to an http(s) URL, a file:// URL or a path")
        if not self.client_id:
            raise ValueError(
                "client_id is empty; set it to the OAuth client id tokens are issued for"
            )
        for name in ("issuers", "extra_issuers", "extra_public_keys"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes, dict)):
                raise TypeError(
                    f"{name} must be a sequence of values, not a single {type(value).__name__}"
                )
            object.__setattr__(self, name, tuple(value))
        if not self.issuers:
            raise ValueError("issuers is empty; list at least one accepted token issuer")
        if not all(
            isinstance(issuer, str) and issuer for issuer in self.issuers + self.extra_issuers
        ):
            raise ValueError("every issuer must be a non-empty string")

        clamped = min(max(self.leeway_seconds, 0), MAX_LEEWAY_SECONDS)
        if clamped != self.leeway_seconds:
            logger.warning(
                "JWT leeway of %s s is outside 0 to %s s, so %s s is used",
                self.leeway_seconds,
                MAX_LEEWAY_SECONDS,
                clamped,
            )
            object.__setattr__(self, "leeway_seconds", clamped)


@dataclass(frozen=True)
class _VerificationKey:
    """A public key from a JWK, built once for each algorithm it may verify."""

    kid: str
    keys_by_algorithm: Mapping[str, Key]
    issuers: tuple[str, ...]


class TokenVerifier:
    """Verifier of bearer JWTs with an in-memory JWKS cache, safe to share between threads."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        clock: Callable[[], float] = time.time,
        fetch_jwks: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        """Store the settings and load the extra public keys; the JWKS is fetched on first use.

        Raises UnusableKeyError, a ValueError, if an entry of `settings.extra_public_keys` is not
        a usable public JWK with a kid.
        """
        self._settings = settings
        self._clock = clock
        self._fetch = fetch_jwks if fetch_jwks is not None else load_jwks

        extra_issuers = settings.extra_issuers or settings.issuers
        self._extra_keys: dict[str, _VerificationKey] = {}
        for key_data in settings.extra_public_keys:
            key = _build_verification_key(key_data, extra_issuers)
            self._extra_keys[key.kid] = key

        # _state_lock guards the three cache fields below. _refresh_lock is held by the one thread
        # that is fetching, so that threads needing the result can wait for it.
        self._state_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._jwks_keys: dict[str, _VerificationKey] | None = None
        self._jwks_fetched_at: float | None = None
        self._last_fetch_attempt: float | None = None

    def verify(self, authorization_header: str) -> dict[str, Any]:
        """Verify the raw Authorization header value ("Bearer <jwt>") and return the token's claims.

        Raises InvalidToken with a short reason when the header or token is not acceptable, or when
        no signing key can be loaded. This method does not log rejections, so the caller decides
        how to log them.
        """
        token = _bearer_token(authorization_header)

        try:
            header = jwt.get_unverified_header(token)
            # Parsed only so that a payload which is not a JSON object is reported as malformed.
            jwt.get_unverified_claims(token)
        except JOSEError:
            raise InvalidToken("malformed token") from None

        algorithm = header.get("alg")
        if algorithm not in ACCEPTED_ALGORITHMS:
            raise InvalidToken("unsupported algorithm")
        if "crit" in header:
            # No JWS extension is implemented, so RFC 7515 requires rejecting any critical one.
            raise InvalidToken("unsupported critical header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("missing key id")

        now = self._clock()
        verification_key = self._find_key(kid, now)
        key = verification_key.keys_by_algorithm.get(algorithm)
        if key is None:
            raise InvalidToken("algorithm does not match signing key")

        try:
            claims = jwt.decode(
                token, key, algorithms=ACCEPTED_ALGORITHMS, options=_SIGNATURE_ONLY_OPTIONS
            )
        except JOSEError:
            raise InvalidToken("signature verification failed") from None

        self._validate_claims(claims, verification_key.issuers, now)
        return claims

    def _validate_claims(
        self, claims: Mapping[str, Any], issuers: tuple[str, ...], now: float
    ) -> None:
        for name in _REQUIRED_CLAIMS:
            if name not in claims:
                raise InvalidToken(f"missing {name} claim")

        if not _audience_contains(claims["aud"], self._settings.client_id):
            raise InvalidToken("invalid audience")
        issuer = claims["iss"]
        if not isinstance(issuer, str) or issuer not in issuers:
            raise InvalidToken("invalid issuer")

        leeway = self._settings.leeway_seconds
        expires_at = _numeric_date(claims, "exp")
        if expires_at is not None and now >= expires_at + leeway:
            raise InvalidToken("token expired")
        not_before = _numeric_date(claims, "nbf")
        if not_before is not None and now + leeway < not_before:
            raise InvalidToken("token not yet valid")
        issued_at = _numeric_date(claims, "iat")
        if issued_at is not None and issued_at > now + leeway:
            raise InvalidToken("token issued in the future")

    def _find_key(self, kid: str, now: float) -> _VerificationKey:
        """Look the kid up in the extra keys, then in the JWKS, fetching the JWKS when allowed."""
        extra_key = self._extra_keys.get(kid)
        if extra_key is not None:
            return extra_key

        with self._state_lock:
            keys = self._jwks_keys
            kid_is_missing = keys is None or kid not in keys
            claimed = False
            if self._refresh_due(kid_is_missing, now):
                claimed = self._refresh_lock.acquire(blocking=False)
                if claimed:
                    self._last_fetch_attempt = now

        if claimed:
            try:
                self._refresh_jwks(now)
            finally:
                self._refresh_lock.release()
        elif kid_is_missing and self._refresh_lock.acquire(timeout=2 * JWKS_FETCH_TIMEOUT_SECONDS):
            # Taking the lock waits out a fetch in another thread, whose JWKS may contain this kid.
            self._refresh_lock.release()

        with self._state_lock:
            keys = self._jwks_keys
        if keys is None:
            raise InvalidToken("JWKS unavailable")
        key = keys.get(kid)
        if key is None:
            raise InvalidToken("unknown signing key")
        return key

    def _refresh_due(self, kid_is_missing: bool, now: float) -> bool:
        """Return whether this request should fetch the JWKS. The caller must hold _state_lock."""
        if self._last_fetch_attempt is None:
            return True
        elapsed = now - self._last_fetch_attempt
        if elapsed < 0:
            # The clock went back. Waiting for it to catch up could block refreshes for hours.
            return True

        if self._jwks_keys is None:
            return elapsed >= MIN_INITIAL_RETRY_INTERVAL_SECONDS
        if elapsed < MIN_REFETCH_INTERVAL_SECONDS:
            return False
        if kid_is_missing:
            return True
        return (
            self._jwks_fetched_at is None
            or now - self._jwks_fetched_at >= MAX_JWKS_CACHE_AGE_SECONDS
        )

    def _refresh_jwks(self, now: float) -> None:
        """Fetch and parse the JWKS. On failure, log the error and keep the cached keys, if any."""
        url = self._settings.jwks_url
        try:
            document = self._fetch(url)
            keys = _parse_jwks(document, self._settings.issuers)
        except Exception as exc:  # noqa: BLE001
            # Any failure of the fetch callable, including an injected one, must become a rejected
            # request, never an error that escapes the authorizer.
            with self._state_lock:
                has_cached_keys = self._jwks_keys is not None
            logger.warning(
                "JWKS fetch failed for %s: %s: %s. %s",
                _redact_url(url),
                type(exc).__name__,
                exc,
                "The cached keys stay in use."
                if has_cached_keys
                else "No JWKS keys are cached, so only tokens signed by extra keys can pass.",
                extra={
                    "jwks_url": _redact_url(url),
                    "error": str(exc),
                    "cached_keys": has_cached_keys,
                },
            )
            return

        with self._state_lock:
            self._jwks_keys = keys
            self._jwks_fetched_at = now
        logger.info(
            "JWKS loaded from %s with key ids %s",
            _redact_url(url),
            sorted(keys),
            extra={"jwks_url": _redact_url(url), "key_ids": sorted(keys)},
        )


def _bearer_token(authorization_header: str) -> str:
    if not isinstance(authorization_header, str) or not authorization_header.strip():
        raise InvalidToken("missing authorization header")
    match = _BEARER_HEADER.match(authorization_header)
    if match is None:
        raise InvalidToken("invalid authorization header")

    token = match.group(1)
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token too large")
    if _COMPACT_JWS.match(token) is None:
        raise InvalidToken("malformed token")
    return token


def _audience_contains(audience: Any, client_id: str) -> bool:
    if isinstance(audience, str):
        return audience == client_id
    if isinstance(audience, list):
        return all(isinstance(item, str) for item in audience) and client_id in audience
    return False


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """Return the NumericDate claim `name` in seconds since the epoch, or None when it is absent.

    Raises InvalidToken when the value is not a finite number.
    """
    if name not in claims:
        return None
    value = claims[name]
    # bool is an int subclass, and json.loads accepts NaN and Infinity.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidToken(f"invalid {name} claim")
    return float(value)


def _parse_jwks(document: Any, issuers: tuple[str, ...]) -> dict[str, _VerificationKey]:
    """Build the usable signing keys of a JWKS, keyed by kid, and log each key that is skipped.

    Raises JWKSFetchError when the document is not a JWKS or has no usable signing key.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JWKSFetchError("JWKS has no 'keys' array")

    keys: dict[str, _VerificationKey] = {}
    for key_data in document["keys"]:
        try:
            key = _build_verification_key(key_data, issuers)
        except UnusableKeyError as exc:
            kid = key_data.get("kid") if isinstance(key_data, dict) else None
            logger.warning(
                "JWKS key %r skipped: %s", kid, exc, extra={"kid": kid, "reason": str(exc)}
            )
            continue
        if key.kid in keys:
            logger.warning("JWKS key %r skipped: duplicate kid", key.kid, extra={"kid": key.kid})
            continue
        keys[key.kid] = key

    if not keys:
        raise JWKSFetchError("JWKS contains no usable signing key")
    return keys


def _build_verification_key(key_data: Any, issuers: tuple[str, ...]) -> _VerificationKey:
    """Build a verification key from a public JWK, or raise UnusableKeyError with the reason."""
    if not isinstance(key_data, dict):
        raise UnusableKeyError("JWK is not a JSON object")
    kid = key_data.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnusableKeyError("JWK has no kid")
    key_type = key_data.get("kty")
    if key_type not in _ALGORITHMS_BY_KEY_TYPE:
        raise UnusableKeyError(f"key type {key_type!r} is not supported")
    if key_data.get("use", "sig") != "sig":
        raise UnusableKeyError(f"key use {key_data.get('use')!r} is not 'sig'")
    if key_type == "EC" and key_data.get("crv") != "P-256":
        raise UnusableKeyError(f"curve {key_data.get('crv')!r} is not P-256")

    algorithms = _ALGORITHMS_BY_KEY_TYPE[key_type]
    declared_algorithm = key_data.get("alg")
    if declared_algorithm is not None:
        if declared_algorithm not in algorithms:
            raise UnusableKeyError(
                f"algorithm {declared_algorithm!r} is not accepted for {key_type} keys"
            )
        algorithms = (declared_algorithm,)

    public_members = {"kty": key_type}
    for member in _PUBLIC_MEMBERS_BY_KEY_TYPE[key_type]:
        if not isinstance(key_data.get(member), str):
            raise UnusableKeyError(f"JWK member {member!r} is missing")
        public_members[member] = key_data[member]

    keys_by_algorithm: dict[str, Key] = {}
    for algorithm in algorithms:
        try:
            keys_by_algorithm[algorithm] = jwk.construct(public_members, algorithm)
        except (JOSEError, ValueError, TypeError) as exc:
            raise UnusableKeyError(f"JWK cannot be loaded: {exc}") from None
    return _VerificationKey(kid=kid, keys_by_algorithm=keys_by_algorithm, issuers=issuers)


def load_jwks(url: str, *, timeout_seconds: float = JWKS_FETCH_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Read a JWKS document from an http(s) URL, a file:// URL or a plain file path.

    Raises JWKSFetchError for any other scheme, a network or file error, an HTTP status other
    than 2xx, a body over MAX_JWKS_BYTES, or a body that is not a JSON object.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in _HTTP_SCHEMES:
        body = _read_http(url, timeout_seconds)
    elif scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise JWKSFetchError(
                f"file URL names a remote host {parts.netloc!r}; use file:///absolute/path"
            )
        body = _read_file(urllib.request.url2pathname(parts.path))
    elif scheme == "":
        body = _read_file(url)
    else:
        raise JWKSFetchError(f"JWKS URL scheme {scheme!r} is not allowed; use http, https or file")

    try:
        document = json.loads(body)
    except ValueError as exc:
        raise JWKSFetchError(f"JWKS is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise JWKSFetchError("JWKS is not a JSON object")
    return document


class _HttpOnlyRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Redirect handler that follows only http and https targets.

    urllib's default handler also follows a redirect to ftp.
    """

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in _HTTP_SCHEMES:
            raise urllib.error.HTTPError(
                newurl, code, "redirect to a scheme other than http(s)", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_http(url: str, timeout_seconds: float) -> bytes:
    opener = urllib.request.build_opener(_HttpOnlyRedirectHandler)
    # The caller has checked that the scheme is http or https.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    # The socket timeout bounds the connection and each read, and this deadline bounds the whole
    # body, so a fetch takes at most about twice timeout_seconds.
    # NOTE: the DNS lookup is not covered by either; urllib offers no timeout for it.
    deadline = time.monotonic() + timeout_seconds
    try:
        with opener.open(request, timeout=timeout_seconds) as response:
            chunks: list[bytes] = []
            size = 0
            while True:
                if time.monotonic() > deadline:
                    raise JWKSFetchError(f"JWKS download timed out after {timeout_seconds} s")
                chunk = response.read1(64 * 1024)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_JWKS_BYTES:
                    raise JWKSFetchError(f"JWKS is larger than {MAX_JWKS_BYTES} bytes")
    except urllib.error.HTTPError as exc:
        exc.close()
        raise JWKSFetchError(f"JWKS request failed with HTTP status {exc.code}") from None
    except (OSError, HTTPException) as exc:
        # URLError and socket timeouts are OSErrors.
        raise JWKSFetchError(f"JWKS request failed: {exc}") from None
    return b"".join(chunks)


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            body = file.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise JWKSFetchError(f"failed to read JWKS file: {exc}") from None
    if len(body) > MAX_JWKS_BYTES:
        raise JWKSFetchError(f"JWKS file is larger than {MAX_JWKS_BYTES} bytes")
    return body


def _redact_url(url: str) -> str:
    """Drop user info, query and fragment, which may carry credentials, before a URL is logged."""
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
