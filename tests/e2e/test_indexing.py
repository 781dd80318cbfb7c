"""Every acknowledged write reaches the search index: over HTTP, on the embedded and full stacks."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pika

from chalicelib.merge import merge_patch
from chalicelib.queue.publisher import RabbitMqSink
from chalicelib.store.base import build_event, utc_now_iso
from tests.e2e.conftest import Stack
from tests.support.plans import fresh_seed_plan, plan_with_services
from tests.support.server import REPO_ROOT


def sorted_by_id(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(objects, key=lambda value: (value["objectType"], value["objectId"]))


def test_seed_plan_lifecycle_reaches_the_index(stack: Stack) -> None:
    plan, patch, _ = fresh_seed_plan()
    plan_id = plan["objectId"]
    service = plan["linkedPlanServices"][1]

    created = stack.call("POST", "/v1/plan", plan)
    assert created.status_code == 201, created.text
    stack.wait_until(lambda: stack.indexed_plan(plan_id) == plan, "the created plan is indexed")

    found = stack.call("GET", f"/v1/plan/es_data?id={service['objectId']}")
    assert found.status_code == 200
    assert found.json() == [service]
    children = stack.call("GET", f"/v1/plan/es_data?id={service['objectId']}&parent_type=planservice")
    assert children.status_code == 200
    assert sorted_by_id(children.json()) == sorted_by_id(
        [service["linkedService"], service["planserviceCostShares"]])
    by_relation = stack.call("GET", f"/v1/plan/es_data?id={service['objectId']}"
                                    "&parent_type=linkedPlanServices")
    assert sorted_by_id(by_relation.json()) == sorted_by_id(children.json())

    patched = stack.call("PATCH", f"/v1/plan/{plan_id}", patch,
                         headers={"If-Match": created.headers["ETag"]})
    assert patched.status_code == 200, patched.text
    merged = merge_patch(plan, patch)
    stack.wait_until(lambda: stack.indexed_plan(plan_id) == merged, "the patched plan is indexed")
    assert merged["planCostShares"]["copay"] == 2235533
    assert len(merged["linkedPlanServices"]) == 3

    replacement = copy.deepcopy(merged)
    removed = replacement["linkedPlanServices"].pop(0)
    replaced = stack.call("PUT", f"/v1/plan/{plan_id}", replacement)
    assert replaced.status_code == 200, replaced.text
    stack.wait_until(lambda: stack.indexed_plan(plan_id) == replacement,
                     "the replaced plan is indexed")
    gone = stack.call("GET", f"/v1/plan/es_data?id={removed['objectId']}")
    assert gone.status_code == 404
    assert gone.headers["Content-Type"].startswith("application/problem+json")

    deleted = stack.call("DELETE", f"/v1/plan/{plan_id}")
    assert deleted.status_code == 204
    stack.wait_until(lambda: stack.indexed_plan(plan_id) is None, "the deleted plan leaves the index")
    assert stack.call("GET", f"/v1/plan/es_data?id={service['objectId']}").status_code == 404


def test_search_routes_reject_bad_queries(stack: Stack) -> None:
    missing = stack.call("GET", "/v1/plan/es_data")
    assert missing.status_code == 400
    assert missing.headers["Content-Type"].startswith("application/problem+json")
    assert stack.call("GET", "/v1/plan/es_data?id=bad%20id").status_code == 400
    assert stack.call("GET", "/v1/plan/es_data?id=x&parent_type=1bad").status_code == 400
    assert stack.call("GET", "/v1/plan/es_plan/not-there-" + uuid.uuid4().hex).status_code == 404
    assert stack.call("GET", "/v1/plan/es_data?id=nothing-" + uuid.uuid4().hex).status_code == 404


def test_many_writes_all_converge(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    plans = [plan_with_services(f"many-{tag}-{index}", 2) for index in range(30)]
    for plan in plans:
        assert stack.call("POST", "/v1/plan", plan).status_code == 201
    for index, plan in enumerate(plans[:10]):
        assert stack.call("PATCH", f"/v1/plan/{plan['objectId']}",
                          {"planType": f"patched-{index}"}).status_code == 200
        plan["planType"] = f"patched-{index}"
    stack.wait_until(lambda: all(stack.indexed_plan(plan["objectId"]) == plan for plan in plans),
                     "all 30 plans are indexed in their latest state")


# --- Faults, on the full stack only -------------------------------------------------------


def backends(command: str, name: str, *extra: str) -> None:
    subprocess.run([sys.executable, "scripts/backends.py", command, name, *extra], cwd=REPO_ROOT,
                   check=True, timeout=300)


def test_writes_during_broker_outage_are_indexed_after_it_returns(full_stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    plans = [plan_with_services(f"outage-{tag}-{index}", 1) for index in range(20)]
    backends("stop", "rabbitmq")
    try:
        for plan in plans:
            response = full_stack.call("POST", "/v1/plan", plan)
            assert response.status_code == 201, "a write must not wait for the broker"
        time.sleep(2)
        assert full_stack.indexed_plan(plans[-1]["objectId"]) is None
    finally:
        backends("start", "rabbitmq")
    full_stack.wait_until(
        lambda: all(full_stack.indexed_plan(plan["objectId"]) == plan for plan in plans),
        "every write made while the broker was down is indexed")


def test_killed_runner_leaves_a_correct_index_after_redelivery(full_stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    plans = [plan_with_services(f"kill-{tag}-{index}", 3) for index in range(60)]
    full_stack.kill_runner()
    for plan in plans:
        assert full_stack.call("POST", "/v1/plan", plan).status_code == 201
    for plan in plans[::3]:
        assert full_stack.call("PATCH", f"/v1/plan/{plan['objectId']}",
                               {"planType": "after-kill"}).status_code == 200
        plan["planType"] = "after-kill"
    time.sleep(1)  # let the relay publish the backlog to the queue

    full_stack.start_runner()
    time.sleep(1.5)  # long enough to be inside the first batches
    full_stack.kill_runner()
    full_stack.start_runner()
    full_stack.wait_until(
        lambda: all(full_stack.indexed_plan(plan["objectId"]) == plan for plan in plans),
        "the index holds every plan's latest state after the runner was killed")


def test_search_outage_delays_but_loses_nothing(full_stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    plans = [plan_with_services(f"search-down-{tag}-{index}", 1) for index in range(10)]
    backends("stop", "opensearch")
    try:
        for plan in plans:
            assert full_stack.call("POST", "/v1/plan", plan).status_code == 201
        time.sleep(5)  # the runner meets the outage and retries
    finally:
        backends("start", "opensearch")
    full_stack.wait_until(
        lambda: all(full_stack.indexed_plan(plan["objectId"]) == plan for plan in plans),
        "every write made while the search node was down is indexed")
    assert dead_letter_count(full_stack) == 0


def dead_letter_count(stack: Stack) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(stack.settings["RABBITMQ_URL"]))
    try:
        channel = connection.channel()
        declared = channel.queue_declare(queue=stack.settings["QUEUE_NAME"] + ".dead", passive=True)
        return int(declared.method.message_count)
    finally:
        connection.close()


def publish_events(stack: Stack, events: list[dict[str, Any]]) -> None:
    """Publish events straight to the queue with the project's own publisher, bypassing the outbox."""
    sink = RabbitMqSink(stack.settings["RABBITMQ_URL"], stack.settings["QUEUE_NAME"])
    try:
        sink.send(events)
    finally:
        sink.close()


