"""The plan service: validates requests, applies preconditions and merges, and writes through the store.

Writes are optimistic: read the plan, check `If-Match` against that read, build the new state,
and save it with the version that was read. When another writer got there first the store
raises VersionConflict and the whole step repeats on a fresh read, so `If-Match` is always
judged against the state the write replaces.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from chalicelib.conditional import if_match_passes
from chalicelib.errors import (InvalidDocument, MalformedRequest, PlanNotFound, PreconditionFailed,
                               Violation, WriteContention)
from chalicelib.merge import merge_patch
from chalicelib.plan_graph import (canonical_json, check_document_shape, check_plan_id,
                                   compute_etag, decompose, diff_objects, identity_of)
from chalicelib.schema import validate_plan
from chalicelib.store.base import PlanSnapshot, PlanStore, PlanWrite, VersionConflict

logger = logging.getLogger(__name__)

MAX_WRITE_ATTEMPTS = 8
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

Result = TypeVar("Result")


@dataclass(frozen=True)
class PlanState:
    """A plan document with the ETag and version it has in the store."""

    plan_id: str
    document: dict[str, Any]
    etag: str
    version: int


@dataclass(frozen=True)
class PlanPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


class PlanService:
    def __init__(self, store: PlanStore, schema_path: str) -> None:
        self.store = store
        self.schema_path = schema_path

    def create(self, document: Any) -> PlanState:
        objects = self._validated_objects(document)
        plan_id = document["objectId"]
        check_plan_id(plan_id)
        etag = compute_etag(document)
        version = self.store.save(PlanWrite(
            plan_id=plan_id, expected_version=None, root=identity_of(document["objectType"], plan_id),
            etag=etag, members=list(objects), upserts=objects, deletes=[],
            document_json=canonical_json(document)))
        return PlanState(plan_id, document, etag, version)

    def get(self, plan_id: str) -> PlanState:
        check_plan_id(plan_id)
        snapshot = self._require(plan_id)
        return PlanState(plan_id, snapshot.document(), snapshot.etag, snapshot.version)

    def list(self, cursor: str | None, limit: int) -> PlanPage:
        after = decode_cursor(cursor) if cursor else None
        snapshots = self.store.list_plans(after, limit + 1)
        has_more = len(snapshots) > limit
        snapshots = snapshots[:limit]
        next_cursor = encode_cursor(snapshots[-1].plan_id) if has_more and snapshots else None
        return PlanPage([snapshot.document() for snapshot in snapshots], next_cursor)

    def replace(self, plan_id: str, document: Any, if_match: str | None) -> PlanState:
        check_plan_id(plan_id)
        objects = self._validated_objects(document)
        if document["objectId"] != plan_id:
            raise InvalidDocument(
                f"The body's objectId '{document['objectId']}' does not match the URL's '{plan_id}'.",
                errors=[Violation("/objectId", f"must equal '{plan_id}'")])

        def attempt(current: PlanSnapshot) -> PlanState:
            return self._write_if_changed(current, document, objects)

        return self._with_retries(plan_id, if_match, attempt)

    def patch(self, plan_id: str, patch: Any, if_match: str | None) -> PlanState:
        check_plan_id(plan_id)
        if not isinstance(patch, dict):
            raise InvalidDocument("A merge patch must be a JSON object.",
                                  errors=[Violation("", "must be an object")])
        check_document_shape(patch)
        if "objectId" in patch and patch["objectId"] != plan_id:
            raise InvalidDocument(
                f"The patch's objectId '{patch['objectId']}' does not match the URL's '{plan_id}'.",
                errors=[Violation("/objectId", f"must equal '{plan_id}' or be left out")])

        def attempt(current: PlanSnapshot) -> PlanState:
            merged = merge_patch(current.document(), patch)
            objects = self._validated_objects(merged)
            return self._write_if_changed(current, merged, objects)

        return self._with_retries(plan_id, if_match, attempt)

    def delete(self, plan_id: str, if_match: str | None) -> None:
        check_plan_id(plan_id)

        def attempt(current: PlanSnapshot) -> None:
            self.store.delete(plan_id, current.version)

        self._with_retries(plan_id, if_match, attempt)

    def _validated_objects(self, document: Any) -> dict[str, Any]:
        if not isinstance(document, dict):
            raise InvalidDocument("A plan must be a JSON object.",
                                  errors=[Violation("", "must be an object")])
        check_document_shape(document)
        validate_plan(document, self.schema_path)
        return decompose(document)

    def _write_if_changed(self, current: PlanSnapshot, document: dict[str, Any],
                          objects: dict[str, Any]) -> PlanState:
        etag = compute_etag(document)
        if etag == current.etag:
            # Nothing changed, so nothing is written and no event is sent.
            return PlanState(current.plan_id, document, etag, current.version)
        upserts, deletes = diff_objects(current.objects, objects)
        version = self.store.save(PlanWrite(
            plan_id=current.plan_id, expected_version=current.version,
            root=identity_of(document["objectType"], current.plan_id), etag=etag,
            members=list(objects), upserts=upserts, deletes=deletes,
            document_json=canonical_json(document)))
        return PlanState(current.plan_id, document, etag, version)

    def _require(self, plan_id: str) -> PlanSnapshot:
        snapshot = self.store.get(plan_id)
        if snapshot is None:
            raise PlanNotFound(f"No plan with id '{plan_id}'.")
        return snapshot

    def _with_retries(self, plan_id: str, if_match: str | None,
                      attempt: Callable[[PlanSnapshot], Result]) -> Result:
        for attempt_number in range(1, MAX_WRITE_ATTEMPTS + 1):
            current = self._require(plan_id)
            if not if_match_passes(if_match, current.etag):
                raise PreconditionFailed(
                    f"If-Match does not match the current ETag of plan '{plan_id}'.",
                    headers={"ETag": current.etag})
            try:
                return attempt(current)
            except VersionConflict:
                logger.info("write conflict, retrying",
                            extra={"plan_id": plan_id, "attempt": attempt_number})
        raise WriteContention(
            f"Plan '{plan_id}' changed {MAX_WRITE_ATTEMPTS} times while this write was applied; retry.")


def encode_cursor(plan_id: str) -> str:
    return base64.urlsafe_b64encode(plan_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        plan_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        check_plan_id(plan_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidDocument) as error:
        raise MalformedRequest(f"The cursor '{cursor[:80]}' is not valid; use the `next` value "
                               "of a previous page.") from error
    return plan_id
