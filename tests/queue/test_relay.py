"""Specification of the outbox relay with the in-process sink and with RabbitMQ."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.config import Settings
from chalicelib.queue.publisher import RabbitMqSink
from chalicelib.queue.relay import (
    DeliveryError,
    InProcessSink,
    NotifyingPlanStore,
    OutboxRelay,
    backoff_delay,
)
from chalicelib.search.factory import build_search_index
from chalicelib.search.sqlite_index import SqliteSearchIndex
from chalicelib.service import PlanService
from chalicelib.store.base import PlanStore
from chalicelib.store.redis_store import RedisPlanStore
from chalicelib.store.sqlite_store import SqlitePlanStore
from queue_handlers import index_handler
from queue_handlers.index_handler import make_handler
from tests.queue.support import (
    PROJECT_ROOT,
    Broker,
    example_plan,
    required_env,
    run_backends,
    wait_until,
)

# Bounded waits of these tests, in seconds; the typical times are far below.
DELIVERY_TIMEOUT = 10
BROKER_RESTART_DELIVERY_TIMEOUT = 90


@pytest.fixture
def store(embedded_settings: Settings) -> SqlitePlanStore:
    return SqlitePlanStore(embedded_settings.sqlite_path)


@pytest.fixture
def relays() -> Iterator[list[OutboxRelay]]:
    """Relays a test starts; each is stopped when the test ends."""
    started: list[OutboxRelay] = []
    yield started
    for relay in started:
        relay.stop(timeout=30)
        assert not relay.is_running, "the relay thread did not stop within 30 s"


@pytest.fixture
def closed_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def outbox_size(store: PlanStore) -> int:
    return len(store.read_outbox(10_000))


def is_indexed(index: SqliteSearchIndex, plan_id: str) -> bool:
    return index.plan_versions().get(plan_id) == 1


def service_for(store: PlanStore, relay: OutboxRelay, settings: Settings) -> PlanService:
    return PlanService(NotifyingPlanStore(store, relay.notify), settings.schema_path)


def test_backoff_doubles_up_to_maximum() -> None:
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (60, 30.0)]:
        delays = [backoff_delay(failures, 0.5, 30.0) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1


def test_in_process_sink_drains_sqlite_outbox(
        store: SqlitePlanStore, search_index: SqliteSearchIndex, embedded_settings: Settings,
        relays: list[OutboxRelay]) -> None:
    sink = InProcessSink("plan-events", make_handler(lambda: search_index))
    relay = OutboxRelay(store, sink, batch_size=2)
    relays.append(relay)
    service = service_for(store, relay, embedded_settings)

    # Written before the relay starts, so the first pass finds a backlog of several batches.
    for number in range(5):
        service.create(example_plan(f"plan-{number}"))
    service.replace("plan-1", example_plan("plan-1", deductible=99), None)
    service.delete("plan-2", None)
    relay.start()

    wait_until(lambda: outbox_size(store) == 0, DELIVERY_TIMEOUT, "the outbox to drain")
    assert search_index.plan_versions() == {"plan-0": 1, "plan-1": 2, "plan-3": 1, "plan-4": 1}
    assert search_index.get_plan("plan-1") == example_plan("plan-1", deductible=99)
    assert search_index.get_plan("plan-2") is None
    assert relay.delivered_count == 7


def test_notify_wakes_relay_before_poll(
        store: SqlitePlanStore, search_index: SqliteSearchIndex, embedded_settings: Settings,
        relays: list[OutboxRelay]) -> None:
    sink = InProcessSink("plan-events", make_handler(lambda: search_index))
    # With a 60 s poll interval, only notify() can deliver within the deadline.
    relay = OutboxRelay(store, sink, poll_interval=60)
    relays.append(relay)
    relay.start()
    service = service_for(store, relay, embedded_settings)
    time.sleep(0.2)

    latencies = []
    for number in range(20):
        started = time.perf_counter()
        plan_id = f"fast-{number}"
        service.create(example_plan(plan_id))
        wait_until(partial(is_indexed, search_index, plan_id), DELIVERY_TIMEOUT,
                   f"plan {plan_id} to be indexed", interval=0.002)
        latencies.append(time.perf_counter() - started)

    latencies.sort()
    print(f"write-to-index latency, SQLite store and index, in-process sink: "
          f"median {latencies[10] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert latencies[-1] < 5


def test_relay_resumes_removal_without_resending(
        store: SqlitePlanStore, search_index: SqliteSearchIndex,
        embedded_settings: Settings) -> None:
    class RemovalFailsOnce(NotifyingPlanStore):
        failed = False

        def remove_outbox(self, entry_ids: list[str]) -> None:
            if not self.failed:
                self.failed = True
                raise OSError("disk I/O error")
            super().remove_outbox(entry_ids)

    calls: list[int] = []
    handler = make_handler(lambda: search_index)

    def counting_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(len(event["rmqMessagesByQueue"]["plan-events::/"]))
        return handler(event, context)

    flaky_store = RemovalFailsOnce(store, lambda: None)
    relay = OutboxRelay(flaky_store, InProcessSink("plan-events", counting_handler))
    PlanService(store, embedded_settings.schema_path).create(example_plan("plan-a"))

    with pytest.raises(OSError):
        relay.relay_pending()
    assert outbox_size(store) == 1
    assert relay.relay_pending() == 0

    assert outbox_size(store) == 0
    assert calls == [1]


def test_in_process_sink_drops_only_unindexable_event(search_index: SqliteSearchIndex) -> None:
    sink = InProcessSink("plan-events", make_handler(lambda: search_index))
    bad = {"eventId": "bad:1", "type": "plan.upserted", "planId": "bad id!", "version": 1,
           "plan": {"objectId": "bad id!"}}
    good = json.loads(json.dumps(bad))
    good.update(eventId="good:1", planId="good", plan=example_plan("good"))

    sink.send([bad, good])

    assert search_index.plan_versions() == {"good": 1}


def test_redis_outbox_drains_into_index(
        search_index: SqliteSearchIndex, embedded_settings: Settings,
        relays: list[OutboxRelay]) -> None:
    prefix = f"test-relay-{uuid.uuid4().hex[:8]}:"
    redis_store = RedisPlanStore(required_env("REDIS_URL"), prefix=prefix)
    try:
        relay = OutboxRelay(redis_store, InProcessSink("plan-events",
                                                       make_handler(lambda: search_index)))
        relays.append(relay)
        relay.start()
        service = service_for(redis_store, relay, embedded_settings)
        service.create(example_plan("redis-a"))
        service.create(example_plan("redis-b"))
        service.delete("redis-a", None)

        wait_until(lambda: outbox_size(redis_store) == 0, DELIVERY_TIMEOUT,
                   "the Redis outbox to drain")
        assert search_index.plan_versions() == {"redis-b": 1}
    finally:
        keys = list(redis_store.client.scan_iter(match=prefix + "*"))
        if keys:
            redis_store.client.delete(*keys)
        redis_store.client.close()


def test_sink_publishes_persistent_messages(
        store: SqlitePlanStore, embedded_settings: Settings, broker: Broker, queue_name: str,
        rabbitmq_url: str) -> None:
    service = PlanService(store, embedded_settings.schema_path)
    for number in range(3):
        service.create(example_plan(f"plan-{number}"))
    service.delete("plan-0", None)
    relay = OutboxRelay(store, RabbitMqSink(rabbitmq_url, queue_name))

    try:
        delivered = relay.relay_pending()
    finally:
        relay.sink.close()

    assert delivered == 4
    assert outbox_size(store) == 0
    messages = broker.take_all(queue_name)
    assert [properties.message_id for properties, _ in messages] == [
        "plan-0:1", "plan-1:1", "plan-2:1", "plan-0:2"]
    for properties, body in messages:
        assert properties.delivery_mode == 2
        assert properties.content_type == "application/json"
        event = json.loads(body)
        assert event["eventId"] == properties.message_id
        assert properties.headers["x-plan-id"] == event["planId"]
        assert properties.headers["x-plan-version"] == event["version"]
    assert broker.depth(queue_name + ".dead") == 0


def test_unroutable_publish_keeps_entries_in_outbox(
        store: SqlitePlanStore, embedded_settings: Settings, broker: Broker, queue_name: str,
        rabbitmq_url: str) -> None:
    service = PlanService(store, embedded_settings.schema_path)
    sink = RabbitMqSink(rabbitmq_url, queue_name)
    relay = OutboxRelay(store, sink)
    try:
        service.create(example_plan("plan-a"))
        assert relay.relay_pending() == 1

        # With the queue gone, the mandatory publish comes back unroutable instead of confirmed.
        broker.delete_queues(queue_name)
        service.create(example_plan("plan-b"))
        service.create(example_plan("plan-c"))
        with pytest.raises(DeliveryError) as raised:
            relay.relay_pending()
    finally:
        sink.close()

    assert raised.value.delivered == 0
    assert "plan-b:1" in str(raised.value)
    assert [entry.event["eventId"] for entry in store.read_outbox(10)] == ["plan-b:1", "plan-c:1"]


def test_unreachable_broker_keeps_entries_in_outbox(
        store: SqlitePlanStore, embedded_settings: Settings, closed_port: int) -> None:
    PlanService(store, embedded_settings.schema_path).create(example_plan("plan-a"))
    relay = OutboxRelay(store, RabbitMqSink(f"amqp://guest:guest@127.0.0.1:{closed_port}/%2F",
                                            "plan-events"))

    with pytest.raises(DeliveryError, match="cannot connect to RabbitMQ"):
        relay.relay_pending()

    assert [entry.event["eventId"] for entry in store.read_outbox(10)] == ["plan-a:1"]


def test_relay_latency_to_rabbitmq(
        store: SqlitePlanStore, embedded_settings: Settings, broker: Broker, queue_name: str,
        rabbitmq_url: str, relays: list[OutboxRelay]) -> None:
    relay = OutboxRelay(store, RabbitMqSink(rabbitmq_url, queue_name), poll_interval=60)
    relays.append(relay)
    relay.start()
    service = service_for(store, relay, embedded_settings)
    service.create(example_plan("warm-up"))
    wait_until(lambda: broker.depth(queue_name) == 1, DELIVERY_TIMEOUT, "the first message")

    latencies = []
    for number in range(1, 11):
        started = time.perf_counter()
        service.create(example_plan(f"plan-{number}"))
        wait_until(lambda: outbox_size(store) == 0, DELIVERY_TIMEOUT,
                   f"event {number} to be confirmed", interval=0.001)
        latencies.append(time.perf_counter() - started)

    latencies.sort()
    print(f"write-to-confirm latency, SQLite store, RabbitMQ sink: "
          f"median {latencies[5] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert broker.depth(queue_name) == 11


def test_outbox_kept_during_broker_outage(
        store: SqlitePlanStore, embedded_settings: Settings, broker: Broker, queue_name: str,
        rabbitmq_url: str, relays: list[OutboxRelay]) -> None:
    relay = OutboxRelay(store, RabbitMqSink(rabbitmq_url, queue_name), max_backoff=2)
    relays.append(relay)
    relay.start()
    service = service_for(store, relay, embedded_settings)
    service.create(example_plan("before-outage"))
    wait_until(lambda: outbox_size(store) == 0, DELIVERY_TIMEOUT, "the first event")

    run_backends("stop", "rabbitmq")
    try:
        for number in range(5):
            service.create(example_plan(f"during-outage-{number}"))
        wait_until(lambda: relay.consecutive_failures >= 2, 30, "the relay to retry")
        assert outbox_size(store) == 5
    finally:
        run_backends("start", "rabbitmq")

    wait_until(lambda: outbox_size(store) == 0, BROKER_RESTART_DELIVERY_TIMEOUT,
               "the outbox to drain after the broker restarted", interval=0.2)
    received = {properties.message_id for properties, _ in broker.take_all(queue_name)}
    assert received == {"before-outage:1", *(f"during-outage-{n}:1" for n in range(5))}


def test_relay_command_publishes_outbox(
        store: SqlitePlanStore, embedded_settings: Settings, broker: Broker, queue_name: str,
        rabbitmq_url: str, tmp_path: Path) -> None:
    service = PlanService(store, embedded_settings.schema_path)
    service.create(example_plan("plan-a"))
    env = {**os.environ, "RABBITMQ_URL": rabbitmq_url, "QUEUE_NAME": queue_name,
           "SQLITE_PATH": embedded_settings.sqlite_path}
    env.pop("REDIS_URL", None)
    log_path = tmp_path / "relay.log"

    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "queue_handlers", "relay"],
                                   cwd=PROJECT_ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: outbox_size(store) == 0, DELIVERY_TIMEOUT,
                       "the relay command to deliver the first plan")
            # Written by another process than the relay's, so only polling finds it.
            service.create(example_plan("plan-b"))
            wait_until(lambda: outbox_size(store) == 0, DELIVERY_TIMEOUT,
                       "the relay command to deliver the second plan")
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)

    received = [properties.message_id for properties, _ in broker.take_all(queue_name)]
    assert received == ["plan-a:1", "plan-b:1"]
    assert "outbox relay stopped" in log_path.read_text()


def test_bootstrap_starts_in_process_relay(
        embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "RABBITMQ_URL", "SEARCH_URL", "OUTBOX_RELAY", "PYTHON_ENV",
                 "REDIS_DEV_HOST", "RABBITMQ_DEV_HOST", "DEV_ELASTIC_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SQLITE_PATH", embedded_settings.sqlite_path)
    monkeypatch.setenv("DEV_TOKENS", "off")
    monkeypatch.setattr(bootstrap, "_components", None)
    index_handler.search_index.set(None)
    components = bootstrap.components()
    try:
        assert components.relay is not None
        assert isinstance(components.relay.sink, InProcessSink)
        assert components.relay.is_running

        components.service.create(example_plan("plan-a"))

        index = build_search_index(embedded_settings)
        wait_until(lambda: index.plan_versions() == {"plan-a": 1}, DELIVERY_TIMEOUT,
                   "the plan written through the API service to be indexed")
        assert outbox_size(components.store) == 0
    finally:
        components.relay.stop()
        index_handler.search_index.set(None)
