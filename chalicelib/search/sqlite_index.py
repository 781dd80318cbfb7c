"""The embedded search index: SQLite tables and an FTS5 table, used when no SEARCH_URL is set.

It returns the same results as the OpenSearch index. Parent and child lookups join rows on
`parent_identity`, and each batch of events is applied in one transaction. Every thread gets its
own connection because `chalice local` serves each request in a new thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.plan_graph import StoredObject
from chalicelib.search.base import IndexedObject
from chalicelib.search.documents import (
    IndexDocument,
    JoinRelations,
    PermanentEventError,
    PlanEvent,
    SearchIndexError,
    assemble_children,
    assemble_objects,
    build_documents,
    find_root,
    fts_query,
    is_due,
    raise_permanent,
    select_latest,
    try_assemble,
)

logger = logging.getLogger(__name__)

# SQLite accepts at most 32,766 host parameters per statement (since 3.32), so lists are sent
# in chunks.
PARAMETER_CHUNK = 500

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS search_documents (
    doc_id INTEGER PRIMARY KEY,
    plan_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    object_id TEXT NOT NULL,
    object_type TEXT NOT NULL,
    relation TEXT NOT NULL,
    parent_identity TEXT,
    join_name TEXT,
    plan_version INTEGER NOT NULL,
    stored TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (plan_id, identity)
);
CREATE INDEX IF NOT EXISTS search_documents_by_object_id ON search_documents (object_id);
CREATE INDEX IF NOT EXISTS search_documents_by_parent ON search_documents (plan_id, parent_identity);
CREATE TABLE IF NOT EXISTS search_plan_versions (
    plan_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    etag TEXT,
    event_id TEXT,
    applied_at TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS search_text USING fts5(text);
"""

DROP_SQL = """
DROP TABLE IF EXISTS search_text;
DROP TABLE IF EXISTS search_documents;
DROP TABLE IF EXISTS search_plan_versions;
"""


