"""Contract of `DELETE /v1/plan/{id}`: the plan and every object it owns go, under If-Match."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from tests.contract.conftest import (
    Deployment,
    StoredPlan,
    assert_problem,
    example_patch,
    example_plan,
    identities_of,
)


def test_delete_returns_204_and_plan_is_gone(api: Deployment, stored_plan: StoredPlan) -> None:
    response = api.call("DELETE", stored_plan.path)

    assert response.status_code == 204
    assert response.content == b""
    assert api.snapshot(stored_plan.plan_id) is None
    assert_problem(api.call("GET", stored_plan.path), 404)


def test_delete_removes_every_object_plan_owned(
        api: Deployment, stored_plan: StoredPlan) -> None:
    patched = api.call("PATCH", stored_plan.path, document=example_patch(stored_plan.suffix))
    assert patched.status_code == 200, patched.text
    owned = identities_of(patched.json())
    assert len(owned) == 11

    response = api.call("DELETE", stored_plan.path)

    assert response.status_code == 204
    assert sorted(identity for identity in owned if api.stored_object_exists(identity)) == []


def test_delete_frees_object_ids_for_new_plan(
        api: Deployment, stored_plan: StoredPlan) -> None:
    assert api.call("DELETE", stored_plan.path).status_code == 204
    successor = copy.deepcopy(stored_plan.document)
    successor["objectId"] = f"successor-{stored_plan.suffix}"

    response = api.call("POST", "/v1/plan", document=successor)

    assert response.status_code == 201, response.text
    assert response.json() == successor


def test_delete_then_create_with_same_id_serves_new_plan(
        api: Deployment, stored_plan: StoredPlan) -> None:
    assert api.call("DELETE", stored_plan.path).status_code == 204
    recreated = copy.deepcopy(stored_plan.document)
    recreated["planType"] = "outOfNetwork"

    created = api.call("POST", "/v1/plan", document=recreated)

    assert created.status_code == 201, created.text
    fetched = api.call("GET", stored_plan.path)
    assert fetched.json() == recreated
    assert fetched.headers["ETag"] == created.headers["ETag"]


@pytest.mark.parametrize("make_header", [
    lambda etag: '"not-the-current-tag"', lambda etag: '"a", "b"', lambda etag: f"W/{etag}",
], ids=["other-tag", "list-without-it", "weak-current-tag"])
def test_delete_with_mismatched_if_match_is_412_and_deletes_nothing(
        api: Deployment, stored_plan: StoredPlan, make_header: Callable[[str], str]) -> None:
    version = api.version(stored_plan.plan_id)

    response = api.call("DELETE", stored_plan.path,
                        headers={"If-Match": make_header(stored_plan.etag)})

    assert_problem(response, 412)
    assert api.version(stored_plan.plan_id) == version
    assert all(api.stored_object_exists(identity)
               for identity in identities_of(stored_plan.document))
    assert api.call("GET", stored_plan.path).json() == stored_plan.document


@pytest.mark.parametrize("make_header", [
    lambda etag: etag, lambda etag: "*", lambda etag: f'"stale", {etag}',
], ids=["exact", "star", "list"])
def test_delete_with_matching_if_match_deletes_plan(
        api: Deployment, stored_plan: StoredPlan, make_header: Callable[[str], str]) -> None:
    response = api.call("DELETE", stored_plan.path,
                        headers={"If-Match": make_header(stored_plan.etag)})

    assert response.status_code == 204
    assert api.snapshot(stored_plan.plan_id) is None


@pytest.mark.parametrize("if_match", [None, "*", '"some-tag"'])
def test_delete_of_missing_plan_is_404_despite_if_match(
        api: Deployment, if_match: str | None) -> None:
    headers = {} if if_match is None else {"If-Match": if_match}

    response = api.call("DELETE", "/v1/plan/no-such-plan-3f9a1d", headers=headers)

    assert_problem(response, 404)


def test_delete_twice_is_404_second_time(api: Deployment, stored_plan: StoredPlan) -> None:
    assert api.call("DELETE", stored_plan.path).status_code == 204

    response = api.call("DELETE", stored_plan.path)

    assert_problem(response, 404)


def test_delete_leaves_other_plans_alone(api: Deployment, stored_plan: StoredPlan) -> None:
    neighbour = example_plan()
    api.create(neighbour)
    neighbour_version = api.version(neighbour["objectId"])

    assert api.call("DELETE", stored_plan.path).status_code == 204

    assert api.version(neighbour["objectId"]) == neighbour_version
    assert api.call("GET", f"/v1/plan/{neighbour['objectId']}").json() == neighbour


@pytest.mark.parametrize("raw_id", ["bad%20id", "es_plan!", "a" * 201])
def test_delete_with_malformed_id_in_url_is_400(api: Deployment, raw_id: str) -> None:
    response = api.call("DELETE", f"/v1/plan/{raw_id}")

    assert_problem(response, 400)
