"""Smoke tests of the Redis, RabbitMQ and OpenSearch servers that scripts/backends.py starts.

They fail, rather than skip, when the servers' URLs are missing, because every other test of
the suite needs the same servers.
"""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pika
import pytest
import redis
from opensearchpy import OpenSearch

BACKENDS_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "backends.py"
# Seconds allowed for one `stop` or `start`. RabbitMQ restarted in 8-14 s on a 2-core machine.
BACKENDS_COMMAND_TIMEOUT = 300


def required_env(name: str) -> str:
    """Return an environment variable that scripts/backends.py sets, or fail the test."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: run the tests with scripts/test.sh, which starts the servers",
            pytrace=False,
        )
    return value


def run_backends(*args: str) -> None:
    """Run scripts/backends.py with `args` and fail the test with its output on error."""
    result = subprocess.run(
        [sys.executable, str(BACKENDS_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=BACKENDS_COMMAND_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"backends.py {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    )


def amqp_parameters() -> pika.URLParameters:
    """Return connection parameters that give up quickly when the broker is down."""
    parameters = pika.URLParameters(required_env("RABBITMQ_URL"))
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    return parameters


def test_redis_answers_ping() -> None:
    client = redis.Redis.from_url(required_env("REDIS_URL"), socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_rabbitmq_accepts_durable_queue() -> None:
    queue = f"smoke-{uuid.uuid4().hex}"
    connection = pika.BlockingConnection(amqp_parameters())
    try:
        channel = connection.channel()
        declared = channel.queue_declare(queue=queue, durable=True)
        assert declared.method.queue == queue
        assert declared.method.message_count == 0
        channel.queue_delete(queue=queue)
    finally:
        connection.close()


def test_opensearch_cluster_is_healthy() -> None:
    client = OpenSearch(hosts=[required_env("SEARCH_URL")], timeout=10)
    try:
        health = client.cluster.health()
        assert health["status"] in ("yellow", "green")
        assert health["number_of_nodes"] == 1
    finally:
        client.close()


def test_rabbitmq_restart_keeps_persistent_message() -> None:
    required_env("BACKENDS_STATE")
    queue = f"smoke-restart-{uuid.uuid4().hex}"
    body = uuid.uuid4().bytes

    connection = pika.BlockingConnection(amqp_parameters())
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue=queue, durable=True)
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
            mandatory=True,
        )
    finally:
        connection.close()

    try:
        run_backends("stop", "rabbitmq")
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(amqp_parameters())
    finally:
        # Later tests need the broker even if this test fails. `start` leaves a running one alone.
        run_backends("start", "rabbitmq")

    connection = pika.BlockingConnection(amqp_parameters())
    try:
        channel = connection.channel()
        method, _properties, received = channel.basic_get(queue=queue, auto_ack=True)
        assert method is not None, (
            "the durable queue is empty after the broker restarted"
        )
        assert received == body
        channel.queue_delete(queue=queue)
    finally:
        connection.close()
