"""Specification of bearer-token verification: header, algorithms, claims and JWKS caching."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from jose import jwk, jwt

from chalicelib.auth import (
    MIN_INITIAL_RETRY_INTERVAL_SECONDS,
    MIN_REFETCH_INTERVAL_SECONDS,
    AuthSettings,
    InvalidToken,
    JWKSFetchError,
    TokenVerifier,
    load_jwks,
)
from chalicelib.dev_keys import (
    DEV_ISSUER,
    DEV_KEY_ID,
    DevKey,
    load_or_create_dev_key,
    mint_dev_token,
)
from tests.support.jwt_factory import (
    OMIT,
    TokenFactory,
    compact_jws,
    ec_signing_key,
    rsa_signing_key,
    write_jwks,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")


class FakeClock:
    """A settable clock for the verifier, in seconds since the epoch."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingFetch:
    """JWKS loader that counts its calls and delegates to load_jwks, or raises `error` if set."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None
        self._lock = threading.Lock()

    def __call__(self, url: str) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
        if self.error is not None:
            raise self.error
        return load_jwks(url)


@pytest.fixture
def factory(tmp_path: Path) -> TokenFactory:
    return TokenFactory.create(tmp_path)


@pytest.fixture
def clock(factory: TokenFactory) -> FakeClock:
    return FakeClock(factory.now)


@pytest.fixture
def fetch() -> CountingFetch:
    return CountingFetch()


VerifierMaker = Callable[..., TokenVerifier]


@pytest.fixture
def make_verifier(factory: TokenFactory, clock: FakeClock, fetch: CountingFetch) -> VerifierMaker:
    """Return a builder of verifiers for the factory's JWKS and audience.

    Its keyword arguments override AuthSettings fields.
    """

    def make(**overrides: Any) -> TokenVerifier:
        settings: dict[str, Any] = {
            "jwks_url": factory.jwks_url,
            "issuers": GOOGLE_ISSUERS,
            "client_id": factory.audience,
        }
        settings.update(overrides)
        return TokenVerifier(AuthSettings(**settings), clock=clock, fetch_jwks=fetch)

    return make


@pytest.fixture
def verifier(make_verifier: VerifierMaker) -> TokenVerifier:
    return make_verifier()


def bearer(token: str) -> str:
    return f"Bearer {token}"


def rejection_reason(verifier: TokenVerifier, header: Any) -> str:
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify(header)
    return str(excinfo.value)


@pytest.fixture(scope="module")
def dev_key(tmp_path_factory: pytest.TempPathFactory) -> DevKey:
    return load_or_create_dev_key(
        str(tmp_path_factory.mktemp("dev") / ".dev" / "dev-signing-key.pem")
    )


# Authorization header


def test_valid_token_returns_claims(factory: TokenFactory, verifier: TokenVerifier) -> None:
    claims = verifier.verify(bearer(factory.token()))

    assert claims["sub"] == "user-123"
    assert claims["aud"] == factory.audience
    assert claims["iss"] == factory.issuer


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(
    factory: TokenFactory, verifier: TokenVerifier, scheme: str
) -> None:
    claims = verifier.verify(f"{scheme} {factory.token()}")

    assert claims["sub"] == "user-123"


@pytest.mark.parametrize(
    "header_template",
    [
        "{token}",
        "Basic {token}",
        "Token {token}",
        "Bearer",
        "Bearer ",
        "Bearer {token} extra",
        "Bearer{token}",
    ],
)
def test_header_without_bearer_token_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier, header_template: str
) -> None:
    header = header_template.format(token=factory.token())

    reason = rejection_reason(verifier, header)

    assert reason == "invalid authorization header"


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_authorization_header_is_rejected(verifier: TokenVerifier, header: Any) -> None:
    assert rejection_reason(verifier, header) == "missing authorization header"


def test_malformed_tokens_are_rejected(factory: TokenFactory, verifier: TokenVerifier) -> None:
    header_segment, payload_segment, signature_segment = factory.token().split(".")
    malformed_tokens = [
        "not-a-jwt",
        f"{header_segment}.{payload_segment}",
        f"{header_segment}.{payload_segment}.{signature_segment}.extra",
        f"{header_segment}==.{payload_segment}.{signature_segment}",
        f"bm90LWpzb24.{payload_segment}.{signature_segment}",
        compact_jws({"alg": "RS256", "kid": factory.signing_key.kid}, b"[1, 2]", b"signature"),
        compact_jws({"alg": "RS256", "kid": factory.signing_key.kid}, b"not json", b"signature"),
    ]

    for token in malformed_tokens:
        assert rejection_reason(verifier, bearer(token)) == "malformed token", token


def test_oversized_token_is_rejected(factory: TokenFactory, verifier: TokenVerifier) -> None:
    token = factory.token(padding="x" * 10_000)

    assert rejection_reason(verifier, bearer(token)) == "token too large"


# Algorithms and keys


def test_alg_none_token_is_rejected(factory: TokenFactory, verifier: TokenVerifier) -> None:
    for alg in ("none", "None", "NONE"):
        token = factory.unsigned_token(alg=alg)

        assert rejection_reason(verifier, bearer(token)) == "unsupported algorithm", alg


def test_hs256_with_public_key_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier, fetch: CountingFetch
) -> None:
    token = factory.hs256_with_public_key()

    reason = rejection_reason(verifier, bearer(token))

    assert reason == "unsupported algorithm"
    assert fetch.calls == 0


def test_hmac_token_with_shared_secret_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier
) -> None:
    for algorithm in ("HS256", "HS384", "HS512"):
        token = jwt.encode(
            factory.claims(), "shared-secret", algorithm=algorithm, headers={"kid": "test-primary"}
        )

        assert rejection_reason(verifier, bearer(token)) == "unsupported algorithm", algorithm


@pytest.mark.parametrize("alg", ["PS256", "ES384", "ES512", "RS1", "", None, ["RS256"]])
def test_algorithm_outside_allowlist_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier, alg: Any
) -> None:
    token = compact_jws(
        {"alg": alg, "kid": factory.signing_key.kid}, factory.claims(), b"signature"
    )

    assert rejection_reason(verifier, bearer(token)) == "unsupported algorithm"


def test_header_without_alg_is_rejected(factory: TokenFactory, verifier: TokenVerifier) -> None:
    token = compact_jws({"kid": factory.signing_key.kid}, factory.claims(), b"signature")

    assert rejection_reason(verifier, bearer(token)) == "unsupported algorithm"


@pytest.mark.parametrize("algorithm", ["RS256", "RS384", "RS512"])
def test_rsa_algorithms_accepted_without_jwk_alg(
    tmp_path: Path, make_verifier: VerifierMaker, factory: TokenFactory, algorithm: str
) -> None:
    public_jwk = dict(factory.signing_key.public_jwk)
    del public_jwk["alg"]
    jwks_url = write_jwks(tmp_path, [public_jwk], name="jwks-without-alg.json")
    verifier = make_verifier(jwks_url=jwks_url)

    claims = verifier.verify(bearer(factory.token(algorithm=algorithm)))

    assert claims["sub"] == "user-123"


def test_key_with_declared_alg_rejects_other_algorithm(
    factory: TokenFactory, verifier: TokenVerifier
) -> None:
    assert factory.signing_key.public_jwk["alg"] == "RS256"
    token = factory.token(algorithm="RS512")

    assert rejection_reason(verifier, bearer(token)) == "algorithm does not match signing key"


def test_es256_token_is_accepted(
    tmp_path: Path, make_verifier: VerifierMaker, factory: TokenFactory
) -> None:
    ec_key = ec_signing_key()
    jwks_url = write_jwks(tmp_path, [factory.signing_key.public_jwk, ec_key.public_jwk])
    verifier = make_verifier(jwks_url=jwks_url)

    claims = verifier.verify(bearer(factory.token(signing_key=ec_key)))

    assert claims["sub"] == "user-123"


def test_rsa_algorithm_with_ec_key_id_is_rejected(
    tmp_path: Path, make_verifier: VerifierMaker, factory: TokenFactory
) -> None:
    ec_key = ec_signing_key()
    jwks_url = write_jwks(tmp_path, [factory.signing_key.public_jwk, ec_key.public_jwk])
    verifier = make_verifier(jwks_url=jwks_url)
    token = factory.token(headers={"kid": ec_key.kid})

    assert rejection_reason(verifier, bearer(token)) == "algorithm does not match signing key"


def test_token_signed_by_wrong_key_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier
) -> None:
    impostor = rsa_signing_key("impostor")
    token = factory.token(signing_key=impostor, headers={"kid": factory.signing_key.kid})

    assert rejection_reason(verifier, bearer(token)) == "signature verification failed"


def test_tampered_payload_is_rejected(factory: TokenFactory, verifier: TokenVerifier) -> None:
    header_segment, _, signature_segment = factory.token().split(".")
    forged_payload = compact_jws({}, factory.claims(sub="admin")).split(".")[1]
    token = f"{header_segment}.{forged_payload}.{signature_segment}"

    assert rejection_reason(verifier, bearer(token)) == "signature verification failed"


def test_token_without_signature_bytes_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier
) -> None:
    header_segment, payload_segment, _ = factory.token().split(".")

    reason = rejection_reason(verifier, bearer(f"{header_segment}.{payload_segment}."))

    assert reason == "signature verification failed"


@pytest.mark.parametrize("kid", [OMIT, "", 17])
def test_token_without_kid_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier, kid: Any
) -> None:
    token = factory.token(headers={"kid": kid})

    assert rejection_reason(verifier, bearer(token)) == "missing key id"


def test_critical_header_is_rejected(factory: TokenFactory, verifier: TokenVerifier) -> None:
    token = factory.token(headers={"crit": ["exp"]})

    assert rejection_reason(verifier, bearer(token)) == "unsupported critical header"


# Claims


@pytest.mark.parametrize("claim", ["exp", "aud", "iss"])
def test_token_missing_required_claim_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier, claim: str
) -> None:
    token = factory.token(**{claim: OMIT})

    assert rejection_reason(verifier, bearer(token)) == f"missing {claim} claim"


def test_wrong_audience_is_rejected(factory: TokenFactory, verifier: TokenVerifier) -> None:
    token = factory.token(aud="another-client-id")

    assert rejection_reason(verifier, bearer(token)) == "invalid audience"


def test_audience_list_containing_client_id_is_accepted(
    factory: TokenFactory, verifier: TokenVerifier
) -> None:
    token = factory.token(aud=["another-client-id", factory.audience])

    assert verifier.verify(bearer(token))["aud"] == ["another-client-id", factory.audience]


@pytest.mark.parametrize("audience", [["another-client-id"], [], 42, None, {"aud": "x"}])
def test_audience_without_client_id_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier, audience: Any
) -> None:
    token = factory.token(aud=audience)

    assert rejection_reason(verifier, bearer(token)) == "invalid audience"


@pytest.mark.parametrize(
    "issuer",
    ["https://evil.example", "accounts.google.com.evil", "", None, ["accounts.google.com"]],
)
def test_wrong_issuer_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier, issuer: Any
) -> None:
    token = factory.token(iss=issuer)

    assert rejection_reason(verifier, bearer(token)) == "invalid issuer"


@pytest.mark.parametrize("issuer", GOOGLE_ISSUERS)
def test_each_configured_issuer_is_accepted(
    factory: TokenFactory, verifier: TokenVerifier, issuer: str
) -> None:
    assert verifier.verify(bearer(factory.token(iss=issuer)))["iss"] == issuer


def test_expired_token_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier, clock: FakeClock
) -> None:
    token = factory.token(exp=int(factory.now) + 100)
    clock.advance(100 + 30)

    assert rejection_reason(verifier, bearer(token)) == "token expired"


def test_expired_token_within_leeway_is_accepted(
    factory: TokenFactory, verifier: TokenVerifier, clock: FakeClock
) -> None:
    token = factory.token(exp=int(factory.now) + 100)
    clock.advance(100 + 29)

    assert verifier.verify(bearer(token))["sub"] == "user-123"


def test_leeway_is_clamped_to_sixty_seconds(
    factory: TokenFactory, make_verifier: VerifierMaker, clock: FakeClock
) -> None:
    verifier = make_verifier(leeway_seconds=3600)
    token = factory.token(exp=int(factory.now))

    clock.advance(59)
    assert verifier.verify(bearer(token))["sub"] == "user-123"
    clock.advance(1)
    assert rejection_reason(verifier, bearer(token)) == "token expired"


def test_settings_report_clamped_leeway() -> None:
    too_large = AuthSettings(
        jwks_url="jwks.json", issuers=("issuer",), client_id="client", leeway_seconds=600
    )
    negative = AuthSettings(
        jwks_url="jwks.json", issuers=("issuer",), client_id="client", leeway_seconds=-5
    )

    assert too_large.leeway_seconds == 60
    assert negative.leeway_seconds == 0


def test_zero_leeway_rejects_token_at_expiry(
    factory: TokenFactory, make_verifier: VerifierMaker, clock: FakeClock
) -> None:
    verifier = make_verifier(leeway_seconds=0)
    token = factory.token(exp=int(factory.now) + 10)

    clock.advance(9)
    assert verifier.verify(bearer(token))["sub"] == "user-123"
    clock.advance(1)
    assert rejection_reason(verifier, bearer(token)) == "token expired"


def test_token_before_nbf_is_rejected(factory: TokenFactory, verifier: TokenVerifier) -> None:
    token = factory.token(nbf=int(factory.now) + 31)

    assert rejection_reason(verifier, bearer(token)) == "token not yet valid"


def test_nbf_within_leeway_is_accepted(factory: TokenFactory, verifier: TokenVerifier) -> None:
    token = factory.token(nbf=int(factory.now) + 30)

    assert verifier.verify(bearer(token))["sub"] == "user-123"


def test_token_becomes_valid_at_nbf(
    factory: TokenFactory, verifier: TokenVerifier, clock: FakeClock
) -> None:
    token = factory.token(nbf=int(factory.now) + 300)

    assert rejection_reason(verifier, bearer(token)) == "token not yet valid"
    clock.advance(300 - 30)
    assert verifier.verify(bearer(token))["sub"] == "user-123"


def test_iat_in_future_beyond_leeway_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier
) -> None:
    token = factory.token(iat=int(factory.now) + 31)

    assert rejection_reason(verifier, bearer(token)) == "token issued in the future"


def test_iat_in_future_within_leeway_is_accepted(
    factory: TokenFactory, verifier: TokenVerifier
) -> None:
    token = factory.token(iat=int(factory.now) + 30)

    assert verifier.verify(bearer(token))["sub"] == "user-123"


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", "tomorrow"),
        ("exp", True),
        ("exp", None),
        ("nbf", "now"),
        ("nbf", [1]),
        ("iat", {"at": 1}),
    ],
)
def test_non_numeric_time_claim_is_rejected(
    factory: TokenFactory, verifier: TokenVerifier, claim: str, value: Any
) -> None:
    token = factory.token(**{claim: value})

    assert rejection_reason(verifier, bearer(token)) == f"invalid {claim} claim"


def test_infinite_exp_is_rejected(factory: TokenFactory, verifier: TokenVerifier) -> None:
    # python-jose writes infinity as the non-standard JSON token Infinity; json.loads accepts it.
    token = factory.token(exp=float("inf"))

    assert rejection_reason(verifier, bearer(token)) == "invalid exp claim"


def test_fractional_exp_is_accepted(factory: TokenFactory, verifier: TokenVerifier) -> None:
    token = factory.token(exp=factory.now + 10.5)

    assert verifier.verify(bearer(token))["exp"] == factory.now + 10.5


# JWKS loading and caching


def test_jwks_is_fetched_once_for_many_tokens(
    factory: TokenFactory, verifier: TokenVerifier, fetch: CountingFetch, clock: FakeClock
) -> None:
    for _ in range(5):
        verifier.verify(bearer(factory.token()))
        clock.advance(10)

    assert fetch.calls == 1


def test_unknown_kid_refetches_at_most_once_per_minute(
    factory: TokenFactory, verifier: TokenVerifier, fetch: CountingFetch, clock: FakeClock
) -> None:
    verifier.verify(bearer(factory.token()))
    assert fetch.calls == 1
    unknown_kid_token = factory.token(headers={"kid": "unknown-kid"}, exp=int(factory.now) + 3000)

    # The JWKS was fetched just now, so an unknown kid does not fetch it again yet.
    assert rejection_reason(verifier, bearer(unknown_kid_token)) == "unknown signing key"
    assert fetch.calls == 1

    clock.advance(MIN_REFETCH_INTERVAL_SECONDS)
    assert rejection_reason(verifier, bearer(unknown_kid_token)) == "unknown signing key"
    assert fetch.calls == 2

    for _ in range(10):
        clock.advance(5)
        assert rejection_reason(verifier, bearer(unknown_kid_token)) == "unknown signing key"
    assert fetch.calls == 2

    clock.advance(MIN_REFETCH_INTERVAL_SECONDS - 50)
    assert rejection_reason(verifier, bearer(unknown_kid_token)) == "unknown signing key"
    assert fetch.calls == 3


def test_rotated_key_is_found_by_refetch(
    tmp_path: Path,
    factory: TokenFactory,
    verifier: TokenVerifier,
    fetch: CountingFetch,
    clock: FakeClock,
) -> None:
    verifier.verify(bearer(factory.token()))
    rotated_key = rsa_signing_key("rotated")
    write_jwks(tmp_path, [factory.signing_key.public_jwk, rotated_key.public_jwk])
    clock.advance(MIN_REFETCH_INTERVAL_SECONDS)

    claims = verifier.verify(bearer(factory.token(signing_key=rotated_key)))

    assert claims["sub"] == "user-123"
    assert fetch.calls == 2


def test_key_removed_from_jwks_is_no_longer_trusted(
    tmp_path: Path, factory: TokenFactory, verifier: TokenVerifier, clock: FakeClock
) -> None:
    verifier.verify(bearer(factory.token()))
    write_jwks(tmp_path, [rsa_signing_key("rotated").public_jwk])
    clock.advance(3600)
    token = factory.token(iat=int(clock.now), exp=int(clock.now) + 600)

    assert rejection_reason(verifier, bearer(token)) == "unknown signing key"


def test_stale_jwks_is_refetched_after_an_hour(
    factory: TokenFactory, verifier: TokenVerifier, fetch: CountingFetch, clock: FakeClock
) -> None:
    verifier.verify(bearer(factory.token()))
    clock.advance(3599)
    verifier.verify(bearer(factory.token(iat=int(clock.now), exp=int(clock.now) + 600)))
    assert fetch.calls == 1

    clock.advance(1)
    verifier.verify(bearer(factory.token(iat=int(clock.now), exp=int(clock.now) + 600)))
    assert fetch.calls == 2


def test_failed_refresh_keeps_cached_keys(
    factory: TokenFactory, verifier: TokenVerifier, fetch: CountingFetch, clock: FakeClock
) -> None:
    verifier.verify(bearer(factory.token()))
    fetch.error = JWKSFetchError("JWKS request failed: connection refused")
    clock.advance(3600)

    for _ in range(3):
        clock.advance(1)
        token = factory.token(iat=int(clock.now), exp=int(clock.now) + 600)
        assert verifier.verify(bearer(token))["sub"] == "user-123"

    # The failed refresh is rate-limited like any other fetch.
    assert fetch.calls == 2
    clock.advance(MIN_REFETCH_INTERVAL_SECONDS)
    verifier.verify(bearer(factory.token(iat=int(clock.now), exp=int(clock.now) + 600)))
    assert fetch.calls == 3


def test_missing_jwks_file_rejects_token(
    tmp_path: Path,
    factory: TokenFactory,
    make_verifier: VerifierMaker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing_url = (tmp_path / "missing-jwks.json").as_uri()
    verifier = make_verifier(jwks_url=missing_url)
    token = factory.token()

    with caplog.at_level(logging.WARNING, logger="chalicelib.auth"):
        reason = rejection_reason(verifier, bearer(token))

    assert reason == "JWKS unavailable"
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert missing_url in warnings[0].getMessage()
    assert "No such file" in warnings[0].getMessage()
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text


def test_unavailable_jwks_is_retried_later(
    tmp_path: Path,
    factory: TokenFactory,
    make_verifier: VerifierMaker,
    fetch: CountingFetch,
    clock: FakeClock,
) -> None:
    jwks_path = tmp_path / "late-jwks.json"
    verifier = make_verifier(jwks_url=str(jwks_path))
    assert rejection_reason(verifier, bearer(factory.token())) == "JWKS unavailable"
    jwks_path.write_text(json.dumps({"keys": [factory.signing_key.public_jwk]}), encoding="utf-8")

    clock.advance(MIN_INITIAL_RETRY_INTERVAL_SECONDS - 1)
    assert rejection_reason(verifier, bearer(factory.token())) == "JWKS unavailable"
    assert fetch.calls == 1

    clock.advance(1)
    assert verifier.verify(bearer(factory.token()))["sub"] == "user-123"
    assert fetch.calls == 2


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"no_keys": []}',
        '{"keys": {}}',
        '{"keys": []}',
        '{"keys": [{"kty": "oct", "kid": "test-primary", "k": "c2VjcmV0"}]}',
        '{"keys": [{"kty": "RSA", "kid": "test-primary", "n": "AQAB"}]}',
        '{"keys": [{"kty": "RSA", "kid": "test-primary", "n": "!!", "e": "AQAB"}]}',
    ],
)
def test_unusable_jwks_rejects_token(
    tmp_path: Path, factory: TokenFactory, make_verifier: VerifierMaker, content: str
) -> None:
    jwks_path = tmp_path / "bad-jwks.json"
    jwks_path.write_text(content, encoding="utf-8")
    verifier = make_verifier(jwks_url=jwks_path.as_uri())

    assert rejection_reason(verifier, bearer(factory.token())) == "JWKS unavailable"


@pytest.mark.parametrize(
    ("overrides", "usable"),
    [
        ({"use": "enc"}, False),
        ({"alg": "HS256"}, False),
        ({"kid": ""}, False),
        ({"use": "sig"}, True),
    ],
)
def test_unusable_jwks_key_is_skipped(
    tmp_path: Path,
    factory: TokenFactory,
    make_verifier: VerifierMaker,
    overrides: dict[str, str],
    usable: bool,
) -> None:
    jwks_url = write_jwks(
        tmp_path,
        [{**factory.signing_key.public_jwk, **overrides}, rsa_signing_key("other").public_jwk],
    )
    verifier = make_verifier(jwks_url=jwks_url)
    header = bearer(factory.token())

    if usable:
        assert verifier.verify(header)["sub"] == "user-123"
    else:
        assert rejection_reason(verifier, header) == "unknown signing key"


def test_jwks_private_members_are_ignored(
    tmp_path: Path, factory: TokenFactory, make_verifier: VerifierMaker
) -> None:
    private_jwk = jwk.construct(factory.signing_key.private_pem, "RS256").to_dict()
    private_jwk.update({"kid": factory.signing_key.kid, "use": "sig"})
    assert "d" in private_jwk
    jwks_url = write_jwks(tmp_path, [private_jwk])
    verifier = make_verifier(jwks_url=jwks_url)

    assert verifier.verify(bearer(factory.token()))["sub"] == "user-123"


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/jwks.json", "gopher://127.0.0.1/jwks", "data:,{}"]
)
def test_disallowed_jwks_scheme_rejects_token(
    factory: TokenFactory, make_verifier: VerifierMaker, url: str
) -> None:
    verifier = make_verifier(jwks_url=url)

    assert rejection_reason(verifier, bearer(factory.token())) == "JWKS unavailable"
    with pytest.raises(JWKSFetchError, match="not allowed"):
        load_jwks(url)


def test_file_url_with_remote_host_is_not_read() -> None:
    with pytest.raises(JWKSFetchError, match="remote host"):
        load_jwks("file://example.com/etc/jwks.json")


def test_plain_path_and_file_url_load_same_jwks(factory: TokenFactory, tmp_path: Path) -> None:
    from_url = load_jwks(factory.jwks_url)
    from_path = load_jwks(str(tmp_path / "jwks.json"))

    assert from_url == from_path
    assert from_url["keys"][0]["kid"] == factory.signing_key.kid


def test_fetch_exception_rejects_token_and_is_logged(
    factory: TokenFactory,
    make_verifier: VerifierMaker,
    fetch: CountingFetch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fetch.error = RuntimeError("fetcher exploded")
    verifier = make_verifier(jwks_url="https://user:secret@keys.example/certs?api_key=hidden")
    token = factory.token()

    with caplog.at_level(logging.WARNING, logger="chalicelib.auth"):
        reason = rejection_reason(verifier, bearer(token))

    assert reason == "JWKS unavailable"
    assert "https://keys.example/certs" in caplog.text
    assert "fetcher exploded" in caplog.text
    assert "secret" not in caplog.text
    assert "hidden" not in caplog.text
    assert token not in caplog.text


def test_concurrent_first_requests_fetch_jwks_once(
    factory: TokenFactory, make_verifier: VerifierMaker, clock: FakeClock
) -> None:
    calls = 0
    calls_lock = threading.Lock()
    fetch_started = threading.Event()
    release_fetch = threading.Event()

    def slow_fetch(url: str) -> dict[str, Any]:
        nonlocal calls
        with calls_lock:
            calls += 1
        fetch_started.set()
        release_fetch.wait(timeout=5)
        return load_jwks(url)

    verifier = TokenVerifier(
        AuthSettings(jwks_url=factory.jwks_url, issuers=GOOGLE_ISSUERS, client_id=factory.audience),
        clock=clock,
        fetch_jwks=slow_fetch,
    )
    header = bearer(factory.token())
    results: list[Any] = []

    def verify_in_thread() -> None:
        try:
            results.append(verifier.verify(header)["sub"])
        except InvalidToken as exc:
            results.append(exc)

    threads = [threading.Thread(target=verify_in_thread) for _ in range(8)]
    threads[0].start()
    assert fetch_started.wait(timeout=5)
    for thread in threads[1:]:
        thread.start()
    # Give the other threads time to reach the verifier while the fetch is still running.
    threading.Event().wait(timeout=0.2)
    release_fetch.set()
    for thread in threads:
        thread.join(timeout=10)

    assert not any(thread.is_alive() for thread in threads)
    assert results == ["user-123"] * 8
    assert calls == 1


# JWKS over HTTP, served on the loopback interface


class JWKSHandler(http.server.BaseHTTPRequestHandler):
    """Serves `routes[path] = (status, headers, body)` and counts requests per path."""

    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"not found"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # The client stops reading early in the size-limit test.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, type[JWKSHandler]]]:
    handler = type("Handler", (JWKSHandler,), {"routes": {}, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_jwks_served_over_http_is_used(
    factory: TokenFactory, make_verifier: VerifierMaker, jwks_server: tuple[str, type[JWKSHandler]]
) -> None:
    base_url, handler = jwks_server
    body = json.dumps({"keys": [factory.signing_key.public_jwk]}).encode()
    handler.routes["/oauth2/v3/certs"] = (200, {"Content-Type": "application/json"}, body)
    verifier = make_verifier(jwks_url=f"{base_url}/oauth2/v3/certs")

    for _ in range(3):
        assert verifier.verify(bearer(factory.token()))["sub"] == "user-123"

    assert handler.requests == ["/oauth2/v3/certs"]


@pytest.mark.parametrize("status", [404, 500, 503])
def test_jwks_http_error_status_rejects_token(
    factory: TokenFactory,
    make_verifier: VerifierMaker,
    jwks_server: tuple[str, type[JWKSHandler]],
    status: int,
) -> None:
    base_url, handler = jwks_server
    handler.routes["/certs"] = (
        status,
        {},
        json.dumps({"keys": [factory.signing_key.public_jwk]}).encode(),
    )
    verifier = make_verifier(jwks_url=f"{base_url}/certs")

    assert rejection_reason(verifier, bearer(factory.token())) == "JWKS unavailable"
    with pytest.raises(JWKSFetchError, match=f"HTTP status {status}"):
        load_jwks(f"{base_url}/certs")


def test_jwks_http_redirect_to_http_is_followed(
    factory: TokenFactory, jwks_server: tuple[str, type[JWKSHandler]]
) -> None:
    base_url, handler = jwks_server
    handler.routes["/old"] = (302, {"Location": f"{base_url}/new"}, b"")
    handler.routes["/new"] = (
        200,
        {},
        json.dumps({"keys": [factory.signing_key.public_jwk]}).encode(),
    )

    assert load_jwks(f"{base_url}/old")["keys"][0]["kid"] == factory.signing_key.kid


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:9/jwks.json", "file:///etc/passwd"])
def test_jwks_http_redirect_to_other_scheme_is_refused(
    jwks_server: tuple[str, type[JWKSHandler]], target: str
) -> None:
    base_url, handler = jwks_server
    handler.routes["/certs"] = (302, {"Location": target}, b"")

    with pytest.raises(JWKSFetchError, match="HTTP status 302"):
        load_jwks(f"{base_url}/certs")


def test_oversized_jwks_response_is_refused(jwks_server: tuple[str, type[JWKSHandler]]) -> None:
    base_url, handler = jwks_server
    handler.routes["/certs"] = (200, {}, b" " * (1024 * 1024 + 1))

    with pytest.raises(JWKSFetchError, match="larger than"):
        load_jwks(f"{base_url}/certs")


def test_unresponsive_jwks_server_times_out() -> None:
    # The listener never calls accept, so the kernel completes the TCP handshake but no response
    # ever arrives.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        host, port = listener.getsockname()

        with pytest.raises(JWKSFetchError, match="timed out"):
            load_jwks(f"http://{host}:{port}/certs", timeout_seconds=0.5)


# Development key


def test_dev_token_round_trip(
    tmp_path: Path,
    dev_key: DevKey,
    make_verifier: VerifierMaker,
    fetch: CountingFetch,
    clock: FakeClock,
) -> None:
    verifier = make_verifier(
        client_id="plan-api-dev",
        extra_public_keys=(dev_key.public_jwk,),
        extra_issuers=(DEV_ISSUER,),
    )
    token = mint_dev_token(dev_key, "plan-api-dev", subject="alice", now=clock.now)

    claims = verifier.verify(bearer(token))

    assert claims["iss"] == DEV_ISSUER
    assert claims["sub"] == "alice"
    assert claims["exp"] == int(clock.now) + 3600
    assert jwt.get_unverified_header(token)["kid"] == DEV_KEY_ID
    # Dev tokens must work offline, so the JWKS is not fetched for them.
    assert fetch.calls == 0


def test_dev_token_is_rejected_without_dev_key(
    dev_key: DevKey, make_verifier: VerifierMaker, clock: FakeClock
) -> None:
    verifier = make_verifier(client_id="plan-api-dev")
    token = mint_dev_token(dev_key, "plan-api-dev", now=clock.now)

    assert rejection_reason(verifier, bearer(token)) == "unknown signing key"


def test_dev_key_with_google_issuer_is_rejected(
    factory: TokenFactory, dev_key: DevKey, make_verifier: VerifierMaker
) -> None:
    verifier = make_verifier(extra_public_keys=(dev_key.public_jwk,), extra_issuers=(DEV_ISSUER,))
    token = jwt.encode(
        factory.claims(iss="https://accounts.google.com"),
        dev_key.private_pem,
        algorithm="RS256",
        headers={"kid": DEV_KEY_ID},
    )

    assert rejection_reason(verifier, bearer(token)) == "invalid issuer"


def test_jwks_key_with_dev_issuer_is_rejected(
    factory: TokenFactory, dev_key: DevKey, make_verifier: VerifierMaker
) -> None:
    verifier = make_verifier(extra_public_keys=(dev_key.public_jwk,), extra_issuers=(DEV_ISSUER,))

    assert rejection_reason(verifier, bearer(factory.token(iss=DEV_ISSUER))) == "invalid issuer"


def test_expired_dev_token_is_rejected(
    dev_key: DevKey, make_verifier: VerifierMaker, clock: FakeClock
) -> None:
    verifier = make_verifier(
        client_id="plan-api-dev",
        extra_public_keys=(dev_key.public_jwk,),
        extra_issuers=(DEV_ISSUER,),
    )
    token = mint_dev_token(dev_key, "plan-api-dev", ttl_seconds=60, now=clock.now)
    clock.advance(60 + 30)

    assert rejection_reason(verifier, bearer(token)) == "token expired"


def test_dev_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    key_path = tmp_path / "nested" / ".dev" / "dev-signing-key.pem"

    created = load_or_create_dev_key(str(key_path))
    loaded = load_or_create_dev_key(str(key_path))

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert loaded.private_pem == created.private_pem
    assert loaded.public_jwk == created.public_jwk
    assert created.public_jwk["kid"] == DEV_KEY_ID
    assert created.public_jwk["alg"] == "RS256"
    assert created.public_jwk["use"] == "sig"
    assert "d" not in created.public_jwk
    assert [name for name in os.listdir(key_path.parent)] == ["dev-signing-key.pem"]


def test_dev_key_repr_hides_private_key(dev_key: DevKey) -> None:
    assert "PRIVATE" not in repr(dev_key)


def test_dev_key_file_with_other_content_raises(tmp_path: Path) -> None:
    key_path = tmp_path / "dev-signing-key.pem"
    key_path.write_bytes(b"not a key")

    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        load_or_create_dev_key(str(key_path))


def test_dev_key_file_with_ec_key_raises(tmp_path: Path) -> None:
    key_path = tmp_path / "dev-signing-key.pem"
    key_path.write_bytes(ec_signing_key().private_pem)

    with pytest.raises(ValueError, match="not an RSA private key"):
        load_or_create_dev_key(str(key_path))


def test_mint_dev_token_rejects_non_positive_ttl(dev_key: DevKey) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        mint_dev_token(dev_key, "plan-api-dev", ttl_seconds=0)


def test_dev_token_script_prints_only_a_token(tmp_path: Path, dev_key: DevKey) -> None:
    key_path = tmp_path / "script-key.pem"
    environment = {
        **os.environ,
        "DEV_SIGNING_KEY_PATH": str(key_path),
        "OAUTH_CLIENT_ID": "client-from-env",
    }

    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "dev_token.py"),
            "--ttl",
            "120",
            "--subject",
            "bob",
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert key_path.exists()
    script_key = load_or_create_dev_key(str(key_path))
    verifier = TokenVerifier(
        AuthSettings(
            jwks_url=str(tmp_path / "unused-jwks.json"),
            issuers=GOOGLE_ISSUERS,
            client_id="client-from-env",
            extra_public_keys=(script_key.public_jwk,),
            extra_issuers=(DEV_ISSUER,),
        )
    )
    claims = verifier.verify(bearer(token))
    assert claims["sub"] == "bob"
    assert claims["exp"] - claims["iat"] == 120


def test_dev_token_script_reports_unreadable_key(tmp_path: Path) -> None:
    key_path = tmp_path / "broken.pem"
    key_path.write_bytes(b"garbage")

    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "dev_token.py"), "--key-file", str(key_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert "failed to load the development key" in result.stderr


# Settings


@pytest.mark.parametrize("field", ["issuers", "extra_issuers"])
def test_settings_reject_single_string_issuer(field: str) -> None:
    settings: dict[str, Any] = {
        "jwks_url": "jwks.json",
        "issuers": ("issuer",),
        "client_id": "client",
    }
    settings[field] = "accounts.google.com"

    with pytest.raises(TypeError, match=field):
        AuthSettings(**settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"client_id": ""}, "client_id"),
        ({"issuers": ()}, "issuers"),
        ({"jwks_url": ""}, "jwks_url"),
    ],
)
def test_settings_reject_empty_values(overrides: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {
        "jwks_url": "jwks.json",
        "issuers": ("issuer",),
        "client_id": "client",
    }
    settings.update(overrides)

    with pytest.raises(ValueError, match=message):
        AuthSettings(**settings)


def test_extra_public_key_without_kid_raises(dev_key: DevKey) -> None:
    public_jwk = {name: value for name, value in dev_key.public_jwk.items() if name != "kid"}
    settings = AuthSettings(
        jwks_url="jwks.json",
        issuers=("issuer",),
        client_id="client",
        extra_public_keys=(public_jwk,),
    )

    with pytest.raises(ValueError, match="kid"):
        TokenVerifier(settings)
