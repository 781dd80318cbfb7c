"""Contract of `GET /v1/plan`: pages of plans, the default and maximum page sizes, and cursors.

These tests run on a server of their own, so they know every plan in its store.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.contract.conftest import (
    STORE_KINDS,
    Deployment,
    DeploymentStarter,
    assert_problem,
    example_plan,
)

PLAN_COUNT = 51
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class Listing:
    """A server whose store contains exactly `plans`, and the listing it gave while empty."""

    api: Deployment
    plans: dict[str, dict[str, Any]]
    empty_listing: Any


@pytest.fixture(scope="module", params=STORE_KINDS)
def listing(request: pytest.FixtureRequest,
            start_deployment: DeploymentStarter) -> Iterator[Listing]:
    with start_deployment(request.param) as api:
        empty = api.call("GET", "/v1/plan")
        assert empty.status_code == 200, empty.text
        plans = {}
        for _ in range(PLAN_COUNT):
            plan = example_plan()
            api.create(plan)
            plans[plan["objectId"]] = plan
        yield Listing(api=api, plans=plans, empty_listing=empty.json())


def walk_pages(api: Deployment, limit: int) -> list[list[dict[str, Any]]]:
    """Follow `next` from the first page to the last and return every page's items."""
    pages = []
    params = {"limit": str(limit)}
    # Every page contains at least one plan, so more pages than plans means the cursor loops.
    for _ in range(PLAN_COUNT + 1):
        response = listing_page(api, params)
        pages.append(response["items"])
        if response["next"] is None:
            return pages
        params = {"limit": str(limit), "cursor": response["next"]}
    raise AssertionError(f"limit={limit}: still no last page after {PLAN_COUNT + 1} pages")


def listing_page(api: Deployment, params: dict[str, str]) -> dict[str, Any]:
    response = api.call("GET", "/v1/plan", params=params)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"items", "next"}
    assert isinstance(body["items"], list)
    assert body["next"] is None or (isinstance(body["next"], str) and body["next"])
    return body


def test_list_of_empty_store_has_no_items_and_no_next(listing: Listing) -> None:
    assert listing.empty_listing == {"items": [], "next": None}


def test_list_returns_50_plans_by_default_then_rest(listing: Listing) -> None:
    first = listing_page(listing.api, {})
    second = listing_page(listing.api, {"cursor": first["next"]})

    assert len(first["items"]) == DEFAULT_LIMIT
    assert first["next"] is not None
    assert len(second["items"]) == PLAN_COUNT - DEFAULT_LIMIT
    assert second["next"] is None


def test_list_items_are_stored_plans(listing: Listing) -> None:
    page = listing_page(listing.api, {"limit": "500"})

    assert page["next"] is None
    assert sorted(item["objectId"] for item in page["items"]) == sorted(listing.plans)
    for item in page["items"]:
        assert item == listing.plans[item["objectId"]]


@pytest.mark.parametrize("limit", [1, 7, 50, 500])
def test_list_cursor_walk_visits_every_plan_exactly_once(listing: Listing, limit: int) -> None:
    pages = walk_pages(listing.api, limit)

    seen = [item["objectId"] for page in pages for item in page]
    assert all(len(page) <= limit for page in pages)
    assert all(pages), "a page before the last one is empty"
    assert len(seen) == len(set(seen)), "a plan appears on more than one page"
    assert sorted(seen) == sorted(listing.plans)


@pytest.mark.parametrize("limit", ["0", "501", "abc", "-1", "1.5", "", " 5", "1e2", "0x10"])
def test_list_with_limit_outside_1_to_500_is_400(listing: Listing, limit: str) -> None:
    response = listing.api.call("GET", "/v1/plan", params={"limit": limit})

    assert_problem(response, 400)


def _cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "!!!", "%%%", "_w", "garbage cursor", _cursor_of("a b"), _cursor_of("plan:1"), "A" * 5000,
], ids=["bangs", "percents", "not-utf8", "spaces", "invalid-id", "colon-id", "huge"])
def test_list_with_garbage_cursor_is_400(listing: Listing, cursor: str) -> None:
    response = listing.api.call("GET", "/v1/plan", params={"cursor": cursor})

    assert_problem(response, 400)
