"""`GET /health` names each backend it checks and fails with 503 when one is down."""

from __future__ import annotations

import requests

from tests.e2e.conftest import Stack, base_settings
from tests.support.jwt_factory import TokenFactory
from tests.support.server import free_port, running_server


def test_health_checks_store_search_and_queue(stack: Stack) -> None:
    response = requests.get(stack.server.base_url + "/health", timeout=30)
    assert response.status_code == 200
    assert response.json() == {"status": "ok",
                               "checks": {"store": "ok", "search": "ok", "queue": "ok"}}


def test_health_names_an_unreachable_search_engine(e2e_tokens: TokenFactory,
                                                   tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("search-down")
    settings = {**base_settings(e2e_tokens, directory),
                "SEARCH_URL": f"http://127.0.0.1:{free_port()}"}
    with running_server(settings, directory / "api.log", ready_status=503) as server:
        response = requests.get(server.base_url + "/health", timeout=30)
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["checks"]["search"].startswith("failed")
    assert body["checks"]["store"] == "ok"
    assert "search" in body["detail"]
