"""The operator commands against a real SQLite plan store and both search indexes."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chalicelib.config import Settings
from chalicelib.schema import DEFAULT_SCHEMA_PATH
from chalicelib.search import operator
from chalicelib.search.factory import build_search_index
from chalicelib.search.opensearch_index import OpenSearchIndex
from chalicelib.search.sqlite_index import SqliteSearchIndex
from chalicelib.service import PlanService
from chalicelib.store.sqlite_store import SqlitePlanStore
from tests.search.conftest import opensearch_settings, sqlite_settings
from tests.search.support import make_plan, planservice

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "index_admin.py"
SCRIPT_TIMEOUT_SECONDS = 120


@dataclass
class Deployment:
    settings: Settings
    store: SqlitePlanStore
    service: PlanService
    index: OpenSearchIndex | SqliteSearchIndex

    def deliver_outbox(self) -> None:
        """Apply every pending store event to the index, as the queue handlers would."""
        for _ in range(100):
            entries = self.store.read_outbox(100)
            if not entries:
                return
            self.index.apply_events([entry.event for entry in entries])
            self.store.remove_outbox([entry.entry_id for entry in entries])
        raise AssertionError("the outbox did not drain within 100 batches")

    def discard_outbox(self) -> None:
        """Drop pending events, as if they were lost on the way to the index."""
        entries = self.store.read_outbox(1000)
        self.store.remove_outbox([entry.entry_id for entry in entries])


@pytest.fixture(params=["opensearch", "sqlite"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """A fresh store and a fresh index per test, because diff reports every plan of both."""
    sqlite_path = tmp_path / "plans.sqlite3"
    settings = (
        opensearch_settings(sqlite_path)
        if request.param == "opensearch"
        else sqlite_settings(sqlite_path)
    )
    store = SqlitePlanStore(settings.sqlite_path)
    index = build_search_index(settings)
    index.ensure_index()
    yield Deployment(settings, store, PlanService(store, DEFAULT_SCHEMA_PATH), index)
    index.delete_index()


def drop_indexed_document(
    index: OpenSearchIndex | SqliteSearchIndex, plan_id: str, identity: str
) -> None:
    """Remove one document behind the adapter's back, as a lost write would."""
    if isinstance(index, OpenSearchIndex):
        # The delete keeps the document's own version, as the adapter's deletes do, so that
        # re-applying that version may write the document again.
        version = next(
            item.plan_version
            for item in index.indexed_objects(plan_id)
            if item.identity == identity
        )
        index.client.delete(
            index=index.index_name,
            id=identity,
            params={
                "routing": plan_id,
                "refresh": "true",
                "version": version,
                "version_type": "external_gte",
            },
        )
    else:
        connection = index._connection()
        connection.execute(
            "DELETE FROM search_documents WHERE plan_id = ? AND identity = ?", (plan_id, identity)
        )


def seed_differences(deployment: Deployment) -> dict[str, dict]:
    """Create one plan in sync and one plan for each kind of difference; return them by role."""
    plans = {role: make_plan(role) for role in ("synced", "missing", "stale", "holey", "orphaned")}
    for role in ("synced", "stale", "holey", "orphaned"):
        deployment.service.create(plans[role])
    deployment.deliver_outbox()

    deployment.service.create(plans["missing"])
    patched = copy.deepcopy(plans["stale"])
    patched["planType"] = "outOfNetwork"
    deployment.service.replace(plans["stale"]["objectId"], patched, None)
    plans["stale"] = patched
    deployment.service.delete(plans["orphaned"]["objectId"], None)
    deployment.discard_outbox()

    holey = plans["holey"]
    drop_indexed_document(
        deployment.index,
        holey["objectId"],
        f"service:{planservice(holey, 1)['linkedService']['objectId']}",
    )
    return plans


def test_diff_of_synced_index_is_empty(deployment):
    deployment.service.create(make_plan("one"))
    deployment.deliver_outbox()

    assert operator.diff(deployment.store, deployment.index) == []


def test_diff_finds_missing_stale_and_orphaned(deployment):
    plans = seed_differences(deployment)

    differences = operator.diff(deployment.store, deployment.index)

    kinds = {difference.plan_id: difference.kind for difference in differences}
    assert kinds == {
        plans["missing"]["objectId"]: "missing",
        plans["stale"]["objectId"]: "stale",
        plans["holey"]["objectId"]: "stale",
        plans["orphaned"]["objectId"]: "orphaned",
    }
    details = {difference.plan_id: difference.detail for difference in differences}
    assert details[plans["stale"]["objectId"]] == "index version 1, store version 2"
    assert "1 object(s) not indexed" in details[plans["holey"]["objectId"]]


