"""OpenSearch-specific behaviour: mapping, routing, join queries, `_bulk` request counts, errors."""

from __future__ import annotations

import base64
import copy
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opensearchpy import AWSV4SignerAuth, RequestsHttpConnection

from chalicelib.config import ConfigurationError
from chalicelib.schema import DEFAULT_SCHEMA_PATH, join_relations, load_schema
from chalicelib.search.documents import (
    JoinRelations,
    MappingConflictError,
    PermanentEventError,
    SearchIndexError,
)
from chalicelib.search.opensearch_index import OpenSearchIndex, build_client
from tests.search.conftest import required_search_url, unique_index_name
from tests.search.support import delete, make_plan, planservice, upsert


@pytest.fixture
def counted_requests(opensearch_index: OpenSearchIndex) -> Iterator[list[tuple[str, str]]]:
    """Record (method, path) of every request the client sends; the real server still responds."""
    transport = opensearch_index.client.transport
    original = transport.perform_request
    requests: list[tuple[str, str]] = []

    def counting(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        requests.append((method, url))
        return original(method, url, *args, **kwargs)

    transport.perform_request = counting  # type: ignore[method-assign]
    yield requests
    transport.perform_request = original  # type: ignore[method-assign]


def search(index: OpenSearchIndex, query: dict[str, Any]) -> list[dict[str, Any]]:
    response = index.client.search(
        index=index.index_name, body={"query": query, "size": 100, "sort": [{"identity": "asc"}]}
    )
    return list(response["hits"]["hits"])


def default_relations() -> JoinRelations:
    return JoinRelations.from_schema_relations(join_relations(load_schema(DEFAULT_SCHEMA_PATH)))


def test_mapping_has_join_relations_from_schema(opensearch_index):
    mapping = opensearch_index.client.indices.get_mapping(index=opensearch_index.index_name)
    properties = mapping[opensearch_index.index_name]["mappings"]["properties"]

    assert properties["plan_join"] == {
        "type": "join",
        "eager_global_ordinals": True,
        "relations": {
            "plan": ["planCostShares", "linkedPlanServices"],
            "linkedPlanServices": ["linkedService", "planserviceCostShares"],
        },
    }
    assert mapping[opensearch_index.index_name]["mappings"]["date_detection"] is False
    assert properties["stored"] == {"type": "object", "enabled": False}
    assert properties["planVersion"] == {"type": "long"}
    for name in ("identity", "objectId", "objectType", "relation", "planId", "parentIdentity"):
        assert properties[name] == {"type": "keyword"}


def test_every_document_is_routed_by_plan_id(opensearch_index, tag):
    plan = make_plan(tag)
    opensearch_index.apply_events([upsert(plan, 1)])

    hits = search(opensearch_index, {"term": {"planId": plan["objectId"]}})

    assert len(hits) == 8
    assert {hit["_routing"] for hit in hits} == {plan["objectId"]}


def test_documents_carry_join_values(opensearch_index, tag):
    plan = make_plan(tag)
    opensearch_index.apply_events([upsert(plan, 1)])
    service = planservice(plan, 0)

    hits = {
        hit["_id"]: hit["_source"]
        for hit in search(opensearch_index, {"term": {"planId": plan["objectId"]}})
    }

    assert hits[f"plan:{plan['objectId']}"]["plan_join"] == {"name": "plan"}
    assert hits[f"planservice:{service['objectId']}"]["plan_join"] == {
        "name": "linkedPlanServices",
        "parent": f"plan:{plan['objectId']}",
    }
    assert hits[f"service:{service['linkedService']['objectId']}"]["plan_join"] == {
        "name": "linkedService",
        "parent": f"planservice:{service['objectId']}",
    }
    assert (
        hits[f"service:{service['linkedService']['objectId']}"]["body"] == service["linkedService"]
    )
    assert "planCostShares" not in hits[f"plan:{plan['objectId']}"]["body"]


def test_has_child_on_copay_range_returns_plan(opensearch_index, tag):
    plan = make_plan(tag)
    cheap = make_plan(f"{tag}-cheap")
    for service in cheap["linkedPlanServices"]:
        service["planserviceCostShares"]["copay"] = 5
    opensearch_index.apply_events([upsert(plan, 1), upsert(cheap, 1)])

    def plans_with_copay_at_least(amount: float) -> list[str]:
        query = {
            "bool": {
                "filter": [
                    {"terms": {"planId": [plan["objectId"], cheap["objectId"]]}},
                    {
                        "has_child": {
                            "type": "linkedPlanServices",
                            "query": {
                                "has_child": {
                                    "type": "planserviceCostShares",
                                    "query": {"range": {"body.copay": {"gte": amount}}},
                                }
                            },
                        }
                    },
                ]
            }
        }
        return [hit["_source"]["objectId"] for hit in search(opensearch_index, query)]

    assert plans_with_copay_at_least(100) == [plan["objectId"]]
    assert plans_with_copay_at_least(176) == []
    assert sorted(plans_with_copay_at_least(0)) == sorted([plan["objectId"], cheap["objectId"]])


def test_has_parent_returns_planservice_children(opensearch_index, tag):
    plan = make_plan(tag)
    opensearch_index.apply_events([upsert(plan, 1)])
    service = planservice(plan, 1)

    hits = search(
        opensearch_index,
        {
            "has_parent": {
                "parent_type": "linkedPlanServices",
                "query": {"term": {"objectId": service["objectId"]}},
            }
        },
    )

    assert [hit["_id"] for hit in hits] == [
        f"membercostshare:{service['planserviceCostShares']['objectId']}",
        f"service:{service['linkedService']['objectId']}",
    ]


def test_body_numbers_allow_range_queries_with_fractions(opensearch_index, tag):
    plan = make_plan(tag)
    planservice(plan, 0)["planserviceCostShares"]["copay"] = 12.5
    opensearch_index.apply_events([upsert(plan, 1)])

    hits = search(
        opensearch_index,
        {
            "bool": {
                "filter": [
                    {"term": {"planId": plan["objectId"]}},
                    {"range": {"body.copay": {"gt": 12, "lt": 13}}},
                ]
            }
        },
    )

    assert [hit["_source"]["objectId"] for hit in hits] == [
        planservice(plan, 0)["planserviceCostShares"]["objectId"]
    ]


def test_bulk_requests_per_batch_are_constant(opensearch_index, counted_requests, tag):
    opensearch_index.apply_events([upsert(make_plan(f"{tag}-warm"), 1)])
    counted_requests.clear()
    opensearch_index.apply_events([upsert(make_plan(f"{tag}-single"), 1)])
    single = list(counted_requests)

    counted_requests.clear()
    events = []
    for number in range(12):
        plan = make_plan(f"{tag}-{number}")
        events.extend([upsert(plan, 1), upsert(plan, 2)])
        if number % 3 == 0:
            events.append(delete(plan["objectId"], 3))
    opensearch_index.apply_events(events)
    large = list(counted_requests)

    assert len(single) == 4
    assert len(large) == 4
    assert [path.split("?")[0].rsplit("/", 1)[-1] for _, path in large] == [
        "_mget",
        "_msearch",
        "_bulk",
        "_bulk",
    ]


def test_old_events_cost_one_request(opensearch_index, counted_requests, tag):
    plan = make_plan(tag)
    opensearch_index.apply_events([upsert(plan, 2)])
    counted_requests.clear()

    opensearch_index.apply_events([upsert(plan, 1), upsert(plan, 2)])

    assert len(counted_requests) == 1


def test_mapping_conflict_is_permanent(opensearch_index, tag):
    numeric = make_plan(f"{tag}-numeric")
    opensearch_index.apply_events([upsert(numeric, 1)])
    conflicting = make_plan(f"{tag}-text")
    planservice(conflicting, 0)["planserviceCostShares"]["copay"] = "not a number"
    fine = make_plan(f"{tag}-fine")

    with pytest.raises(MappingConflictError) as raised:
        opensearch_index.apply_events([upsert(conflicting, 1), upsert(fine, 1)])

    assert isinstance(raised.value, PermanentEventError)
    assert raised.value.event_ids == (f"{conflicting['objectId']}:1",)
    assert "not a number" not in str(raised.value)
    assert opensearch_index.get_plan(fine["objectId"]) == fine
    assert conflicting["objectId"] not in opensearch_index.plan_versions()


def test_conflicting_plan_applies_once_corrected(opensearch_index, tag):
    opensearch_index.apply_events([upsert(make_plan(f"{tag}-numeric"), 1)])
    plan = make_plan(tag)
    broken = copy.deepcopy(plan)
    planservice(broken, 0)["planserviceCostShares"]["copay"] = "n/a"
    with pytest.raises(MappingConflictError):
        opensearch_index.apply_events([upsert(broken, 1)])

    opensearch_index.apply_events([upsert(plan, 2)])

    assert opensearch_index.get_plan(plan["objectId"]) == plan


def test_unreachable_server_raises_retryable_error(tag):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    index = OpenSearchIndex(
        build_client(f"http://127.0.0.1:{port}", timeout=2),
        unique_index_name(),
        default_relations(),
    )

    with pytest.raises(SearchIndexError) as raised:
        index.apply_events([upsert(make_plan(tag), 1)])

    assert not isinstance(raised.value, PermanentEventError)
    with pytest.raises(SearchIndexError):
        index.get_plan("anything")
    with pytest.raises(SearchIndexError):
        index.check_health()


def test_concurrent_ensure_index_succeeds():
    client = build_client(required_search_url())
    name = unique_index_name()
    indexes = [OpenSearchIndex(client, name, default_relations()) for _ in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=len(indexes)) as pool:
            futures = [pool.submit(index.ensure_index) for index in indexes]
            for future in futures:
                future.result(timeout=60)
        indexes[0].ensure_index()

        assert client.indices.exists(index=name)
        assert client.indices.exists(index=name + "-plan-versions")
    finally:
        indexes[0].delete_index()


def test_deleted_index_is_recreated(tag):
    index = OpenSearchIndex(
        build_client(required_search_url()), unique_index_name(), default_relations()
    )
    plan = make_plan(tag)
    try:
        index.apply_events([upsert(plan, 1)])
        index.client.indices.delete(index=f"{index.index_name},{index.guard_index_name}")

        with pytest.raises(SearchIndexError):
            index.apply_events([upsert(plan, 2)])
        index.apply_events([upsert(plan, 2)])

        assert index.get_plan(plan["objectId"]) == plan
        mapping = index.client.indices.get_mapping(index=index.index_name)
        assert mapping[index.index_name]["mappings"]["properties"]["plan_join"]["type"] == "join"
    finally:
        index.delete_index()


def test_reads_of_missing_index_are_empty():
    index = OpenSearchIndex(
        build_client(required_search_url()), unique_index_name(), default_relations()
    )

    assert index.get_plan("anything") is None
    assert index.find_objects("anything") == []
    assert index.find_children("anything", "plan") == []
    assert index.plan_versions() == {}
    assert index.indexed_plan_ids() == []


def test_client_takes_credentials_and_prefix_from_url():
    client = build_client("https://user%40corp:p%3Ass@search.example.test:9243/prefix")

    connection = client.transport.get_connection()

    assert connection.host == "https://search.example.test:9243"
    assert connection.url_prefix == "/prefix"
    expected = base64.b64encode(b"user@corp:p:ss").decode()
    assert connection.headers["authorization"] == f"Basic {expected}"


def test_client_rejects_url_without_host():
    with pytest.raises(ConfigurationError):
        build_client("localhost:9200")


def moved_plans(tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return two plans with different roots that share every child object."""
    first = make_plan(tag)
    second = copy.deepcopy(first)
    second["objectId"] = f"second-root-{tag}"
    return first, second


def test_object_moved_from_deleted_plan_is_retryable(opensearch_index, tag):
    first, second = moved_plans(tag)
    opensearch_index.apply_events([upsert(first, 1)])
    opensearch_index.apply_events([delete(first["objectId"], 2)])

    with pytest.raises(SearchIndexError, match="gc_deletes") as raised:
        opensearch_index.apply_events([upsert(second, 1)])

    assert not isinstance(raised.value, PermanentEventError)
    assert second["objectId"] not in opensearch_index.plan_versions()


def test_object_still_owned_by_other_plan_is_retryable(opensearch_index, tag):
    first, second = moved_plans(tag)
    opensearch_index.apply_events([upsert(first, 1)])

    with pytest.raises(
        SearchIndexError, match=f"still indexed for plan {first['objectId']}"
    ) as raised:
        opensearch_index.apply_events([upsert(second, 1)])

    assert not isinstance(raised.value, PermanentEventError)


def test_moved_objects_index_once_deletion_markers_expire(tag):
    index = OpenSearchIndex(
        build_client(required_search_url()),
        unique_index_name(),
        default_relations(),
        index_settings={"gc_deletes": "1s"},
    )
    first, second = moved_plans(tag)
    try:
        index.apply_events([upsert(first, 1)])
        with pytest.raises(SearchIndexError):
            index.apply_events([upsert(second, 1)])
        index.apply_events([delete(first["objectId"], 2)])

        deadline = time.monotonic() + 30
        while True:
            try:
                index.apply_events([upsert(second, 1)])
                break
            except SearchIndexError:
                assert time.monotonic() < deadline, "deletion markers did not expire within 30 s"
                time.sleep(0.5)

        assert index.get_plan(second["objectId"]) == second
        assert index.get_plan(first["objectId"]) is None
        assert index.find_objects(planservice(second, 0)["objectId"]) == [planservice(second, 0)]
    finally:
        index.delete_index()


def test_incompatible_existing_mapping_is_reported():
    client = build_client(required_search_url())
    name = unique_index_name()
    original = OpenSearchIndex(client, name, default_relations())
    changed = OpenSearchIndex(client, name, JoinRelations({"plan": ["planCostShares"]}))
    try:
        original.ensure_index()

        with pytest.raises(SearchIndexError, match="rebuild --recreate"):
            changed.ensure_index()
    finally:
        original.delete_index()


def test_mapping_conflict_message_names_field(opensearch_index, tag):
    opensearch_index.apply_events([upsert(make_plan(f"{tag}-numeric"), 1)])
    plan = make_plan(tag)
    planservice(plan, 1)["planserviceCostShares"]["copay"] = "secret value"

    with pytest.raises(MappingConflictError) as raised:
        opensearch_index.apply_events([upsert(plan, 1)])

    message = str(raised.value)
    assert "body.copay" in message
    assert "mapper_parsing_exception" in message
    assert "secret value" not in message


def test_amazon_host_gets_signed_client(monkeypatch):
    # Credentials come from the environment, so boto3 never asks an instance metadata service.
    # Building the client sends no request.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")

    client = build_client("https://search-plans.eu-west-1.es.amazonaws.com")

    connection = client.transport.get_connection()
    assert isinstance(connection, RequestsHttpConnection)
    assert isinstance(connection.session.auth, AWSV4SignerAuth)
    assert connection.session.auth.signer.region == "eu-west-1"
    assert connection.session.auth.service == "es"
    assert connection.host == "https://search-plans.eu-west-1.es.amazonaws.com:443"


def test_amazon_host_without_region_is_rejected(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)

    with pytest.raises(ConfigurationError, match="AWS_REGION"):
        build_client("https://collection.eu-west-1.aoss.amazonaws.com")
