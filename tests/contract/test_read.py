"""Contract of `GET /v1/plan/{id}`: the stored plan, conditional GETs, 404 and malformed ids."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.contract.conftest import Deployment, StoredPlan, assert_problem


def test_get_returns_plan_as_written_with_its_etag(
        api: Deployment, stored_plan: StoredPlan) -> None:
    response = api.call("GET", stored_plan.path)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["ETag"] == stored_plan.etag
    assert response.json() == stored_plan.document


def test_get_returns_members_schema_does_not_name(
        api: Deployment, plan: dict[str, Any]) -> None:
    plan["notes"] = {"tags": ["a", 1, None, {"nested": True}], "ratio": 0.25}
    plan["linkedPlanServices"][0]["linkedService"]["codes"] = ["A1", "B2"]
    api.create(plan)

    response = api.call("GET", f"/v1/plan/{plan['objectId']}")

    assert response.status_code == 200
    assert response.json() == plan


@pytest.mark.parametrize("make_header", [
    lambda etag: etag,
    lambda etag: f'"not-the-tag", {etag}',
    lambda etag: "*",
    lambda etag: f"W/{etag}",
    lambda etag: f'W/"other", W/{etag}',
], ids=["exact", "list", "star", "weak", "weak-list"])
def test_get_with_matching_if_none_match_is_304_without_body(
        api: Deployment, stored_plan: StoredPlan, make_header: Callable[[str], str]) -> None:
    response = api.call("GET", stored_plan.path,
                        headers={"If-None-Match": make_header(stored_plan.etag)})

    assert response.status_code == 304
    assert response.headers["ETag"] == stored_plan.etag
    assert response.content == b""


@pytest.mark.parametrize("header", ['"not-the-tag"', 'W/"not-the-tag", "other"'])
def test_get_with_different_if_none_match_returns_plan(
        api: Deployment, stored_plan: StoredPlan, header: str) -> None:
    response = api.call("GET", stored_plan.path, headers={"If-None-Match": header})

    assert response.status_code == 200
    assert response.headers["ETag"] == stored_plan.etag
    assert response.json() == stored_plan.document


def test_get_with_old_etag_after_change_returns_new_plan(
        api: Deployment, stored_plan: StoredPlan) -> None:
    changed = copy.deepcopy(stored_plan.document)
    changed["planType"] = "outOfNetwork"
    assert api.call("PUT", stored_plan.path, document=changed).status_code == 200

    response = api.call("GET", stored_plan.path, headers={"If-None-Match": stored_plan.etag})

    assert response.status_code == 200
    assert response.headers["ETag"] != stored_plan.etag
    assert response.json() == changed


def test_get_of_missing_plan_is_404(api: Deployment) -> None:
    response = api.call("GET", "/v1/plan/no-such-plan-7d1e2c")

    assert_problem(response, 404)


def test_get_of_missing_plan_is_404_despite_if_none_match(api: Deployment) -> None:
    response = api.call("GET", "/v1/plan/no-such-plan-7d1e2c", headers={"If-None-Match": "*"})

    assert_problem(response, 404)


@pytest.mark.parametrize("raw_id", [
    "bad%20id", "bad!id", "plan:1", "%C3%A9t%C3%A9", "a" * 201, "%2A",
], ids=["space", "bang", "colon", "non-ascii", "too-long", "asterisk"])
def test_get_with_malformed_id_in_url_is_400(api: Deployment, raw_id: str) -> None:
    response = api.call("GET", f"/v1/plan/{raw_id}")

    assert_problem(response, 400)
