"""The example plan and PATCH of `examples/`, and builders for plans with fresh ids."""

from __future__ import annotations

import copy
import uuid
from typing import Any

SEED_PLAN: dict[str, Any] = {
    "planCostShares": {"deductible": 2000, "_org": "example.com", "copay": 23,
                       "objectId": "1234vxc2324sdf-501", "objectType": "membercostshare"},
    "linkedPlanServices": [
        {"linkedService": {"_org": "example.com", "objectId": "1234520xvc30asdf-502",
                           "objectType": "service", "name": "Yearly physical"},
         "planserviceCostShares": {"deductible": 10, "_org": "example.com", "copay": 0,
                                   "objectId": "1234512xvc1314asdfs-503",
                                   "objectType": "membercostshare"},
         "_org": "example.com", "objectId": "27283xvx9asdff-504", "objectType": "planservice"},
        {"linkedService": {"_org": "example.com", "objectId": "1234520xvc30sfs-505",
                           "objectType": "service", "name": "well baby"},
         "planserviceCostShares": {"deductible": 10, "_org": "example.com", "copay": 175,
                                   "objectId": "1234512xvc1314sdfsd-506",
                                   "objectType": "membercostshare"},
         "_org": "example.com", "objectId": "27283xvx9sdf-507", "objectType": "planservice"},
    ],
    "_org": "example.com", "objectId": "12xvxc345ssdsds-508", "objectType": "plan",
    "planType": "inNetwork", "creationDate": "12-12-2017",
}

SEED_PATCH: dict[str, Any] = {
    "planCostShares": {"deductible": 2056300, "_org": "example.com", "copay": 2235533,
                       "objectId": "1234vxc2324sdf-501", "objectType": "membercostshare"},
    "linkedPlanServices": [
        {"linkedService": {"_org": "example.com", "objectId": "1234520xvc30asdf-502-abc",
                           "objectType": "service", "name": "Yearly physical"},
         "planserviceCostShares": {"deductible": 3000, "_org": "example.com", "copay": 24210,
                                   "objectId": "1234512xvc1314asdfs-503-abcd",
                                   "objectType": "membercostshare"},
         "_org": "example.com", "objectId": "27283xvx9asdff-504-abc", "objectType": "planservice"},
    ],
}


def with_suffix(document: Any, suffix: str) -> Any:
    """Return a copy of `document` with `suffix` appended to every objectId."""
    result = copy.deepcopy(document)
    stack = [result]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if isinstance(value.get("objectId"), str):
                value["objectId"] += suffix
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return result


def fresh_seed_plan() -> tuple[dict[str, Any], dict[str, Any], str]:
    """Return (plan, patch, suffix): the seed plan and PATCH with a unique id suffix."""
    suffix = "-" + uuid.uuid4().hex[:12]
    return with_suffix(SEED_PLAN, suffix), with_suffix(SEED_PATCH, suffix), suffix


def plan_with_services(plan_id: str, service_count: int) -> dict[str, Any]:
    """Build a valid plan with `service_count` linked plan services (three objects each)."""
    services = []
    for index in range(service_count):
        services.append({
            "_org": "example.com", "objectId": f"{plan_id}-ps-{index}", "objectType": "planservice",
            "linkedService": {"_org": "example.com", "objectId": f"{plan_id}-svc-{index}",
                              "objectType": "service", "name": f"Service {index}"},
            "planserviceCostShares": {"_org": "example.com", "objectId": f"{plan_id}-pcs-{index}",
                                      "objectType": "membercostshare", "deductible": index,
                                      "copay": index % 50},
        })
    return {
        "_org": "example.com", "objectId": plan_id, "objectType": "plan", "planType": "inNetwork",
        "creationDate": "01-31-2024",
        "planCostShares": {"_org": "example.com", "objectId": f"{plan_id}-cs",
                           "objectType": "membercostshare", "deductible": 100, "copay": 10},
        "linkedPlanServices": services,
    }
