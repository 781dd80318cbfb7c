"""One suite run unchanged against both stores: the SQLite embedded store and a real Redis.

Also proves, with Redis's own command statistics, that a read is one round trip and a write two,
whatever the plan's size.
"""

from __future__ import annotations

import copy
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from chalicelib.errors import OwnershipConflict, PlanAlreadyExists, PlanNotFound
from chalicelib.plan_graph import canonical_json, compute_etag, decompose, diff_objects
from chalicelib.schema import DEFAULT_SCHEMA_PATH
from chalicelib.service import PlanService
from chalicelib.store.base import PlanStore, PlanWrite, VersionConflict
from chalicelib.store.redis_store import RedisPlanStore
from chalicelib.store.sqlite_store import SqlitePlanStore
from tests.support.plans import fresh_seed_plan, plan_with_services


def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail("REDIS_URL is not set: run the tests with ./scripts/test.sh, which starts Redis.")
    return url


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[PlanStore]:
    if request.param == "sqlite":
        yield SqlitePlanStore(str(tmp_path / "plans.sqlite3"))
    else:
        prefix = f"test-{uuid.uuid4().hex}:"
        yield RedisPlanStore(redis_url(), prefix=prefix)
        client = redis.Redis.from_url(redis_url())
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def create_write(plan: dict[str, Any]) -> PlanWrite:
    objects = decompose(plan)
    return PlanWrite(plan_id=plan["objectId"], expected_version=None,
                     root=f"plan:{plan['objectId']}", etag=compute_etag(plan),
                     members=list(objects), upserts=objects, deletes=[],
                     document_json=canonical_json(plan))


def replace_write(store: PlanStore, plan: dict[str, Any]) -> PlanWrite:
    current = store.get(plan["objectId"])
    assert current is not None
    objects = decompose(plan)
    upserts, deletes = diff_objects(current.objects, objects)
    return PlanWrite(plan_id=plan["objectId"], expected_version=current.version,
                     root=current.root, etag=compute_etag(plan), members=list(objects),
                     upserts=upserts, deletes=deletes, document_json=canonical_json(plan))


def test_saved_plan_reads_back_whole(store: PlanStore) -> None:
    plan, _, _ = fresh_seed_plan()
    version = store.save(create_write(plan))
    snapshot = store.get(plan["objectId"])
    assert snapshot is not None
    assert snapshot.document() == plan
    assert snapshot.version == version == 1
    assert snapshot.etag == compute_etag(plan)


def test_missing_plan_reads_as_none(store: PlanStore) -> None:
    assert store.get("no-such-plan-" + uuid.uuid4().hex) is None


def test_second_create_is_refused(store: PlanStore) -> None:
    plan, _, _ = fresh_seed_plan()
    store.save(create_write(plan))
    with pytest.raises(PlanAlreadyExists):
        store.save(create_write(plan))


def test_stale_version_is_refused_and_changes_nothing(store: PlanStore) -> None:
    plan, _, _ = fresh_seed_plan()
    store.save(create_write(plan))
    changed = copy.deepcopy(plan)
    changed["planType"] = "outOfNetwork"
    write = replace_write(store, changed)
    store.save(write)
    with pytest.raises(VersionConflict):
        store.save(write)
    snapshot = store.get(plan["objectId"])
    assert snapshot is not None and snapshot.version == 2


def test_object_owned_by_another_plan_is_refused_and_nothing_is_written(store: PlanStore) -> None:
    first, _, _ = fresh_seed_plan()
    store.save(create_write(first))
    second, _, _ = fresh_seed_plan()
    second["planCostShares"] = copy.deepcopy(first["planCostShares"])
    outbox_before = len(store.read_outbox(100_000))
    with pytest.raises(OwnershipConflict):
        store.save(create_write(second))
    assert store.get(second["objectId"]) is None
    first_snapshot = store.get(first["objectId"])
    assert first_snapshot is not None and first_snapshot.version == 1
    assert first_snapshot.document() == first
    assert len(store.read_outbox(100_000)) == outbox_before
    # None of the second plan's own objects was written, so they can still be used freely.
    del second["planCostShares"]["objectId"]
    second["planCostShares"]["objectId"] = "fresh-" + uuid.uuid4().hex[:8]
    store.save(create_write(second))


def test_replace_removes_objects_no_longer_present(store: PlanStore) -> None:
    plan, _, _ = fresh_seed_plan()
    store.save(create_write(plan))
    shorter = copy.deepcopy(plan)
    removed = shorter["linkedPlanServices"].pop()
    store.save(replace_write(store, shorter))
    snapshot = store.get(plan["objectId"])
    assert snapshot is not None
    assert f"planservice:{removed['objectId']}" not in snapshot.objects
    # The removed objects are free for another plan to use.
    other = plan_with_services("other-" + uuid.uuid4().hex[:8], 0)
    other["planCostShares"] = removed["planserviceCostShares"]
    store.save(create_write(other))


def test_delete_removes_every_object_and_versions_keep_growing(store: PlanStore) -> None:
    plan, _, _ = fresh_seed_plan()
    store.save(create_write(plan))
    deleted_version = store.delete(plan["objectId"], 1)
    assert deleted_version == 2
    assert store.get(plan["objectId"]) is None
    assert store.save(create_write(plan)) == 3


def test_delete_of_missing_plan_is_not_found(store: PlanStore) -> None:
    with pytest.raises(PlanNotFound):
        store.delete("missing-" + uuid.uuid4().hex, 1)


