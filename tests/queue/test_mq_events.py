"""Specification of the Amazon MQ (RabbitMQ) Lambda event that the runner and the sink build."""

from __future__ import annotations

import base64
import json

import pika
from aws_lambda_powertools.utilities.data_classes.rabbit_mq_event import RabbitMQEvent

from chalicelib.queue import mq_events
from tests.queue.support import upsert_event


def test_event_has_lambda_top_level_shape() -> None:
    event = mq_events.build_event("plans", [])

    assert event["eventSource"] == "aws:rmq"
    assert event["eventSourceArn"] == "arn:aws:mq:local:000000000000:broker:plan-api:local"
    assert event["rmqMessagesByQueue"] == {"plans::/": []}


def test_plan_event_message_round_trips_through_powertools() -> None:
    plan_event = upsert_event("plan-é-1", 3)
    message = mq_events.message_from_plan_event(plan_event, redelivered=True, timestamp=2021)

    parsed = RabbitMQEvent(mq_events.build_event("plans", [message]))
    [received] = parsed.rmq_messages_by_queue["plans::/"]

    assert received.json_data == plan_event
    assert received.redelivered is True
    assert received.basic_properties.message_id == "plan-é-1:3"
    assert received.basic_properties.content_type == "application/json"
    assert received.basic_properties.delivery_mode == 2
    assert received.basic_properties.body_size == len(mq_events.encode_plan_event(plan_event))
    assert base64.b64decode(received.data) == mq_events.encode_plan_event(plan_event)


def test_text_headers_are_encoded_as_byte_lists() -> None:
    message = mq_events.build_message(b"{}", message_id="m-1",
                                      headers={"x-plan-id": "p1", "x-plan-version": 7})

    headers = message["basicProperties"]["headers"]

    assert headers["x-plan-id"] == {"bytes": list(b"p1")}
    assert headers["x-plan-version"] == 7
    assert mq_events.decode_headers(headers) == {"x-plan-id": "p1", "x-plan-version": 7}


def test_timestamp_uses_lambda_format() -> None:
    assert mq_events.format_timestamp(2021) == "Jan 1, 1970, 12:33:41 AM"
    assert mq_events.format_timestamp(1_700_000_000) == "Nov 14, 2023, 10:13:20 PM"
    assert mq_events.format_timestamp(None) is None


def test_message_from_delivery_keeps_broker_properties() -> None:
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                      message_id="p1:1", timestamp=1_700_000_000,
                                      headers={"x-plan-id": "p1"}, app_id="plan-api")
    body = json.dumps({"eventId": "p1:1"}).encode()

    message = mq_events.message_from_delivery(properties, body, redelivered=True)

    assert message["redelivered"] is True
    assert message["basicProperties"]["messageId"] == "p1:1"
    assert message["basicProperties"]["appId"] == "plan-api"
    assert message["basicProperties"]["timestamp"] == "Nov 14, 2023, 10:13:20 PM"
    assert message["basicProperties"]["bodySize"] == len(body)
    assert message["basicProperties"]["correlationId"] is None
    assert base64.b64decode(message["data"]) == body
