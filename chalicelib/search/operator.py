"""Operator commands for the search index: rebuild it from the store, and compare it with the store.

The store is the source of truth. `rebuild` writes every stored plan into the index again, and
`diff` lists each plan whose indexed state differs from the store and can repair it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from chalicelib.search.base import SearchIndex
from chalicelib.store.base import PlanSnapshot, PlanStore, build_event, utc_now_iso

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 100
# Bounds the store listing so that a store that keeps returning pages cannot loop forever.
MAX_STORE_PAGES = 1_000_000

MISSING = "missing"
STALE = "stale"
ORPHANED = "orphaned"


class AdministrableSearchIndex(SearchIndex, Protocol):
    """The search index port plus the methods only the operator commands use."""

    def reapply_events(self, events: list[dict[str, Any]]) -> None:
        """Apply events even when the index already has their version."""

    def indexed_plan_ids(self) -> list[str]:
        """Return the id of every plan that has documents in the index."""

    def delete_index(self) -> None:
        """Delete the index and its plan versions."""


@dataclass(frozen=True)
class Difference:
    """One way in which the index differs from the store, for one plan."""

    kind: str
    plan_id: str
    detail: str

    def line(self) -> str:
        return f"{self.kind}\t{self.plan_id}\t{self.detail}"


@dataclass
class RebuildReport:
    plans: int = 0
    objects: int = 0
    batches: int = 0


@dataclass
class RepairReport:
    reapplied: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def iterate_store(store: PlanStore, page_size: int = DEFAULT_BATCH_SIZE) -> Iterator[PlanSnapshot]:
    """Yield every plan of the store in id order, one page of `page_size` at a time."""
    after: str | None = None
    for _ in range(MAX_STORE_PAGES):
        page = store.list_plans(after, page_size)
        yield from page
        if len(page) < page_size:
            return
        after = page[-1].plan_id
    raise RuntimeError(f"The store listed more than {MAX_STORE_PAGES} pages of plans.")


def snapshot_event(snapshot: PlanSnapshot) -> dict[str, Any]:
    """Return the upsert event that carries a stored plan at its current version."""
    return build_event(
        plan_id=snapshot.plan_id,
        version=snapshot.version,
        event_type="plan.upserted",
        etag=snapshot.etag,
        plan_json=json.dumps(snapshot.document()),
        occurred_at=utc_now_iso(),
    )


def rebuild(
    store: PlanStore,
    index: AdministrableSearchIndex,
    *,
    recreate: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> RebuildReport:
    """Write every stored plan into the index at its current version.

    With `recreate` the index is deleted first, which also removes plans the store no longer
    has. Without it, those stay until `diff --repair` removes them.
    """
    if recreate:
        index.delete_index()
    index.ensure_index()

    report = RebuildReport()
    batch: list[dict[str, Any]] = []
    for snapshot in iterate_store(store, batch_size):
        batch.append(snapshot_event(snapshot))
        report.plans += 1
        report.objects += len(snapshot.objects)
        if len(batch) >= batch_size:
            index.reapply_events(batch)
            report.batches += 1
            batch = []
    if batch:
        index.reapply_events(batch)
        report.batches += 1
    logger.info(
        "search index rebuilt",
        extra={
            "plans": report.plans,
            "objects": report.objects,
            "batches": report.batches,
            "recreated": recreate,
        },
    )
    return report


def diff(
    store: PlanStore, index: AdministrableSearchIndex, *, page_size: int = DEFAULT_BATCH_SIZE
) -> list[Difference]:
    """List every difference between the store and the index, sorted by plan id."""
    versions = index.plan_versions()
    with_documents = set(index.indexed_plan_ids())
    differences: list[Difference] = []
    stored_ids: set[str] = set()

    for snapshot in iterate_store(store, page_size):
        stored_ids.add(snapshot.plan_id)
        difference = _compare_plan(
            snapshot, versions.get(snapshot.plan_id), snapshot.plan_id in with_documents, index
        )
        if difference is not None:
            differences.append(difference)

    for plan_id in sorted((set(versions) | with_documents) - stored_ids):
        if plan_id in versions:
            detail = (
                f"the index holds version {versions[plan_id]} of a plan the store does not have"
            )
        else:
            detail = "the index holds documents of a plan the store does not have"
        differences.append(Difference(ORPHANED, plan_id, detail))

    differences.sort(key=lambda difference: (difference.plan_id, difference.kind))
    return differences


def _compare_plan(
    snapshot: PlanSnapshot, indexed_version: int | None, has_documents: bool, index: SearchIndex
) -> Difference | None:
    plan_id = snapshot.plan_id
    if indexed_version is None and not has_documents:
        return Difference(MISSING, plan_id, f"store version {snapshot.version} is not indexed")
    if indexed_version is None:
        return Difference(
            STALE,
            plan_id,
            f"documents are indexed but no live version is recorded; "
            f"store version {snapshot.version}",
        )
    if indexed_version > snapshot.version:
        # Versions only grow, so this happens only when the store was restored from a backup.
        # Re-applying cannot lower a version, which only `rebuild --recreate` resets.
        return Difference(
            STALE,
            plan_id,
            f"index version {indexed_version} is newer than store "
            f"version {snapshot.version}; run rebuild --recreate",
        )
    if indexed_version < snapshot.version:
        return Difference(
            STALE, plan_id, f"index version {indexed_version}, store version {snapshot.version}"
        )

    indexed = index.indexed_objects(plan_id)
    indexed_identities = {item.identity for item in indexed}
    stored_identities = set(snapshot.objects)
    absent = sorted(stored_identities - indexed_identities)
    extra = sorted(indexed_identities - stored_identities)
    old = sorted(item.identity for item in indexed if item.plan_version != snapshot.version)
    if not (absent or extra or old):
        return None
    parts = []
    if absent:
        parts.append(f"{len(absent)} object(s) not indexed (first {absent[0]})")
    if extra:
        parts.append(f"{len(extra)} object(s) indexed but not stored (first {extra[0]})")
    if old:
        parts.append(f"{len(old)} document(s) of another version (first {old[0]})")
    return Difference(STALE, plan_id, f"version {snapshot.version}: " + "; ".join(parts))


def repair(
    store: PlanStore,
    index: AdministrableSearchIndex,
    differences: list[Difference],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> RepairReport:
    """Write the store's current state of missing and stale plans, and remove orphaned ones."""
    report = RepairReport()
    batch: list[dict[str, Any]] = []
    for difference in differences:
        # The store is read again, because a plan may have been written since the diff ran.
        snapshot = store.get(difference.plan_id)
        if snapshot is None:
            index.remove_plan_documents(difference.plan_id)
            report.removed.append(difference.plan_id)
            continue
        batch.append(snapshot_event(snapshot))
        report.reapplied.append(difference.plan_id)
        if len(batch) >= batch_size:
            index.reapply_events(batch)
            batch = []
    if batch:
        index.reapply_events(batch)
    logger.info(
        "search index repaired",
        extra={"reapplied": len(report.reapplied), "removed": len(report.removed)},
    )
    return report
