"""Read side of the search index for the `es_plan` and `es_data` routes."""

from __future__ import annotations

from typing import Any

from chalicelib.errors import InvalidDocument, MalformedRequest, PlanNotFound, Violation
from chalicelib.plan_graph import OBJECT_ID_PATTERN, OBJECT_TYPE_PATTERN, check_plan_id
from chalicelib.search.base import SearchIndex


class SearchService:
    def __init__(self, index: SearchIndex) -> None:
        self.index = index

    def get_plan(self, plan_id: str) -> dict[str, Any]:
        check_plan_id(plan_id)
        plan = self.index.get_plan(plan_id)
        if plan is None:
            raise PlanNotFound(f"Plan '{plan_id}' is not in the search index (yet).")
        return plan

    def find(self, object_id: str | None, parent_type: str | None) -> list[dict[str, Any]]:
        """Return the indexed objects with `object_id`, or their children when `parent_type` is set."""
        if not object_id:
            raise MalformedRequest("The query parameter 'id' is required, e.g. ?id=27283xvx9sdf-507.")
        if not OBJECT_ID_PATTERN.fullmatch(object_id):
            raise InvalidDocument("The query parameter 'id' is not a valid objectId.",
                                  errors=[Violation("/id", "objectId must be 1-200 characters of "
                                                           "A-Z a-z 0-9 . _ ~ -")])
        if parent_type is None:
            found = self.index.find_objects(object_id)
            if not found:
                raise PlanNotFound(f"No indexed object has objectId '{object_id}'.")
            return found
        if not OBJECT_TYPE_PATTERN.fullmatch(parent_type):
            raise InvalidDocument("The query parameter 'parent_type' is not a valid objectType or "
                                  "relation.",
                                  errors=[Violation("/parent_type", "must be a letter followed by "
                                                                    "up to 63 of A-Z a-z 0-9 _ -")])
        children = self.index.find_children(object_id, parent_type)
        if not children:
            raise PlanNotFound(f"No indexed children of '{object_id}' as '{parent_type}'.")
        return children
