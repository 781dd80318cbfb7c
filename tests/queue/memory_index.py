"""A small in-memory SearchIndex whose availability a test can switch, like a server going down.

It applies events with the same rules as the real adapters (newest version wins, deletions are
kept as tombstones, malformed events raise PermanentEventError after the rest are applied).
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from chalicelib.search.base import IndexedObject
from chalicelib.search.documents import raise_permanent, select_latest


class IndexDown(ConnectionError):
    """The in-memory index is switched off."""


class MemoryIndex:
    def __init__(self) -> None:
        self.available = True
        self.applied_batches = 0
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._plans: dict[str, dict[str, Any] | None] = {}

    def _check_available(self) -> None:
        if not self.available:
            raise IndexDown("the in-memory index is switched off")

    def ensure_index(self) -> None:
        self._check_available()

    def apply_events(self, events: list[dict[str, Any]]) -> None:
        self._check_available()
        batch = select_latest(events)
        with self._lock:
            for event in batch.latest:
                if event.version > self._versions.get(event.plan_id, 0):
                    self._versions[event.plan_id] = event.version
                    self._plans[event.plan_id] = None if event.deleted else copy.deepcopy(event.plan)
            self.applied_batches += 1
        raise_permanent(batch.rejected)

    def get_plan(self, plan_id: str) -> dict[str, Any] | None:
        self._check_available()
        with self._lock:
            return copy.deepcopy(self._plans.get(plan_id))

    def find_objects(self, object_id: str) -> list[dict[str, Any]]:
        raise NotImplementedError("the queue tests read whole plans only")

    def find_children(self, object_id: str, parent_type: str) -> list[dict[str, Any]]:
        raise NotImplementedError("the queue tests read whole plans only")

    def plan_versions(self) -> dict[str, int]:
        self._check_available()
        with self._lock:
            return {plan_id: version for plan_id, version in self._versions.items()
                    if self._plans.get(plan_id) is not None}

    def indexed_objects(self, plan_id: str) -> list[IndexedObject]:
        raise NotImplementedError("the queue tests read whole plans only")

    def remove_plan_documents(self, plan_id: str) -> None:
        raise NotImplementedError("the queue tests read whole plans only")

    def check_health(self) -> None:
        self._check_available()
