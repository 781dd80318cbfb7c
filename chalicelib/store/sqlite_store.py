"""The embedded plan store: one SQLite file in WAL mode, used when no Redis is configured.

Each write runs in one `BEGIN IMMEDIATE` transaction, so writers are serialized by SQLite's
write lock and readers, reading inside their own transaction, never see half a plan. Every
thread gets its own connection because `chalice local` serves each request in a new thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chalicelib.errors import OwnershipConflict, PlanAlreadyExists, PlanNotFound
from chalicelib.plan_graph import StoredObject
from chalicelib.store.base import (OutboxEntry, PlanSnapshot, PlanWrite, VersionConflict,
                                   build_event, utc_now_iso)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    etag TEXT NOT NULL,
    root TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stored_objects (
    identity TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stored_objects_by_plan ON stored_objects (plan_id);
CREATE TABLE IF NOT EXISTS plan_versions (
    plan_id TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL
);
"""


class SqlitePlanStore:
    """PlanStore on one SQLite database file."""

    def __init__(self, path: str) -> None:
        self.path = path
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(SCHEMA_SQL)

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                         check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            self._local.connection = connection
        return connection

    @contextmanager
    def _transaction(self, *, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def get(self, plan_id: str) -> PlanSnapshot | None:
        with self._transaction() as connection:
            return self._read_plan(connection, plan_id)

    def list_plans(self, after: str | None, limit: int) -> list[PlanSnapshot]:
        with self._transaction() as connection:
            rows = connection.execute(
                "SELECT plan_id FROM plans WHERE plan_id > ? ORDER BY plan_id LIMIT ?",
                (after or "", limit)).fetchall()
            snapshots = [self._read_plan(connection, plan_id) for (plan_id,) in rows]
        return [snapshot for snapshot in snapshots if snapshot is not None]

    def _read_plan(self, connection: sqlite3.Connection, plan_id: str) -> PlanSnapshot | None:
        row = connection.execute(
            "SELECT version, etag, root FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
        if row is None:
            return None
        version, etag, root = row
        objects = {
            identity: StoredObject.from_json(json.loads(body))
            for identity, body in connection.execute(
                "SELECT identity, body FROM stored_objects WHERE plan_id = ?", (plan_id,))
        }
        return PlanSnapshot(plan_id=plan_id, version=version, etag=etag, root=root,
                            objects=objects)

    def save(self, write: PlanWrite) -> int:
        with self._transaction(immediate=True) as connection:
            row = connection.execute(
                "SELECT version FROM plans WHERE plan_id = ?", (write.plan_id,)).fetchone()
            if write.expected_version is None and row is not None:
                raise PlanAlreadyExists(f"A plan with id '{write.plan_id}' already exists.")
            if write.expected_version is not None:
                if row is None:
                    raise PlanNotFound(f"No plan with id '{write.plan_id}'.")
                if row[0] != write.expected_version:
                    raise VersionConflict(write.plan_id)

            self._check_ownership(connection, write)
            connection.executemany("DELETE FROM stored_objects WHERE identity = ? AND plan_id = ?",
                                   [(identity, write.plan_id) for identity in write.deletes])
            connection.executemany(
                "INSERT INTO stored_objects (identity, plan_id, body) VALUES (?, ?, ?) "
                "ON CONFLICT (identity) DO UPDATE SET body = excluded.body",
                [(identity, write.plan_id, json.dumps(stored.to_json()))
                 for identity, stored in write.upserts.items()])
            version = self._next_version(connection, write.plan_id)
            connection.execute(
                "INSERT INTO plans (plan_id, version, etag, root) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (plan_id) DO UPDATE SET version = excluded.version, "
                "etag = excluded.etag, root = excluded.root",
                (write.plan_id, version, write.etag, write.root))
            self._append_event(connection, write.plan_id, version, "plan.upserted", write.etag,
                               write.document_json)
        return version

    def _check_ownership(self, connection: sqlite3.Connection, write: PlanWrite) -> None:
        identities = list(write.upserts)
        for start in range(0, len(identities), 500):
            batch = identities[start:start + 500]
            placeholders = ",".join("?" * len(batch))
            owned = connection.execute(
                f"SELECT identity, plan_id FROM stored_objects WHERE identity IN ({placeholders}) "
                "AND plan_id != ? LIMIT 1", (*batch, write.plan_id)).fetchone()
            if owned is not None:
                raise OwnershipConflict(
                    f"The object {owned[0]} belongs to another plan ('{owned[1]}').")

    def _next_version(self, connection: sqlite3.Connection, plan_id: str) -> int:
        row = connection.execute(
            "INSERT INTO plan_versions (plan_id, last_version) VALUES (?, 1) "
            "ON CONFLICT (plan_id) DO UPDATE SET last_version = last_version + 1 "
            "RETURNING last_version", (plan_id,)).fetchone()
        return int(row[0])

    def _append_event(self, connection: sqlite3.Connection, plan_id: str, version: int,
                      event_type: str, etag: str | None, plan_json: str | None) -> None:
        event = build_event(plan_id=plan_id, version=version, event_type=event_type, etag=etag,
                            plan_json=plan_json, occurred_at=utc_now_iso())
        connection.execute("INSERT INTO outbox (event) VALUES (?)", (json.dumps(event),))

    def delete(self, plan_id: str, expected_version: int) -> int:
        with self._transaction(immediate=True) as connection:
            row = connection.execute(
                "SELECT version FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
            if row is None:
                raise PlanNotFound(f"No plan with id '{plan_id}'.")
            if row[0] != expected_version:
                raise VersionConflict(plan_id)
            connection.execute("DELETE FROM stored_objects WHERE plan_id = ?", (plan_id,))
            connection.execute("DELETE FROM plans WHERE plan_id = ?", (plan_id,))
            version = self._next_version(connection, plan_id)
            self._append_event(connection, plan_id, version, "plan.deleted", None, None)
        return version

    def read_outbox(self, limit: int) -> list[OutboxEntry]:
        rows = self._connection().execute(
            "SELECT entry_id, event FROM outbox ORDER BY entry_id LIMIT ?", (limit,)).fetchall()
        return [OutboxEntry(entry_id=str(entry_id), event=json.loads(event))
                for entry_id, event in rows]

    def remove_outbox(self, entry_ids: list[str]) -> None:
        with self._transaction(immediate=True) as connection:
            connection.executemany("DELETE FROM outbox WHERE entry_id = ?",
                                   [(int(entry_id),) for entry_id in entry_ids])

    def check_health(self) -> None:
        self._connection().execute("SELECT 1").fetchone()
