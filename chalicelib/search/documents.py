"""Turn plan events into search documents, and search documents back into plan objects.

Both index adapters share this pure logic, so they index the same documents and return the same
results. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import InvalidDocument
from chalicelib.plan_graph import (
    OBJECT_ID_PATTERN,
    StoredObject,
    assemble,
    decompose,
    escape_pointer_token,
)

UPSERTED = "plan.upserted"
DELETED = "plan.deleted"
ROOT_JOIN_NAME = "plan"


class SearchIndexError(Exception):
    """The search index failed to apply a batch or to serve a read, and a retry may succeed."""


class PermanentEventError(SearchIndexError):
    """Events that no retry can apply, so a runner should dead-letter them.

    The other events of the same batch were applied before this was raised. Applying them
    again is harmless because events are idempotent.
    """

    def __init__(self, message: str, event_ids: Iterable[str]) -> None:
        super().__init__(message)
        self.event_ids: tuple[str, ...] = tuple(event_ids)


class MalformedEventError(PermanentEventError):
    """An event lacks a field, has a field of the wrong type, or carries an invalid plan."""


class MappingConflictError(PermanentEventError):
    """The index rejected a document, for example a string where the mapping has a number."""


@dataclass(frozen=True)
class PlanEvent:
    """One parsed plan event: a plan's whole state at `version`, or its deletion."""

    event_id: str
    plan_id: str
    version: int
    deleted: bool
    etag: str | None
    plan: dict[str, Any] | None


@dataclass(frozen=True)
class EventBatch:
    """A batch reduced to the newest event per plan, plus the events that could not be parsed."""

    latest: list[PlanEvent]
    rejected: list[PermanentEventError]


@dataclass(frozen=True)
class IndexDocument:
    """The search document of one stored object at one plan version."""

    identity: str
    plan_id: str
    object_id: str
    object_type: str
    relation: str
    parent_identity: str | None
    plan_version: int
    join_name: str | None
    stored: dict[str, Any]
    body: dict[str, Any]
    text: str

    def source(self) -> dict[str, Any]:
        """Return the OpenSearch `_source` of this document."""
        source: dict[str, Any] = {
            "identity": self.identity,
            "objectId": self.object_id,
            "objectType": self.object_type,
            "relation": self.relation,
            "planId": self.plan_id,
            "parentIdentity": self.parent_identity,
            "planVersion": self.plan_version,
            "body": self.body,
            "text": self.text,
            "stored": self.stored,
        }
        if self.join_name == ROOT_JOIN_NAME and self.parent_identity is None:
            source["plan_join"] = {"name": ROOT_JOIN_NAME}
        elif self.join_name is not None:
            source["plan_join"] = {"name": self.join_name, "parent": self.parent_identity}
        return source


@dataclass(frozen=True)
class JoinRelations:
    """The parent -> child relations of the index's `join` field.

    A join field allows only one parent relation per child relation, so a relation that the
    schema nests under two parents keeps only the first one.
    """

    children: dict[str, list[str]]

    @classmethod
    def from_schema_relations(cls, relations: Mapping[str, list[str]]) -> JoinRelations:
        seen: set[str] = set()
        children: dict[str, list[str]] = {}
        for parent, names in relations.items():
            kept = [name for name in names if name not in seen and name != ROOT_JOIN_NAME]
            seen.update(kept)
            if kept:
                children[parent] = kept
        return cls(children)

    def allows(self, parent_join_name: str, relation: str) -> bool:
        return relation in self.children.get(parent_join_name, [])


def combine_permanent(errors: list[PermanentEventError]) -> PermanentEventError:
    """Return one error, of the errors' common class, that names every event in `errors`."""
    if len(errors) == 1:
        return errors[0]
    event_ids = [event_id for error in errors for event_id in error.event_ids]
    message = "; ".join(str(error) for error in errors[:3])
    if len(errors) > 3:
        message += f"; and {len(errors) - 3} more"
    kinds = {type(error) for error in errors}
    error_class = kinds.pop() if len(kinds) == 1 else PermanentEventError
    return error_class(message, event_ids)


