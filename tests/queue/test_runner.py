"""Specification of the local queue runner, the dead-letter queue and the dead-letter script."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.config import Settings
from chalicelib.queue.publisher import dead_letter_queue_name
from chalicelib.search.factory import sqlite_search_path
from chalicelib.search.sqlite_index import SqliteSearchIndex
from queue_handlers.index_handler import make_handler
from queue_handlers.runner import QueueRunner
from tests.queue.memory_index import MemoryIndex
from tests.queue.support import (
    PROJECT_ROOT,
    Broker,
    delete_event,
    run_backends,
    upsert_event,
    wait_until,
)

# Bounded waits of these tests, in seconds; the typical times are far below.
INDEX_TIMEOUT = 30
BROKER_RESTART_TIMEOUT = 90
SUBPROCESS_EXIT_TIMEOUT = 30

StartRunner = Callable[..., QueueRunner]
LambdaHandler = Callable[[dict[str, Any], Any], Any]

FAST_RETRIES = {"min_backoff_seconds": 0.01, "max_backoff_seconds": 0.05}


def message_ids(event: dict[str, Any]) -> list[str]:
    return [message["basicProperties"]["messageId"]
            for messages in event["rmqMessagesByQueue"].values() for message in messages]


class RecordingHandler:
    """Wraps a real handler: records each batch's message ids and fails batches holding
    `failing_id` while `failing` is set, as an index that rejects one document would."""

    def __init__(self, handler: LambdaHandler, failing_id: str | None = None) -> None:
        self.handler = handler
        self.failing_id = failing_id
        self.failing = failing_id is not None
        self.batches: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        ids = message_ids(event)
        with self.lock:
            self.batches.append(ids)
        if self.failing and self.failing_id in ids:
            raise RuntimeError(f"the index rejected the document of {self.failing_id}")
        return self.handler(event, context)

    def batches_with(self, message_id: str) -> int:
        with self.lock:
            return sum(message_id in batch for batch in self.batches)


def test_runner_indexes_backlog_in_batches(
        broker: Broker, queue_name: str, search_index: SqliteSearchIndex,
        start_runner: StartRunner) -> None:
    events = [upsert_event(f"plan-{number}", version, deductible=version)
              for version in (2, 1, 3) for number in range(40)]
    events += [delete_event("plan-0", 4)]
    broker.publish_events(queue_name, events)
    recorder = RecordingHandler(make_handler(lambda: search_index))

    runner = start_runner(queue_name, recorder, batch_size=50)

    expected = {f"plan-{number}": 3 for number in range(1, 40)}
    wait_until(lambda: search_index.plan_versions() == expected, INDEX_TIMEOUT,
               "all plans to be indexed at version 3")
    wait_until(lambda: runner.stats.messages_acked == 121, INDEX_TIMEOUT, "every message acked")
    assert broker.depth(queue_name) == 0
    assert max(len(batch) for batch in recorder.batches) == 50
    assert search_index.get_plan("plan-7")["planCostShares"]["deductible"] == 3
    assert search_index.get_plan("plan-0") is None


def test_failing_batch_stays_unacked(
        broker: Broker, queue_name: str, start_runner: StartRunner) -> None:
    broker.publish_events(queue_name, [upsert_event(f"plan-{n}", 1) for n in range(3)])
    recorder = RecordingHandler(make_handler(MemoryIndex), failing_id="plan-1:1")

    runner = start_runner(queue_name, recorder, max_attempts=1000, **FAST_RETRIES)
    wait_until(lambda: runner.stats.handler_failures >= 3, INDEX_TIMEOUT, "three failed attempts")

    assert broker.depth(queue_name) == 0, "the runner holds the failing batch unacknowledged"
    runner.stop()
    wait_until(lambda: not runner.connected.is_set(), INDEX_TIMEOUT, "the runner to disconnect")
    wait_until(lambda: broker.depth(queue_name) == 3, INDEX_TIMEOUT,
               "the broker to return the unacknowledged batch to the queue")
    assert runner.stats.messages_acked == 0
    assert broker.depth(dead_letter_queue_name(queue_name)) == 0


def test_exhausted_message_is_dead_lettered(
        broker: Broker, queue_name: str, search_index: SqliteSearchIndex,
        start_runner: StartRunner) -> None:
    events = [upsert_event(f"good-{n}", 1) for n in range(2)] + [upsert_event("poison", 1)]
    events += [upsert_event(f"good-{n}", 1) for n in range(2, 4)]
    broker.publish_events(queue_name, events)
    recorder = RecordingHandler(make_handler(lambda: search_index), failing_id="poison:1")

    runner = start_runner(queue_name, recorder, max_attempts=3, **FAST_RETRIES)

    wait_until(lambda: runner.stats.messages_dead_lettered == 1, INDEX_TIMEOUT,
               "the poison message to be dead-lettered")
    wait_until(lambda: runner.stats.messages_acked == 4, INDEX_TIMEOUT, "the good ones acked")
    assert search_index.plan_versions() == {f"good-{n}": 1 for n in range(4)}
    assert recorder.batches_with("poison:1") >= 3
    assert broker.depth(queue_name) == 0

    [(properties, body)] = broker.take_all(dead_letter_queue_name(queue_name))
    assert properties.message_id == "poison:1"
    assert properties.delivery_mode == 2
    # Three failures as part of the whole batch, then one more in each bisected batch until
    # the message was alone.
    assert properties.headers["x-plan-api-attempts"] == 5
    assert "the index rejected the document of poison:1" in properties.headers["x-death-reason"]
    assert properties.headers["x-plan-id"] == "poison"
    assert json.loads(body) == events[2]


def test_malformed_message_is_dead_lettered_at_once(
        broker: Broker, queue_name: str, search_index: SqliteSearchIndex,
        start_runner: StartRunner) -> None:
    broker.publish_events(queue_name, [upsert_event("good-0", 1)])
    broker.publish_raw(queue_name, b"{not json", message_id="garbage-1")
    broker.publish_events(queue_name, [upsert_event("good-1", 1)])
    recorder = RecordingHandler(make_handler(lambda: search_index))

    runner = start_runner(queue_name, recorder, batch_window_seconds=1.0)

    wait_until(lambda: runner.stats.messages_dead_lettered == 1, INDEX_TIMEOUT,
               "the malformed message to be dead-lettered")
    wait_until(lambda: runner.stats.messages_acked == 2, INDEX_TIMEOUT, "the good ones acked")
    assert runner.stats.dead_lettered_ids == ["garbage-1"]
    assert recorder.batches == [["good-0:1", "garbage-1", "good-1:1"]]
    assert search_index.plan_versions() == {"good-0": 1, "good-1": 1}
    [(properties, _)] = broker.take_all(dead_letter_queue_name(queue_name))
    assert properties.headers["x-plan-api-attempts"] == 1
    assert "base64-encoded JSON" in properties.headers["x-death-reason"]


def test_unavailable_index_retried_without_limit(
        broker: Broker, queue_name: str, start_runner: StartRunner) -> None:
    index = MemoryIndex()
    index.available = False
    broker.publish_events(queue_name, [upsert_event("plan-a", 1), upsert_event("plan-b", 1)])

    runner = start_runner(queue_name, make_handler(lambda: index), max_attempts=2,
                          **FAST_RETRIES)
    wait_until(lambda: runner.stats.handler_failures >= 6, INDEX_TIMEOUT,
               "retries beyond the maximum attempts")
    assert runner.stats.messages_dead_lettered == 0

    index.available = True
    wait_until(lambda: runner.stats.messages_acked == 2, INDEX_TIMEOUT, "the batch to be acked")
    assert index.plan_versions() == {"plan-a": 1, "plan-b": 1}
    assert broker.depth(dead_letter_queue_name(queue_name)) == 0


def test_slow_handler_keeps_connection_alive(
        broker: Broker, queue_name: str, start_runner: StartRunner) -> None:
    index = MemoryIndex()
    handler = make_handler(lambda: index)

    def slow_handler(event: dict[str, Any], context: Any) -> Any:
        # Six heartbeat intervals: the broker drops a connection after two missed heartbeats.
        time.sleep(6)
        return handler(event, context)

    broker.publish_events(queue_name, [upsert_event("plan-a", 1)])
    runner = start_runner(queue_name, slow_handler, heartbeat_seconds=1)

    wait_until(lambda: runner.stats.messages_acked == 1, INDEX_TIMEOUT, "the slow batch acked")
    assert runner.stats.connections == 1
    assert index.plan_versions() == {"plan-a": 1}


def run_dead_letters(rabbitmq_url: str, queue_name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RABBITMQ_URL": rabbitmq_url, "QUEUE_NAME": queue_name}
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "dead_letters.py"), *args],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def test_dead_letters_list_and_replay(
        broker: Broker, queue_name: str, rabbitmq_url: str, search_index: SqliteSearchIndex,
        start_runner: StartRunner) -> None:
    broker.publish_events(queue_name, [upsert_event("poison", 7), upsert_event("good", 1)])
    recorder = RecordingHandler(make_handler(lambda: search_index), failing_id="poison:7")
    runner = start_runner(queue_name, recorder, max_attempts=2, **FAST_RETRIES)
    wait_until(lambda: runner.stats.messages_dead_lettered == 1, INDEX_TIMEOUT,
               "the poison message to be dead-lettered")

    listed = run_dead_letters(rabbitmq_url, queue_name, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["message_id"] == "poison:7"
    assert entry["plan_id"] == "poison"
    assert entry["version"] == "7"
    assert entry["attempts"] == "3"
    assert "the index rejected the document of poison:7" in entry["reason"]
    assert "Yearly physical" not in listed.stdout
    table = run_dead_letters(rabbitmq_url, queue_name, "list")
    assert table.returncode == 0, table.stderr
    assert "poison:7\tpoison\t7\t3\t" in table.stdout
    assert broker.depth(dead_letter_queue_name(queue_name)) == 1, "list leaves messages in place"

    recorder.failing = False
    replayed = run_dead_letters(rabbitmq_url, queue_name, "replay", "--limit", "10")

    assert replayed.returncode == 0, replayed.stderr
    assert "1 dead letters moved back" in replayed.stderr
    wait_until(lambda: search_index.plan_versions().get("poison") == 7, INDEX_TIMEOUT,
               "the replayed message to be indexed")
    assert broker.depth(dead_letter_queue_name(queue_name)) == 0
    assert runner.stats.messages_dead_lettered == 1


def test_dead_letters_requires_rabbitmq_url() -> None:
    env = {key: value for key, value in os.environ.items()
           if key not in ("RABBITMQ_URL", "RABBITMQ_DEV_HOST", "RABBITMQ_PROD_HOST")}
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "dead_letters.py"),
                             "list"], capture_output=True, text=True, env=env, timeout=60,
                            check=False)

    assert result.returncode == 2
    assert "RABBITMQ_URL is not set" in result.stderr


def test_runner_reconnects_after_broker_restart(
        broker: Broker, queue_name: str, search_index: SqliteSearchIndex,
        start_runner: StartRunner) -> None:
    runner = start_runner(queue_name, make_handler(lambda: search_index), max_backoff_seconds=2.0)
    broker.publish_events(queue_name, [upsert_event("before", 1)])
    wait_until(lambda: search_index.plan_versions() == {"before": 1}, INDEX_TIMEOUT,
               "the first event to be indexed")

    run_backends("stop", "rabbitmq")
    try:
        wait_until(lambda: not runner.connected.is_set(), INDEX_TIMEOUT,
                   "the runner to notice the broker is gone")
    finally:
        run_backends("start", "rabbitmq")

    wait_until(runner.connected.is_set, BROKER_RESTART_TIMEOUT, "the runner to reconnect")
    broker.publish_events(queue_name, [upsert_event("after", 1)])
    wait_until(lambda: search_index.plan_versions() == {"before": 1, "after": 1}, INDEX_TIMEOUT,
               "the event published after the restart to be indexed")
    assert runner.stats.connections == 2


@pytest.fixture
def runner_processes() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(SUBPROCESS_EXIT_TIMEOUT)


def start_runner_process(queue_name: str, rabbitmq_url: str, settings: Settings,
                         log_path: Path) -> subprocess.Popen[str]:
    """Start `python -m queue_handlers` with the embedded SQLite index of `settings`."""
    removed = ("SEARCH_URL", "DEV_ELASTIC_HOST", "PROD_ELASTIC_HOST", "REDIS_URL")
    env = {key: value for key, value in os.environ.items() if key not in removed}
    env.update(RABBITMQ_URL=rabbitmq_url, QUEUE_NAME=queue_name, SQLITE_PATH=settings.sqlite_path,
               RUNNER_BATCH_SIZE="50", PYTHONUNBUFFERED="1")
    log = log_path.open("w")
    return subprocess.Popen([sys.executable, "-m", "queue_handlers"], cwd=PROJECT_ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def test_killed_runner_batch_is_redelivered(
        broker: Broker, queue_name: str, rabbitmq_url: str, embedded_settings: Settings,
        search_index: SqliteSearchIndex, runner_processes: list[subprocess.Popen[str]],
        tmp_path: Path) -> None:
    events = [upsert_event(f"plan-{number}", version, deductible=version)
              for number in range(40) for version in (1, 2, 3)]
    broker.publish_events(queue_name, events)

    # Holding the index's write lock keeps the runner's first batch inside the handler.
    lock = sqlite3.connect(sqlite_search_path(embedded_settings), isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        first = start_runner_process(queue_name, rabbitmq_url, embedded_settings,
                                     tmp_path / "first-runner.log")
        runner_processes.append(first)
        wait_until(lambda: broker.depth(queue_name) == len(events) - 50, INDEX_TIMEOUT,
                   "the runner to take a batch of 50")
        # Past the 0.2 s batch window the handler runs, blocked on the lock for up to 30 s.
        time.sleep(1.0)
        assert first.poll() is None, "the runner exited before it was killed"
        first.send_signal(signal.SIGKILL)
        first.wait(SUBPROCESS_EXIT_TIMEOUT)
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    wait_until(lambda: broker.depth(queue_name) == len(events), INDEX_TIMEOUT,
               "the broker to requeue the killed runner's batch")
    assert search_index.plan_versions() == {}

    second = start_runner_process(queue_name, rabbitmq_url, embedded_settings,
                                  tmp_path / "second-runner.log")
    runner_processes.append(second)
    expected = {f"plan-{number}": 3 for number in range(40)}
    wait_until(lambda: search_index.plan_versions() == expected, INDEX_TIMEOUT,
               "every plan to be indexed at its last version", interval=0.2)
    wait_until(lambda: broker.depth(queue_name) == 0, INDEX_TIMEOUT, "the queue to drain")
    second.send_signal(signal.SIGTERM)
    assert second.wait(SUBPROCESS_EXIT_TIMEOUT) == 0

    log_lines = [json.loads(line) for line in (tmp_path / "second-runner.log").read_text().splitlines()
                 if line.startswith("{")]
    applied = [line for line in log_lines if line["message"] == "plan event batch applied"]
    assert sum(line["redelivered"] for line in applied) == 50
    assert sum(line["messages"] for line in applied) == len(events)
    assert search_index.get_plan("plan-39")["planCostShares"]["deductible"] == 3
    assert any(line["message"] == "queue runner stopped" for line in log_lines)
