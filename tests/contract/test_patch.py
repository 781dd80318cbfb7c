"""Contract of `PATCH /v1/plan/{id}`: merge rules, the merged result's validation, and If-Match."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.contract.conftest import (
    Deployment,
    StoredPlan,
    assert_problem,
    error_paths,
    example_patch,
    example_plan,
    identities_of,
)


def assert_unchanged(api: Deployment, stored_plan: StoredPlan, version: int | None) -> None:
    assert api.version(stored_plan.plan_id) == version
    response = api.call("GET", stored_plan.path)
    assert response.headers["ETag"] == stored_plan.etag
    assert response.json() == stored_plan.document


def test_example_patch_updates_cost_shares_and_adds_third_plan_service(
        api: Deployment, stored_plan: StoredPlan) -> None:
    patch = example_patch(stored_plan.suffix)

    response = api.call("PATCH", stored_plan.path, document=patch)

    assert response.status_code == 200, response.text
    merged = response.json()
    assert merged["planCostShares"]["deductible"] == 2056300
    assert merged["planCostShares"]["copay"] == 2235533
    assert len(merged["linkedPlanServices"]) == 3
    assert merged["linkedPlanServices"][:2] == stored_plan.document["linkedPlanServices"]
    assert merged["linkedPlanServices"][2] == patch["linkedPlanServices"][0]
    assert response.headers["ETag"] != stored_plan.etag

    fetched = api.call("GET", stored_plan.path)
    assert fetched.json() == merged
    assert fetched.headers["ETag"] == response.headers["ETag"]
    snapshot = api.snapshot(stored_plan.plan_id)
    assert snapshot is not None
    assert set(snapshot.objects) == identities_of(merged)


def test_repeating_example_patch_keeps_etag_and_version(
        api: Deployment, stored_plan: StoredPlan) -> None:
    patch = example_patch(stored_plan.suffix)
    first = api.call("PATCH", stored_plan.path, document=patch)
    version = api.version(stored_plan.plan_id)

    second = api.call("PATCH", stored_plan.path, document=patch)

    assert second.status_code == 200, second.text
    assert second.headers["ETag"] == first.headers["ETag"]
    assert second.json() == first.json()
    assert api.version(stored_plan.plan_id) == version


def test_patch_accepts_merge_patch_media_type(api: Deployment, stored_plan: StoredPlan) -> None:
    body = json.dumps({"planType": "outOfNetwork"}).encode()

    response = api.call("PATCH", stored_plan.path, data=body,
                        headers={"Content-Type": "application/merge-patch+json"})

    assert response.status_code == 200, response.text
    assert response.json()["planType"] == "outOfNetwork"
    assert api.call("GET", stored_plan.path).json()["planType"] == "outOfNetwork"


def test_patch_with_null_removes_member(api: Deployment, stored_plan: StoredPlan) -> None:
    expected = copy.deepcopy(stored_plan.document)
    del expected["planCostShares"]["copay"]

    response = api.call("PATCH", stored_plan.path, document={"planCostShares": {"copay": None}})

    assert response.status_code == 200, response.text
    assert response.json() == expected
    assert api.call("GET", stored_plan.path).json() == expected


def test_patch_adds_then_removes_unnamed_member(
        api: Deployment, stored_plan: StoredPlan) -> None:
    added = api.call("PATCH", stored_plan.path, document={"notes": {"a": 1, "b": [1, 2]}})
    assert added.status_code == 200, added.text
    assert added.json()["notes"] == {"a": 1, "b": [1, 2]}

    removed = api.call("PATCH", stored_plan.path, document={"notes": None})

    assert removed.status_code == 200, removed.text
    assert removed.json() == stored_plan.document
    assert removed.headers["ETag"] == stored_plan.etag


@pytest.mark.parametrize("patch, expected_paths", [
    ({"planType": None}, ["/planType"]),
    ({"planCostShares": {"deductible": None}}, ["/planCostShares/deductible"]),
    ({"planCostShares": None}, ["/planCostShares"]),
    ({"linkedPlanServices": None, "creationDate": None}, ["/creationDate", "/linkedPlanServices"]),
], ids=["plan-type", "nested-deductible", "cost-shares", "two-members"])
def test_patch_nulling_required_member_is_400_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan, patch: dict[str, Any],
        expected_paths: list[str]) -> None:
    version = api.version(stored_plan.plan_id)

    response = api.call("PATCH", stored_plan.path, document=patch)

    assert error_paths(assert_problem(response, 400)) == expected_paths
    assert_unchanged(api, stored_plan, version)


def test_patch_breaking_schema_is_400_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    version = api.version(stored_plan.plan_id)
    patch = {
        "planCostShares": {"deductible": -5},
        "creationDate": "2017-12-12",
        "planType": "",
        "linkedPlanServices": [{"_org": "example.com", "objectType": "planservice",
                                "objectId": f"incomplete-service-{stored_plan.suffix}"}],
    }

    response = api.call("PATCH", stored_plan.path, document=patch)

    assert error_paths(assert_problem(response, 400)) == [
        "/creationDate", "/linkedPlanServices/2/linkedService",
        "/linkedPlanServices/2/planserviceCostShares", "/planCostShares/deductible", "/planType"]
    assert_unchanged(api, stored_plan, version)
    assert not api.stored_object_exists(f"planservice:incomplete-service-{stored_plan.suffix}")


def test_patch_replacing_nested_stored_object_deletes_old_one(
        api: Deployment, stored_plan: StoredPlan) -> None:
    old = stored_plan.document["planCostShares"]
    replacement = {"_org": "example.com", "objectId": f"new-cost-share-{stored_plan.suffix}",
                   "objectType": "membercostshare", "deductible": 1}

    response = api.call("PATCH", stored_plan.path, document={"planCostShares": replacement})

    assert response.status_code == 200, response.text
    assert response.json()["planCostShares"] == replacement
    snapshot = api.snapshot(stored_plan.plan_id)
    assert snapshot is not None
    assert f"membercostshare:{replacement['objectId']}" in snapshot.objects
    assert f"membercostshare:{old['objectId']}" not in snapshot.objects
    assert not api.stored_object_exists(f"membercostshare:{old['objectId']}")


def test_patch_replaced_object_id_can_be_used_by_another_plan(
        api: Deployment, stored_plan: StoredPlan) -> None:
    old = stored_plan.document["planCostShares"]
    replacement = {"_org": "example.com", "objectId": f"new-cost-share-{stored_plan.suffix}",
                   "objectType": "membercostshare", "deductible": 1}
    assert api.call("PATCH", stored_plan.path,
                    document={"planCostShares": replacement}).status_code == 200
    other = example_plan()
    other["planCostShares"] = copy.deepcopy(old)

    response = api.call("POST", "/v1/plan", document=other)

    assert response.status_code == 201, response.text


def test_patch_merges_stored_object_arrays_by_object_id(
        api: Deployment, stored_plan: StoredPlan) -> None:
    services = stored_plan.document["linkedPlanServices"]
    second = services[1]
    patch = {"linkedPlanServices": [{
        "objectId": second["objectId"], "objectType": "planservice",
        "linkedService": {"objectId": second["linkedService"]["objectId"],
                          "objectType": "service", "name": "Well baby visits"},
    }]}
    expected_second = copy.deepcopy(second)
    expected_second["linkedService"]["name"] = "Well baby visits"

    response = api.call("PATCH", stored_plan.path, document=patch)

    assert response.status_code == 200, response.text
    assert response.json()["linkedPlanServices"] == [services[0], expected_second]
    snapshot = api.snapshot(stored_plan.plan_id)
    assert snapshot is not None
    assert set(snapshot.objects) == identities_of(stored_plan.document)


def test_patch_with_plain_array_replaces_it(api: Deployment, stored_plan: StoredPlan) -> None:
    first = api.call("PATCH", stored_plan.path, document={"codes": ["a", "b", "c"]})
    assert first.status_code == 200, first.text

    response = api.call("PATCH", stored_plan.path, document={"codes": ["z"]})

    assert response.status_code == 200, response.text
    assert response.json()["codes"] == ["z"]


def test_patch_with_stale_if_match_is_refused_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    first = api.call("PATCH", stored_plan.path, document={"planType": "outOfNetwork"},
                     headers={"If-Match": stored_plan.etag})
    assert first.status_code == 200, first.text
    version = api.version(stored_plan.plan_id)

    response = api.call("PATCH", stored_plan.path, document={"planType": "stale-writer"},
                        headers={"If-Match": stored_plan.etag})

    assert_problem(response, 412)
    assert api.version(stored_plan.plan_id) == version
    fetched = api.call("GET", stored_plan.path)
    assert fetched.json()["planType"] == "outOfNetwork"
    assert fetched.headers["ETag"] == first.headers["ETag"]


def test_patch_with_weak_if_match_is_412_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    version = api.version(stored_plan.plan_id)

    response = api.call("PATCH", stored_plan.path, document={"planType": "outOfNetwork"},
                        headers={"If-Match": f"W/{stored_plan.etag}"})

    assert_problem(response, 412)
    assert_unchanged(api, stored_plan, version)


@pytest.mark.parametrize("make_header", [
    lambda etag: etag, lambda etag: "*", lambda etag: f'"stale", {etag}',
], ids=["exact", "star", "list"])
def test_patch_with_matching_if_match_is_applied(
        api: Deployment, stored_plan: StoredPlan, make_header: Callable[[str], str]) -> None:
    response = api.call("PATCH", stored_plan.path, document={"planType": "outOfNetwork"},
                        headers={"If-Match": make_header(stored_plan.etag)})

    assert response.status_code == 200, response.text
    assert api.call("GET", stored_plan.path).json()["planType"] == "outOfNetwork"


@pytest.mark.parametrize("patch", [{}, {"planType": "inNetwork"},
                                   {"planCostShares": {"copay": 23}}],
                         ids=["empty", "same-plan-type", "same-copay"])
def test_patch_that_changes_nothing_keeps_etag_and_version(
        api: Deployment, stored_plan: StoredPlan, patch: dict[str, Any]) -> None:
    version = api.version(stored_plan.plan_id)

    response = api.call("PATCH", stored_plan.path, document=patch)

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == stored_plan.etag
    assert response.json() == stored_plan.document
    assert api.version(stored_plan.plan_id) == version


@pytest.mark.parametrize("if_match", [None, "*", '"some-tag"'])
def test_patch_of_missing_plan_is_404_despite_if_match(
        api: Deployment, if_match: str | None) -> None:
    headers = {} if if_match is None else {"If-Match": if_match}

    response = api.call("PATCH", "/v1/plan/no-such-plan-5b0c9e",
                        document={"planType": "outOfNetwork"}, headers=headers)

    assert_problem(response, 404)
    assert api.version("no-such-plan-5b0c9e") is None


def test_patch_with_other_object_id_is_400_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    version = api.version(stored_plan.plan_id)

    response = api.call("PATCH", stored_plan.path,
                        document={"objectId": f"other-{stored_plan.suffix}", "planType": "x"})

    assert error_paths(assert_problem(response, 400)) == ["/objectId"]
    assert_unchanged(api, stored_plan, version)


def test_patch_with_another_plans_object_is_409_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    owner = example_plan()
    api.create(owner)
    owner_version = api.version(owner["objectId"])
    version = api.version(stored_plan.plan_id)

    response = api.call("PATCH", stored_plan.path, document={
        "linkedPlanServices": [copy.deepcopy(owner["linkedPlanServices"][1])]})

    assert_problem(response, 409)
    assert_unchanged(api, stored_plan, version)
    assert api.version(owner["objectId"]) == owner_version


def test_patch_repeating_identity_is_400_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    version = api.version(stored_plan.plan_id)
    existing_service = stored_plan.document["linkedPlanServices"][0]["linkedService"]
    new_plan_service = copy.deepcopy(example_patch(stored_plan.suffix)["linkedPlanServices"][0])
    new_plan_service["linkedService"] = copy.deepcopy(existing_service)

    response = api.call("PATCH", stored_plan.path,
                        document={"linkedPlanServices": [new_plan_service]})

    assert_problem(response, 400)
    assert_unchanged(api, stored_plan, version)
    assert not api.stored_object_exists(f"planservice:{new_plan_service['objectId']}")


BAD_BODIES: dict[str, tuple[bytes, str, int]] = {
    "malformed-json": (b'{"planType": ', "application/json", 400),
    "nan": (b'{"planCostShares": {"copay": NaN}}', "application/json", 400),
    "empty": (b"", "application/json", 400),
    "array": (b"[]", "application/json", 400),
    "string": (b'"planType"', "application/json", 400),
    "null": (b"null", "application/merge-patch+json", 400),
    "text-plain": (b'{"planType": "x"}', "text/plain", 415),
    "form": (b"planType=x", "application/x-www-form-urlencoded", 415),
    "over-one-mebibyte": (json.dumps({"padding": "p" * (1024 * 1024)}).encode(),
                          "application/json", 413),
}


@pytest.mark.parametrize("body, content_type, status", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_patch_with_bad_body_is_refused_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan, body: bytes, content_type: str,
        status: int) -> None:
    version = api.version(stored_plan.plan_id)

    response = api.call("PATCH", stored_plan.path, data=body,
                        headers={"Content-Type": content_type})

    assert_problem(response, status)
    assert_unchanged(api, stored_plan, version)


@pytest.mark.parametrize("patch, expected_paths", [
    ({"planCostShares": {"objectId": "bad id", "objectType": "membercostshare"}},
     ["/planCostShares/objectId"]),
    ({"linkedPlanServices": [{"objectId": "ok-id", "objectType": "9service"}]},
     ["/linkedPlanServices/0/objectType"]),
], ids=["object-id", "object-type"])
def test_patch_with_invalid_identifier_is_400_with_its_path(
        api: Deployment, stored_plan: StoredPlan, patch: dict[str, Any],
        expected_paths: list[str]) -> None:
    version = api.version(stored_plan.plan_id)

    response = api.call("PATCH", stored_plan.path, document=patch)

    assert error_paths(assert_problem(response, 400)) == expected_paths
    assert_unchanged(api, stored_plan, version)


def test_patch_deeper_than_32_levels_is_400_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    version = api.version(stored_plan.plan_id)
    deep: dict[str, Any] = {}
    for _ in range(31):
        deep = {"level": deep}

    response = api.call("PATCH", stored_plan.path, document={"deep": deep})

    assert_problem(response, 400)
    assert_unchanged(api, stored_plan, version)
