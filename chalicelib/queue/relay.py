"""The outbox relay: moves committed plan events from the store's outbox to a sink.

A write only appends its event to the outbox inside its own transaction and calls `notify()`.
The relay runs on its own thread or as a standalone command. It reads the oldest entries and
hands them to a sink (RabbitMQ with publisher confirms, or the index handler in the same
process). It removes them from the outbox only after the sink has confirmed them. Delivery is
at least once, because a crash between the confirm and the removal, or two relays on one
store, sends an event twice. The index applies events idempotently, so that is harmless.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.config import Settings
from chalicelib.queue import mq_events
from chalicelib.store.base import OutboxEntry, PlanSnapshot, PlanStore, PlanWrite

if TYPE_CHECKING:
    from chalicelib.queue.publisher import RabbitMqSink

logger = logging.getLogger("plan_api.outbox")

DEFAULT_BATCH_SIZE = 100
DEFAULT_POLL_INTERVAL_SECONDS = 0.5
DEFAULT_MIN_BACKOFF_SECONDS = 0.5
DEFAULT_MAX_BACKOFF_SECONDS = 30.0
# Event ids named in one log line; a failed batch can hold hundreds.
LOGGED_EVENT_IDS = 20

LambdaHandler = Callable[[dict[str, Any], Any], Any]


class DeliveryError(Exception):
    """A sink failed to deliver a batch; the first `delivered` events of it were confirmed."""

    def __init__(self, message: str, *, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


class OutboxSink(Protocol):
    def send(self, events: Sequence[dict[str, Any]]) -> None:
        """Deliver the events in order; return only when all are confirmed, else raise."""

    def keep_alive(self) -> None:
        """Process the connection's pending frames (heartbeats) between batches.

        Connection errors are handled inside, because the next `send` reconnects.
        """

    def close(self) -> None:
        """Release the sink's connection; the next `send` opens a new one."""


class OutboxRelay:
    """Delivers outbox entries to a sink on one thread, retrying forever with backoff."""

    def __init__(self, store: PlanStore, sink: OutboxSink, *, batch_size: int = DEFAULT_BATCH_SIZE,
                 poll_interval: float = DEFAULT_POLL_INTERVAL_SECONDS,
                 min_backoff: float = DEFAULT_MIN_BACKOFF_SECONDS,
                 max_backoff: float = DEFAULT_MAX_BACKOFF_SECONDS,
                 thread_name: str = "outbox-relay") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.store = store
        self.sink = sink
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.thread_name = thread_name
        self.delivered_count = 0
        self.consecutive_failures = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Entries that the sink confirmed but the store failed to remove. The next pass
        # removes them before it reads, so they are not sent a second time.
        self._confirmed_not_removed: list[str] = []

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the relay on a daemon thread; does nothing when it already runs.

        NOTE: on AWS Lambda a thread runs only while an invocation runs, so there events can
        wait in the outbox until the next request unless `python -m queue_handlers relay` or
        a scheduled function also drains it.
        """
        with self._start_lock:
            if self.is_running:
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
            self._thread.start()

    def notify(self) -> None:
        """Wake the relay because a write appended to the outbox; does not wait for delivery."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the relay thread and close the sink; waits up to `timeout` seconds."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("outbox relay did not stop in time",
                               extra={"timeout_seconds": timeout})

    def run(self) -> None:
        """Relay until `stop()` is called; on failure back off and retry forever."""
        logger.info("outbox relay started", extra={
            "sink": type(self.sink).__name__, "batch_size": self.batch_size})
        try:
            while not self._stopping.is_set():
                try:
                    self.relay_pending()
                except Exception as error:  # noqa: BLE001 - any store or sink failure is retried
                    self._wait_after_failure(error)
                    continue

                if self.consecutive_failures:
                    logger.info("outbox relay recovered",
                                extra={"failed_attempts": self.consecutive_failures})
                    self.consecutive_failures = 0

                # Polling also picks up entries that another process appended to the store.
                self._wake.wait(self.poll_interval)
                self._wake.clear()
                self.sink.keep_alive()
        finally:
            self.sink.close()
            logger.info("outbox relay stopped", extra={"delivered": self.delivered_count})

    def relay_pending(self) -> int:
        """Deliver outbox entries until the outbox is empty; return how many were delivered.

        Raises whatever the store or the sink raised; entries confirmed before the failure
        are removed first.
        """
        delivered = 0
        while not self._stopping.is_set():
            if self._confirmed_not_removed:
                self._remove(self._confirmed_not_removed)

            entries = self.store.read_outbox(self.batch_size)
            if not entries:
                break

            delivered += self._deliver(entries)
            if len(entries) < self.batch_size:
                break
        return delivered

    def _deliver(self, entries: list[OutboxEntry]) -> int:
        started = time.perf_counter()
        try:
            self.sink.send([entry.event for entry in entries])
        except DeliveryError as error:
            confirmed = entries[:max(0, min(error.delivered, len(entries)))]
            if confirmed:
                self._remove([entry.entry_id for entry in confirmed])
                self.delivered_count += len(confirmed)
            raise DeliveryError(
                f"{error} (event ids: {_event_ids(entries[len(confirmed):])})",
                delivered=len(confirmed)) from error

        self._remove([entry.entry_id for entry in entries])
        self.delivered_count += len(entries)
        logger.debug("outbox entries delivered", extra={
            "entries": len(entries),
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        })
        return len(entries)

    def _remove(self, entry_ids: list[str]) -> None:
        try:
            self.store.remove_outbox(list(entry_ids))
        except Exception:
            # Keep the ids so the next pass removes them before reading, instead of resending.
            self._confirmed_not_removed = list(entry_ids)
            raise
        self._confirmed_not_removed = []

    def _wait_after_failure(self, error: Exception) -> None:
        self.consecutive_failures += 1
        delay = backoff_delay(self.consecutive_failures, self.min_backoff, self.max_backoff)
        logger.warning("outbox relay failed; retrying", extra={
            "error": f"{type(error).__name__}: {error}",
            "failed_attempts": self.consecutive_failures,
            "retry_in_seconds": round(delay, 2),
        })
        # A failed sink may hold a half-open connection; the next attempt reconnects.
        self.sink.close()
        # Writes that call notify() during the backoff do not cut it short, so a broker outage
        # under load does not turn into a reconnect storm.
        self._stopping.wait(delay)