class SqliteSearchIndex:
    """SearchIndex on one SQLite database file in WAL mode."""

    def __init__(self, path: str, relations: JoinRelations) -> None:
        self.path = path
        self.relations = relations
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._ready = False
        self._ready_lock = threading.Lock()

    # --- connections --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """Run the block in one transaction, taking SQLite's write lock at the start for a write."""
        if not self._ready:
            self.ensure_index()
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as error:
            raise SearchIndexError(
                f"Failed to open a transaction on {self.path}: {error}"
            ) from error
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            connection.execute("ROLLBACK")
            raise SearchIndexError(f"Failed to commit to {self.path}: {error}") from error

    # --- index management ---------------------------------------------------------------

    def ensure_index(self) -> None:
        with self._ready_lock:
            try:
                self._connection().executescript(SCHEMA_SQL)
            except sqlite3.Error as error:
                raise SearchIndexError(
                    f"Failed to create the search tables in {self.path}: {error}"
                ) from error
            self._ready = True

    def delete_index(self) -> None:
        """Drop the search tables, which the next call creates again."""
        with self._ready_lock:
            try:
                self._connection().executescript(DROP_SQL)
            except sqlite3.Error as error:
                raise SearchIndexError(
                    f"Failed to drop the search tables in {self.path}: {error}"
                ) from error
            self._ready = False
        logger.info("search index deleted", extra={"path": self.path})

    # --- writes -------------------------------------------------------------------------

    def apply_events(self, events: list[dict[str, Any]]) -> None:
        self._apply(events, replace_same_version=False)

    def reapply_events(self, events: list[dict[str, Any]]) -> None:
        """Apply events even when the index already has their version (operator repair)."""
        self._apply(events, replace_same_version=True)

    def _apply(self, events: list[Any], *, replace_same_version: bool) -> None:
        started = time.monotonic()
        batch = select_latest(events)
        rejected: list[PermanentEventError] = list(batch.rejected)
        applied = 0
        skipped = 0
        if batch.latest:
            try:
                with self._transaction(write=True) as connection:
                    guards = _read_guards(connection, [event.plan_id for event in batch.latest])
                    for event in batch.latest:
                        if not is_due(
                            event,
                            guards.get(event.plan_id),
                            replace_same_version=replace_same_version,
                        ):
                            skipped += 1
                            continue
                        try:
                            documents = build_documents(event, self.relations)
                        except PermanentEventError as error:
                            rejected.append(error)
                            continue
                        _replace_plan(connection, event.plan_id, documents)
                        _write_guard(connection, event)
                        applied += 1
            except sqlite3.Error as error:
                raise SearchIndexError(
                    f"Failed to apply search events to {self.path}: {error}"
                ) from error

        logger.info(
            "search events applied",
            extra={
                "path": self.path,
                "events": len(events),
                "plans": len(batch.latest),
                "applied": applied,
                "skipped_as_old": skipped,
                "failed": len(rejected),
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        raise_permanent(rejected)

    def remove_plan_documents(self, plan_id: str) -> None:
        with self._guarded("remove plan documents"), self._transaction(write=True) as connection:
            row = connection.execute(
                "SELECT max(plan_version), count(*) FROM search_documents WHERE plan_id = ?",
                (plan_id,),
            ).fetchone()
            guard_version = _read_guards(connection, [plan_id]).get(plan_id, 0)
            _replace_plan(connection, plan_id, [])
            # The plan stays marked deleted at the newest version seen, so an older event
            # cannot bring it back.
            version = max(guard_version, row[0] or 0)
            if version > 0:
                _write_guard(
                    connection,
                    PlanEvent(
                        event_id=f"{plan_id}:{version}",
                        plan_id=plan_id,
                        version=version,
                        deleted=True,
                        etag=None,
                        plan=None,
                    ),
                )
        logger.info(
            "plan documents removed",
            extra={"path": self.path, "plan_id": plan_id, "documents": row[1]},
        )

    # --- reads --------------------------------------------------------------------------

    def get_plan(self, plan_id: str) -> dict[str, Any] | None:
        with self._guarded("read a plan"), self._transaction(write=False) as connection:
            objects = _fetch_plans(connection, [plan_id]).get(plan_id, {})
        root = find_root(objects)
        return None if root is None else try_assemble(root, objects)

    def find_objects(self, object_id: str) -> list[dict[str, Any]]:
        with self._guarded("find objects"), self._transaction(write=False) as connection:
            hits = _pairs(
                connection.execute(
                    "SELECT plan_id, identity FROM search_documents WHERE object_id = ?",
                    (object_id,),
                )
            )
            plans = _fetch_plans(connection, sorted({plan for plan, _ in hits}))
        return assemble_objects(hits, plans)

    def find_children(self, object_id: str, parent_type: str) -> list[dict[str, Any]]:
        with self._guarded("find children"), self._transaction(write=False) as connection:
            hits = _pairs(
                connection.execute(
                    "SELECT child.plan_id, child.identity FROM search_documents AS parent "
                    "JOIN search_documents AS child ON child.plan_id = parent.plan_id "
                    "AND child.parent_identity = parent.identity "
                    "WHERE parent.object_id = ? AND (parent.object_type = ? OR parent.relation = ?)",
                    (object_id, parent_type, parent_type),
                )
            )
            plans = _fetch_plans(connection, sorted({plan for plan, _ in hits}))
        return assemble_children(hits, plans)

    def search_text(self, query: str) -> list[dict[str, Any]]:
        """Return the objects whose own string values contain every word of `query`."""
        match = fts_query(query)
        if not match:
            return []
        with self._guarded("search text"), self._transaction(write=False) as connection:
            hits = _pairs(
                connection.execute(
                    "SELECT document.plan_id, document.identity FROM search_text "
                    "JOIN search_documents AS document ON document.doc_id = search_text.rowid "
                    "WHERE search_text MATCH ?",
                    (match,),
                )
            )
            plans = _fetch_plans(connection, sorted({plan for plan, _ in hits}))
        return assemble_objects(hits, plans)

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only SQL query on the search tables, for ad-hoc queries and tests."""
        with self._guarded("run a query"), self._transaction(write=False) as connection:
            return connection.execute(sql, parameters).fetchall()

    def plan_versions(self) -> dict[str, int]:
        with self._guarded("read plan versions"), self._transaction(write=False) as connection:
            rows = connection.execute(
                "SELECT plan_id, version FROM search_plan_versions WHERE deleted = 0"
            ).fetchall()
        return {plan_id: int(version) for plan_id, version in rows}

    def indexed_plan_ids(self) -> list[str]:
        """Return the id of every plan that has documents in the index, deleted or not."""
        with self._guarded("list indexed plans"), self._transaction(write=False) as connection:
            rows = connection.execute(
                "SELECT DISTINCT plan_id FROM search_documents ORDER BY plan_id"
            ).fetchall()
        return [plan_id for (plan_id,) in rows]

    def indexed_objects(self, plan_id: str) -> list[IndexedObject]:
        with self._guarded("list indexed objects"), self._transaction(write=False) as connection:
            rows = connection.execute(
                "SELECT identity, plan_version FROM search_documents WHERE plan_id = ? "
                "ORDER BY identity",
                (plan_id,),
            ).fetchall()
        return [
            IndexedObject(identity=identity, plan_id=plan_id, plan_version=int(version))
            for identity, version in rows
        ]

    def check_health(self) -> None:
        with self._guarded("check health"), self._transaction(write=False) as connection:
            connection.execute("SELECT count(*) FROM search_plan_versions").fetchone()

    @contextmanager
    def _guarded(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            raise SearchIndexError(f"Failed to {action} in {self.path}: {error}") from error


def _pairs(rows: Iterable[tuple[Any, ...]]) -> list[tuple[str, str]]:
    return [(str(plan_id), str(identity)) for plan_id, identity in rows]


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), PARAMETER_CHUNK):
        yield values[start : start + PARAMETER_CHUNK]


def _read_guards(connection: sqlite3.Connection, plan_ids: Sequence[str]) -> dict[str, int]:
    versions = {}
    for chunk in _chunks(plan_ids):
        placeholders = ",".join("?" * len(chunk))
        for plan_id, version in connection.execute(
            f"SELECT plan_id, version FROM search_plan_versions WHERE plan_id IN ({placeholders})",
            tuple(chunk),
        ):
            versions[plan_id] = int(version)
    return versions


def _write_guard(connection: sqlite3.Connection, event: PlanEvent) -> None:
    connection.execute(
        "INSERT INTO search_plan_versions (plan_id, version, deleted, etag, event_id, applied_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (plan_id) DO UPDATE SET version = excluded.version, "
        "deleted = excluded.deleted, etag = excluded.etag, event_id = excluded.event_id, "
        "applied_at = excluded.applied_at",
        (
            event.plan_id,
            event.version,
            int(event.deleted),
            event.etag,
            event.event_id,
            datetime.now(UTC).isoformat(timespec="milliseconds"),
        ),
    )


def _replace_plan(
    connection: sqlite3.Connection, plan_id: str, documents: list[IndexDocument]
) -> None:
    """Replace every row of a plan with `documents`, so an empty list removes the plan's rows."""
    connection.execute(
        "DELETE FROM search_text WHERE rowid IN "
        "(SELECT doc_id FROM search_documents WHERE plan_id = ?)",
        (plan_id,),
    )
    connection.execute("DELETE FROM search_documents WHERE plan_id = ?", (plan_id,))
    for document in documents:
        cursor = connection.execute(
            "INSERT INTO search_documents (plan_id, identity, object_id, object_type, relation, "
            "parent_identity, join_name, plan_version, stored, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                plan_id,
                document.identity,
                document.object_id,
                document.object_type,
                document.relation,
                document.parent_identity,
                document.join_name,
                document.plan_version,
                json.dumps(document.stored),
                json.dumps(document.body),
            ),
        )
        connection.execute(
            "INSERT INTO search_text (rowid, text) VALUES (?, ?)", (cursor.lastrowid, document.text)
        )


def _fetch_plans(
    connection: sqlite3.Connection, plan_ids: Sequence[str]
) -> dict[str, dict[str, StoredObject]]:
    plans: dict[str, dict[str, StoredObject]] = {plan_id: {} for plan_id in plan_ids}
    for chunk in _chunks(plan_ids):
        placeholders = ",".join("?" * len(chunk))
        for plan_id, identity, stored in connection.execute(
            f"SELECT plan_id, identity, stored FROM search_documents "
            f"WHERE plan_id IN ({placeholders})",
            tuple(chunk),
        ):
            plans[plan_id][identity] = StoredObject.from_json(json.loads(stored))
    return plans
