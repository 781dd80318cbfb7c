"""Command line: `python -m queue_handlers [consume]` runs the queue runner, and
`python -m queue_handlers relay` runs the outbox relay on its own (for example next to API
processes started with OUTBOX_RELAY=off). Both stop cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from chalicelib.config import ConfigurationError, load_settings
from chalicelib.logs import configure_logging

logger = logging.getLogger("plan_api.queue_handlers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m queue_handlers",
        description="Run the local queue runner (default) or the standalone outbox relay.")
    commands = parser.add_subparsers(dest="command", metavar="{consume,relay}")
    commands.add_parser(
        "consume",
        help="consume QUEUE_NAME on RABBITMQ_URL and apply the events to the search index "
             "(batch size RUNNER_BATCH_SIZE, default 50; RUNNER_MAX_ATTEMPTS, default 5)")
    commands.add_parser(
        "relay",
        help="deliver the store's outbox to RabbitMQ, or straight to the index handler when "
             "RABBITMQ_URL is unset")
    return parser


def install_stop_handlers(stop: Callable[[], None]) -> None:
    """Call `stop` on SIGTERM and SIGINT; a second signal exits at once."""
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if received:
            logger.warning("second stop signal; exiting without finishing the batch",
                           extra={"signal": signal.Signals(signum).name})
            raise SystemExit(128 + signum)
        received.append(signum)
        logger.info("stop signal received", extra={"signal": signal.Signals(signum).name})
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run_consumer() -> int:
    from queue_handlers.runner import QueueRunner, load_runner_settings

    runner = QueueRunner(load_runner_settings())
    install_stop_handlers(runner.stop)
    runner.run()
    return 0


def run_relay() -> int:
    from chalicelib.bootstrap import build_store
    from chalicelib.queue.relay import build_relay

    settings = load_settings()
    relay = build_relay(settings, build_store(settings))
    install_stop_handlers(relay.stop)
    relay.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "relay":
            return run_relay()
        return run_consumer()
    except ConfigurationError as error:
        print(f"python -m queue_handlers: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
