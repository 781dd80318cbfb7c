"""Unit tests of the pure plan domain: decompose/assemble, merge rules, ETags, validation."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.conditional import if_match_passes, if_none_match_hits
from chalicelib.errors import InvalidDocument
from chalicelib.merge import merge_patch
from chalicelib.plan_graph import (MAX_DEPTH, assemble, canonical_json, check_document_shape,
                                   check_plan_id, compute_etag, decompose, diff_objects)
from chalicelib.schema import join_relations, load_schema, validate_plan
from tests.support.plans import SEED_PATCH, SEED_PLAN, plan_with_services

# Hypothesis strategies for plans: ids from the allowed alphabet, extra members of any JSON type.
object_ids = st.text(alphabet="abcXYZ019._~-", min_size=1, max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
extra_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "c/d", "e~f"]), inner,
                                                 max_size=3)), max_leaves=8)
amounts = st.one_of(st.integers(0, 10**9), st.floats(0, 10**9, allow_nan=False))


@st.composite
def plans(draw: Any) -> dict[str, Any]:
    ids = draw(st.lists(object_ids, min_size=2 + 3 * 4, max_size=2 + 3 * 4, unique=True))
    service_count = draw(st.integers(0, 4))

    def cost_share(object_id: str) -> dict[str, Any]:
        share = {"_org": "example.com", "objectId": object_id, "objectType": "membercostshare",
                 "deductible": draw(amounts)}
        if draw(st.booleans()):
            share["copay"] = draw(amounts)
        return share

    services = []
    for index in range(service_count):
        base = 2 + 3 * index
        services.append({
            "_org": "example.com", "objectId": ids[base], "objectType": "planservice",
            "linkedService": {"_org": "example.com", "objectId": ids[base + 1],
                              "objectType": "service", "name": "service"},
            "planserviceCostShares": cost_share(ids[base + 2]),
            "note": draw(extra_values),
        })
    return {"_org": "example.com", "objectId": ids[0], "objectType": "plan",
            "planType": "inNetwork", "creationDate": "12-12-2017",
            "planCostShares": cost_share(ids[1]), "linkedPlanServices": services,
            "extra": draw(extra_values)}


@given(plans())
@settings(max_examples=80, deadline=None)
def test_decompose_then_assemble_returns_the_plan(plan: dict[str, Any]) -> None:
    validate_plan(plan)
    objects = decompose(plan)
    assert assemble(f"plan:{plan['objectId']}", objects) == plan


@given(plans())
@settings(max_examples=60, deadline=None)
def test_each_stored_object_is_kept_once_with_its_parent(plan: dict[str, Any]) -> None:
    objects = decompose(plan)
    assert len(objects) == 2 + 3 * len(plan["linkedPlanServices"])
    root = objects[f"plan:{plan['objectId']}"]
    assert root.parent is None
    assert root.relation == "plan"
    for stored in objects.values():
        assert "objectId" in stored.body
        if stored.parent is not None:
            assert stored.identity in dict((child, ptr) for ptr, child in objects[stored.parent].children)


@given(plans())
@settings(max_examples=60, deadline=None)
def test_etag_ignores_member_order(plan: dict[str, Any]) -> None:
    reordered = json.loads(json.dumps(plan, sort_keys=True))
    reversed_members = dict(reversed(list(plan.items())))
    assert compute_etag(plan) == compute_etag(reordered) == compute_etag(reversed_members)


@given(plans(), amounts)
@settings(max_examples=60, deadline=None)
def test_etag_changes_when_a_value_changes(plan: dict[str, Any], deductible: float) -> None:
    changed = copy.deepcopy(plan)
    changed["planCostShares"]["deductible"] = deductible
    # 0 and 0.0 are equal in Python but serialize differently, and the ETag follows the JSON.
    assert (compute_etag(changed) == compute_etag(plan)) == (canonical_json(changed) == canonical_json(plan))


@given(plans())
@settings(max_examples=60, deadline=None)
def test_empty_merge_patch_changes_nothing(plan: dict[str, Any]) -> None:
    assert merge_patch(plan, {}) == plan


def test_etag_is_strong_and_quoted() -> None:
    etag = compute_etag(SEED_PLAN)
    assert etag.startswith('"')
    assert etag.endswith('"')


def test_seed_patch_updates_cost_shares_and_appends_a_service() -> None:
    merged = merge_patch(SEED_PLAN, SEED_PATCH)
    validate_plan(merged)
    assert merged["planCostShares"]["deductible"] == 2056300
    assert merged["planCostShares"]["copay"] == 2235533
    assert [service["objectId"] for service in merged["linkedPlanServices"]] == [
        "27283xvx9asdff-504", "27283xvx9sdf-507", "27283xvx9asdff-504-abc"]


def test_merge_null_removes_a_member() -> None:
    merged = merge_patch(SEED_PLAN, {"planCostShares": {"copay": None}})
    assert "copay" not in merged["planCostShares"]
    assert merged["planCostShares"]["deductible"] == 2000


def test_merge_replaces_plain_arrays_and_scalars() -> None:
    merged = merge_patch({"tags": [1, 2], "planType": "a"}, {"tags": [3], "planType": "b"})
    assert merged == {"tags": [3], "planType": "b"}


def test_merge_matching_array_element_is_merged_in_place() -> None:
    patch = {"linkedPlanServices": [{"objectId": "27283xvx9sdf-507", "objectType": "planservice",
                                     "linkedService": {"objectId": "1234520xvc30sfs-505",
                                                       "objectType": "service", "name": "renamed"}}]}
    merged = merge_patch(SEED_PLAN, patch)
    services = merged["linkedPlanServices"]
    assert len(services) == 2
    assert services[1]["linkedService"]["name"] == "renamed"
    assert services[1]["planserviceCostShares"] == SEED_PLAN["linkedPlanServices"][1]["planserviceCostShares"]


def test_merge_stored_object_with_new_object_id_replaces_the_old_one() -> None:
    replacement = {"_org": "example.com", "objectId": "new-cost-share", "objectType": "membercostshare",
                   "deductible": 5}
    merged = merge_patch(SEED_PLAN, {"planCostShares": replacement})
    assert merged["planCostShares"] == replacement
    upserts, deletes = diff_objects(decompose(SEED_PLAN), decompose(merged))
    assert deletes == ["membercostshare:1234vxc2324sdf-501"]
    assert "membercostshare:new-cost-share" in upserts


def test_merge_does_not_modify_its_arguments() -> None:
    plan, patch = copy.deepcopy(SEED_PLAN), copy.deepcopy(SEED_PATCH)
    merge_patch(plan, patch)
    assert plan == SEED_PLAN
    assert patch == SEED_PATCH


def test_duplicate_identity_in_one_document_is_rejected_with_both_paths() -> None:
    plan = copy.deepcopy(SEED_PLAN)
    plan["linkedPlanServices"][1]["linkedService"] = copy.deepcopy(
        plan["linkedPlanServices"][0]["linkedService"])
    with pytest.raises(InvalidDocument) as raised:
        decompose(plan)
    assert raised.value.errors[0].path == "/linkedPlanServices/1/linkedService"
    assert "/linkedPlanServices/0/linkedService" in raised.value.errors[0].message


def test_nested_stored_object_in_a_plain_member_is_decomposed() -> None:
    plan = copy.deepcopy(SEED_PLAN)
    plan["extra"] = {"inner": [{"objectId": "deep-1", "objectType": "note", "text": "x"}]}
    objects = decompose(plan)
    assert objects["note:deep-1"].relation == "inner"
    assert objects["note:deep-1"].parent == "plan:12xvxc345ssdsds-508"
    assert assemble("plan:12xvxc345ssdsds-508", objects) == plan


def test_diff_of_identical_sets_is_empty() -> None:
    objects = decompose(SEED_PLAN)
    assert diff_objects(objects, decompose(copy.deepcopy(SEED_PLAN))) == ({}, [])


@pytest.mark.parametrize("object_id", ["", "a" * 201, "with space", "slash/id", "colon:id", "ünï"])
def test_invalid_object_ids_are_reported_with_their_pointer(object_id: str) -> None:
    plan = copy.deepcopy(SEED_PLAN)
    plan["linkedPlanServices"][0]["objectId"] = object_id
    with pytest.raises(InvalidDocument) as raised:
        check_document_shape(plan)
    assert [violation.path for violation in raised.value.errors] == ["/linkedPlanServices/0/objectId"]


@pytest.mark.parametrize("object_type", ["", "1abc", "a" * 65, "a.b", "a:b"])
def test_invalid_object_types_are_rejected(object_type: str) -> None:
    plan = copy.deepcopy(SEED_PLAN)
    plan["planCostShares"]["objectType"] = object_type
    with pytest.raises(InvalidDocument) as raised:
        check_document_shape(plan)
    assert raised.value.errors[0].path == "/planCostShares/objectType"


def test_nesting_deeper_than_the_limit_is_rejected() -> None:
    plan: dict[str, Any] = copy.deepcopy(SEED_PLAN)
    node = plan
    for _ in range(MAX_DEPTH):  # the root is level 1, so this reaches level MAX_DEPTH + 1
        node["child"] = {}
        node = node["child"]
    with pytest.raises(InvalidDocument):
        check_document_shape(plan)


def test_nesting_at_the_limit_is_accepted() -> None:
    plan: dict[str, Any] = copy.deepcopy(SEED_PLAN)
    node = plan
    for _ in range(MAX_DEPTH - 1):
        node["child"] = {}
        node = node["child"]
    check_document_shape(plan)


def test_more_than_ten_thousand_stored_objects_is_rejected() -> None:
    plan = copy.deepcopy(SEED_PLAN)
    plan["extra"] = [{"objectId": f"x{index}", "objectType": "x"} for index in range(10_000)]
    with pytest.raises(InvalidDocument):
        check_document_shape(plan)


@pytest.mark.parametrize("plan_id", ["es_plan", "es_data", "bad id", ""])
def test_reserved_or_malformed_plan_ids_are_rejected(plan_id: str) -> None:
    with pytest.raises(InvalidDocument):
        check_plan_id(plan_id)


def test_schema_reports_every_violation_with_a_pointer() -> None:
    plan = copy.deepcopy(SEED_PLAN)
    del plan["planType"]
    plan["creationDate"] = "2017-12-12"
    plan["linkedPlanServices"][1]["planserviceCostShares"]["copay"] = -1
    with pytest.raises(InvalidDocument) as raised:
        validate_plan(plan)
    paths = [violation.path for violation in raised.value.errors]
    assert paths == ["/creationDate", "/linkedPlanServices/1/planserviceCostShares/copay", "/planType"]


def test_schema_rejects_booleans_as_amounts() -> None:
    plan = copy.deepcopy(SEED_PLAN)
    plan["planCostShares"]["deductible"] = True
    with pytest.raises(InvalidDocument):
        validate_plan(plan)


def test_join_relations_follow_the_default_schema() -> None:
    assert join_relations(load_schema()) == {
        "plan": ["planCostShares", "linkedPlanServices"],
        "linkedPlanServices": ["linkedService", "planserviceCostShares"],
    }


def test_large_plan_round_trips() -> None:
    plan = plan_with_services("big", 200)
    validate_plan(plan)
    objects = decompose(plan)
    assert len(objects) == 602
    assert assemble("plan:big", objects) == plan


@pytest.mark.parametrize(("header", "expected"), [
    (None, True), ("*", True), ('"abc"', True), ('"x", "abc"', True), ("abc", True),
    ('W/"abc"', False), ('"other"', False), ("", False),
])
def test_if_match_uses_strong_comparison(header: str | None, expected: bool) -> None:
    assert if_match_passes(header, '"abc"') is expected


@pytest.mark.parametrize(("header", "expected"), [
    (None, False), ("*", True), ('"abc"', True), ('W/"abc"', True), ('"x" , W/"abc"', True),
    ('"other"', False),
])
def test_if_none_match_uses_weak_comparison(header: str | None, expected: bool) -> None:
    assert if_none_match_hits(header, '"abc"') is expected
