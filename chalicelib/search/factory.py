"""Choose the search index from the settings: OpenSearch when SEARCH_URL is set, else SQLite.

The embedded index lives in its own SQLite file next to the plan store, `<SQLITE_PATH>-search`
(with a suffix naming the Redis store when plans live in Redis), so that indexing does not
contend for the store's write lock.
"""

from __future__ import annotations

import hashlib

from chalicelib.config import Settings
from chalicelib.schema import join_relations, load_schema
from chalicelib.search.documents import JoinRelations
from chalicelib.search.opensearch_index import (
    DEFAULT_TIMEOUT_SECONDS,
    OpenSearchIndex,
    build_client,
)
from chalicelib.search.sqlite_index import SqliteSearchIndex

SQLITE_SUFFIX = "-search"


def sqlite_search_path(settings: Settings) -> str:
    """Return the file of the embedded search index for these settings.

    Plan versions count per store, so each store gets its own index file: a Redis store's
    events must not be judged against versions that the SQLite store wrote, and vice versa.
    """
    if settings.redis_url:
        store_key = f"{settings.redis_url}|{settings.redis_key_prefix}".encode()
        return f"{settings.sqlite_path}{SQLITE_SUFFIX}-redis-{hashlib.sha256(store_key).hexdigest()[:12]}"
    return settings.sqlite_path + SQLITE_SUFFIX


def build_search_index(
    settings: Settings,
    *,
    shards: int = 1,
    replicas: int = 0,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> OpenSearchIndex | SqliteSearchIndex:
    """Build the search index these settings choose, without contacting it.

    Both adapters implement the SearchIndex port, plus the operator methods `reapply_events`,
    `indexed_plan_ids`, `delete_index` and `search_text`. `shards` and `replicas` apply only
    when the OpenSearch index is created.
    """
    relations = JoinRelations.from_schema_relations(
        join_relations(load_schema(settings.schema_path))
    )
    if settings.search_url:
        return OpenSearchIndex(
            build_client(settings.search_url, timeout=timeout),
            settings.search_index,
            relations,
            shards=shards,
            replicas=replicas,
        )
    return SqliteSearchIndex(sqlite_search_path(settings), relations)
