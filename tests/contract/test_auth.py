"""Contract of bearer authentication over HTTP: what gets a 401, `/health`, and the stages' keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.contract.conftest import (
    STORE_KINDS,
    Deployment,
    DeploymentStarter,
    example_plan,
    fresh_token,
)
from tests.support.jwt_factory import OMIT, TokenFactory, compact_jws, rsa_signing_key
from tests.support.server import REPO_ROOT

DEV_TOKEN_SCRIPT = REPO_ROOT / "scripts" / "dev_token.py"
DEV_TOKEN_TIMEOUT_SECONDS = 60


def _now() -> int:
    return int(time.time())


def _tampered(tokens: TokenFactory) -> str:
    """Return a valid token whose payload was changed after signing."""
    header, _, signature = fresh_token(tokens).split(".")
    claims = tokens.claims(sub="admin")
    forged = compact_jws({}, claims).split(".")[1]
    return f"{header}.{forged}.{signature}"


def _unsigned(tokens: TokenFactory) -> str:
    tokens.now = time.time()
    return tokens.unsigned_token()


def _hs256_with_public_key(tokens: TokenFactory) -> str:
    tokens.now = time.time()
    return tokens.hs256_with_public_key()


BAD_AUTHORIZATION: dict[str, Callable[[TokenFactory], str]] = {
    "bearer-without-token": lambda tokens: "Bearer",
    "not-a-jwt": lambda tokens: "Bearer not-a-jwt",
    "three-garbage-parts": lambda tokens: "Bearer a.b.c",
    "basic-scheme": lambda tokens: "Basic dXNlcjpwYXNzd29yZA==",
    "token-without-scheme": lambda tokens: fresh_token(tokens),
    "expired": lambda tokens: "Bearer " + fresh_token(tokens, iat=_now() - 7200,
                                                      exp=_now() - 3600),
    "not-yet-valid": lambda tokens: "Bearer " + fresh_token(tokens, nbf=_now() + 3600),
    "wrong-audience": lambda tokens: "Bearer " + fresh_token(tokens, aud="someone-else"),
    "wrong-issuer": lambda tokens: "Bearer " + fresh_token(tokens, iss="https://issuer.invalid"),
    "without-exp": lambda tokens: "Bearer " + fresh_token(tokens, exp=OMIT),
    "without-aud": lambda tokens: "Bearer " + fresh_token(tokens, aud=OMIT),
    "without-iss": lambda tokens: "Bearer " + fresh_token(tokens, iss=OMIT),
    "alg-none": lambda tokens: "Bearer " + _unsigned(tokens),
    "hs256-keyed-with-public-key": lambda tokens: "Bearer " + _hs256_with_public_key(tokens),
    "unknown-signing-key": lambda tokens: "Bearer " + fresh_token(
        tokens, signing_key=rsa_signing_key("intruder")),
    "other-key-under-known-kid": lambda tokens: "Bearer " + fresh_token(
        tokens, signing_key=rsa_signing_key("intruder"), headers={"kid": tokens.signing_key.kid}),
    "tampered-payload": lambda tokens: "Bearer " + _tampered(tokens),
}


def assert_unauthorized(response: requests.Response) -> None:
    assert response.status_code == 401, response.text[:500]
    assert response.headers["Content-Type"].split(";")[0].strip() == "application/json"
    assert isinstance(response.json(), dict)


def test_request_without_authorization_header_is_401_with_json_body(api: Deployment) -> None:
    assert_unauthorized(api.call("GET", "/v1/plan", token=None))


@pytest.mark.parametrize("make_header", BAD_AUTHORIZATION.values(), ids=BAD_AUTHORIZATION.keys())
def test_request_with_bad_token_is_401_with_json_body(
        api: Deployment, make_header: Callable[[TokenFactory], str]) -> None:
    response = api.call("GET", "/v1/plan", token=None,
                        headers={"Authorization": make_header(api.tokens)})

    assert_unauthorized(response)


@pytest.mark.parametrize("case", ["expired", "alg-none", "hs256-keyed-with-public-key"])
def test_write_with_bad_token_is_401_and_writes_nothing(api: Deployment, case: str) -> None:
    plan = example_plan()

    response = api.call("POST", "/v1/plan", document=plan, token=None,
                        headers={"Authorization": BAD_AUTHORIZATION[case](api.tokens)})

    assert_unauthorized(response)
    assert api.version(plan["objectId"]) is None


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/plan/some-plan"), ("PUT", "/v1/plan/some-plan"),
    ("PATCH", "/v1/plan/some-plan"), ("DELETE", "/v1/plan/some-plan"), ("POST", "/v1/plan"),
])
def test_every_plan_route_needs_token(api: Deployment, method: str, path: str) -> None:
    response = api.call(method, path, token=None, data=b"{}",
                        headers={"Content-Type": "application/json"})

    assert_unauthorized(response)


def test_request_with_valid_token_is_served(api: Deployment) -> None:
    response = api.call("GET", "/v1/plan", params={"limit": "1"})

    assert response.status_code == 200, response.text


def test_health_needs_no_token_and_reports_its_checks(api: Deployment) -> None:
    response = requests.get(f"{api.base_url}/health", timeout=30)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert isinstance(body["checks"], dict) and body["checks"]
    assert all(result == "ok" for result in body["checks"].values())


def dev_token(key_path: Path, audience: str) -> str:
    """Run scripts/dev_token.py with the key file the `dev` stage trusts and return its token."""
    env = {**os.environ, "DEV_SIGNING_KEY_PATH": str(key_path), "OAUTH_CLIENT_ID": audience}
    result = subprocess.run([sys.executable, str(DEV_TOKEN_SCRIPT)], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=DEV_TOKEN_TIMEOUT_SECONDS,
                            check=False)
    assert result.returncode == 0, f"dev_token.py failed: {result.stderr}"
    return result.stdout.strip()


@pytest.fixture(scope="module", params=STORE_KINDS)
def prod_api(request: pytest.FixtureRequest,
             start_deployment: DeploymentStarter) -> Iterator[Deployment]:
    """A server of the `prod` stage with the same JWKS, issuer and client id as the dev servers."""
    with start_deployment(request.param, stage="prod") as deployment:
        yield deployment


def test_dev_stage_accepts_token_from_dev_token_script(
        api: Deployment, dev_key_path: Path) -> None:
    token = dev_token(dev_key_path, api.tokens.audience)

    response = api.call("GET", "/v1/plan", token=token, params={"limit": "1"})

    assert response.status_code == 200, response.text


def test_prod_stage_rejects_token_from_dev_token_script(
        prod_api: Deployment, dev_key_path: Path) -> None:
    token = dev_token(dev_key_path, prod_api.tokens.audience)

    response = prod_api.call("GET", "/v1/plan", token=token, params={"limit": "1"})

    assert_unauthorized(response)


def test_prod_stage_accepts_token_signed_by_its_jwks(prod_api: Deployment) -> None:
    plan = example_plan()

    response = prod_api.call("POST", "/v1/plan", document=plan)

    assert response.status_code == 201, response.text
    assert json.loads(response.text) == plan