def test_replayed_old_event_changes_nothing(full_stack: Stack) -> None:
    plan, _, _ = fresh_seed_plan()
    plan_id = plan["objectId"]
    assert full_stack.call("POST", "/v1/plan", plan).status_code == 201
    assert full_stack.call("PATCH", f"/v1/plan/{plan_id}", {"planType": "newest"}).status_code == 200
    newest = {**plan, "planType": "newest"}
    full_stack.wait_until(lambda: full_stack.indexed_plan(plan_id) == newest, "version 2 is indexed")

    # Version 1 again, then a marker plan: the queue is FIFO, so once the marker is indexed the
    # old event has been handled.
    marker = plan_with_services("marker-" + uuid.uuid4().hex[:8], 0)
    old_event = build_event(plan_id=plan_id, version=1, event_type="plan.upserted", etag=None,
                            plan_json=json.dumps(plan), occurred_at=utc_now_iso())
    marker_event = build_event(plan_id=marker["objectId"], version=1, event_type="plan.upserted",
                               etag=None, plan_json=json.dumps(marker), occurred_at=utc_now_iso())
    publish_events(full_stack, [old_event, marker_event])
    full_stack.wait_until(lambda: full_stack.indexed_plan(marker["objectId"]) == marker,
                          "the marker event is indexed")
    assert full_stack.indexed_plan(plan_id) == newest

    # An old upsert after a delete does not bring the plan back.
    assert full_stack.call("DELETE", f"/v1/plan/{plan_id}").status_code == 204
    full_stack.wait_until(lambda: full_stack.indexed_plan(plan_id) is None, "the delete is indexed")
    second_marker = plan_with_services("marker-" + uuid.uuid4().hex[:8], 0)
    publish_events(full_stack, [
        build_event(plan_id=plan_id, version=2, event_type="plan.upserted", etag=None,
                    plan_json=json.dumps(newest), occurred_at=utc_now_iso()),
        build_event(plan_id=second_marker["objectId"], version=1, event_type="plan.upserted",
                    etag=None, plan_json=json.dumps(second_marker), occurred_at=utc_now_iso()),
    ])
    full_stack.wait_until(lambda: full_stack.indexed_plan(second_marker["objectId"]) == second_marker,
                          "the second marker is indexed")
    assert full_stack.indexed_plan(plan_id) is None
