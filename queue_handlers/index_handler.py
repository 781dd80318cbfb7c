"""Lambda handler that applies plan events from an Amazon MQ (RabbitMQ) event to the search index.

The event is parsed with aws-lambda-powertools' `RabbitMQEvent`. The handler raises when the
batch cannot be applied, so Lambda, the local runner or the in-process sink retries the whole
batch. The index applies events idempotently and in version order, so a retry is harmless.
"""

from __future__ import annotations

import binascii
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.data_classes.rabbit_mq_event import (
    RabbitMessage,
    RabbitMQEvent,
)

from chalicelib.logs import configure_logging
from chalicelib.queue import mq_events
from chalicelib.search.base import SearchIndex
from chalicelib.search.documents import PermanentEventError, combine_permanent

configure_logging()
logger = logging.getLogger("plan_api.index_handler")

EVENT_TYPES = ("plan.upserted", "plan.deleted")
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


class InvalidEventError(PermanentEventError):
    """Messages are malformed, so no retry can apply them. `event_ids` contains their message ids.

    When raised by the handler, the valid messages of the same batch were applied.
    """


class IndexUnavailableError(Exception):
    """Applying the batch failed and the index's health check fails too: the index is down.

    The runner retries such a batch without counting it against its messages, because the
    messages are not at fault.
    """


def is_permanent_error(error: BaseException) -> bool:
    """Return True when retrying the same events can never succeed."""
    return isinstance(error, PermanentEventError)


@dataclass(frozen=True)
class DecodedMessage:
    """One message of the event with its plan event decoded and checked."""

    message_id: str
    redelivered: bool
    plan_event: dict[str, Any]


@dataclass(frozen=True)
class DecodedBatch:
    """The valid messages of an event, and why the others were rejected."""

    messages: list[DecodedMessage]
    rejected: list[InvalidEventError]


def decode_messages(event: dict[str, Any]) -> DecodedBatch:
    """Parse the Lambda event and decode its messages, in queue and message order.

    Raises InvalidEventError when the event itself is not an Amazon MQ event; a malformed
    message only lands in `rejected`.
    """
    try:
        parsed = RabbitMQEvent(event)
        if parsed.event_source != mq_events.EVENT_SOURCE:
            raise InvalidEventError(
                f"eventSource is {parsed.event_source!r}, expected {mq_events.EVENT_SOURCE!r}", [])
        queues = parsed.rmq_messages_by_queue
    except (KeyError, TypeError, AttributeError) as error:
        raise InvalidEventError(
            f"the event is not an Amazon MQ (RabbitMQ) event: missing or invalid {error}",
            []) from None

    decoded: list[DecodedMessage] = []
    rejected: list[InvalidEventError] = []
    for key, messages in queues.items():
        for position, message in enumerate(messages):
            try:
                decoded.append(_decode_message(message, f"{key}[{position}]"))
            except InvalidEventError as error:
                rejected.append(error)
    return DecodedBatch(messages=decoded, rejected=rejected)


def _decode_message(message: RabbitMessage, label: str) -> DecodedMessage:
    try:
        properties = message.basic_properties
        message_id = str(properties.get("messageId") or label)
        content_type = properties.get("contentType")
        redelivered = bool(message.get("redelivered", False))
    except (KeyError, TypeError, AttributeError):
        raise InvalidEventError(f"message {label} has no basicProperties", [label]) from None

    if content_type not in (None, mq_events.JSON_CONTENT_TYPE):
        raise InvalidEventError(
            f"message {message_id} has content type {content_type!r}, expected "
            f"{mq_events.JSON_CONTENT_TYPE!r}", [message_id])
    try:
        plan_event = message.json_data
    except KeyError:
        raise InvalidEventError(f"message {message_id} has no data", [message_id]) from None
    except (binascii.Error, ValueError, TypeError) as error:
        # ValueError covers invalid base64 padding, UnicodeDecodeError and JSONDecodeError.
        raise InvalidEventError(
            f"message {message_id} does not contain base64-encoded JSON: {type(error).__name__}",
            [message_id]) from None

    problem = plan_event_problem(plan_event)
    if problem:
        raise InvalidEventError(f"message {message_id} is not a plan event: {problem}",
                                [message_id])
    return DecodedMessage(message_id=message_id, redelivered=redelivered, plan_event=plan_event)


def plan_event_problem(plan_event: Any) -> str | None:
    """Return what is wrong with a decoded plan event, or None when its shape is valid.

    The index checks the contents (identifier formats, the plan document) itself.
    """
    if not isinstance(plan_event, dict):
        return f"expected a JSON object, got {type(plan_event).__name__}"
    for name in ("eventId", "planId"):
        if not isinstance(plan_event.get(name), str) or not plan_event[name]:
            return f"{name} is missing or not a non-empty string"
    version = plan_event.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return "version is missing or not a positive integer"
    event_type = plan_event.get("type")
    if event_type not in EVENT_TYPES:
        return f"type is {event_type!r}, expected one of {', '.join(EVENT_TYPES)}"
    if event_type == "plan.upserted" and not isinstance(plan_event.get("plan"), dict):
        return "plan.upserted carries no plan object"
    return None


