"""Concurrent requests against `chalice local`: each response belongs to its own request.

`chalice local` serves every request on its own thread. Requests here are released together by
a barrier, each on its own connection, so they overlap inside the server.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from tests.contract.conftest import (
    REQUEST_TIMEOUT_SECONDS,
    Deployment,
    StoredPlan,
    assert_problem,
    example_plan,
    fresh_token,
)

CLIENTS = 8
ROUNDS = 5
BARRIER_TIMEOUT_SECONDS = 30.0


def send_together(api: Deployment,
                  requests_to_send: list[dict[str, Any]]) -> list[requests.Response]:
    """Send every request at once from its own thread and return the responses in order.

    Each entry contains the keyword arguments of `requests.request` apart from the URL, which is
    `api.base_url` plus the entry's `path`.
    """
    barrier = threading.Barrier(len(requests_to_send), timeout=BARRIER_TIMEOUT_SECONDS)

    def send(arguments: dict[str, Any]) -> requests.Response:
        arguments = dict(arguments)
        url = api.base_url + arguments.pop("path")
        barrier.wait()
        return requests.request(url=url, timeout=REQUEST_TIMEOUT_SECONDS, **arguments)

    with ThreadPoolExecutor(max_workers=len(requests_to_send)) as pool:
        futures = [pool.submit(send, arguments) for arguments in requests_to_send]
        return [future.result(timeout=BARRIER_TIMEOUT_SECONDS + REQUEST_TIMEOUT_SECONDS)
                for future in futures]


def json_request(method: str, path: str, token: str, body: Any, **headers: str) -> dict[str, Any]:
    return {"method": method, "path": path, "data": json.dumps(body).encode(),
            "headers": {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                        **headers}}


def test_concurrent_patches_with_same_if_match_let_exactly_one_win(
        api: Deployment, stored_plan: StoredPlan) -> None:
    token = fresh_token(api.tokens)
    for round_number in range(ROUNDS):
        etag = api.call("GET", stored_plan.path).headers["ETag"]
        request_ids = [f"round{round_number}-writer{n}-{stored_plan.suffix}"
                       for n in range(CLIENTS)]
        values = [f"concurrent-{round_number}-{n}" for n in range(CLIENTS)]

        responses = send_together(api, [
            json_request("PATCH", stored_plan.path, token, {"planType": values[n]},
                         **{"If-Match": etag, "X-Request-ID": request_ids[n]})
            for n in range(CLIENTS)])

        statuses = [response.status_code for response in responses]
        assert sorted(statuses) == [200] + [412] * (CLIENTS - 1), (
            f"round {round_number}: {statuses}")
        for request_id, response in zip(request_ids, responses, strict=True):
            assert response.headers["X-Request-ID"] == request_id
        winner = statuses.index(200)
        assert responses[winner].json()["planType"] == values[winner]
        for loser, response in enumerate(responses):
            if loser != winner:
                assert_problem(response, 412)
        fetched = api.call("GET", stored_plan.path)
        assert fetched.json()["planType"] == values[winner]
        assert fetched.headers["ETag"] == responses[winner].headers["ETag"]


def test_concurrent_unconditional_patches_lose_no_update(
        api: Deployment, stored_plan: StoredPlan) -> None:
    token = fresh_token(api.tokens)

    responses = send_together(api, [
        json_request("PATCH", stored_plan.path, token, {f"member{n}": n})
        for n in range(CLIENTS)])

    assert [response.status_code for response in responses] == [200] * CLIENTS
    stored = api.call("GET", stored_plan.path).json()
    assert {n: stored.get(f"member{n}") for n in range(CLIENTS)} == {n: n for n in range(CLIENTS)}


def test_concurrent_gets_of_different_plans_each_return_requested_plan(
        api: Deployment) -> None:
    plans = [example_plan() for _ in range(CLIENTS)]
    for plan in plans:
        api.create(plan)
    token = fresh_token(api.tokens)

    for round_number in range(ROUNDS):
        request_ids = [f"read{round_number}-{n}-{plans[n]['objectId']}" for n in range(CLIENTS)]
        responses = send_together(api, [
            {"method": "GET", "path": f"/v1/plan/{plan['objectId']}",
             "headers": {"Authorization": f"Bearer {token}", "X-Request-ID": request_id}}
            for plan, request_id in zip(plans, request_ids, strict=True)])

        for plan, request_id, response in zip(plans, request_ids, responses, strict=True):
            assert response.status_code == 200, response.text[:300]
            assert response.json()["objectId"] == plan["objectId"]
            assert response.json() == plan
            assert response.headers["X-Request-ID"] == request_id


def test_concurrent_conditional_gets_honour_own_if_none_match(
        api: Deployment) -> None:
    # The GET route reads If-None-Match after its store read, which lets other requests' threads
    # run in between, so a request object shared between threads shows up as a wrong status.
    plans = [example_plan() for _ in range(CLIENTS)]
    etags = [api.create(plan) for plan in plans]
    token = fresh_token(api.tokens)
    # Even-numbered requests name their own plan's ETag and expect 304; odd-numbered ones name
    # the next plan's ETag and expect 200.
    if_none_match = [etags[n] if n % 2 == 0 else etags[(n + 1) % CLIENTS] for n in range(CLIENTS)]
    expected = [304 if n % 2 == 0 else 200 for n in range(CLIENTS)]

    for round_number in range(ROUNDS):
        responses = send_together(api, [
            {"method": "GET", "path": f"/v1/plan/{plan['objectId']}",
             "headers": {"Authorization": f"Bearer {token}", "If-None-Match": header}}
            for plan, header in zip(plans, if_none_match, strict=True)])

        statuses = [response.status_code for response in responses]
        assert statuses == expected, f"round {round_number}"
        for plan, etag, response in zip(plans, etags, responses, strict=True):
            assert response.headers["ETag"] == etag
            if response.status_code == 200:
                assert response.json() == plan


def _create_together(api: Deployment, documents: list[dict[str, Any]]) -> list[int]:
    token = fresh_token(api.tokens)
    responses = send_together(api, [json_request("POST", "/v1/plan", token, document)
                                     for document in documents])
    return [response.status_code for response in responses]


def test_concurrent_creates_of_one_plan_let_exactly_one_win(api: Deployment) -> None:
    plan = example_plan()
    variants = [{**plan, "planType": f"variant-{n}"} for n in range(CLIENTS)]

    statuses = _create_together(api, variants)

    assert sorted(statuses) == [201] + [409] * (CLIENTS - 1), statuses
    stored = api.call("GET", f"/v1/plan/{plan['objectId']}").json()
    assert stored == variants[statuses.index(201)]


def test_concurrent_creates_sharing_object_let_exactly_one_own_it(api: Deployment) -> None:
    shared = example_plan()["planCostShares"]
    plans = [example_plan() for _ in range(CLIENTS)]
    for plan in plans:
        plan["planCostShares"] = dict(shared)

    statuses = _create_together(api, plans)

    assert sorted(statuses) == [201] + [409] * (CLIENTS - 1), statuses
    for plan, status in zip(plans, statuses, strict=True):
        assert (api.version(plan["objectId"]) is not None) == (status == 201)

