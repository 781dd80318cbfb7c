"""Plans and events shared by the search-index tests."""

from __future__ import annotations

import copy
import json
from typing import Any

from chalicelib.store.base import build_event

SEED_PLAN: dict[str, Any] = {
    "planCostShares": {
        "deductible": 2000,
        "_org": "example.com",
        "copay": 23,
        "objectId": "1234vxc2324sdf-501",
        "objectType": "membercostshare",
    },
    "linkedPlanServices": [
        {
            "linkedService": {
                "_org": "example.com",
                "objectId": "1234520xvc30asdf-502",
                "objectType": "service",
                "name": "Yearly physical",
            },
            "planserviceCostShares": {
                "deductible": 10,
                "_org": "example.com",
                "copay": 0,
                "objectId": "1234512xvc1314asdfs-503",
                "objectType": "membercostshare",
            },
            "_org": "example.com",
            "objectId": "27283xvx9asdff-504",
            "objectType": "planservice",
        },
        {
            "linkedService": {
                "_org": "example.com",
                "objectId": "1234520xvc30sfs-505",
                "objectType": "service",
                "name": "well baby",
            },
            "planserviceCostShares": {
                "deductible": 10,
                "_org": "example.com",
                "copay": 175,
                "objectId": "1234512xvc1314sdfsd-506",
                "objectType": "membercostshare",
            },
            "_org": "example.com",
            "objectId": "27283xvx9sdf-507",
            "objectType": "planservice",
        },
    ],
    "_org": "example.com",
    "objectId": "12xvxc345ssdsds-508",
    "objectType": "plan",
    "planType": "inNetwork",
    "creationDate": "12-12-2017",
}


def make_plan(tag: str) -> dict[str, Any]:
    """Return the seed plan with `-<tag>` appended to every objectId, so tests never collide."""
    plan = copy.deepcopy(SEED_PLAN)
    stack: list[Any] = [plan]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if "objectId" in value:
                value["objectId"] = f"{value['objectId']}-{tag}"
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return plan


def upsert(plan: dict[str, Any], version: int) -> dict[str, Any]:
    return build_event(
        plan_id=plan["objectId"],
        version=version,
        event_type="plan.upserted",
        etag=f'"etag-{version}"',
        plan_json=json.dumps(plan),
        occurred_at="2024-01-01T00:00:00.000Z",
    )


def delete(plan_id: str, version: int) -> dict[str, Any]:
    return build_event(
        plan_id=plan_id,
        version=version,
        event_type="plan.deleted",
        etag=None,
        plan_json=None,
        occurred_at="2024-01-01T00:00:00.000Z",
    )


def planservice(plan: dict[str, Any], position: int) -> dict[str, Any]:
    return plan["linkedPlanServices"][position]  # type: ignore[no-any-return]
