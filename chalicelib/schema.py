"""The plan JSON Schema: loading it, validating documents against it, and reading its relations.

The validator is compiled once per process and schema path. `PLAN_SCHEMA_PATH` lets a
deployment ship its own schema file.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.validators import validator_for

from chalicelib.errors import InvalidDocument, Violation
from chalicelib.plan_graph import escape_pointer_token

DEFAULT_SCHEMA_PATH = str(Path(__file__).with_name("plan-schema.json"))


class SchemaFileError(RuntimeError):
    """The configured schema file is missing, not JSON, or not a valid JSON Schema."""


@functools.lru_cache(maxsize=4)
def load_schema(path: str = DEFAULT_SCHEMA_PATH) -> dict[str, Any]:
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SchemaFileError(f"Cannot read the plan schema at {path}: {error}") from error
    if not isinstance(schema, dict):
        raise SchemaFileError(f"The plan schema at {path} is not a JSON object.")
    return schema


@functools.lru_cache(maxsize=4)
def compiled_validator(path: str = DEFAULT_SCHEMA_PATH) -> Any:
    schema = load_schema(path)
    validator_class = validator_for(schema, default=Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except Exception as error:  # jsonschema raises SchemaError, which we report as a file error.
        raise SchemaFileError(f"The plan schema at {path} is not a valid JSON Schema: {error}") from error
    return validator_class(_inline_local_refs(schema))


def _inline_local_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace each local `{"$ref": "#/..."}` by the schema it names, for faster validation.

    Resolving a `$ref` costs jsonschema a registry lookup on every visit, which made validation
    most of a large plan's write time. A schema with a recursive or non-local reference, or a
    `$ref` beside other keywords, is returned unchanged.
    """

    def inline(node: Any, depth: int) -> Any:
        if depth > 64:
            raise RecursionError
        if isinstance(node, dict):
            if "$ref" in node:
                reference = node["$ref"]
                if len(node) != 1 or not isinstance(reference, str) or not reference.startswith("#/"):
                    raise ValueError(reference)
                return inline(_resolve_local_ref(schema, reference), depth + 1)
            return {key: inline(value, depth + 1) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value, depth + 1) for value in node]
        return node

    try:
        return inline(schema, 0)  # type: ignore[no-any-return]
    except (RecursionError, ValueError, KeyError, SchemaFileError):
        return schema


def validate_plan(document: Any, schema_path: str = DEFAULT_SCHEMA_PATH) -> None:
    """Raise InvalidDocument listing every schema violation with its JSON Pointer."""
    validator = compiled_validator(schema_path)
    violations = [_to_violation(error) for error in validator.iter_errors(document)]
    if violations:
        violations.sort(key=lambda violation: (violation.path, violation.message))
        raise InvalidDocument(
            f"The plan does not match the plan schema ({len(violations)} violation(s)).",
            errors=violations,
        )


def _to_violation(error: ValidationError) -> Violation:
    pointer = "".join(f"/{escape_pointer_token(str(token))}" for token in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        # Point at the member that is missing rather than at the object that lacks it.
        # jsonschema reports each missing member as its own error, named in the message.
        missing = [name for name in error.validator_value
                   if name not in error.instance and error.message.startswith(repr(name))]
        if missing:
            pointer = f"{pointer}/{escape_pointer_token(missing[0])}"
    return Violation(pointer, error.message)


def join_relations(schema: dict[str, Any], root_relation: str = "plan") -> dict[str, list[str]]:
    """Derive parent -> child relations from the schema, for the search index's `join` field.

    A property is a child relation when its schema (or its array items' schema) is an object that
    requires both `objectId` and `objectType`. The relation is named by the property.
    """
    relations: dict[str, list[str]] = {}

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in node and seen < 32:
            node = _resolve_local_ref(schema, node["$ref"])
            seen += 1
        return node

    def walk(node: dict[str, Any], relation: str, depth: int) -> None:
        if depth > 16:
            return
        for name, property_schema in resolve(node).get("properties", {}).items():
            child = resolve(property_schema)
            if child.get("type") == "array" and isinstance(child.get("items"), dict):
                child = resolve(child["items"])
            required = set(child.get("required", []))
            if {"objectId", "objectType"} <= required:
                children = relations.setdefault(relation, [])
                if name not in children:
                    children.append(name)
                if name not in relations:
                    walk(child, name, depth + 1)

    walk(schema, root_relation, 0)
    return relations


def _resolve_local_ref(schema: dict[str, Any], reference: str) -> dict[str, Any]:
    if not reference.startswith("#/"):
        raise SchemaFileError(f"Only local $ref values are supported, got {reference!r}.")
    node: Any = schema
    for token in reference[2:].split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node
