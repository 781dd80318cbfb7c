"""Contract of `POST /v1/plan`: creation, and every bad input refused without a partial write."""

from __future__ import annotations

import copy
import json
import re
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

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_STORED_OBJECTS = 10_000
EXAMPLE_STORED_OBJECTS = 8
STRONG_ETAG = re.compile(r'"[^"]*"')


def assert_not_stored(api: Deployment, document: dict[str, Any]) -> None:
    """Assert that neither the plan nor any stored object of `document` reached the store."""
    assert api.version(str(document["objectId"])) is None
    leftovers = sorted(identity for identity in identities_of(document)
                       if api.stored_object_exists(identity))
    assert leftovers == []


def nested_objects(levels: int) -> dict[str, Any]:
    """Return `levels` objects nested in each other, e.g. 2 gives {"level": {}}."""
    innermost: dict[str, Any] = {}
    for _ in range(levels - 1):
        innermost = {"level": innermost}
    return innermost


def nested_arrays(levels: int) -> list[Any]:
    innermost: list[Any] = []
    for _ in range(levels - 1):
        innermost = [innermost]
    return innermost


def with_extra_stored_objects(document: dict[str, Any], total: int) -> dict[str, Any]:
    """Add tiny stored objects under a member the schema does not know, up to `total` in all."""
    suffix = document["objectId"].rsplit("-", 1)[-1]
    document["extraObjects"] = [
        {"objectId": f"e{index}-{suffix}", "objectType": "x"}
        for index in range(total - EXAMPLE_STORED_OBJECTS)
    ]
    return document


def test_post_returns_201_with_location_etag_and_stored_plan(
        api: Deployment, plan: dict[str, Any]) -> None:
    response = api.call("POST", "/v1/plan", document=plan)

    assert response.status_code == 201, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Location"] == f"/v1/plan/{plan['objectId']}"
    assert STRONG_ETAG.fullmatch(response.headers["ETag"])
    assert response.json() == plan

    snapshot = api.snapshot(plan["objectId"])
    assert snapshot is not None
    assert snapshot.etag == response.headers["ETag"]
    assert snapshot.document() == plan
    assert set(snapshot.objects) == identities_of(plan)


def test_post_accepts_json_with_charset_parameter(api: Deployment, plan: dict[str, Any]) -> None:
    response = api.call("POST", "/v1/plan", data=json.dumps(plan).encode(),
                        headers={"Content-Type": "application/json; charset=utf-8"})

    assert response.status_code == 201, response.text
    assert response.json() == plan


def test_post_of_existing_plan_is_409_and_changes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    version = api.version(stored_plan.plan_id)
    changed = copy.deepcopy(stored_plan.document)
    changed["planType"] = "outOfNetwork"

    response = api.call("POST", "/v1/plan", document=changed)

    assert_problem(response, 409)
    assert api.version(stored_plan.plan_id) == version
    assert api.call("GET", stored_plan.path).json() == stored_plan.document


MALFORMED_BODIES: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "truncated": lambda plan: json.dumps(plan)[:-1].encode(),
    "trailing-data": lambda plan: (json.dumps(plan) + "}").encode(),
    "nan": lambda plan: json.dumps({**plan, "planCostShares": {
        **plan["planCostShares"], "copay": float("nan")}}).encode(),
    "infinity": lambda plan: json.dumps({**plan, "planCostShares": {
        **plan["planCostShares"], "deductible": float("inf")}}).encode(),
    "negative-infinity": lambda plan: json.dumps({**plan, "planCostShares": {
        **plan["planCostShares"], "copay": float("-inf")}}).encode(),
    "single-quotes": lambda plan: json.dumps(plan).replace('"', "'").encode(),
    "invalid-utf8": lambda plan: json.dumps(plan).encode().replace(b"example.com", b"\xff\xfe", 1),
    "array-of-the-plan": lambda plan: json.dumps([plan]).encode(),
    "string-of-the-plan": lambda plan: json.dumps(json.dumps(plan)).encode(),
    "null": lambda plan: b"null",
    "number": lambda plan: b"42",
    "empty-array": lambda plan: b"[]",
}


