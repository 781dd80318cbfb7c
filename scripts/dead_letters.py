#!/usr/bin/env python3
"""Inspect and replay the plan events that the queue runner moved to the dead-letter queue.

`list` prints one line per dead-lettered message (message id, plan id, version, attempts,
reason; never the plan body) and leaves the messages in place. `replay` moves messages back
to the main queue: each is published with a publisher confirm before it is removed from the
dead-letter queue, so a failure in between duplicates it rather than losing it.
Connection settings come from RABBITMQ_URL and QUEUE_NAME, like the API and the runner.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

# Run as `python scripts/dead_letters.py`, the project root is not on the import path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chalicelib.config import ConfigurationError, load_settings
from chalicelib.queue import mq_events
from chalicelib.queue.publisher import connection_parameters, dead_letter_queue_name, declare_queues
from queue_handlers.runner import (
    ATTEMPTS_HEADER,
    DEAD_LETTERED_AT_HEADER,
    DEATH_REASON_HEADER,
    copy_properties,
)

# Headers that describe the message's failure; replay removes them so the runner starts afresh.
FAILURE_HEADERS = (DEATH_REASON_HEADER, ATTEMPTS_HEADER, DEAD_LETTERED_AT_HEADER)


@dataclass(frozen=True)
class DeadLetter:
    """The listing of one dead-lettered message, as `list` prints it."""

    message_id: str
    plan_id: str
    version: str
    attempts: str
    dead_lettered_at: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return dict(vars(self))


def describe(properties: pika.BasicProperties, body: bytes) -> DeadLetter:
    """Return the listing of one message; the body is read only for its plan id and version."""
    headers = properties.headers or {}
    plan_id = _text(headers.get(mq_events.PLAN_ID_HEADER))
    version = _text(headers.get(mq_events.PLAN_VERSION_HEADER))
    if not plan_id or not version:
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        if isinstance(event, dict):
            plan_id = plan_id or _text(event.get("planId"))
            version = version or _text(event.get("version"))
    return DeadLetter(
        message_id=properties.message_id or "-",
        plan_id=plan_id or "-",
        version=version or "-",
        attempts=_text(headers.get(ATTEMPTS_HEADER)) or "-",
        dead_lettered_at=_text(headers.get(DEAD_LETTERED_AT_HEADER)) or "-",
        reason=_text(headers.get(DEATH_REASON_HEADER)) or "-",
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def list_dead_letters(channel: BlockingChannel, queue_name: str, limit: int) -> list[DeadLetter]:
    """Return up to `limit` dead letters, oldest first, and leave them all in the queue."""
    dead_queue = dead_letter_queue_name(queue_name)
    listed: list[DeadLetter] = []
    last_tag = 0
    try:
        while len(listed) < limit:
            method, properties, body = channel.basic_get(queue=dead_queue, auto_ack=False)
            if method is None:
                break
            last_tag = method.delivery_tag
            listed.append(describe(properties, body))
    finally:
        if last_tag:
            # Requeued messages keep their place in the queue.
            channel.basic_nack(delivery_tag=last_tag, multiple=True, requeue=True)
    return listed


def replay_dead_letters(channel: BlockingChannel, publish_channel: BlockingChannel,
                        queue_name: str, limit: int) -> list[DeadLetter]:
    """Move up to `limit` dead letters back to the main queue and return them."""
    dead_queue = dead_letter_queue_name(queue_name)
    replayed: list[DeadLetter] = []
    while len(replayed) < limit:
        method, properties, body = channel.basic_get(queue=dead_queue, auto_ack=False)
        if method is None:
            break
        headers = {key: value for key, value in (properties.headers or {}).items()
                   if key not in FAILURE_HEADERS}
        publish_channel.basic_publish(exchange="", routing_key=queue_name, body=body,
                                      properties=copy_properties(properties, headers=headers),
                                      mandatory=True)
        channel.basic_ack(delivery_tag=method.delivery_tag)
        replayed.append(describe(properties, body))
    return replayed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dead_letters.py",
        description="List or replay the messages in the dead-letter queue <QUEUE_NAME>.dead.")
    parser.add_argument("command", choices=("list", "replay"),
                        help="list: show dead letters and keep them; replay: move them back "
                             "to the main queue")
    parser.add_argument("--limit", type=int, default=100,
                        help="maximum number of messages to list or replay (default: 100)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per message instead of a table")
    parser.add_argument("--queue", help="main queue name (default: QUEUE_NAME or plan-events)")
    return parser


def print_dead_letters(dead_letters: list[DeadLetter], *, as_json: bool) -> None:
    if as_json:
        for dead_letter in dead_letters:
            print(json.dumps(dead_letter.to_json()))
        return
    print("message_id\tplan_id\tversion\tattempts\tdead_lettered_at\treason")
    for dead_letter in dead_letters:
        print("\t".join((dead_letter.message_id, dead_letter.plan_id, dead_letter.version,
                         dead_letter.attempts, dead_letter.dead_lettered_at,
                         dead_letter.reason.replace("\n", " "))))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.limit < 1:
        print("dead_letters.py: --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(f"dead_letters.py: {error}", file=sys.stderr)
        return 2
    if not settings.rabbitmq_url:
        print("dead_letters.py: RABBITMQ_URL is not set; set it to the broker's AMQP URL",
              file=sys.stderr)
        return 2
    queue_name = args.queue or settings.queue_name

    try:
        connection = pika.BlockingConnection(connection_parameters(settings.rabbitmq_url))
    except pika.exceptions.AMQPError as error:
        print(f"dead_letters.py: cannot connect to RabbitMQ: {type(error).__name__}: {error}",
              file=sys.stderr)
        return 1
    try:
        channel = connection.channel()
        declare_queues(channel, queue_name)
        if args.command == "list":
            depth = channel.queue_declare(queue=dead_letter_queue_name(queue_name), durable=True,
                                          passive=True).method.message_count
            listed = list_dead_letters(channel, queue_name, args.limit)
            print_dead_letters(listed, as_json=args.json)
            print(f"{len(listed)} of {depth} dead letters listed from "
                  f"{dead_letter_queue_name(queue_name)}", file=sys.stderr)
        else:
            publish_channel = connection.channel()
            publish_channel.confirm_delivery()
            replayed = replay_dead_letters(channel, publish_channel, queue_name, args.limit)
            print_dead_letters(replayed, as_json=args.json)
            print(f"{len(replayed)} dead letters moved back to {queue_name}", file=sys.stderr)
    except pika.exceptions.AMQPError as error:
        print(f"dead_letters.py: RabbitMQ failed: {type(error).__name__}: {error}",
              file=sys.stderr)
        return 1
    finally:
        if connection.is_open:
            connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