def raise_permanent(errors: list[PermanentEventError]) -> None:
    """Raise `combine_permanent(errors)`; an empty list raises nothing."""
    if errors:
        raise combine_permanent(errors)


def event_label(event: Any, position: int) -> str:
    """Return the event's id, or its position in the batch when it has no usable id."""
    if isinstance(event, dict) and isinstance(event.get("eventId"), str):
        return str(event["eventId"])
    return f"batch position {position}"


def parse_event(event: Any, position: int = 0) -> PlanEvent:
    """Parse one raw event, raising MalformedEventError when it is invalid."""
    label = event_label(event, position)

    def malformed(reason: str) -> MalformedEventError:
        return MalformedEventError(f"Event {label} is malformed: {reason}.", [label])

    if not isinstance(event, dict):
        raise malformed("it is not a JSON object")
    event_type = event.get("type")
    if event_type not in (UPSERTED, DELETED):
        raise malformed(f"type must be {UPSERTED!r} or {DELETED!r}")
    plan_id = event.get("planId")
    if not isinstance(plan_id, str) or not OBJECT_ID_PATTERN.fullmatch(plan_id):
        raise malformed("planId must be a valid objectId")
    version = event.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise malformed("version must be a positive integer")
    etag = event.get("etag")
    if etag is not None and not isinstance(etag, str):
        raise malformed("etag must be a string or null")

    plan = event.get("plan")
    if event_type == UPSERTED:
        if not isinstance(plan, dict):
            raise malformed("an upsert must carry the plan as a JSON object")
        if plan.get("objectId") != plan_id:
            raise malformed("the plan's objectId differs from planId")
    return PlanEvent(
        event_id=label,
        plan_id=plan_id,
        version=version,
        deleted=event_type == DELETED,
        etag=etag,
        plan=plan if event_type == UPSERTED else None,
    )


def select_latest(events: Iterable[Any]) -> EventBatch:
    """Parse a batch and keep only the newest event of each plan, since each one is a snapshot."""
    latest: dict[str, PlanEvent] = {}
    rejected: list[PermanentEventError] = []
    for position, raw in enumerate(events):
        try:
            event = parse_event(raw, position)
        except MalformedEventError as error:
            rejected.append(error)
            continue
        current = latest.get(event.plan_id)
        if current is None or event.version > current.version:
            latest[event.plan_id] = event
    return EventBatch(
        latest=sorted(latest.values(), key=lambda item: item.plan_id), rejected=rejected
    )


def is_due(event: PlanEvent, applied_version: int | None, *, replace_same_version: bool) -> bool:
    """Tell whether an event is newer than what the index applied for its plan."""
    if applied_version is None:
        return True
    if replace_same_version:
        return event.version >= applied_version
    return event.version > applied_version


def build_documents(event: PlanEvent, relations: JoinRelations) -> list[IndexDocument]:
    """Return one document per stored object of the event's plan, root first.

    Raises MalformedEventError when the plan cannot be split into stored objects.
    """
    if event.plan is None:
        return []
    try:
        objects = decompose(event.plan)
    except InvalidDocument as error:
        raise MalformedEventError(
            f"Event {event.event_id} carries a plan that cannot be indexed: {error.detail}",
            [event.event_id],
        ) from error

    join_names: dict[str, str | None] = {}
    documents = []
    # decompose() lists parents before their children, so a parent's join name is known first.
    for identity, stored in objects.items():
        join_name = _join_name(stored, join_names, relations)
        join_names[identity] = join_name
        documents.append(
            IndexDocument(
                identity=identity,
                plan_id=event.plan_id,
                object_id=stored.object_id,
                object_type=stored.object_type,
                relation=stored.relation,
                parent_identity=stored.parent,
                plan_version=event.version,
                join_name=join_name,
                stored=stored.to_json(),
                body=own_members(stored),
                text=text_of(stored.body),
            )
        )
    return documents


