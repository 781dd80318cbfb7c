"""The search-index port: what the queue handlers write and the `es_*` routes read.

An event (see `chalicelib.store.base.build_event`) carries a plan's whole state at one version,
or its deletion. Applying events is idempotent and ordered by version: an event older than what
the index already holds for that plan changes nothing, and a deleted plan never comes back
through an older event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class IndexedObject:
    """One indexed stored object, as the operator commands compare it with the store."""

    identity: str
    plan_id: str
    plan_version: int


class SearchIndex(Protocol):
    def ensure_index(self) -> None:
        """Create the index and its mapping when missing; safe to call repeatedly."""

    def apply_events(self, events: list[dict[str, Any]]) -> None:
        """Apply a batch of plan events; raise on any failure so the batch is retried."""

    def get_plan(self, plan_id: str) -> dict[str, Any] | None:
        """Rebuild the plan document from the index, or None when it is not indexed."""

    def find_objects(self, object_id: str) -> list[dict[str, Any]]:
        """Return every indexed object with this objectId, each with its nested children."""

    def find_children(self, object_id: str, parent_type: str) -> list[dict[str, Any]]:
        """Return the indexed children of the object(s) with this objectId whose objectType or
        relation is `parent_type`, each with its nested children."""

    def plan_versions(self) -> dict[str, int]:
        """Return the version of every plan in the index, excluding deleted plans."""

    def indexed_objects(self, plan_id: str) -> list[IndexedObject]:
        """Return every document indexed for one plan."""

    def remove_plan_documents(self, plan_id: str) -> None:
        """Delete every document of one plan (operator repair of orphans)."""

    def check_health(self) -> None:
        """Raise an exception when the index cannot serve requests."""
