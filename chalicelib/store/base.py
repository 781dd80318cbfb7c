"""The storage port: what the plan service needs from a store, whatever the backend.

Every write is one atomic step that checks the plan's version, checks object ownership, writes
the changed objects, and appends one event to the outbox. The store assigns versions: a plan's
version only grows, also across a delete and a re-create, so search-index events order
correctly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from chalicelib.plan_graph import StoredObject, assemble


class VersionConflict(Exception):
    """Another writer changed the plan after it was read; the caller re-reads and retries."""


@dataclass(frozen=True)
class PlanSnapshot:
    """A plan as stored at one version."""

    plan_id: str
    version: int
    etag: str
    root: str
    objects: dict[str, StoredObject]

    def document(self) -> dict[str, Any]:
        return assemble(self.root, self.objects)


@dataclass(frozen=True)
class PlanWrite:
    """A create (`expected_version` None) or a replacement of a whole plan."""

    plan_id: str
    expected_version: int | None
    root: str
    etag: str
    members: list[str]
    upserts: dict[str, StoredObject]
    deletes: list[str]
    document_json: str
    """The whole new plan as JSON text, carried by the outbox event."""


@dataclass(frozen=True)
class OutboxEntry:
    """One event waiting in the outbox; `entry_id` is the store's own id, used to remove it."""

    entry_id: str
    event: dict[str, Any]


class PlanStore(Protocol):
    def get(self, plan_id: str) -> PlanSnapshot | None:
        """Return the plan at its current version, read atomically, or None."""

    def list_plans(self, after: str | None, limit: int) -> list[PlanSnapshot]:
        """Return up to `limit` plans whose ids sort after `after`, in id order."""

    def save(self, write: PlanWrite) -> int:
        """Apply `write` atomically and return the new version.

        Raises PlanAlreadyExists (create of an existing plan), PlanNotFound (replace of a
        missing one), VersionConflict, or OwnershipConflict (an upsert names an object another
        plan owns).
        """

    def delete(self, plan_id: str, expected_version: int) -> int:
        """Delete the plan and every object it owns; return the version of the deletion."""

    def read_outbox(self, limit: int) -> list[OutboxEntry]:
        """Return the oldest outbox entries, oldest first, without removing them."""

    def remove_outbox(self, entry_ids: list[str]) -> None:
        """Remove delivered entries."""

    def check_health(self) -> None:
        """Raise an exception when the backend cannot serve requests."""


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_event(*, plan_id: str, version: int, event_type: str, etag: str | None,
                plan_json: str | None, occurred_at: str) -> dict[str, Any]:
    """Return the event that the outbox carries to the queue for one committed write.

    `event_type` is `plan.upserted` (with the whole plan) or `plan.deleted` (plan is None).
    """
    return {
        "eventId": f"{plan_id}:{version}",
        "type": event_type,
        "planId": plan_id,
        "version": version,
        "etag": etag,
        "occurredAt": occurred_at,
        "plan": json.loads(plan_json) if plan_json else None,
    }