def test_each_write_appends_one_outbox_event(store: PlanStore) -> None:
    plan, _, _ = fresh_seed_plan()
    before = {entry.entry_id for entry in store.read_outbox(100_000)}
    store.save(create_write(plan))
    store.delete(plan["objectId"], 1)
    new = [entry for entry in store.read_outbox(100_000) if entry.entry_id not in before]
    assert [(entry.event["type"], entry.event["version"]) for entry in new] == [
        ("plan.upserted", 1), ("plan.deleted", 2)]
    assert new[0].event["plan"] == plan
    assert new[0].event["eventId"] == f"{plan['objectId']}:1"
    store.remove_outbox([entry.entry_id for entry in new])
    remaining = {entry.entry_id for entry in store.read_outbox(100_000)}
    assert not remaining & {entry.entry_id for entry in new}


def test_listing_pages_in_id_order(store: PlanStore) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = sorted(f"list-{tag}-{index}" for index in range(5))
    for plan_id in ids:
        store.save(create_write(plan_with_services(plan_id, 1)))
    seen: list[str] = []
    after = f"list-{tag}"
    while True:
        page = [snapshot.plan_id for snapshot in store.list_plans(after, 2)
                if snapshot.plan_id.startswith(f"list-{tag}-")]
        if not page:
            break
        seen.extend(page)
        after = page[-1]
    assert seen == ids


def test_concurrent_writers_never_interleave(store: PlanStore) -> None:
    """Sixteen threads race to replace one plan at the same version: exactly one wins."""
    plan, _, _ = fresh_seed_plan()
    store.save(create_write(plan))
    writes = []
    for index in range(16):
        changed = copy.deepcopy(plan)
        changed["planType"] = f"writer-{index}"
        changed["linkedPlanServices"][0]["linkedService"]["name"] = f"writer-{index}"
        writes.append(replace_write(store, changed))
    barrier = threading.Barrier(len(writes))
    outcomes: list[str] = []

    def run(write: PlanWrite) -> None:
        barrier.wait()
        try:
            store.save(write)
            outcomes.append("ok")
        except VersionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=run, args=(write,)) for write in writes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["conflict"] * 15 + ["ok"]
    snapshot = store.get(plan["objectId"])
    assert snapshot is not None
    document = snapshot.document()
    # The plan and its nested object come from the same writer.
    assert document["planType"] == document["linkedPlanServices"][0]["linkedService"]["name"]


def test_service_retries_after_a_conflict_and_applies_if_match_to_fresh_state(store: PlanStore) -> None:
    service = PlanService(store, schema_path=DEFAULT_SCHEMA_PATH)
    plan, patch, _ = fresh_seed_plan()
    created = service.create(plan)
    merged = service.patch(plan["objectId"], patch, if_match=created.etag)
    assert merged.document["planCostShares"]["copay"] == 2235533
    assert len(merged.document["linkedPlanServices"]) == 3


# --- Round trips, measured with Redis's INFO commandstats --------------------------------

# Commands the Lua scripts call inside one EVALSHA: they run on the server, not as round trips.
SCRIPT_INTERNAL_COMMANDS = {"hget", "hmget", "mget", "set", "del", "hdel", "hset", "incr", "zadd",
                            "zrem", "xadd", "zrange"}
MEASURING_COMMANDS = {"info", "config|resetstat", "config"}
# Commandstats are server-wide, and idle API servers of other test modules poll their outbox
# (XRANGE, XDEL) and health (PING) meanwhile; the store never issues these for plan operations.
OTHER_CLIENTS_COMMANDS = {"xrange", "xdel", "ping"}


def command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def client_round_trips(calls: dict[str, int]) -> dict[str, int]:
    return {name: count for name, count in calls.items()
            if name not in SCRIPT_INTERNAL_COMMANDS | MEASURING_COMMANDS | OTHER_CLIENTS_COMMANDS}


@pytest.mark.parametrize("service_count", [1, 200])
def test_redis_read_is_one_round_trip_and_write_two(service_count: int) -> None:
    url = redis_url()
    prefix = f"trips-{uuid.uuid4().hex}:"
    store = RedisPlanStore(url, prefix=prefix)
    service = PlanService(store, schema_path=DEFAULT_SCHEMA_PATH)
    plan_id = f"trips-{service_count}-{uuid.uuid4().hex[:8]}"
    plan = plan_with_services(plan_id, service_count)
    stats = redis.Redis.from_url(url)
    try:
        store.check_health()  # connects and loads the scripts, outside the measurement
        store._ensure_scripts()

        stats.config_resetstat()
        service.create(plan)
        assert client_round_trips(command_calls(stats)) == {"evalsha": 1}

        stats.config_resetstat()
        service.get(plan_id)
        read_calls = command_calls(stats)
        assert client_round_trips(read_calls) == {"evalsha": 1}
        # The read script fetched every object of the plan, in MGET slices of 500 keys.
        assert read_calls["mget"] == -(-(2 + 3 * service_count) // 500)

        stats.config_resetstat()
        service.patch(plan_id, {"planType": "outOfNetwork"}, if_match=None)
        assert client_round_trips(command_calls(stats)) == {"evalsha": 2}

        stats.config_resetstat()
        replacement = copy.deepcopy(plan)
        replacement["linkedPlanServices"] = replacement["linkedPlanServices"][:1]
        service.replace(plan_id, replacement, if_match=None)
        assert client_round_trips(command_calls(stats)) == {"evalsha": 2}

        stats.config_resetstat()
        service.delete(plan_id, if_match=None)
        assert client_round_trips(command_calls(stats)) == {"evalsha": 2}
    finally:
        keys = list(stats.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            stats.delete(*keys)
