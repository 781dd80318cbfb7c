"""Behaviour of the SearchIndex port, run against OpenSearch and SQLite.

Every test runs on both adapters, so they must return the same results.
"""

from __future__ import annotations

import copy
import random

import pytest

from chalicelib.search.documents import MalformedEventError, PermanentEventError
from tests.search.support import delete, make_plan, planservice, upsert


def test_seed_plan_is_rebuilt_from_index(index, tag):
    plan = make_plan(tag)

    index.apply_events([upsert(plan, 1)])

    assert index.get_plan(plan["objectId"]) == plan


def test_unknown_plan_is_none(index, tag):
    assert index.get_plan(f"nothing-{tag}") is None


def test_find_objects_returns_object_with_descendants(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 1)])
    service = planservice(plan, 0)

    assert index.find_objects(service["objectId"]) == [service]
    assert index.find_objects(plan["objectId"]) == [plan]
    assert index.find_objects(plan["planCostShares"]["objectId"]) == [plan["planCostShares"]]


def test_find_objects_of_unknown_id_is_empty(index, tag):
    assert index.find_objects(f"nothing-{tag}") == []


def test_children_of_planservice_by_object_type(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 1)])
    service = planservice(plan, 1)

    children = index.find_children(service["objectId"], "planservice")

    assert children == [service["linkedService"], service["planserviceCostShares"]]


def test_children_of_planservice_by_relation(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 1)])
    service = planservice(plan, 0)

    children = index.find_children(service["objectId"], "linkedPlanServices")

    assert children == [service["linkedService"], service["planserviceCostShares"]]


def test_children_of_plan_in_document_order(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 1)])

    children = index.find_children(plan["objectId"], "plan")

    assert children == [plan["planCostShares"], *plan["linkedPlanServices"]]


def test_children_with_wrong_parent_type_are_empty(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 1)])

    assert index.find_children(planservice(plan, 0)["objectId"], "membercostshare") == []
    assert index.find_children(planservice(plan, 0)["objectId"], "linkedService") == []


def test_children_of_leaf_are_empty(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 1)])
    service = planservice(plan, 0)["linkedService"]

    assert index.find_children(service["objectId"], "service") == []
    assert index.find_children(service["objectId"], "linkedService") == []


def test_replaying_old_event_changes_nothing(index, tag):
    first = make_plan(tag)
    second = copy.deepcopy(first)
    second["planType"] = "outOfNetwork"
    index.apply_events([upsert(first, 1)])
    index.apply_events([upsert(second, 2)])

    index.apply_events([upsert(first, 1)])
    index.apply_events([upsert(second, 2)])

    assert index.get_plan(first["objectId"]) == second
    assert index.plan_versions()[first["objectId"]] == 2


def test_reordered_events_end_at_newest(index, tag):
    plan = make_plan(tag)
    versions = {}
    for version in (1, 2, 3):
        versions[version] = copy.deepcopy(plan)
        versions[version]["planCostShares"]["copay"] = version * 100

    index.apply_events([upsert(versions[3], 3)])
    index.apply_events([upsert(versions[2], 2)])
    index.apply_events([upsert(versions[1], 1)])

    assert index.get_plan(plan["objectId"]) == versions[3]
    assert index.plan_versions()[plan["objectId"]] == 3


def test_deleted_plan_stays_deleted(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 1)])

    index.apply_events([delete(plan["objectId"], 3)])
    index.apply_events([upsert(plan, 2)])
    index.apply_events([upsert(plan, 1)])

    assert index.get_plan(plan["objectId"]) is None
    assert index.find_objects(planservice(plan, 0)["objectId"]) == []
    assert plan["objectId"] not in index.plan_versions()
    assert index.indexed_objects(plan["objectId"]) == []


def test_early_delete_blocks_older_upsert(index, tag):
    plan = make_plan(tag)

    index.apply_events([delete(plan["objectId"], 2)])
    index.apply_events([upsert(plan, 1)])

    assert index.get_plan(plan["objectId"]) is None


def test_recreated_plan_with_newer_version_is_indexed(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 1)])
    index.apply_events([delete(plan["objectId"], 2)])

    index.apply_events([upsert(plan, 3)])

    assert index.get_plan(plan["objectId"]) == plan
    assert index.plan_versions()[plan["objectId"]] == 3


def test_replaced_object_document_is_removed(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 1)])
    old_service = planservice(plan, 0)["linkedService"]
    patched = copy.deepcopy(plan)
    new_service = {
        "_org": "example.com",
        "objectId": f"new-service-{tag}",
        "objectType": "service",
        "name": "Yearly physical",
    }
    planservice(patched, 0)["linkedService"] = new_service

    index.apply_events([upsert(patched, 2)])

    assert index.get_plan(plan["objectId"]) == patched
    assert index.find_objects(old_service["objectId"]) == []
    assert index.find_objects(new_service["objectId"]) == [new_service]
    identities = {item.identity for item in index.indexed_objects(plan["objectId"])}
    assert f"service:{old_service['objectId']}" not in identities
    assert f"service:{new_service['objectId']}" in identities


def test_removed_planservice_and_its_children_disappear(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 1)])
    smaller = copy.deepcopy(plan)
    removed = smaller["linkedPlanServices"].pop(1)

    index.apply_events([upsert(smaller, 2)])

    assert index.get_plan(plan["objectId"]) == smaller
    for object_id in (
        removed["objectId"],
        removed["linkedService"]["objectId"],
        removed["planserviceCostShares"]["objectId"],
    ):
        assert index.find_objects(object_id) == []
    assert len(index.indexed_objects(plan["objectId"])) == 5
    assert {item.plan_version for item in index.indexed_objects(plan["objectId"])} == {2}