def test_repair_fixes_every_difference(deployment):
    plans = seed_differences(deployment)
    differences = operator.diff(deployment.store, deployment.index)

    report = operator.repair(deployment.store, deployment.index, differences)

    assert operator.diff(deployment.store, deployment.index) == []
    assert report.removed == [plans["orphaned"]["objectId"]]
    assert sorted(report.reapplied) == sorted(
        plans[role]["objectId"] for role in ("missing", "stale", "holey")
    )
    for role in ("synced", "missing", "stale", "holey"):
        assert deployment.index.get_plan(plans[role]["objectId"]) == plans[role]
    assert deployment.index.get_plan(plans["orphaned"]["objectId"]) is None


def test_documents_without_store_plan_are_orphaned(deployment):
    stray = make_plan("stray")
    deployment.index.apply_events(
        [
            {
                "eventId": f"{stray['objectId']}:3",
                "type": "plan.upserted",
                "planId": stray["objectId"],
                "version": 3,
                "etag": None,
                "occurredAt": "2024-01-01T00:00:00.000Z",
                "plan": stray,
            }
        ]
    )

    differences = operator.diff(deployment.store, deployment.index)
    operator.repair(deployment.store, deployment.index, differences)

    assert [(difference.kind, difference.plan_id) for difference in differences] == [
        ("orphaned", stray["objectId"])
    ]
    assert deployment.index.indexed_objects(stray["objectId"]) == []
    assert operator.diff(deployment.store, deployment.index) == []


def test_rebuild_indexes_every_stored_plan(deployment):
    plans = [make_plan(f"rebuild-{number}") for number in range(7)]
    for plan in plans:
        deployment.service.create(plan)
    deployment.discard_outbox()

    report = operator.rebuild(deployment.store, deployment.index, batch_size=3)

    assert (report.plans, report.objects, report.batches) == (7, 56, 3)
    for plan in plans:
        assert deployment.index.get_plan(plan["objectId"]) == plan
    assert operator.diff(deployment.store, deployment.index) == []


def test_rebuild_with_recreate_drops_orphans(deployment):
    plans = seed_differences(deployment)

    operator.rebuild(deployment.store, deployment.index, recreate=True)

    assert operator.diff(deployment.store, deployment.index) == []
    assert deployment.index.get_plan(plans["orphaned"]["objectId"]) is None
    assert deployment.index.get_plan(plans["stale"]["objectId"]) == plans["stale"]


def run_script(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "SEARCH_URL", "SEARCH_INDEX", "SQLITE_PATH")
    }
    env["SQLITE_PATH"] = deployment.settings.sqlite_path
    if deployment.settings.search_url:
        env["SEARCH_URL"] = deployment.settings.search_url
        env["SEARCH_INDEX"] = deployment.settings.search_index
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_SECONDS,
        check=False,
    )


def test_script_diff_reports_and_repair_fixes(deployment):
    plans = seed_differences(deployment)

    found = run_script(deployment, "diff")
    repaired = run_script(deployment, "diff", "--repair")
    clean = run_script(deployment, "diff")

    assert found.returncode == 1, found.stderr
    lines = found.stdout.splitlines()
    assert f"missing\t{plans['missing']['objectId']}\tstore version 1 is not indexed" in lines
    assert any(line.startswith(f"orphaned\t{plans['orphaned']['objectId']}\t") for line in lines)
    assert lines[-1] == "diff: 4 difference(s): 1 missing, 2 stale, 1 orphaned"
    assert repaired.returncode == 0, repaired.stderr
    assert repaired.stdout.splitlines()[-1] == "repair: the index matches the store"
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout == "diff: the index matches the store\n"


def test_script_rebuild_recreates_index(deployment):
    plan = make_plan("script-rebuild")
    deployment.service.create(plan)
    deployment.discard_outbox()

    result = run_script(deployment, "rebuild", "--recreate")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "rebuild: indexed 1 plan(s) with 8 object(s) in 1 batch(es)\n"
    assert deployment.index.get_plan(plan["objectId"]) == plan


def test_script_rejects_bad_batch_size(deployment):
    result = run_script(deployment, "rebuild", "--batch-size", "0")

    assert result.returncode == 2
    assert "must be a positive integer" in result.stderr