class IndexProvider:
    """Builds the search index from the settings once per process, or returns an injected one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index: SearchIndex | None = None

    def set(self, index: SearchIndex | None) -> None:
        """Use `index` from now on (tests, embedded mode); None builds from settings again."""
        with self._lock:
            self._index = index
            if index is not None:
                index.ensure_index()

    def __call__(self) -> SearchIndex:
        with self._lock:
            if self._index is None:
                from chalicelib.config import load_settings
                from chalicelib.search.factory import build_search_index

                index = build_search_index(load_settings())
                # Only a successfully prepared index is kept, so a failure is retried next batch.
                index.ensure_index()
                self._index = index
            return self._index


def make_handler(index_provider: Callable[[], SearchIndex]) -> LambdaHandler:
    """Return a Lambda handler that applies events to the index `index_provider` returns.

    The handler applies every valid event and then raises PermanentEventError naming the
    messages that can never be applied, if any. Any other error of the index is raised too,
    and the batch may be partly applied, so the caller retries the whole batch.
    """

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        started = time.perf_counter()
        request_id = getattr(context, "aws_request_id", None)
        try:
            batch = decode_messages(event)
        except InvalidEventError as error:
            logger.error("plan event batch rejected", extra={
                "request_id": request_id, "error": str(error)})
            raise

        plan_events = _unique_events(batch.messages)
        plan_ids = {plan_event["planId"] for plan_event in plan_events}
        log_fields: dict[str, Any] = {
            "request_id": request_id,
            "messages": len(batch.messages) + len(batch.rejected),
            "events": len(plan_events),
            "plans": len(plan_ids),
            "redelivered": sum(message.redelivered for message in batch.messages),
        }
        rejected: list[PermanentEventError] = list(batch.rejected)
        if plan_events:
            index = _prepared_index(index_provider, log_fields)
            try:
                index.apply_events(plan_events)
            except PermanentEventError as error:
                rejected.append(error)
            except Exception as error:  # noqa: BLE001 - classified and always raised again
                _raise_classified(index, error, plan_events, log_fields, started)

        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        if rejected:
            failure = combine_permanent(rejected)
            logger.error("plan event batch applied except for permanently invalid events", extra={
                **log_fields, "duration_ms": duration_ms, "rejected_ids": list(failure.event_ids),
                "error": str(failure)})
            raise failure

        logger.info("plan event batch applied", extra={**log_fields, "duration_ms": duration_ms})
        return {"status": "applied", "messages": len(batch.messages), "events": len(plan_events),
                "plans": len(plan_ids), "duration_ms": duration_ms}

    return handle


def _prepared_index(index_provider: Callable[[], SearchIndex],
                    log_fields: dict[str, Any]) -> SearchIndex:
    try:
        return index_provider()
    except Exception as error:
        # Whatever failed, the messages are not at fault, so the batch waits for the index.
        logger.warning("search index cannot be prepared; plan event batch not applied", extra={
            **log_fields, "error": f"{type(error).__name__}: {error}"})
        raise IndexUnavailableError(
            f"the search index cannot be prepared: {type(error).__name__}: {error}") from error


def _unique_events(messages: list[DecodedMessage]) -> list[dict[str, Any]]:
    """Drop repeated events (at-least-once delivery), keeping the first of each eventId."""
    seen: set[str] = set()
    unique = []
    for message in messages:
        event_id = message.plan_event["eventId"]
        if event_id not in seen:
            seen.add(event_id)
            unique.append(message.plan_event)
    return unique


def _raise_classified(index: SearchIndex, error: Exception, plan_events: list[dict[str, Any]],
                      log_fields: dict[str, Any], started: float) -> None:
    failure = {
        **log_fields,
        "error": f"{type(error).__name__}: {error}",
        "event_ids": [plan_event["eventId"] for plan_event in plan_events[:20]],
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    try:
        index.check_health()
    except Exception as health_error:  # noqa: BLE001 - any failed health check means unavailable
        logger.warning("search index unavailable; plan event batch not applied", extra={
            **failure, "health_error": f"{type(health_error).__name__}: {health_error}"})
        raise IndexUnavailableError(
            f"the search index is unavailable: {type(health_error).__name__}: {health_error}"
        ) from error

    logger.warning("plan event batch failed", extra=failure)
    raise error


search_index = IndexProvider()
handler: LambdaHandler = make_handler(search_index)
"""The Lambda entry point: `queue_handlers.index_handler.handler`."""