def test_batch_of_many_events_for_one_plan_applies_newest(index, tag):
    plan = make_plan(tag)
    events = []
    for version in range(1, 21):
        state = copy.deepcopy(plan)
        state["planCostShares"]["deductible"] = version
        events.append(upsert(state, version))
    random.Random(7).shuffle(events)

    index.apply_events(events)

    indexed = index.get_plan(plan["objectId"])
    assert indexed is not None
    assert indexed["planCostShares"]["deductible"] == 20
    assert index.plan_versions()[plan["objectId"]] == 20


def test_batch_ending_in_delete_leaves_nothing(index, tag):
    plan = make_plan(tag)

    index.apply_events([upsert(plan, 1), delete(plan["objectId"], 3), upsert(plan, 2)])

    assert index.get_plan(plan["objectId"]) is None
    assert index.indexed_objects(plan["objectId"]) == []


def test_batch_applies_every_plan(index, tag):
    plans = [make_plan(f"{tag}-{number}") for number in range(5)]

    index.apply_events([upsert(plan, 1) for plan in plans])

    for plan in plans:
        assert index.get_plan(plan["objectId"]) == plan


def test_malformed_event_is_permanent_and_others_apply(index, tag):
    plan = make_plan(tag)
    malformed = {
        "eventId": f"broken-{tag}:1",
        "type": "plan.upserted",
        "planId": f"broken-{tag}",
        "version": "one",
        "plan": None,
    }

    with pytest.raises(MalformedEventError) as raised:
        index.apply_events([malformed, upsert(plan, 1)])

    assert raised.value.event_ids == (f"broken-{tag}:1",)
    assert isinstance(raised.value, PermanentEventError)
    assert index.get_plan(plan["objectId"]) == plan


@pytest.mark.parametrize(
    "event",
    [
        "not an object",
        {"type": "plan.renamed", "planId": "p", "version": 1},
        {"type": "plan.upserted", "planId": "bad id!", "version": 1, "plan": {}},
        {"type": "plan.upserted", "planId": "p", "version": 0, "plan": {"objectId": "p"}},
        {"type": "plan.upserted", "planId": "p", "version": True, "plan": {"objectId": "p"}},
        {"type": "plan.upserted", "planId": "p", "version": 1, "plan": None},
        {
            "type": "plan.upserted",
            "planId": "p",
            "version": 1,
            "plan": {"objectId": "q", "objectType": "plan"},
        },
    ],
)
def test_invalid_event_shapes_are_malformed(index, event):
    with pytest.raises(MalformedEventError):
        index.apply_events([event])


def test_plan_with_duplicate_identity_is_malformed(index, tag):
    plan = make_plan(tag)
    plan["linkedPlanServices"].append(copy.deepcopy(planservice(plan, 0)))

    with pytest.raises(MalformedEventError) as raised:
        index.apply_events([upsert(plan, 1)])

    assert raised.value.event_ids == (f"{plan['objectId']}:1",)
    assert index.get_plan(plan["objectId"]) is None


def test_object_under_undeclared_member_is_indexed(index, tag):
    plan = make_plan(tag)
    extra = {
        "objectId": f"extra-{tag}",
        "objectType": "note",
        "_org": "example.com",
        "text": "an extra stored object",
        "attachment": {"objectId": f"attachment-{tag}", "objectType": "file"},
    }
    planservice(plan, 0)["extraNote"] = extra

    index.apply_events([upsert(plan, 1)])

    assert index.get_plan(plan["objectId"]) == plan
    assert index.find_objects(extra["objectId"]) == [extra]
    assert index.find_children(extra["objectId"], "note") == [extra["attachment"]]
    assert index.find_children(extra["objectId"], "extraNote") == [extra["attachment"]]
    service_children = index.find_children(planservice(plan, 0)["objectId"], "planservice")
    assert extra in service_children


def test_search_text_matches_own_string_values(index, tag):
    plan = make_plan(tag)
    planservice(plan, 1)["linkedService"]["name"] = f"well baby {tag}"
    index.apply_events([upsert(plan, 1)])

    found = index.search_text(f"baby {tag}")

    assert found == [planservice(plan, 1)["linkedService"]]
    assert index.search_text(f"missingword {tag}") == []
    assert index.search_text("  ") == []


def test_indexed_objects_list_every_document(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 4)])

    indexed = index.indexed_objects(plan["objectId"])

    assert len(indexed) == 8
    assert {item.plan_id for item in indexed} == {plan["objectId"]}
    assert {item.plan_version for item in indexed} == {4}
    assert f"plan:{plan['objectId']}" in {item.identity for item in indexed}
    assert [item.identity for item in indexed] == sorted(item.identity for item in indexed)


def test_removed_plan_blocks_older_events(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 2)])

    index.remove_plan_documents(plan["objectId"])
    index.apply_events([upsert(plan, 2)])
    index.apply_events([upsert(plan, 1)])

    assert index.get_plan(plan["objectId"]) is None
    assert plan["objectId"] not in index.plan_versions()
    assert plan["objectId"] not in index.indexed_plan_ids()


def test_reapply_restores_same_version(index, tag):
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 2)])
    index.remove_plan_documents(plan["objectId"])

    index.reapply_events([upsert(plan, 2)])

    assert index.get_plan(plan["objectId"]) == plan
    assert index.plan_versions()[plan["objectId"]] == 2


def test_reapply_of_older_version_changes_nothing(index, tag):
    plan = make_plan(tag)
    newer = copy.deepcopy(plan)
    newer["planType"] = "newer"
    index.apply_events([upsert(newer, 5)])

    index.reapply_events([upsert(plan, 4)])

    assert index.get_plan(plan["objectId"]) == newer


def test_health_check_passes(index):
    index.check_health()


def test_empty_batch_is_accepted(index):
    index.apply_events([])
