"""Contract of `PUT /v1/plan/{id}`: whole-plan replacement, If-Match, and refused bodies."""

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
    example_plan,
    identities_of,
    new_suffix,
)


def replacement_of(stored_plan: StoredPlan) -> dict[str, Any]:
    """Return the stored plan with a changed planType and a changed copay."""
    document = copy.deepcopy(stored_plan.document)
    document["planType"] = "outOfNetwork"
    document["planCostShares"]["copay"] = 99
    return document


def assert_unchanged(api: Deployment, stored_plan: StoredPlan, version: int | None) -> None:
    assert api.version(stored_plan.plan_id) == version
    response = api.call("GET", stored_plan.path)
    assert response.headers["ETag"] == stored_plan.etag
    assert response.json() == stored_plan.document


def test_put_returns_200_with_new_plan_and_new_etag(
        api: Deployment, stored_plan: StoredPlan) -> None:
    document = replacement_of(stored_plan)

    response = api.call("PUT", stored_plan.path, document=document)

    assert response.status_code == 200, response.text
    assert response.json() == document
    assert response.headers["ETag"] != stored_plan.etag
    fetched = api.call("GET", stored_plan.path)
    assert fetched.json() == document
    assert fetched.headers["ETag"] == response.headers["ETag"]


def test_put_deletes_objects_new_plan_lacks(
        api: Deployment, stored_plan: StoredPlan) -> None:
    document = copy.deepcopy(stored_plan.document)
    dropped = document["linkedPlanServices"].pop(1)
    document["planCostShares"]["objectId"] = f"replacement-cost-share-{stored_plan.suffix}"

    response = api.call("PUT", stored_plan.path, document=document)

    assert response.status_code == 200, response.text
    snapshot = api.snapshot(stored_plan.plan_id)
    assert snapshot is not None
    assert set(snapshot.objects) == identities_of(document)
    removed = identities_of(dropped) | {
        f"membercostshare:{stored_plan.document['planCostShares']['objectId']}"}
    assert sorted(identity for identity in removed if api.stored_object_exists(identity)) == []


def test_put_frees_removed_objects_for_another_plan(
        api: Deployment, stored_plan: StoredPlan) -> None:
    document = copy.deepcopy(stored_plan.document)
    dropped = document["linkedPlanServices"].pop(1)
    assert api.call("PUT", stored_plan.path, document=document).status_code == 200
    other = example_plan()
    other["linkedPlanServices"][1] = dropped

    response = api.call("POST", "/v1/plan", document=other)

    assert response.status_code == 201, response.text


def test_put_with_same_plan_keeps_etag_and_version(
        api: Deployment, stored_plan: StoredPlan) -> None:
    version = api.version(stored_plan.plan_id)
    reordered = dict(reversed(list(stored_plan.document.items())))

    response = api.call("PUT", stored_plan.path, document=reordered)

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == stored_plan.etag
    assert api.version(stored_plan.plan_id) == version


def test_put_with_other_object_id_is_400_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    version = api.version(stored_plan.plan_id)
    document = replacement_of(stored_plan)
    document["objectId"] = f"another-plan-{new_suffix()}"

    response = api.call("PUT", stored_plan.path, document=document)

    assert error_paths(assert_problem(response, 400)) == ["/objectId"]
    assert_unchanged(api, stored_plan, version)
    assert api.version(document["objectId"]) is None


@pytest.mark.parametrize("make_header", [
    lambda etag: '"not-the-current-tag"',
    lambda etag: '"a", "b"',
    lambda etag: etag[:-2] + '"',
], ids=["other-tag", "list-without-it", "prefix-of-it"])
def test_put_with_mismatched_if_match_is_412_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan, make_header: Callable[[str], str]) -> None:
    version = api.version(stored_plan.plan_id)

    response = api.call("PUT", stored_plan.path, document=replacement_of(stored_plan),
                        headers={"If-Match": make_header(stored_plan.etag)})

    assert_problem(response, 412)
    assert_unchanged(api, stored_plan, version)


def test_put_with_weak_current_etag_is_412_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    version = api.version(stored_plan.plan_id)

    response = api.call("PUT", stored_plan.path, document=replacement_of(stored_plan),
                        headers={"If-Match": f"W/{stored_plan.etag}"})

    assert_problem(response, 412)
    assert_unchanged(api, stored_plan, version)


