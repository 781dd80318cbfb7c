"""Specification of the Lambda index handler, invoked directly with Amazon MQ events."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from chalicelib.queue import mq_events
from chalicelib.search.documents import PermanentEventError
from chalicelib.search.sqlite_index import SqliteSearchIndex
from queue_handlers import index_handler
from queue_handlers.index_handler import (
    IndexUnavailableError,
    InvalidEventError,
    is_permanent_error,
    make_handler,
)
from tests.queue.memory_index import IndexDown, MemoryIndex
from tests.queue.support import delete_event, example_plan, lambda_event, upsert_event

QUEUE = "plan-events"


@pytest.fixture
def handler(search_index: SqliteSearchIndex) -> index_handler.LambdaHandler:
    return make_handler(lambda: search_index)


def raw_message(data: str, message_id: str = "bad-1") -> dict[str, Any]:
    message = mq_events.build_message(b"", message_id=message_id)
    message["data"] = data
    return message


def test_single_event_is_indexed(handler: index_handler.LambdaHandler,
                                 search_index: SqliteSearchIndex) -> None:
    summary = handler(lambda_event(QUEUE, [upsert_event("plan-a", 1)]), None)

    assert summary["status"] == "applied"
    assert summary["messages"] == 1
    assert summary["plans"] == 1
    assert search_index.get_plan("plan-a") == example_plan("plan-a")
    assert search_index.plan_versions() == {"plan-a": 1}


def test_batch_applies_newest_version_per_plan(handler: index_handler.LambdaHandler,
                                               search_index: SqliteSearchIndex) -> None:
    events = [
        upsert_event("plan-a", 2, deductible=200),
        upsert_event("plan-a", 1, deductible=100),
        upsert_event("plan-b", 1),
        delete_event("plan-b", 2),
        upsert_event("plan-c", 5, deductible=500),
    ]

    summary = handler(lambda_event(QUEUE, events), None)

    assert summary == {**summary, "messages": 5, "events": 5, "plans": 3}
    assert search_index.plan_versions() == {"plan-a": 2, "plan-c": 5}
    assert search_index.get_plan("plan-a")["planCostShares"]["deductible"] == 200
    assert search_index.get_plan("plan-b") is None


def test_older_event_in_later_batch_changes_nothing(handler: index_handler.LambdaHandler,
                                                    search_index: SqliteSearchIndex) -> None:
    handler(lambda_event(QUEUE, [upsert_event("plan-a", 3, deductible=300)]), None)
    handler(lambda_event(QUEUE, [upsert_event("plan-a", 2, deductible=200)]), None)
    handler(lambda_event(QUEUE, [delete_event("plan-z", 4)]), None)
    handler(lambda_event(QUEUE, [upsert_event("plan-z", 3)]), None)

    assert search_index.get_plan("plan-a")["planCostShares"]["deductible"] == 300
    assert search_index.get_plan("plan-z") is None


def test_repeated_batch_is_idempotent(handler: index_handler.LambdaHandler,
                                      search_index: SqliteSearchIndex) -> None:
    event = lambda_event(QUEUE, [upsert_event("plan-a", 1), upsert_event("plan-a", 1)])

    first = handler(event, None)
    second = handler(lambda_event(QUEUE, [upsert_event("plan-a", 1)], redelivered=True), None)

    assert first["events"] == 1
    assert second["status"] == "applied"
    assert search_index.plan_versions() == {"plan-a": 1}
    assert len(search_index.indexed_objects("plan-a")) == 5


def test_non_ascii_data_round_trips(handler: index_handler.LambdaHandler,
                                                     search_index: SqliteSearchIndex) -> None:
    event = upsert_event("plan-u", 1)
    event["plan"]["linkedPlanServices"][0]["linkedService"]["name"] = "Jährliche Untersuchung ✓"
    message = mq_events.message_from_plan_event(event)

    assert json.loads(base64.b64decode(message["data"]).decode("utf-8")) == event
    handler(mq_events.build_event(QUEUE, [message]), None)

    stored = search_index.get_plan("plan-u")
    assert stored["linkedPlanServices"][0]["linkedService"]["name"] == "Jährliche Untersuchung ✓"


@pytest.mark.parametrize("data", [
    "%%% not base64 %%%",
    base64.b64encode(b"\xff\xfe not utf-8").decode(),
    base64.b64encode(b"{not json").decode(),
    base64.b64encode(b"[1, 2, 3]").decode(),
])
def test_undecodable_message_is_permanent_error(handler: index_handler.LambdaHandler,
                                                search_index: SqliteSearchIndex,
                                                data: str) -> None:
    with pytest.raises(InvalidEventError) as raised:
        handler(mq_events.build_event(QUEUE, [raw_message(data)]), None)

    assert raised.value.event_ids == ("bad-1",)
    assert is_permanent_error(raised.value)
    assert search_index.plan_versions() == {}


@pytest.mark.parametrize("missing", ["eventId", "planId", "version", "type", "plan"])
def test_event_missing_field_is_permanent_error(handler: index_handler.LambdaHandler,
                                                missing: str) -> None:
    event = upsert_event("plan-a", 1)
    del event[missing]
    message = mq_events.build_message(mq_events.encode_plan_event(event), message_id="m-1")

    with pytest.raises(PermanentEventError) as raised:
        handler(mq_events.build_event(QUEUE, [message]), None)

    assert raised.value.event_ids == ("m-1",)


def test_invalid_message_spares_valid_ones(handler: index_handler.LambdaHandler,
                                                   search_index: SqliteSearchIndex) -> None:
    good = [mq_events.message_from_plan_event(upsert_event(plan_id, 1))
            for plan_id in ("plan-a", "plan-b")]
    event = mq_events.build_event(QUEUE, [good[0], raw_message("{}", "bad-1"), good[1]])

    with pytest.raises(InvalidEventError) as raised:
        handler(event, None)

    assert raised.value.event_ids == ("bad-1",)
    assert search_index.plan_versions() == {"plan-a": 1, "plan-b": 1}


def test_index_rejection_names_the_event(handler: index_handler.LambdaHandler,
                                         search_index: SqliteSearchIndex) -> None:
    bad = upsert_event("plan-bad", 1)
    bad["planId"] = "not a valid id!"
    bad["plan"]["objectId"] = "not a valid id!"

    with pytest.raises(PermanentEventError) as raised:
        handler(lambda_event(QUEUE, [upsert_event("plan-a", 1), bad]), None)

    assert raised.value.event_ids == ("plan-bad:1",)
    assert search_index.plan_versions() == {"plan-a": 1}


@pytest.mark.parametrize("event", [
    {},
    {"eventSource": "aws:sqs", "rmqMessagesByQueue": {}},
    {"eventSource": "aws:rmq", "rmqMessagesByQueue": "not an object"},
    None,
])
def test_non_rabbitmq_event_is_rejected(handler: index_handler.LambdaHandler, event: Any) -> None:
    with pytest.raises(InvalidEventError):
        handler(event, None)


def test_index_failure_with_healthy_index_reraises() -> None:
    class FailingIndex(MemoryIndex):
        def apply_events(self, events: list[dict[str, Any]]) -> None:
            raise TimeoutError("bulk request timed out")

    handler = make_handler(FailingIndex)

    with pytest.raises(TimeoutError):
        handler(lambda_event(QUEUE, [upsert_event("plan-a", 1)]), None)


def test_unreachable_index_raises_index_unavailable() -> None:
    index = MemoryIndex()
    index.available = False
    handler = make_handler(lambda: index)

    with pytest.raises(IndexUnavailableError) as raised:
        handler(lambda_event(QUEUE, [upsert_event("plan-a", 1)]), None)

    assert isinstance(raised.value.__cause__, IndexDown)
    assert not is_permanent_error(raised.value)


def test_index_that_cannot_be_prepared_is_unavailable() -> None:
    def unreachable_index() -> MemoryIndex:
        raise ConnectionRefusedError("connection refused by 127.0.0.1:9200")

    handler = make_handler(unreachable_index)

    with pytest.raises(IndexUnavailableError) as raised:
        handler(lambda_event(QUEUE, [upsert_event("plan-a", 1)]), None)

    assert isinstance(raised.value.__cause__, ConnectionRefusedError)


def test_one_json_log_line_per_batch(handler: index_handler.LambdaHandler,
                                     caplog: pytest.LogCaptureFixture) -> None:
    events = [upsert_event("plan-a", 1), upsert_event("plan-b", 1), upsert_event("plan-a", 2)]

    with caplog.at_level(logging.INFO, logger="plan_api.index_handler"):
        handler(lambda_event(QUEUE, events, redelivered=True), None)

    records = [record for record in caplog.records if record.name == "plan_api.index_handler"]
    assert len(records) == 1
    record = records[0]
    assert record.getMessage() == "plan event batch applied"
    assert (record.messages, record.events, record.plans, record.redelivered) == (3, 3, 2, 3)
    assert record.duration_ms >= 0
    assert "Yearly physical" not in json.dumps(vars(record), default=str)


def test_module_handler_uses_injected_index() -> None:
    index = MemoryIndex()
    index_handler.search_index.set(index)
    try:
        index_handler.handler(lambda_event(QUEUE, [upsert_event("plan-a", 4)]), None)
    finally:
        index_handler.search_index.set(None)

    assert index.plan_versions() == {"plan-a": 4}
