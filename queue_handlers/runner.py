"""Local runner: consumes the plan-event queue and invokes the index handler, as Lambda's
Amazon MQ event source mapping would.

It collects up to `batch_size` messages. After the first it waits at most
`batch_window_seconds` for more, and closes the batch early once no message arrived for 20 ms.
It builds the Amazon MQ event for the batch, calls the handler, and acknowledges the batch only
after the handler returned. A failing batch is retried with backoff. A message that failed
`max_attempts` times, or that the handler rejects as permanently invalid, is moved to the
dead-letter queue `<queue>.dead`. The handler runs on a worker thread while this thread keeps
servicing the pika connection, because a `BlockingConnection` sends no heartbeats while it is
not serviced.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from chalicelib.config import ConfigurationError, load_settings
from chalicelib.queue import mq_events
from chalicelib.queue.publisher import connection_parameters, dead_letter_queue_name, declare_queues
from chalicelib.queue.relay import backoff_delay

logger = logging.getLogger("plan_api.runner")

DEFAULT_BATCH_SIZE = 50
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BATCH_WINDOW_SECONDS = 0.2
# A batch is closed early when no message arrived for this long.
BATCH_IDLE_GAP_SECONDS = 0.02
ATTEMPTS_HEADER = "x-plan-api-attempts"
DEATH_REASON_HEADER = "x-death-reason"
DEAD_LETTERED_AT_HEADER = "x-dead-lettered-at"
MAX_REASON_LENGTH = 1000
# How long one call into pika may block while the runner waits, so stop() is noticed quickly.
IO_SLICE_SECONDS = 0.5

LambdaHandler = Callable[[dict[str, Any], Any], Any]
BASIC_PROPERTY_NAMES = ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
                        "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
                        "type", "user_id", "app_id", "cluster_id")


class ConsumerCancelledByBroker(Exception):
    """The broker cancelled the consumer, e.g. because the queue was deleted; reconnect."""


@dataclass(frozen=True)
class RunnerSettings:
    rabbitmq_url: str
    queue_name: str
    batch_size: int = DEFAULT_BATCH_SIZE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    batch_window_seconds: float = DEFAULT_BATCH_WINDOW_SECONDS
    min_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    heartbeat_seconds: int = 30


def load_runner_settings(env: Mapping[str, str] | None = None) -> RunnerSettings:
    """Read RABBITMQ_URL and QUEUE_NAME (as the API does), RUNNER_BATCH_SIZE and RUNNER_MAX_ATTEMPTS."""
    env = os.environ if env is None else env
    settings = load_settings(env)
    if not settings.rabbitmq_url:
        raise ConfigurationError(
            "RABBITMQ_URL is not set, so there is no queue to consume; set it to the broker's "
            "AMQP URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2F")
    return RunnerSettings(
        rabbitmq_url=settings.rabbitmq_url,
        queue_name=settings.queue_name,
        batch_size=_positive_int(env, "RUNNER_BATCH_SIZE", DEFAULT_BATCH_SIZE),
        max_attempts=_positive_int(env, "RUNNER_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS),
    )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a positive integer, got {raw!r}.") from None
    if value < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {raw!r}.")
    return value


@dataclass
class Delivery:
    """One unacknowledged message and how often the handler failed on it in this runner."""

    delivery_tag: int
    properties: pika.BasicProperties
    body: bytes
    redelivered: bool
    failures: int = 0

    @property
    def message_id(self) -> str:
        return self.properties.message_id or f"delivery-tag-{self.delivery_tag}"


@dataclass
class RunnerStats:
    batches_applied: int = 0
    messages_acked: int = 0
    messages_dead_lettered: int = 0
    handler_failures: int = 0
    connections: int = 0
    dead_lettered_ids: list[str] = field(default_factory=list)


class QueueRunner:
    """Consumes one queue and feeds the handler; `run()` blocks until `stop()`."""

    def __init__(self, settings: RunnerSettings, handler: LambdaHandler | None = None) -> None:
        self.settings = settings
        self._handler = handler
        self._parameters = connection_parameters(settings.rabbitmq_url,
                                                 heartbeat=settings.heartbeat_seconds)
        self._dead_letter_queue = dead_letter_queue_name(settings.queue_name)
        self._stopping = threading.Event()
        self.connected = threading.Event()
        self.stats = RunnerStats()
        self._executor: ThreadPoolExecutor | None = None
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._publish_channel: BlockingChannel | None = None
        self._pending: deque[Delivery] = deque()
        self._consumer_cancelled = False

    def stop(self) -> None:
        """Ask the runner to finish the current batch and return from `run()`; never blocks."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _resolve_handler(self) -> LambdaHandler:
        if self._handler is None:
            from queue_handlers.index_handler import handler

            self._handler = handler
        return self._handler

    def run(self) -> None:
        """Consume until `stop()`, reconnecting with backoff whenever the broker goes away."""
        logger.info("queue runner started", extra={
            "queue": self.settings.queue_name, "batch_size": self.settings.batch_size,
            "max_attempts": self.settings.max_attempts})
        failures = 0
        # One worker, so batches never overlap, even when a lost connection's batch still runs.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-handler")
        try:
            while not self.stopping:
                connections_before = self.stats.connections
                try:
                    self._consume()
                except (pika.exceptions.AMQPError, OSError, ConsumerCancelledByBroker) as error:
                    if self.stopping:
                        break
                    failures = 1 if self.stats.connections > connections_before else failures + 1
                    delay = backoff_delay(failures, self.settings.min_backoff_seconds,
                                          self.settings.max_backoff_seconds)
                    logger.warning("RabbitMQ connection failed; reconnecting", extra={
                        "error": f"{type(error).__name__}: {error}",
                        "failed_attempts": failures, "retry_in_seconds": round(delay, 2)})
                    self._stopping.wait(delay)
        finally:
            # The handler may still run a batch of a lost connection; wait so it never overlaps
            # the caller's next step.
            self._executor.shutdown(wait=True)
            logger.info("queue runner stopped", extra={
                "batches_applied": self.stats.batches_applied,
                "messages_acked": self.stats.messages_acked,
                "messages_dead_lettered": self.stats.messages_dead_lettered})

    def _consume(self) -> None:
        connection = pika.BlockingConnection(self._parameters)
        self._connection = connection
        self._pending.clear()
        self._consumer_cancelled = False
        try:
            channel = connection.channel()
            declare_queues(channel, self.settings.queue_name)
            channel.basic_qos(prefetch_count=self.settings.batch_size)
            publish_channel = connection.channel()
            publish_channel.confirm_delivery()
            channel.add_on_cancel_callback(self._on_cancel)
            channel.basic_consume(self.settings.queue_name, on_message_callback=self._on_message)
            self._channel, self._publish_channel = channel, publish_channel
            self.stats.connections += 1
            self.connected.set()
            logger.info("consuming", extra={
                "queue": self.settings.queue_name,
                "host": self._parameters.host, "port": self._parameters.port})

            while not self.stopping:
                batch = self._collect_batch()
                if batch:
                    self._process(batch)
        finally:
            self.connected.clear()
            self._channel = self._publish_channel = self._connection = None
            # Unacknowledged deliveries go back to the queue when the connection closes.
            if connection.is_open:
                try:
                    connection.close()
                except (pika.exceptions.AMQPError, OSError):
                    pass

    def _on_message(self, _channel: BlockingChannel, method: pika.spec.Basic.Deliver,
                    properties: pika.BasicProperties, body: bytes) -> None:
        # Runs inside pika's event dispatch, so it only records the delivery.
        self._pending.append(Delivery(delivery_tag=method.delivery_tag, properties=properties,
                                      body=body, redelivered=bool(method.redelivered)))

    def _on_cancel(self, _frame: pika.frame.Method[pika.spec.Basic.Cancel]) -> None:
        self._consumer_cancelled = True

    def _service_io(self, seconds: float) -> None:
        assert self._connection is not None
        self._connection.process_data_events(time_limit=max(0.0, seconds))
        if self._consumer_cancelled:
            raise ConsumerCancelledByBroker(
                f"the broker cancelled the consumer of {self.settings.queue_name!r}")

    def _collect_batch(self) -> list[Delivery]:
        while not self._pending:
            if self.stopping:
                return []
            self._service_io(IO_SLICE_SECONDS)

        # Keep collecting while messages keep arriving, up to the batch window. A lone write
        # then waits one idle gap instead of the whole window before it is indexed.
        deadline = time.monotonic() + self.settings.batch_window_seconds
        while len(self._pending) < self.settings.batch_size and not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            before = len(self._pending)
            self._service_io(min(remaining, BATCH_IDLE_GAP_SECONDS))
            if len(self._pending) == before:
                break

        size = min(len(self._pending), self.settings.batch_size)
        return [self._pending.popleft() for _ in range(size)]

    def _process(self, batch: list[Delivery]) -> None:
        """Apply `batch`, retrying and bisecting on failure, until each message is acked or
        dead-lettered. Returns early, leaving messages unacked, when the runner stops."""
        from queue_handlers.index_handler import IndexUnavailableError, is_permanent_error

        unavailable_attempts = 0
        while True:
            error = self._invoke(batch)
            if error is None:
                self._ack(batch)
                return

            self.stats.handler_failures += 1
            if isinstance(error, IndexUnavailableError):
                # The index is down, not the messages at fault: wait and retry without counting.
                unavailable_attempts += 1
                if not self._pause(self._retry_delay(unavailable_attempts), batch, error):
                    return
                continue

            permanent = is_permanent_error(error)
            if permanent and self._settle_named_failures(batch, error):
                return

            for delivery in batch:
                delivery.failures += 1
            exhausted = any(delivery.failures >= self.settings.max_attempts for delivery in batch)
            if permanent or exhausted:
                if len(batch) == 1:
                    self._dead_letter(batch[0], error, permanent=permanent)
                    return
                # Bisect, so that only the message at fault is dead-lettered.
                middle = len(batch) // 2
                self._process(batch[:middle])
                if not self.stopping:
                    self._process(batch[middle:])
                return

            attempts = max(delivery.failures for delivery in batch)
            if not self._pause(self._retry_delay(attempts), batch, error):
                return

    def _settle_named_failures(self, batch: list[Delivery], error: BaseException) -> bool:
        """Dead-letter the messages a permanent error names and ack the rest of the batch.

        A PermanentEventError promises that the batch's other events were applied. Returns
        False, changing nothing, when the error names none of the batch's messages.
        """
        named = set(getattr(error, "event_ids", ()) or ())
        failed = [delivery for delivery in batch if delivery.message_id in named]
        if not failed:
            return False

        for delivery in failed:
            delivery.failures += 1
            self._dead_letter(delivery, error, permanent=True)
        applied = [delivery for delivery in batch if delivery.message_id not in named]
        if applied:
            # Acked up to the last applied tag: the failed ones are already acknowledged, and
            # acknowledging a tag twice would close the channel.
            self._ack(applied)
        return True

    def _retry_delay(self, attempts: int) -> float:
        return backoff_delay(attempts, self.settings.min_backoff_seconds,
                             self.settings.max_backoff_seconds)

    def _pause(self, seconds: float, batch: list[Delivery], error: BaseException) -> bool:
        """Log the failure and service the connection for `seconds`; False if stopping."""
        logger.warning("plan event batch failed; retrying", extra={
            "error": f"{type(error).__name__}: {error}",
            "messages": len(batch),
            "message_ids": [delivery.message_id for delivery in batch[:20]],
            "max_failures": max(delivery.failures for delivery in batch),
            "retry_in_seconds": round(seconds, 2)})
        deadline = time.monotonic() + seconds
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self._service_io(min(remaining, IO_SLICE_SECONDS))
        return False

    def _invoke(self, batch: list[Delivery]) -> BaseException | None:
        """Run the handler on a worker thread; return its exception, or None on success."""
        event = mq_events.build_event(self.settings.queue_name, [
            mq_events.message_from_delivery(delivery.properties, delivery.body,
                                            redelivered=delivery.redelivered)
            for delivery in batch])
        handler = self._resolve_handler()
        assert self._executor is not None
        future: Future[Any] = self._executor.submit(handler, event, None)
        connection = self._connection
        assert connection is not None
        future.add_done_callback(lambda _future: _wake(connection))
        while not future.done():
            self._service_io(IO_SLICE_SECONDS)
        return future.exception()

    def _ack(self, batch: list[Delivery]) -> None:
        assert self._channel is not None
        # Batches and their halves are resolved in delivery order, so every delivery tag up to
        # the batch's last one is either in the batch or already acknowledged.
        self._channel.basic_ack(delivery_tag=batch[-1].delivery_tag, multiple=True)
        self.stats.batches_applied += 1
        self.stats.messages_acked += len(batch)

    def _dead_letter(self, delivery: Delivery, error: BaseException, *, permanent: bool) -> None:
        assert self._channel is not None and self._publish_channel is not None
        reason = f"{type(error).__name__}: {error}"[:MAX_REASON_LENGTH]
        headers = dict(delivery.properties.headers or {})
        headers[DEATH_REASON_HEADER] = reason
        headers[ATTEMPTS_HEADER] = delivery.failures
        headers[DEAD_LETTERED_AT_HEADER] = datetime.now(UTC).isoformat(timespec="seconds")
        properties = copy_properties(delivery.properties, headers=headers)

        # Published with a confirm before the original is acknowledged, so a crash in between
        # leaves a duplicate, never a loss.
        self._publish_channel.basic_publish(exchange="", routing_key=self._dead_letter_queue,
                                            body=delivery.body, properties=properties,
                                            mandatory=True)
        self._channel.basic_ack(delivery_tag=delivery.delivery_tag)
        self.stats.messages_dead_lettered += 1
        self.stats.dead_lettered_ids.append(delivery.message_id)
        logger.error("plan event moved to the dead-letter queue", extra={
            "message_id": delivery.message_id,
            "plan_id": headers.get(mq_events.PLAN_ID_HEADER),
            "failures": delivery.failures,
            "permanent": permanent,
            "dead_letter_queue": self._dead_letter_queue,
            "reason": reason})


def copy_properties(properties: pika.BasicProperties, **changes: Any) -> pika.BasicProperties:
    """Return a copy of message properties, persistent, with `changes` applied."""
    values = {name: getattr(properties, name) for name in BASIC_PROPERTY_NAMES}
    values["delivery_mode"] = pika.DeliveryMode.Persistent
    values.update(changes)
    return pika.BasicProperties(**values)


def _wake(connection: pika.BlockingConnection) -> None:
    """Make the connection's pending `process_data_events` return now (from any thread)."""
    try:
        connection.add_callback_threadsafe(lambda: None)
    except (pika.exceptions.AMQPError, RuntimeError):
        # The connection is already closed, so no call is waiting to be woken.
        pass