def backoff_delay(failures: int, minimum: float, maximum: float) -> float:
    """Return the wait before retry number `failures`: doubling from `minimum`, capped at
    `maximum`, with half of it random so that several relays do not retry in step."""
    ceiling = min(maximum, minimum * 2.0 ** min(failures - 1, 32))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _event_ids(entries: Sequence[OutboxEntry]) -> str:
    ids = [str(entry.event.get("eventId")) for entry in entries[:LOGGED_EVENT_IDS]]
    more = len(entries) - len(ids)
    return ", ".join(ids) + (f" and {more} more" if more > 0 else "")


class InProcessSink:
    """Delivers events by calling the index handler directly, in the Amazon MQ event shape.

    Used when no RabbitMQ is configured, so a single process serves and indexes.
    """

    def __init__(self, queue_name: str, handler: LambdaHandler | None = None) -> None:
        self.queue_name = queue_name
        self._handler = handler

    def _resolve_handler(self) -> LambdaHandler:
        if self._handler is None:
            # Imported on first use because the handler module builds the search index.
            from queue_handlers.index_handler import handler

            self._handler = handler
        return self._handler

    def send(self, events: Sequence[dict[str, Any]]) -> None:
        from queue_handlers.index_handler import is_permanent_error

        handler = self._resolve_handler()
        try:
            handler(self._lambda_event(events), None)
            return
        except Exception as error:
            if not is_permanent_error(error):
                raise DeliveryError(f"index handler failed: {type(error).__name__}: {error}",
                                    delivered=0) from error
            named = set(getattr(error, "event_ids", ()) or ())
            if any(event.get("eventId") in named for event in events):
                # The handler applied every other event of the batch.
                for event in events:
                    if event.get("eventId") in named:
                        self._drop(event, error)
                return

        # The error names no event of the batch: apply them one by one to find the bad one.
        for position, event in enumerate(events):
            try:
                handler(self._lambda_event([event]), None)
            except Exception as error:
                if not is_permanent_error(error):
                    raise DeliveryError(
                        f"index handler failed: {type(error).__name__}: {error}",
                        delivered=position) from error
                self._drop(event, error)

    @staticmethod
    def _drop(event: dict[str, Any], error: Exception) -> None:
        # NOTE: without a broker there is no dead-letter queue, so an event that can never be
        # indexed is logged and dropped instead of blocking every later event.
        logger.error("plan event dropped because it can never be indexed", extra={
            "event_id": event.get("eventId"),
            "error": f"{type(error).__name__}: {error}",
        })

    def _lambda_event(self, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
        now = int(time.time())
        messages = [mq_events.message_from_plan_event(event, timestamp=now) for event in events]
        return mq_events.build_event(self.queue_name, messages)

    def keep_alive(self) -> None:
        pass

    def close(self) -> None:
        pass


class NotifyingPlanStore:
    """A PlanStore that wakes the relay after every committed write."""

    def __init__(self, store: PlanStore, notify: Callable[[], None]) -> None:
        self.inner = store
        self._notify = notify

    def get(self, plan_id: str) -> PlanSnapshot | None:
        return self.inner.get(plan_id)

    def list_plans(self, after: str | None, limit: int) -> list[PlanSnapshot]:
        return self.inner.list_plans(after, limit)

    def save(self, write: PlanWrite) -> int:
        version = self.inner.save(write)
        self._notify()
        return version

    def delete(self, plan_id: str, expected_version: int) -> int:
        version = self.inner.delete(plan_id, expected_version)
        self._notify()
        return version

    def read_outbox(self, limit: int) -> list[OutboxEntry]:
        return self.inner.read_outbox(limit)

    def remove_outbox(self, entry_ids: list[str]) -> None:
        self.inner.remove_outbox(entry_ids)

    def check_health(self) -> None:
        self.inner.check_health()


def build_sink(settings: Settings) -> RabbitMqSink | InProcessSink:
    """Return the RabbitMQ sink when RABBITMQ_URL is configured, else the in-process sink."""
    if settings.rabbitmq_url:
        from chalicelib.queue.publisher import RabbitMqSink

        return RabbitMqSink(settings.rabbitmq_url, settings.queue_name)
    return InProcessSink(settings.queue_name)


def build_relay(settings: Settings, store: PlanStore) -> OutboxRelay:
    """Return a relay (not started) from `store` to the sink the settings choose."""
    return OutboxRelay(store, build_sink(settings))


def relay_enabled_in_api(env: Mapping[str, str] | None = None) -> bool:
    """Return False when OUTBOX_RELAY is `off`, e.g. because a standalone relay runs."""
    value = (os.environ if env is None else env).get("OUTBOX_RELAY", "on").strip().lower()
    return value not in ("off", "0", "false", "no")
