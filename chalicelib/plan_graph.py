"""The pure plan graph: split a plan into stored objects, put it back together, and fingerprint it.

A *stored object* is any JSON object that carries both `objectId` and `objectType`. Each one is
kept on its own. Its parent keeps a placeholder (`None`) where the child was and records the
child's location as a JSON Pointer relative to itself. Nothing here does I/O.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator

from chalicelib.errors import InvalidDocument, Violation

OBJECT_ID_PATTERN = re.compile(r"[A-Za-z0-9._~-]{1,200}")
OBJECT_TYPE_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
RESERVED_PLAN_IDS = frozenset({"es_plan", "es_data"})

MAX_DEPTH = 32
MAX_STORED_OBJECTS = 10_000


@dataclass(frozen=True)
class StoredObject:
    """One stored object: its own members, with each stored child replaced by `None`."""

    object_type: str
    object_id: str
    relation: str
    parent: str | None
    body: dict[str, Any]
    children: tuple[tuple[str, str], ...] = field(default=())
    """Pairs of (JSON Pointer inside `body`, child identity), in document order."""

    @property
    def identity(self) -> str:
        return identity_of(self.object_type, self.object_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "objectType": self.object_type,
            "objectId": self.object_id,
            "relation": self.relation,
            "parent": self.parent,
            "body": self.body,
            "children": [list(pair) for pair in self.children],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredObject:
        return cls(
            object_type=data["objectType"],
            object_id=data["objectId"],
            relation=data["relation"],
            parent=data["parent"],
            body=data["body"],
            children=tuple((pointer, child) for pointer, child in data["children"]),
        )


def identity_of(object_type: str, object_id: str) -> str:
    return f"{object_type}:{object_id}"


def is_stored_object(value: Any) -> bool:
    return isinstance(value, dict) and "objectId" in value and "objectType" in value


def escape_pointer_token(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def unescape_pointer_token(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def check_plan_id(plan_id: str) -> None:
    """Raise InvalidDocument unless `plan_id` may name a plan in a URL."""
    if not OBJECT_ID_PATTERN.fullmatch(plan_id):
        raise InvalidDocument(
            "The plan id in the URL is not a valid objectId.",
            errors=[Violation("", "objectId must be 1-200 characters of A-Z a-z 0-9 . _ ~ -")],
        )
    if plan_id in RESERVED_PLAN_IDS:
        raise InvalidDocument(
            f"'{plan_id}' is reserved for a search route and cannot be a plan id.",
            errors=[Violation("/objectId", f"'{plan_id}' is reserved")],
        )


def check_document_shape(document: Any) -> None:
    """Enforce the nesting and object-count limits and the identifier formats.

    This runs before schema validation, so that an identifier that could reach a storage key or
    a query is rejected whatever schema a deployment ships.
    """
    violations: list[Violation] = []
    stored_count = 0
    stack: list[tuple[Any, str, int]] = [(document, "", 1)]
    while stack:
        value, pointer, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                raise InvalidDocument(
                    f"The document is nested deeper than {MAX_DEPTH} levels.",
                    errors=[Violation(pointer, f"nesting exceeds {MAX_DEPTH} levels")],
                )
            violations.extend(_identifier_violations(value, pointer))
            if is_stored_object(value):
                stored_count += 1
                if stored_count > MAX_STORED_OBJECTS:
                    raise InvalidDocument(
                        f"The document holds more than {MAX_STORED_OBJECTS} stored objects.",
                        errors=[Violation(pointer, f"more than {MAX_STORED_OBJECTS} stored objects")],
                    )
            for key, child in value.items():
                stack.append((child, f"{pointer}/{escape_pointer_token(key)}", depth + 1))
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                raise InvalidDocument(
                    f"The document is nested deeper than {MAX_DEPTH} levels.",
                    errors=[Violation(pointer, f"nesting exceeds {MAX_DEPTH} levels")],
                )
            for index, child in enumerate(value):
                stack.append((child, f"{pointer}/{index}", depth + 1))
    if violations:
        violations.sort(key=lambda violation: violation.path)
        raise InvalidDocument("The document has invalid identifiers.", errors=violations)


def _identifier_violations(value: dict[str, Any], pointer: str) -> Iterator[Violation]:
    if "objectId" in value:
        object_id = value["objectId"]
        if not isinstance(object_id, str) or not OBJECT_ID_PATTERN.fullmatch(object_id):
            yield Violation(f"{pointer}/objectId",
                            "objectId must be 1-200 characters of A-Z a-z 0-9 . _ ~ -")
    if "objectType" in value:
        object_type = value["objectType"]
        if not isinstance(object_type, str) or not OBJECT_TYPE_PATTERN.fullmatch(object_type):
            yield Violation(f"{pointer}/objectType",
                            "objectType must be a letter followed by up to 63 of A-Z a-z 0-9 _ -")


def decompose(plan: dict[str, Any]) -> dict[str, StoredObject]:
    """Split a validated plan into its stored objects, keyed by identity, root first.

    Raises InvalidDocument when one identity appears twice in the document.
    """
    if not is_stored_object(plan):
        raise InvalidDocument("A plan must carry objectId and objectType.",
                              errors=[Violation("", "objectId and objectType are required")])
    objects: dict[str, StoredObject] = {}
    first_seen: dict[str, str] = {}
    duplicates: list[Violation] = []

    # Each entry is (object, its pointer in the whole document, relation, parent identity).
    pending: deque[tuple[dict[str, Any], str, str, str | None]] = deque(
        [(plan, "", str(plan["objectType"]), None)])
    while pending:
        source, document_pointer, relation, parent = pending.popleft()
        identity = identity_of(source["objectType"], source["objectId"])
        if identity in first_seen:
            duplicates.append(Violation(
                document_pointer or "/",
                f"{identity} already appears at {first_seen[identity] or '/'}"))
            continue
        first_seen[identity] = document_pointer

        children: list[tuple[str, str]] = []
        body = {key: _detach_children(value, f"/{escape_pointer_token(key)}", key, children,
                                      pending, document_pointer, identity)
                for key, value in source.items()}
        objects[identity] = StoredObject(
            object_type=source["objectType"],
            object_id=source["objectId"],
            relation=relation,
            parent=parent,
            body=body,
            children=tuple(children),
        )
    if duplicates:
        raise InvalidDocument("The same stored object appears more than once in the document.",
                              errors=duplicates)
    return objects


def _detach_children(value: Any, pointer: str, relation: str, children: list[tuple[str, str]],
                     pending: deque[tuple[dict[str, Any], str, str, str | None]],
                     document_pointer: str, parent: str) -> Any:
    """Copy one member of a stored object, leaving `None` where a stored child was.

    Each child found is recorded in `children` as (pointer inside the parent, identity) and
    queued in `pending` to be decomposed in turn. The relation is the nearest member name above
    the child, so an element of `linkedPlanServices` has the relation `linkedPlanServices`.
    """
    if is_stored_object(value):
        children.append((pointer, identity_of(value["objectType"], value["objectId"])))
        pending.append((value, document_pointer + pointer, relation, parent))
        return None
    if isinstance(value, dict):
        return {key: _detach_children(child, f"{pointer}/{escape_pointer_token(key)}", key,
                                      children, pending, document_pointer, parent)
                for key, child in value.items()}
    if isinstance(value, list):
        return [_detach_children(child, f"{pointer}/{index}", relation, children, pending,
                                 document_pointer, parent)
                for index, child in enumerate(value)]
    return value


def _set_at_pointer(document: Any, pointer: str, value: Any) -> None:
    tokens = [unescape_pointer_token(token) for token in pointer.split("/")[1:]]
    target = document
    for token in tokens[:-1]:
        target = target[int(token)] if isinstance(target, list) else target[token]
    last = tokens[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


def assemble(root_identity: str, objects: dict[str, StoredObject]) -> dict[str, Any]:
    """Rebuild the plan document whose root is `root_identity` from its stored objects."""

    def build(identity: str) -> dict[str, Any]:
        stored = objects[identity]
        document = copy.deepcopy(stored.body)
        for pointer, child_identity in stored.children:
            _set_at_pointer(document, pointer, build(child_identity))
        return document

    return build(root_identity)


def canonical_json(document: Any) -> str:
    """Serialize with sorted keys and no spaces, so equal documents give equal text."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compute_etag(plan: dict[str, Any]) -> str:
    """Return a strong ETag (quoted) derived from the plan's content alone.

    Member order does not change it; any change of a value or of array order does.
    """
    digest = hashlib.sha256(canonical_json(plan).encode("utf-8")).hexdigest()
    return f'"{digest[:40]}"'


def diff_objects(old: dict[str, StoredObject],
                 new: dict[str, StoredObject]) -> tuple[dict[str, StoredObject], list[str]]:
    """Return (objects to write, identities to delete) to turn the `old` set into the `new` one."""
    upserts = {identity: stored for identity, stored in new.items()
               if old.get(identity) != stored}
    removed = [identity for identity in old if identity not in new]
    return upserts, removed
