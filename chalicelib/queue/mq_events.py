"""Build the event that Lambda receives from an Amazon MQ (RabbitMQ) event source.

The runner and the in-process sink build it locally, so the queue handlers see the same shape
on a laptop and on Lambda. The shape follows AWS's documented example: string header values
are sent as `{"bytes": [...]}`, `timestamp` is formatted like "Jan 1, 1970, 12:33:41 AM" (UTC),
and properties the message lacks are null.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pika

EVENT_SOURCE = "aws:rmq"
LOCAL_BROKER_ARN = "arn:aws:mq:local:000000000000:broker:plan-api:local"
DEFAULT_VHOST = "/"
JSON_CONTENT_TYPE = "application/json"
PERSISTENT_DELIVERY_MODE = 2

# Headers that the publisher sets so that operators can see which plan a message is about
# (for example in the dead-letter listing) without decoding its body.
PLAN_ID_HEADER = "x-plan-id"
PLAN_VERSION_HEADER = "x-plan-version"
EVENT_TYPE_HEADER = "x-event-type"


def queue_key(queue_name: str, vhost: str = DEFAULT_VHOST) -> str:
    """Return the `rmqMessagesByQueue` key of a queue, `<queue>::<vhost>`."""
    return f"{queue_name}::{vhost}"


def plan_event_headers(plan_event: Mapping[str, Any]) -> dict[str, Any]:
    """Return the AMQP headers that identify a plan event's plan, version and type."""
    return {
        PLAN_ID_HEADER: str(plan_event.get("planId", "")),
        PLAN_VERSION_HEADER: plan_event.get("version"),
        EVENT_TYPE_HEADER: str(plan_event.get("type", "")),
    }


def encode_plan_event(plan_event: Mapping[str, Any]) -> bytes:
    """Serialize a plan event as the UTF-8 JSON body of a message."""
    return json.dumps(plan_event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def format_timestamp(epoch_seconds: int | None) -> str | None:
    """Format an AMQP timestamp (seconds since the epoch) the way the Lambda event does."""
    if epoch_seconds is None:
        return None
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    hour = moment.hour % 12 or 12
    return f"{moment:%b} {moment.day}, {moment.year}, {hour}:{moment:%M:%S} {moment:%p}"


def encode_header_value(value: Any) -> Any:
    """Encode one header value as Lambda does: text becomes `{"bytes": [...]}`."""
    if isinstance(value, bytes):
        return {"bytes": list(value)}
    if isinstance(value, str):
        return {"bytes": list(value.encode("utf-8"))}
    if isinstance(value, Mapping):
        return {str(key): encode_header_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_header_value(item) for item in value]
    if isinstance(value, datetime):
        return format_timestamp(int(value.timestamp()))
    return value


def decode_header_value(value: Any) -> Any:
    """Undo `encode_header_value`: `{"bytes": [...]}` becomes text again."""
    if isinstance(value, Mapping):
        if set(value) == {"bytes"} and isinstance(value["bytes"], list):
            return bytes(value["bytes"]).decode("utf-8", errors="replace")
        return {key: decode_header_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_header_value(item) for item in value]
    return value


def decode_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return a message's headers from the Lambda event with text values decoded."""
    return {key: decode_header_value(value) for key, value in (headers or {}).items()}


def build_message(body: bytes, *, message_id: str | None, headers: Mapping[str, Any] | None = None,
                  redelivered: bool = False, content_type: str | None = JSON_CONTENT_TYPE,
                  delivery_mode: int | None = PERSISTENT_DELIVERY_MODE,
                  timestamp: int | None = None, content_encoding: str | None = None,
                  priority: int | None = None, correlation_id: str | None = None,
                  reply_to: str | None = None, expiration: str | None = None,
                  message_type: str | None = None, user_id: str | None = None,
                  app_id: str | None = None, cluster_id: str | None = None) -> dict[str, Any]:
    """Return one element of `rmqMessagesByQueue[...]`: properties, redelivered flag, base64 data."""
    return {
        "basicProperties": {
            "contentType": content_type,
            "contentEncoding": content_encoding,
            "headers": {key: encode_header_value(value) for key, value in (headers or {}).items()},
            "deliveryMode": delivery_mode,
            "priority": priority,
            "correlationId": correlation_id,
            "replyTo": reply_to,
            "expiration": expiration,
            "messageId": message_id,
            "timestamp": format_timestamp(timestamp),
            "type": message_type,
            "userId": user_id,
            "appId": app_id,
            "clusterId": cluster_id,
            "bodySize": len(body),
        },
        "redelivered": redelivered,
        "data": base64.b64encode(body).decode("ascii"),
    }


def message_from_plan_event(plan_event: Mapping[str, Any], *, redelivered: bool = False,
                            timestamp: int | None = None) -> dict[str, Any]:
    """Return the Lambda message for a plan event as the publisher would send it."""
    return build_message(
        encode_plan_event(plan_event),
        message_id=str(plan_event.get("eventId")) if plan_event.get("eventId") else None,
        headers=plan_event_headers(plan_event),
        redelivered=redelivered,
        timestamp=int(time.time()) if timestamp is None else timestamp,
    )


def message_from_delivery(properties: pika.BasicProperties, body: bytes, *,
                          redelivered: bool) -> dict[str, Any]:
    """Return the Lambda message for a message that pika received from the broker."""
    return build_message(
        body,
        message_id=properties.message_id,
        headers=properties.headers,
        redelivered=redelivered,
        content_type=properties.content_type,
        delivery_mode=properties.delivery_mode,
        timestamp=properties.timestamp,
        content_encoding=properties.content_encoding,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        expiration=properties.expiration,
        message_type=properties.type,
        user_id=properties.user_id,
        app_id=properties.app_id,
        cluster_id=properties.cluster_id,
    )


def build_event(queue_name: str, messages: Sequence[Mapping[str, Any]], *,
                vhost: str = DEFAULT_VHOST,
                event_source_arn: str = LOCAL_BROKER_ARN) -> dict[str, Any]:
    """Return the whole Lambda event for one batch of messages from one queue."""
    return {
        "eventSource": EVENT_SOURCE,
        "eventSourceArn": event_source_arn,
        "rmqMessagesByQueue": {queue_key(queue_name, vhost): [dict(message) for message in messages]},
    }
