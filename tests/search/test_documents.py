"""Unit tests of the pure event-to-document logic shared by both search indexes."""

from __future__ import annotations

import pytest

from chalicelib.schema import DEFAULT_SCHEMA_PATH, join_relations, load_schema
from chalicelib.search.documents import (
    JoinRelations,
    MalformedEventError,
    MappingConflictError,
    PermanentEventError,
    build_documents,
    fts_query,
    parse_event,
    raise_permanent,
    select_latest,
    text_of,
)
from tests.search.support import delete, make_plan, planservice, upsert


def default_relations() -> JoinRelations:
    return JoinRelations.from_schema_relations(join_relations(load_schema(DEFAULT_SCHEMA_PATH)))


def test_relations_follow_default_schema():
    assert default_relations().children == {
        "plan": ["planCostShares", "linkedPlanServices"],
        "linkedPlanServices": ["linkedService", "planserviceCostShares"],
    }


def test_relation_with_two_parents_keeps_first():
    relations = JoinRelations.from_schema_relations({"plan": ["a", "b"], "a": ["b", "c"], "c": []})

    assert relations.children == {"plan": ["a", "b"], "a": ["c"]}


def test_select_latest_keeps_newest_per_plan():
    first, second = make_plan("one"), make_plan("two")

    batch = select_latest(
        [
            upsert(first, 2),
            upsert(second, 1),
            delete(first["objectId"], 5),
            upsert(first, 4),
            upsert(second, 1),
        ]
    )

    assert [(event.plan_id, event.version, event.deleted) for event in batch.latest] == sorted(
        [(first["objectId"], 5, True), (second["objectId"], 1, False)]
    )
    assert batch.rejected == []


def test_malformed_events_named_by_id_or_position():
    batch = select_latest([{"eventId": "x:1", "type": "plan.upserted"}, 42])

    assert batch.latest == []
    assert [error.event_ids for error in batch.rejected] == [("x:1",), ("batch position 1",)]


def test_parse_event_rejects_non_string_etag():
    event = upsert(make_plan("etag"), 1)
    event["etag"] = 7

    with pytest.raises(MalformedEventError, match="etag"):
        parse_event(event)


def test_documents_have_join_names_and_parents():
    plan = make_plan("docs")
    documents = {
        document.identity: document
        for document in build_documents(parse_event(upsert(plan, 3)), default_relations())
    }
    service = planservice(plan, 0)

    root = documents[f"plan:{plan['objectId']}"]
    child = documents[f"planservice:{service['objectId']}"]
    grandchild = documents[f"service:{service['linkedService']['objectId']}"]
    assert (root.join_name, root.parent_identity, root.plan_version) == ("plan", None, 3)
    assert root.source()["plan_join"] == {"name": "plan"}
    assert child.source()["plan_join"] == {"name": "linkedPlanServices", "parent": root.identity}
    assert grandchild.source()["plan_join"] == {"name": "linkedService", "parent": child.identity}
    assert "linkedPlanServices" not in root.body
    assert child.body == {
        "_org": "example.com",
        "objectId": service["objectId"],
        "objectType": "planservice",
    }


def test_documents_without_schema_relations_have_no_join():
    documents = build_documents(parse_event(upsert(make_plan("plain"), 1)), JoinRelations({}))

    assert all("plan_join" not in document.source() for document in documents)


def test_member_mixing_placeholder_and_values_is_kept():
    plan = make_plan("mixed")
    plan["extras"] = [{"objectId": "extra-1", "objectType": "note"}, "free text"]

    documents = build_documents(parse_event(upsert(plan, 1)), default_relations())

    assert documents[0].body["extras"] == [None, "free text"]


def test_text_collects_string_values():
    assert (
        text_of({"name": "well baby", "copay": 3, "tags": ["a", {"b": "c"}]}) == "well baby\na\nc"
    )


def test_fts_query_quotes_every_word():
    assert fts_query('well "baby" OR NEAR(x') == '"well" "baby" "OR" "NEAR" "x"'
    assert fts_query(" ,; ") == ""


def test_raise_permanent_combines_errors():
    with pytest.raises(PermanentEventError) as raised:
        raise_permanent(
            [MalformedEventError("bad", ["a"]), MappingConflictError("rejected", ["b"])]
        )

    assert type(raised.value) is PermanentEventError
    assert raised.value.event_ids == ("a", "b")
    raise_permanent([])
