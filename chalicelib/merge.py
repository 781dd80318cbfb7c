"""Merge a PATCH document into a plan, following JSON Merge Patch (RFC 7396) with one extension.

The extension: an array whose patch elements are all stored objects merges element by element,
matched by `objectId`, instead of being replaced. Everything else is RFC 7396: members merge
recursively, `null` removes a member, and scalars and plain arrays replace the old value.
"""

from __future__ import annotations

import copy
from typing import Any

from chalicelib.plan_graph import is_stored_object


def merge_patch(target: Any, patch: Any) -> Any:
    """Return a new document: `target` with `patch` merged in. Neither argument is modified."""
    if not isinstance(patch, dict):
        if isinstance(patch, list) and isinstance(target, list) and _is_stored_object_array(patch):
            return _merge_stored_object_arrays(target, patch)
        return copy.deepcopy(patch)

    if not isinstance(target, dict):
        target = {}
    elif (is_stored_object(target) and is_stored_object(patch)
          and target["objectId"] != patch["objectId"]):
        # A stored object given with another objectId is a new object replacing the old one,
        # so nothing of the old one survives.
        target = {}

    merged = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _is_stored_object_array(values: list[Any]) -> bool:
    return bool(values) and all(is_stored_object(value) for value in values)


def _merge_stored_object_arrays(target: list[Any], patch: list[Any]) -> list[Any]:
    """Merge matching elements by objectId, append new ones, and keep unnamed ones in place."""
    merged = copy.deepcopy(target)
    positions = {element["objectId"]: index for index, element in enumerate(merged)
                 if is_stored_object(element)}
    for element in patch:
        index = positions.get(element["objectId"])
        if index is None:
            positions[element["objectId"]] = len(merged)
            merged.append(merge_patch(None, element))
        else:
            merged[index] = merge_patch(merged[index], element)
    return merged