def _join_name(
    stored: StoredObject, parent_join_names: Mapping[str, str | None], relations: JoinRelations
) -> str | None:
    if stored.parent is None:
        return ROOT_JOIN_NAME if relations.children else None
    parent_join_name = parent_join_names.get(stored.parent)
    if parent_join_name is not None and relations.allows(parent_join_name, stored.relation):
        return stored.relation
    # NOTE: an object under a member that the schema does not declare as a stored-object
    # relation (the schema allows extra members) is indexed without a join value, so
    # `has_parent` and `has_child` queries do not reach it or its descendants.
    # find_children() still finds such children through `parentIdentity`.
    return None


def own_members(stored: StoredObject) -> dict[str, Any]:
    """Return the object's members without the placeholders left where stored children were."""
    top_members = {pointer.split("/")[1] for pointer, _ in stored.children}
    body = {}
    for name, value in stored.body.items():
        if escape_pointer_token(name) in top_members and _only_placeholders(value):
            continue
        body[name] = value
    return body


def _only_placeholders(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, list):
        return all(_only_placeholders(item) for item in value)
    if isinstance(value, dict):
        return all(_only_placeholders(item) for item in value.values())
    return False


def text_of(body: Any) -> str:
    """Return the string values of an object's own members, one per line, for full-text search."""
    strings: list[str] = []
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))
    return "\n".join(strings)


def fts_query(text: str) -> str:
    """Return an FTS5 query that matches every word of `text`, with no FTS5 syntax left in it."""
    words = re.findall(r"\w+", text)
    return " ".join(f'"{word}"' for word in words)


def find_root(objects: Mapping[str, StoredObject]) -> str | None:
    """Return the identity of the plan's root object, the one without a parent."""
    roots = sorted(identity for identity, stored in objects.items() if stored.parent is None)
    return roots[0] if roots else None


def try_assemble(identity: str, objects: Mapping[str, StoredObject]) -> dict[str, Any] | None:
    """Assemble an object with its descendants, or return None when one of them is missing.

    A descendant is missing only while a batch is half visible, so callers treat it like an
    object that is not indexed yet.
    """
    if identity not in objects:
        return None
    try:
        return assemble(identity, dict(objects))
    except KeyError:
        return None


def child_order(
    plan_id: str, child: StoredObject, objects: Mapping[str, StoredObject]
) -> tuple[str, str, int, str]:
    """Return a sort key that lists children by plan, by parent and in their parent's order."""
    parent = objects.get(child.parent) if child.parent else None
    position = 0
    if parent is not None:
        identities = [identity for _, identity in parent.children]
        position = (
            identities.index(child.identity) if child.identity in identities else len(identities)
        )
    return plan_id, child.parent or "", position, child.identity


def assemble_children(
    hits: Iterable[tuple[str, str]], plans: Mapping[str, Mapping[str, StoredObject]]
) -> list[dict[str, Any]]:
    """Assemble each (plan id, child identity) hit, in the order of `child_order`."""
    found = []
    for plan_id, identity in set(hits):
        objects = plans.get(plan_id, {})
        document = try_assemble(identity, objects)
        if document is not None:
            found.append((child_order(plan_id, objects[identity], objects), document))
    found.sort(key=lambda pair: pair[0])
    return [document for _, document in found]


def assemble_objects(
    hits: Iterable[tuple[str, str]], plans: Mapping[str, Mapping[str, StoredObject]]
) -> list[dict[str, Any]]:
    """Assemble each (plan id, identity) hit, sorted by identity and then by plan id."""
    found = []
    for plan_id, identity in sorted(set(hits), key=lambda pair: (pair[1], pair[0])):
        document = try_assemble(identity, plans.get(plan_id, {}))
        if document is not None:
            found.append(document)
    return found


def matches_parent_type(stored: StoredObject, parent_type: str) -> bool:
    """Tell whether `parent_type` names the object's objectType or its relation."""
    return parent_type in (stored.object_type, stored.relation)