@pytest.mark.parametrize("make_header", [
    lambda etag: etag,
    lambda etag: "*",
    lambda etag: f'"stale", {etag}',
    lambda etag: f'W/"weak", {etag}, "other"',
], ids=["exact", "star", "list", "list-with-weak"])
def test_put_with_matching_if_match_replaces_plan(
        api: Deployment, stored_plan: StoredPlan, make_header: Callable[[str], str]) -> None:
    document = replacement_of(stored_plan)

    response = api.call("PUT", stored_plan.path, document=document,
                        headers={"If-Match": make_header(stored_plan.etag)})

    assert response.status_code == 200, response.text
    assert api.call("GET", stored_plan.path).json() == document


@pytest.mark.parametrize("if_match", [None, "*", '"some-tag"'])
def test_put_of_missing_plan_is_404_despite_if_match(
        api: Deployment, plan: dict[str, Any], if_match: str | None) -> None:
    headers = {} if if_match is None else {"If-Match": if_match}

    response = api.call("PUT", f"/v1/plan/{plan['objectId']}", document=plan, headers=headers)

    assert_problem(response, 404)
    assert api.version(plan["objectId"]) is None


def test_put_with_another_plans_object_is_409_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    owner = example_plan()
    api.create(owner)
    owner_version = api.version(owner["objectId"])
    version = api.version(stored_plan.plan_id)
    document = copy.deepcopy(stored_plan.document)
    document["linkedPlanServices"].append(copy.deepcopy(owner["linkedPlanServices"][0]))

    response = api.call("PUT", stored_plan.path, document=document)

    assert_problem(response, 409)
    assert_unchanged(api, stored_plan, version)
    assert api.version(owner["objectId"]) == owner_version


def _schema_violation(document: dict[str, Any]) -> bytes:
    document["planCostShares"]["copay"] = -5
    return json.dumps(document).encode()


def _identifier_violation(document: dict[str, Any]) -> bytes:
    document["linkedPlanServices"][0]["objectId"] = "bad id"
    return json.dumps(document).encode()


def _duplicate_identity(document: dict[str, Any]) -> bytes:
    document["linkedPlanServices"][1] = copy.deepcopy(document["linkedPlanServices"][0])
    return json.dumps(document).encode()


BAD_BODIES: dict[str, tuple[Callable[[dict[str, Any]], bytes], str, int]] = {
    "malformed-json": (lambda document: json.dumps(document).encode()[:-3],
                       "application/json", 400),
    "nan": (lambda document: json.dumps({**document, "rating": float("nan")}).encode(),
            "application/json", 400),
    "empty": (lambda document: b"", "application/json", 400),
    "array": (lambda document: json.dumps([document]).encode(), "application/json", 400),
    "schema-violation": (_schema_violation, "application/json", 400),
    "identifier-violation": (_identifier_violation, "application/json", 400),
    "duplicate-identity": (_duplicate_identity, "application/json", 400),
    "text-plain": (lambda document: json.dumps(document).encode(), "text/plain", 415),
    "over-one-mebibyte": (lambda document: json.dumps(
        {**document, "padding": "p" * (1024 * 1024)}).encode(), "application/json", 413),
}


@pytest.mark.parametrize("make_body, content_type, status", BAD_BODIES.values(),
                         ids=BAD_BODIES.keys())
def test_put_with_bad_body_is_refused_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan, make_body: Callable[[dict[str, Any]], bytes],
        content_type: str, status: int) -> None:
    version = api.version(stored_plan.plan_id)

    response = api.call("PUT", stored_plan.path, data=make_body(replacement_of(stored_plan)),
                        headers={"Content-Type": content_type})

    assert_problem(response, status)
    assert_unchanged(api, stored_plan, version)


def test_put_with_malformed_id_in_url_is_400(api: Deployment, plan: dict[str, Any]) -> None:
    plan["objectId"] = "bad id"

    response = api.call("PUT", "/v1/plan/bad%20id", document=plan)

    assert_problem(response, 400)
    assert api.version("bad id") is None
