"""Publish plan events to a durable RabbitMQ queue with publisher confirms.

`RabbitMqSink` is the outbox relay's sink. Its pika `BlockingConnection` is opened, used and
closed by the relay's thread only, because a pika connection must stay on one thread. The
queue helpers here are shared with the runner and the dead-letter script, so every client
declares the queues with the same arguments.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from chalicelib.queue import mq_events
from chalicelib.queue.relay import DeliveryError

logger = logging.getLogger("plan_api.publisher")
# pika logs every connection step at INFO and every failed step of a connection attempt at
# ERROR, several lines per attempt. The relay and the runner log each failure they catch with
# its exception, so pika's own lines are kept only when critical. A level that the
# application configured for "pika" is left alone.
if logging.getLogger("pika").level == logging.NOTSET:
    logging.getLogger("pika").setLevel(logging.CRITICAL)

DEAD_LETTER_SUFFIX = ".dead"
DEFAULT_HEARTBEAT_SECONDS = 30
# A connection attempt to a stopped broker fails fast, so the caller's backoff decides the pace.
DEFAULT_SOCKET_TIMEOUT_SECONDS = 5.0
# The broker blocks publishers during a memory or disk alarm; give up after this long instead
# of hanging the relay.
DEFAULT_BLOCKED_CONNECTION_TIMEOUT_SECONDS = 60.0

# Errors after which the connection or channel cannot be used any more.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
)


def dead_letter_queue_name(queue_name: str) -> str:
    """Return the name of the dead-letter queue that belongs to `queue_name`."""
    return queue_name + DEAD_LETTER_SUFFIX


def connection_parameters(url: str, *, heartbeat: int = DEFAULT_HEARTBEAT_SECONDS,
                          socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_SECONDS) -> pika.URLParameters:
    """Return parameters for an AMQP URL; the URL's own query options take precedence."""
    parameters = pika.URLParameters(url)
    options = parse_qs(urlsplit(url).query)
    if "heartbeat" not in options:
        parameters.heartbeat = heartbeat
    if "socket_timeout" not in options:
        parameters.socket_timeout = socket_timeout
    if "connection_attempts" not in options:
        parameters.connection_attempts = 1
    if "blocked_connection_timeout" not in options:
        parameters.blocked_connection_timeout = DEFAULT_BLOCKED_CONNECTION_TIMEOUT_SECONDS
    return parameters


def declare_queues(channel: BlockingChannel, queue_name: str) -> None:
    """Declare the durable plan-event queue and its dead-letter queue."""
    channel.queue_declare(queue=queue_name, durable=True)
    channel.queue_declare(queue=dead_letter_queue_name(queue_name), durable=True)


def plan_event_properties(plan_event: dict[str, Any]) -> pika.BasicProperties:
    """Return persistent JSON message properties whose message id is the event id."""
    return pika.BasicProperties(
        content_type=mq_events.JSON_CONTENT_TYPE,
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=str(plan_event.get("eventId", "")) or None,
        timestamp=int(time.time()),
        headers=mq_events.plan_event_headers(plan_event),
    )


class RabbitMqSink:
    """Publishes each event as a persistent, mandatory message and waits for its confirm."""

    def __init__(self, url: str, queue_name: str, *,
                 heartbeat: int = DEFAULT_HEARTBEAT_SECONDS) -> None:
        self.queue_name = queue_name
        self._parameters = connection_parameters(url, heartbeat=heartbeat)
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def _open_channel(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel

        self.close()
        connection = pika.BlockingConnection(self._parameters)
        try:
            channel = connection.channel()
            declare_queues(channel, self.queue_name)
            channel.confirm_delivery()
        except BaseException:
            _close_quietly(connection)
            raise
        self._connection = connection
        self._channel = channel
        logger.info("connected to RabbitMQ", extra={
            "host": self._parameters.host, "port": self._parameters.port,
            "queue": self.queue_name})
        return channel

    def send(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish the events in order, each confirmed by the broker before the next.

        Raises DeliveryError naming how many events at the start were confirmed.
        """
        try:
            channel = self._open_channel()
        except CONNECTION_ERRORS as error:
            raise DeliveryError(f"cannot connect to RabbitMQ: {_describe(error)}") from error

        for position, event in enumerate(events):
            try:
                # In confirm mode this returns only after the broker's ack, and raises
                # UnroutableError (mandatory and no queue) or NackError (broker refused).
                channel.basic_publish(
                    exchange="",
                    routing_key=self.queue_name,
                    body=mq_events.encode_plan_event(event),
                    properties=plan_event_properties(event),
                    mandatory=True,
                )
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as error:
                raise DeliveryError(
                    f"RabbitMQ did not accept event {event.get('eventId')}: {_describe(error)}",
                    delivered=position) from error
            except CONNECTION_ERRORS as error:
                self.close()
                raise DeliveryError(
                    f"publishing to RabbitMQ failed: {_describe(error)}",
                    delivered=position) from error

    def keep_alive(self) -> None:
        """Process pending frames, heartbeats included, while the relay is idle."""
        if self._connection is None:
            return
        try:
            self._connection.process_data_events(time_limit=0)
        except CONNECTION_ERRORS as error:
            logger.info("RabbitMQ connection lost while idle; the next batch reconnects",
                        extra={"error": _describe(error)})
            self.close()

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            _close_quietly(connection)


def _close_quietly(connection: pika.BlockingConnection) -> None:
    if connection.is_open:
        try:
            connection.close()
        except CONNECTION_ERRORS:
            # Closing a connection the broker already dropped can fail; it is gone either way.
            pass


def _describe(error: BaseException) -> str:
    text = str(error) or repr(error)
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}"
