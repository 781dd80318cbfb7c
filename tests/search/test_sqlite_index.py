"""SQLite-specific behaviour: SQL joins for parent and child queries, transactions, threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from chalicelib.search.sqlite_index import SqliteSearchIndex
from tests.search.support import make_plan, planservice, upsert


def test_plans_with_copay_child_found_by_sql(sqlite_index: SqliteSearchIndex, tag):
    plan = make_plan(tag)
    cheap = make_plan(f"{tag}-cheap")
    for service in cheap["linkedPlanServices"]:
        service["planserviceCostShares"]["copay"] = 5
    sqlite_index.apply_events([upsert(plan, 1), upsert(cheap, 1)])

    def plans_with_copay_at_least(amount: float) -> list[str]:
        rows = sqlite_index.execute(
            "SELECT DISTINCT root.object_id FROM search_documents AS root "
            "JOIN search_documents AS service ON service.plan_id = root.plan_id "
            " AND service.parent_identity = root.identity AND service.join_name = 'linkedPlanServices' "
            "JOIN search_documents AS share ON share.plan_id = service.plan_id "
            " AND share.parent_identity = service.identity AND share.join_name = 'planserviceCostShares' "
            "WHERE root.join_name = 'plan' AND root.plan_id IN (?, ?) "
            "AND json_extract(share.body, '$.copay') >= ? ORDER BY root.object_id",
            (plan["objectId"], cheap["objectId"], amount),
        )
        return [object_id for (object_id,) in rows]

    assert plans_with_copay_at_least(100) == [plan["objectId"]]
    assert plans_with_copay_at_least(176) == []
    assert plans_with_copay_at_least(0) == sorted([plan["objectId"], cheap["objectId"]])


def test_children_of_planservice_found_by_sql(sqlite_index: SqliteSearchIndex, tag):
    plan = make_plan(tag)
    sqlite_index.apply_events([upsert(plan, 1)])
    service = planservice(plan, 1)

    rows = sqlite_index.execute(
        "SELECT child.identity FROM search_documents AS parent "
        "JOIN search_documents AS child ON child.plan_id = parent.plan_id "
        " AND child.parent_identity = parent.identity "
        "WHERE parent.object_id = ? AND parent.join_name = 'linkedPlanServices' ORDER BY child.identity",
        (service["objectId"],),
    )

    assert [identity for (identity,) in rows] == [
        f"membercostshare:{service['planserviceCostShares']['objectId']}",
        f"service:{service['linkedService']['objectId']}",
    ]


def test_batch_is_one_transaction(sqlite_index: SqliteSearchIndex, tag):
    statements: list[str] = []
    connection = sqlite_index._connection()
    connection.set_trace_callback(statements.append)
    try:
        sqlite_index.apply_events([upsert(make_plan(f"{tag}-{number}"), 1) for number in range(10)])
    finally:
        connection.set_trace_callback(None)

    assert statements.count("BEGIN IMMEDIATE") == 1
    assert statements.count("COMMIT") == 1


def test_database_uses_wal_mode(sqlite_index: SqliteSearchIndex):
    assert sqlite_index.execute("PRAGMA journal_mode") == [("wal",)]


def test_concurrent_readers_see_whole_plans(sqlite_index: SqliteSearchIndex, tag):
    plan = make_plan(tag)
    sqlite_index.apply_events([upsert(plan, 1)])

    def read() -> list[object]:
        return [sqlite_index.get_plan(plan["objectId"]) for _ in range(20)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(read) for _ in range(4)]
        for version in range(2, 12):
            sqlite_index.apply_events([upsert(plan, version)])
        results = [result for future in futures for result in future.result(timeout=60)]

    assert len(results) == 80
    assert all(result == plan for result in results)


def test_deleted_tables_are_created_again(tmp_path, tag):
    from chalicelib.schema import DEFAULT_SCHEMA_PATH, join_relations, load_schema
    from chalicelib.search.documents import JoinRelations

    relations = JoinRelations.from_schema_relations(
        join_relations(load_schema(DEFAULT_SCHEMA_PATH))
    )
    index = SqliteSearchIndex(str(tmp_path / "search.sqlite3"), relations)
    plan = make_plan(tag)
    index.apply_events([upsert(plan, 1)])

    index.delete_index()

    assert index.get_plan(plan["objectId"]) is None
    index.apply_events([upsert(plan, 1)])
    assert index.get_plan(plan["objectId"]) == plan
