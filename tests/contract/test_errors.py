"""Contract of error responses and request ids: problem+json everywhere, X-Request-ID echoed.

Also covers `/health` when the store is unreachable, on a server started for that purpose.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.contract.conftest import (
    STORE_KINDS,
    Deployment,
    StoredPlan,
    assert_problem,
    example_plan,
    fresh_token,
)
from tests.support.jwt_factory import TokenFactory
from tests.support.server import RunningServer, free_port, running_server

ErrorRequest = Callable[[Deployment, StoredPlan], requests.Response]


def _bad_json(api: Deployment, stored_plan: StoredPlan) -> requests.Response:
    return api.call("POST", "/v1/plan", data=b"{", headers={"Content-Type": "application/json"})


def _schema_violation(api: Deployment, stored_plan: StoredPlan) -> requests.Response:
    plan = example_plan()
    del plan["planType"]
    return api.call("POST", "/v1/plan", document=plan)


def _bad_limit(api: Deployment, stored_plan: StoredPlan) -> requests.Response:
    return api.call("GET", "/v1/plan", params={"limit": "0"})


def _missing_plan(api: Deployment, stored_plan: StoredPlan) -> requests.Response:
    return api.call("GET", "/v1/plan/no-such-plan-a7c4")


def _method_not_allowed(api: Deployment, stored_plan: StoredPlan) -> requests.Response:
    return api.call("DELETE", "/v1/plan")


def _post_to_a_plan(api: Deployment, stored_plan: StoredPlan) -> requests.Response:
    return api.call("POST", stored_plan.path, document=stored_plan.document)


def _duplicate_plan(api: Deployment, stored_plan: StoredPlan) -> requests.Response:
    return api.call("POST", "/v1/plan", document=stored_plan.document)


def _stale_if_match(api: Deployment, stored_plan: StoredPlan) -> requests.Response:
    return api.call("PATCH", stored_plan.path, document={"planType": "x"},
                    headers={"If-Match": '"stale"'})


def _too_large(api: Deployment, stored_plan: StoredPlan) -> requests.Response:
    body = json.dumps({**stored_plan.document, "padding": "p" * (1024 * 1024)}).encode()
    return api.call("PUT", stored_plan.path, data=body,
                    headers={"Content-Type": "application/json"})


def _unsupported_media_type(api: Deployment, stored_plan: StoredPlan) -> requests.Response:
    return api.call("PUT", stored_plan.path, data=json.dumps(stored_plan.document).encode(),
                    headers={"Content-Type": "text/csv"})


def _unknown_media_type(api: Deployment, stored_plan: StoredPlan) -> requests.Response:
    return api.call("PATCH", stored_plan.path, data=b'{"planType": "x"}',
                    headers={"Content-Type": "application/vnd.example+json"})


ERROR_REQUESTS: dict[str, tuple[ErrorRequest, int]] = {
    "bad-json": (_bad_json, 400),
    "schema-violation": (_schema_violation, 400),
    "bad-limit": (_bad_limit, 400),
    "missing-plan": (_missing_plan, 404),
    "delete-on-the-collection": (_method_not_allowed, 405),
    "post-to-a-plan": (_post_to_a_plan, 405),
    "duplicate-plan": (_duplicate_plan, 409),
    "stale-if-match": (_stale_if_match, 412),
    "too-large": (_too_large, 413),
    "text-csv": (_unsupported_media_type, 415),
    "unknown-json-flavour": (_unknown_media_type, 415),
}


@pytest.mark.parametrize("send, status", ERROR_REQUESTS.values(), ids=ERROR_REQUESTS.keys())
def test_error_responses_are_problem_json(
        api: Deployment, stored_plan: StoredPlan, send: ErrorRequest, status: int) -> None:
    assert_problem(send(api, stored_plan), status)


SUPPLIED_ID_REQUESTS: dict[str, tuple[Callable[[Deployment, StoredPlan, dict[str, str]],
                                               requests.Response], int]] = {
    "get": (lambda api, plan, headers: api.call("GET", plan.path, headers=headers), 200),
    "post": (lambda api, plan, headers: api.call("POST", "/v1/plan", document=example_plan(),
                                                 headers=headers), 201),
    "conditional-get": (lambda api, plan, headers: api.call(
        "GET", plan.path, headers={**headers, "If-None-Match": plan.etag}), 304),
    "delete": (lambda api, plan, headers: api.call("DELETE", plan.path, headers=headers), 204),
    "not-found": (lambda api, plan, headers: api.call("GET", "/v1/plan/absent-e1",
                                                      headers=headers), 404),
    "bad-request": (lambda api, plan, headers: api.call(
        "POST", "/v1/plan", data=b"[", headers={**headers, "Content-Type": "application/json"}),
                    400),
    "precondition-failed": (lambda api, plan, headers: api.call(
        "DELETE", plan.path, headers={**headers, "If-Match": '"stale"'}), 412),
    "health": (lambda api, plan, headers: requests.get(f"{api.base_url}/health",
                                                       headers=headers, timeout=30), 200),
}


@pytest.mark.parametrize("send, status", SUPPLIED_ID_REQUESTS.values(),
                         ids=SUPPLIED_ID_REQUESTS.keys())
def test_supplied_request_id_is_echoed(
        api: Deployment, stored_plan: StoredPlan,
        send: Callable[[Deployment, StoredPlan, dict[str, str]], requests.Response],
        status: int) -> None:
    request_id = f"contract-{stored_plan.suffix}"

    response = send(api, stored_plan, {"X-Request-ID": request_id})

    assert response.status_code == status, response.text[:500]
    assert response.headers["X-Request-ID"] == request_id


def test_request_id_is_generated_when_none_is_supplied(
        api: Deployment, stored_plan: StoredPlan) -> None:
    first = api.call("GET", stored_plan.path)
    second = api.call("GET", stored_plan.path)

    assert first.headers.get("X-Request-ID")
    assert second.headers.get("X-Request-ID")
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def _unreachable_store_settings(store_kind: str, directory: Path) -> dict[str, str]:
    if store_kind == "redis":
        # Nothing listens on a port that was free a moment ago, so connections are refused.
        return {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                "REDIS_KEY_PREFIX": "contract-unreachable:",
                "SQLITE_PATH": str(directory / "plans.sqlite3")}
    # A regular file where the database's directory should be makes SQLite unusable.
    blocker = directory / "not-a-directory"
    blocker.write_text("", encoding="utf-8")
    return {"SQLITE_PATH": str(blocker / "plans.sqlite3")}


@pytest.fixture(scope="module", params=STORE_KINDS)
def store_down_server(request: pytest.FixtureRequest, tokens: TokenFactory,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A `dev` server whose store cannot be reached, ready once `/health` returns 503."""
    directory = tmp_path_factory.mktemp(f"api-{request.param}-down")
    settings = {
        "OAUTH_JWKS_URL": tokens.jwks_url,
        "OAUTH_ISSUERS": tokens.issuer,
        "OAUTH_CLIENT_ID": tokens.audience,
        "DEV_TOKENS": "off",
        **_unreachable_store_settings(request.param, directory),
    }
    with running_server(settings, directory / "server.log", ready_status=503) as server:
        yield server


def test_health_is_503_naming_store_when_it_is_unreachable(
        store_down_server: RunningServer) -> None:
    response = requests.get(f"{store_down_server.base_url}/health", timeout=30)

    problem = assert_problem(response, 503)
    assert "store" in problem["detail"]
    assert problem["checks"]["store"] != "ok"


@pytest.mark.parametrize("store_down_server", ["sqlite", "redis"], indirect=True)
def test_plan_request_while_store_is_unreachable_is_503_problem(
        store_down_server: RunningServer, tokens: TokenFactory) -> None:
    plan = example_plan()
    response = requests.post(f"{store_down_server.base_url}/v1/plan", data=json.dumps(plan),
                             headers={"Authorization": f"Bearer {fresh_token(tokens)}",
                                      "Content-Type": "application/json"}, timeout=30)

    assert response.status_code == 503, response.text[:500]
    assert_problem(response, 503)
