"""Fixtures of the queue tests: the test broker, a unique queue per test, a real SQLite index."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chalicelib.config import Settings, load_settings
from chalicelib.queue.publisher import dead_letter_queue_name
from chalicelib.search.factory import build_search_index
from chalicelib.search.sqlite_index import SqliteSearchIndex
from queue_handlers.runner import QueueRunner, RunnerSettings
from tests.queue.support import Broker, required_env

RUNNER_STOP_TIMEOUT = 60


@pytest.fixture
def rabbitmq_url() -> str:
    return required_env("RABBITMQ_URL")


@pytest.fixture
def broker(rabbitmq_url: str) -> Broker:
    return Broker(rabbitmq_url)


@pytest.fixture
def queue_name(broker: Broker) -> Iterator[str]:
    name = f"test-plan-events-{uuid.uuid4().hex[:12]}"
    yield name
    broker.delete_queues(name, dead_letter_queue_name(name))


@pytest.fixture
def embedded_settings(tmp_path: Path) -> Settings:
    """Settings of a process without Redis, RabbitMQ or OpenSearch, with files in tmp_path."""
    return load_settings({"SQLITE_PATH": str(tmp_path / "plans.sqlite3"), "DEV_TOKENS": "off"})


@pytest.fixture
def search_index(embedded_settings: Settings) -> SqliteSearchIndex:
    index = build_search_index(embedded_settings)
    assert isinstance(index, SqliteSearchIndex)
    index.ensure_index()
    return index


@pytest.fixture
def start_runner(rabbitmq_url: str) -> Iterator[Callable[..., QueueRunner]]:
    """Start QueueRunners on threads; each is stopped, and must stop, when the test ends."""
    started: list[tuple[QueueRunner, threading.Thread]] = []

    def start(queue: str, handler: Callable[..., object], **options: object) -> QueueRunner:
        settings = RunnerSettings(rabbitmq_url=rabbitmq_url, queue_name=queue, **options)  # type: ignore[arg-type]
        runner = QueueRunner(settings, handler)
        thread = threading.Thread(target=runner.run, name=f"runner-{queue}", daemon=True)
        thread.start()
        started.append((runner, thread))
        assert runner.connected.wait(30), "the runner did not connect to RabbitMQ within 30 s"
        return runner

    yield start
    for runner, thread in started:
        runner.stop()
    for runner, thread in started:
        thread.join(RUNNER_STOP_TIMEOUT)
        assert not thread.is_alive(), f"the runner did not stop within {RUNNER_STOP_TIMEOUT} s"
