"""Helpers for the queue tests: plan events, a RabbitMQ client for checks, bounded waits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from chalicelib.queue import mq_events
from chalicelib.queue.publisher import plan_event_properties
from chalicelib.store.base import build_event, utc_now_iso

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BACKENDS_SCRIPT = PROJECT_ROOT / "scripts" / "backends.py"
# Upper bound for one `backends.py stop` or `start`; RabbitMQ typically restarts in about 10 s.
BACKENDS_COMMAND_TIMEOUT = 300


def required_env(name: str) -> str:
    """Return an environment variable that scripts/test.sh sets, or fail the test."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests with scripts/test.sh tests/queue, which "
                    "starts RabbitMQ and exports it", pytrace=False)
    return value


def run_backends(*args: str) -> None:
    """Run scripts/backends.py (stop/start a server) and fail the test with its output on error."""
    required_env("BACKENDS_STATE")
    result = subprocess.run([sys.executable, str(BACKENDS_SCRIPT), *args], capture_output=True,
                            text=True, timeout=BACKENDS_COMMAND_TIMEOUT, check=False)
    assert result.returncode == 0, f"backends.py {' '.join(args)} exited {result.returncode}:\n{result.stderr}"


def wait_until(condition: Callable[[], Any], timeout: float, description: str,
               interval: float = 0.05) -> Any:
    """Poll `condition` until it returns a true value and return it; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {description}", pytrace=False)
        time.sleep(interval)


def example_plan(plan_id: str, *, deductible: int = 2000, copay: int = 23) -> dict[str, Any]:
    """Return a schema-valid plan whose stored objects all have ids derived from `plan_id`."""
    return {
        "planCostShares": {"deductible": deductible, "_org": "example.com", "copay": copay,
                           "objectId": f"{plan_id}-cs", "objectType": "membercostshare"},
        "linkedPlanServices": [{
            "linkedService": {"_org": "example.com", "objectId": f"{plan_id}-svc",
                              "objectType": "service", "name": "Yearly physical"},
            "planserviceCostShares": {"deductible": 10, "_org": "example.com", "copay": 0,
                                      "objectId": f"{plan_id}-pscs",
                                      "objectType": "membercostshare"},
            "_org": "example.com", "objectId": f"{plan_id}-ps", "objectType": "planservice",
        }],
        "_org": "example.com", "objectId": plan_id, "objectType": "plan",
        "planType": "inNetwork", "creationDate": "12-12-2017",
    }


def upsert_event(plan_id: str, version: int, *, deductible: int = 2000) -> dict[str, Any]:
    return build_event(plan_id=plan_id, version=version, event_type="plan.upserted",
                       etag=f'"etag-{plan_id}-{version}"',
                       plan_json=json.dumps(example_plan(plan_id, deductible=deductible)),
                       occurred_at=utc_now_iso())


def delete_event(plan_id: str, version: int) -> dict[str, Any]:
    return build_event(plan_id=plan_id, version=version, event_type="plan.deleted", etag=None,
                       plan_json=None, occurred_at=utc_now_iso())


def lambda_event(queue_name: str, plan_events: list[dict[str, Any]], *,
                 redelivered: bool = False) -> dict[str, Any]:
    messages = [mq_events.message_from_plan_event(plan_event, redelivered=redelivered)
                for plan_event in plan_events]
    return mq_events.build_event(queue_name, messages)


class Broker:
    """Short-lived connections to the test broker, for checks made from the test's thread."""

    def __init__(self, url: str) -> None:
        self.url = url

    def parameters(self) -> pika.URLParameters:
        parameters = pika.URLParameters(self.url)
        parameters.connection_attempts = 1
        parameters.socket_timeout = 5
        return parameters

    @contextmanager
    def channel(self) -> Iterator[BlockingChannel]:
        connection = pika.BlockingConnection(self.parameters())
        try:
            yield connection.channel()
        finally:
            if connection.is_open:
                connection.close()

    def depth(self, queue_name: str) -> int:
        """Return the number of ready messages; delivered but unacknowledged ones are not counted.

        The queue is declared (durable, as the project declares it) if it does not exist yet.
        """
        with self.channel() as channel:
            declared = channel.queue_declare(queue=queue_name, durable=True)
            return int(declared.method.message_count)

    def publish_events(self, queue_name: str, plan_events: list[dict[str, Any]]) -> None:
        """Publish plan events as the relay does: persistent, confirmed, message id = event id."""
        with self.channel() as channel:
            channel.queue_declare(queue=queue_name, durable=True)
            channel.confirm_delivery()
            for plan_event in plan_events:
                channel.basic_publish(exchange="", routing_key=queue_name,
                                      body=mq_events.encode_plan_event(plan_event),
                                      properties=plan_event_properties(plan_event),
                                      mandatory=True)

    def publish_raw(self, queue_name: str, body: bytes, message_id: str) -> None:
        with self.channel() as channel:
            channel.queue_declare(queue=queue_name, durable=True)
            channel.confirm_delivery()
            channel.basic_publish(exchange="", routing_key=queue_name, body=body, mandatory=True,
                                  properties=pika.BasicProperties(
                                      content_type=mq_events.JSON_CONTENT_TYPE,
                                      delivery_mode=pika.DeliveryMode.Persistent,
                                      message_id=message_id))

    def take_all(self, queue_name: str) -> list[tuple[pika.BasicProperties, bytes]]:
        """Remove and return every ready message of the queue."""
        taken: list[tuple[pika.BasicProperties, bytes]] = []
        with self.channel() as channel:
            while True:
                method, properties, body = channel.basic_get(queue=queue_name, auto_ack=True)
                if method is None:
                    return taken
                taken.append((properties, body))

    def delete_queues(self, *queue_names: str) -> None:
        try:
            with self.channel() as channel:
                for queue_name in queue_names:
                    channel.queue_delete(queue=queue_name)
        except pika.exceptions.AMQPError:
            # Cleanup only: a queue the test never declared, or a broker a failed test left
            # stopped, must not hide the test's own result.
            pass
