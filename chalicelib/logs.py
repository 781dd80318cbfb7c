"""Structured logging: one JSON object per line, with the `extra` fields of each call.

Callers pass ids, statuses and durations as `extra`; tokens, keys and plan bodies are never
logged, because plans are health-insurance data.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)))
_STANDARD_ATTRIBUTES |= {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging() -> None:
    """Send JSON lines to stderr at LOG_LEVEL (INFO by default), once per process."""
    root = logging.getLogger()
    if any(isinstance(handler.formatter, JsonFormatter) for handler in root.handlers):
        return
    # A host such as `chalice local` may have installed a plain-text handler already; it would
    # print every record a second time, so it is replaced.
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:  # subclasses, e.g. pytest's, stay
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