@pytest.mark.parametrize("make_body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_post_of_malformed_json_is_400_and_writes_nothing(
        api: Deployment, plan: dict[str, Any],
        make_body: Callable[[dict[str, Any]], bytes]) -> None:
    response = api.call("POST", "/v1/plan", data=make_body(plan),
                        headers={"Content-Type": "application/json"})

    assert_problem(response, 400)
    assert_not_stored(api, plan)


@pytest.mark.parametrize("body", [b"", b"  \n\t "], ids=["empty", "whitespace"])
def test_post_with_empty_body_is_400(api: Deployment, body: bytes) -> None:
    response = api.call("POST", "/v1/plan", data=body, headers={"Content-Type": "application/json"})

    assert_problem(response, 400)


def _drop_required_members(plan: dict[str, Any]) -> None:
    del plan["planType"]
    del plan["creationDate"]
    del plan["planCostShares"]["deductible"]
    del plan["linkedPlanServices"][1]["linkedService"]["name"]
    del plan["linkedPlanServices"][0]["planserviceCostShares"]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Return a mutation that sets the member at JSON Pointer `path` to `value`."""
    tokens = path.split("/")[1:]

    def mutate(plan: dict[str, Any]) -> None:
        target: Any = plan
        for token in tokens[:-1]:
            target = target[int(token)] if isinstance(target, list) else target[token]
        target[tokens[-1]] = value

    return mutate


def _apply_all(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(plan: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(plan)

    return mutate


SCHEMA_VIOLATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], list[str]]] = {
    "missing-required-members": (_drop_required_members, [
        "/creationDate", "/linkedPlanServices/0/planserviceCostShares",
        "/linkedPlanServices/1/linkedService/name", "/planCostShares/deductible", "/planType"]),
    "missing-plan-cost-shares": (lambda plan: plan.pop("planCostShares"), ["/planCostShares"]),
    "negative-copay": (_set("/planCostShares/copay", -1), ["/planCostShares/copay"]),
    "negative-nested-deductible": (
        _set("/linkedPlanServices/1/planserviceCostShares/deductible", -0.01),
        ["/linkedPlanServices/1/planserviceCostShares/deductible"]),
    "iso-creation-date": (_set("/creationDate", "2017-12-12"), ["/creationDate"]),
    "month-13-creation-date": (_set("/creationDate", "13-12-2017"), ["/creationDate"]),
    "slashed-creation-date": (_set("/creationDate", "12/12/2017"), ["/creationDate"]),
    "wrong-types": (_apply_all(
        _set("/planCostShares/deductible", "2000"),
        _set("/planType", 5),
        _set("/linkedPlanServices/0/planserviceCostShares/copay", True),
        _set("/_org", None),
    ), ["/_org", "/linkedPlanServices/0/planserviceCostShares/copay",
        "/planCostShares/deductible", "/planType"]),
    "services-not-an-array": (_set("/linkedPlanServices", {}), ["/linkedPlanServices"]),
    "root-object-type-not-plan": (_set("/objectType", "policy"), ["/objectType"]),
}


@pytest.mark.parametrize("mutate, expected_paths", SCHEMA_VIOLATIONS.values(),
                         ids=SCHEMA_VIOLATIONS.keys())
def test_post_with_schema_violations_lists_each_with_its_json_pointer(
        api: Deployment, plan: dict[str, Any], mutate: Callable[[dict[str, Any]], None],
        expected_paths: list[str]) -> None:
    original = copy.deepcopy(plan)
    mutate(plan)

    response = api.call("POST", "/v1/plan", document=plan)

    problem = assert_problem(response, 400)
    assert error_paths(problem) == sorted(expected_paths)
    assert_not_stored(api, original)


@pytest.mark.parametrize("content_type", [
    "text/plain", "image/png", "application/x-www-form-urlencoded", "application/xml",
])
def test_post_with_non_json_type_is_415_and_writes_nothing(
        api: Deployment, plan: dict[str, Any], content_type: str) -> None:
    response = api.call("POST", "/v1/plan", data=json.dumps(plan).encode(),
                        headers={"Content-Type": content_type})

    assert_problem(response, 415)
    assert_not_stored(api, plan)


def _padded_to(plan: dict[str, Any], size: int) -> bytes:
    """Serialize `plan` with a padding member that makes the body exactly `size` bytes."""
    plan["padding"] = ""
    short = len(json.dumps(plan).encode())
    plan["padding"] = "p" * (size - short)
    body = json.dumps(plan).encode()
    assert len(body) == size
    return body


def test_post_over_one_mebibyte_is_413_and_writes_nothing(
        api: Deployment, plan: dict[str, Any]) -> None:
    body = _padded_to(plan, MAX_BODY_BYTES + 1)

    response = api.call("POST", "/v1/plan", data=body, headers={"Content-Type": "application/json"})

    assert_problem(response, 413)
    assert_not_stored(api, plan)


def test_post_of_exactly_one_mebibyte_is_accepted(
        api: Deployment, plan: dict[str, Any]) -> None:
    body = _padded_to(plan, MAX_BODY_BYTES)

    response = api.call("POST", "/v1/plan", data=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 201, response.text[:500]
    assert api.call("DELETE", f"/v1/plan/{plan['objectId']}").status_code == 204


@pytest.mark.parametrize("make_member", [nested_objects, nested_arrays], ids=["objects", "arrays"])
def test_post_deeper_than_32_levels_is_400_and_writes_nothing(
        api: Deployment, plan: dict[str, Any], make_member: Callable[[int], Any]) -> None:
    # The root is level 1, so a member holding 32 nested containers reaches level 33.
    plan["deep"] = make_member(MAX_DEPTH)

    response = api.call("POST", "/v1/plan", document=plan)

    assert_problem(response, 400)
    assert_not_stored(api, plan)


@pytest.mark.parametrize("make_member", [nested_objects, nested_arrays], ids=["objects", "arrays"])
def test_post_nested_exactly_32_levels_is_accepted(
        api: Deployment, plan: dict[str, Any], make_member: Callable[[int], Any]) -> None:
    plan["deep"] = make_member(MAX_DEPTH - 1)

    response = api.call("POST", "/v1/plan", document=plan)

    assert response.status_code == 201, response.text[:500]
    assert response.json() == plan


def test_post_over_10000_stored_objects_is_400_and_writes_nothing(
        api: Deployment, plan: dict[str, Any]) -> None:
    with_extra_stored_objects(plan, MAX_STORED_OBJECTS + 1)

    response = api.call("POST", "/v1/plan", document=plan)

    assert_problem(response, 400)
    assert api.version(plan["objectId"]) is None
    assert not api.stored_object_exists(f"x:{plan['extraObjects'][0]['objectId']}")
    assert not api.stored_object_exists(f"x:{plan['extraObjects'][-1]['objectId']}")


def test_post_with_exactly_10000_stored_objects_is_accepted(
        api: Deployment, plan: dict[str, Any]) -> None:
    with_extra_stored_objects(plan, MAX_STORED_OBJECTS)

    response = api.call("POST", "/v1/plan", document=plan)

    assert response.status_code == 201, response.text[:500]
    snapshot = api.snapshot(plan["objectId"])
    assert snapshot is not None
    assert len(snapshot.objects) == MAX_STORED_OBJECTS
    assert api.call("GET", f"/v1/plan/{plan['objectId']}").json() == plan
    assert api.call("DELETE", f"/v1/plan/{plan['objectId']}").status_code == 204


OBJECT_ID_RULE_BREAKERS = {
    "space": "bad id",
    "slash": "a/b",
    "colon": "plan:other",
    "asterisk": "*",
    "non-ascii": "plän",
    "empty": "",
    "too-long": "a" * 201,
}


@pytest.mark.parametrize("bad_id", OBJECT_ID_RULE_BREAKERS.values(),
                         ids=OBJECT_ID_RULE_BREAKERS.keys())
@pytest.mark.parametrize("pointer", [
    "/objectId", "/planCostShares/objectId", "/linkedPlanServices/1/linkedService/objectId",
])
def test_post_with_invalid_object_id_is_400_with_its_path(
        api: Deployment, plan: dict[str, Any], pointer: str, bad_id: str) -> None:
    original = copy.deepcopy(plan)
    _set(pointer, bad_id)(plan)

    response = api.call("POST", "/v1/plan", document=plan)

    assert error_paths(assert_problem(response, 400)) == [pointer]
    assert_not_stored(api, original)
    assert api.version(bad_id) is None


OBJECT_TYPE_RULE_BREAKERS = {
    "leading-digit": "1service",
    "leading-dash": "-service",
    "dot": "serv.ice",
    "colon": "service:x",
    "non-ascii": "sérvice",
    "empty": "",
    "too-long": "s" * 65,
}


@pytest.mark.parametrize("bad_type", OBJECT_TYPE_RULE_BREAKERS.values(),
                         ids=OBJECT_TYPE_RULE_BREAKERS.keys())
def test_post_with_invalid_object_type_is_400_with_its_path(
        api: Deployment, plan: dict[str, Any], bad_type: str) -> None:
    original = copy.deepcopy(plan)
    pointer = "/linkedPlanServices/0/linkedService/objectType"
    _set(pointer, bad_type)(plan)

    response = api.call("POST", "/v1/plan", document=plan)

    assert error_paths(assert_problem(response, 400)) == [pointer]
    assert_not_stored(api, original)


def test_post_with_non_string_identifiers_lists_every_one(
        api: Deployment, plan: dict[str, Any]) -> None:
    original = copy.deepcopy(plan)
    _set("/planCostShares/objectId", 501)(plan)
    _set("/linkedPlanServices/1/objectType", ["planservice"])(plan)

    response = api.call("POST", "/v1/plan", document=plan)

    assert error_paths(assert_problem(response, 400)) == [
        "/linkedPlanServices/1/objectType", "/planCostShares/objectId"]
    assert_not_stored(api, original)


def test_post_accepts_identifiers_at_their_maximum_length(
        api: Deployment, plan: dict[str, Any]) -> None:
    plan["objectId"] = ("Az09._~-" + new_suffix() + "x" * 200)[:200]
    plan["planCostShares"]["objectType"] = "m" + "_-Z9" * 15 + "abc"

    response = api.call("POST", "/v1/plan", document=plan)

    assert len(plan["planCostShares"]["objectType"]) == 64
    assert response.status_code == 201, response.text[:500]
    assert api.call("GET", f"/v1/plan/{plan['objectId']}").json() == plan


@pytest.mark.parametrize("reserved_id", ["es_plan", "es_data"])
def test_post_with_reserved_plan_id_is_400(
        api: Deployment, plan: dict[str, Any], reserved_id: str) -> None:
    plan["objectId"] = reserved_id

    response = api.call("POST", "/v1/plan", document=plan)

    assert error_paths(assert_problem(response, 400)) == ["/objectId"]
    assert api.version(reserved_id) is None


def _repeat_cost_share(plan: dict[str, Any]) -> None:
    first = plan["linkedPlanServices"][0]["planserviceCostShares"]
    plan["linkedPlanServices"][1]["planserviceCostShares"]["objectId"] = first["objectId"]


def _repeat_plan_service(plan: dict[str, Any]) -> None:
    plan["linkedPlanServices"][1] = copy.deepcopy(plan["linkedPlanServices"][0])


def _repeat_root_cost_share_as_service_cost_share(plan: dict[str, Any]) -> None:
    plan["linkedPlanServices"][0]["planserviceCostShares"] = copy.deepcopy(plan["planCostShares"])


@pytest.mark.parametrize("mutate", [
    _repeat_cost_share, _repeat_plan_service, _repeat_root_cost_share_as_service_cost_share,
], ids=["different-content", "identical-copies", "under-two-relations"])
def test_post_with_same_identity_twice_is_400_and_writes_nothing(
        api: Deployment, plan: dict[str, Any], mutate: Callable[[dict[str, Any]], None]) -> None:
    original = copy.deepcopy(plan)
    mutate(plan)

    response = api.call("POST", "/v1/plan", document=plan)

    assert_problem(response, 400)
    assert_not_stored(api, original)


def test_post_with_another_plans_object_is_409_and_writes_nothing(
        api: Deployment, stored_plan: StoredPlan) -> None:
    owner_version = api.version(stored_plan.plan_id)
    intruder = example_plan()
    borrowed = stored_plan.document["linkedPlanServices"][1]["linkedService"]
    intruder["linkedPlanServices"][0]["linkedService"] = copy.deepcopy(borrowed)
    own_identities = identities_of(intruder) - identities_of(stored_plan.document)

    response = api.call("POST", "/v1/plan", document=intruder)

    assert_problem(response, 409)
    assert api.version(intruder["objectId"]) is None
    assert sorted(identity for identity in own_identities
                  if api.stored_object_exists(identity)) == []
    assert api.version(stored_plan.plan_id) == owner_version
    assert api.call("GET", stored_plan.path).json() == stored_plan.document
