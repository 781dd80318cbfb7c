"""The search index on OpenSearch 1.x and later or Elasticsearch 7.10 and later, via opensearch-py.

Each stored object is one document, routed by its plan's id and placed in a `join` field whose
relations follow the plan schema. A second index contains one guard document per plan with the
last applied version, so events apply in version order and a deleted plan never comes back.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from opensearchpy import OpenSearch, RequestsHttpConnection
from opensearchpy.exceptions import (
    ImproperlyConfigured,
    SerializationError,
    TransportError,
)

from chalicelib.config import ConfigurationError
from chalicelib.plan_graph import StoredObject
from chalicelib.search.base import IndexedObject
from chalicelib.search.documents import (
    IndexDocument,
    JoinRelations,
    MappingConflictError,
    PermanentEventError,
    PlanEvent,
    SearchIndexError,
    assemble_children,
    assemble_objects,
    build_documents,
    find_root,
    is_due,
    raise_permanent,
    select_latest,
    try_assemble,
)

logger = logging.getLogger(__name__)

GUARD_INDEX_SUFFIX = "-plan-versions"
AWS_HOST_SUFFIXES = (".es.amazonaws.com", ".aoss.amazonaws.com")
DEFAULT_TIMEOUT_SECONDS = 30.0

# A plan has at most 10,000 stored objects, which is also the default `max_result_window`,
# so one page usually returns a whole plan.
PAGE_SIZE = 10_000
MAX_PAGES = 10_000
# Bulk bodies are split above this size, well below the server's default
# `http.max_content_length` of 100 MB.
MAX_BULK_BYTES = 20 * 1024 * 1024
# The `ignore_unavailable` option makes a read of a missing index return no hits.
READ_PARAMS = {"ignore_unavailable": "true"}

# Errors with status 400 that a later retry can get past, unlike a rejected document.
TRANSIENT_REQUEST_ERRORS = frozenset({"index_closed_exception", "cluster_block_exception"})
INDEX_MISSING_ERRORS = frozenset({"index_not_found_exception"})

GUARD_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "planId": {"type": "keyword"},
        "version": {"type": "long"},
        "deleted": {"type": "boolean"},
        "etag": {"type": "keyword", "index": False},
        "eventId": {"type": "keyword", "index": False},
        "appliedAt": {"type": "date"},
    },
}


def build_client(url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> OpenSearch:
    """Build a client for `url`, signing requests with SigV4 for Amazon OpenSearch Service hosts.

    `user:password@` in the URL becomes HTTP basic authentication.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        # The value is not echoed because it may contain a password.
        raise ConfigurationError("SEARCH_URL must be an http:// or https:// URL with a host name.")
    if host.endswith(AWS_HOST_SUFFIXES):
        return _aws_client(host, parts.port or 443, timeout)

    node: dict[str, Any] = {
        "host": host,
        "port": parts.port or (443 if parts.scheme == "https" else 80),
        "use_ssl": parts.scheme == "https",
    }
    if parts.path and parts.path != "/":
        node["url_prefix"] = parts.path
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    return OpenSearch(hosts=[node], http_auth=auth, timeout=timeout)


def _aws_client(host: str, port: int, timeout: float) -> OpenSearch:
    # NOTE: this path is not tested against AWS. It signs with the default boto3 credential
    # chain for the region in AWS_REGION (or AWS_DEFAULT_REGION).
    import boto3  # type: ignore[import-untyped]
    from opensearchpy import AWSV4SignerAuth

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ConfigurationError(
            f"AWS_REGION must be set to sign requests to the Amazon OpenSearch host {host}"
        )
    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise ConfigurationError(f"No AWS credentials found to sign requests to {host}")
    service = "aoss" if host.endswith(".aoss.amazonaws.com") else "es"
    return OpenSearch(
        hosts=[{"host": host, "port": port}],
        http_auth=AWSV4SignerAuth(credentials, region, service),
        use_ssl=True,
        verify_certs=True,
        connection_class=RequestsHttpConnection,
        timeout=timeout,
    )


@dataclass(frozen=True)
class BulkAction:
    """One line pair (or line) of a `_bulk` body and the plan and object it writes."""

    plan_id: str
    identity: str
    lines: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class PlanFailure:
    """The reason why the documents of one plan could not all be written."""

    permanent: bool
    reason: str


class OpenSearchIndex:
    """SearchIndex on one OpenSearch or Elasticsearch index plus its plan-version guard index."""

    def __init__(
        self,
        client: OpenSearch,
        index_name: str,
        relations: JoinRelations,
        *,
        shards: int = 1,
        replicas: int = 0,
        refresh: str = "true",
        index_settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Wrap `client`; `index_settings` are extra settings of the document index when created."""
        self.client = client
        self.index_name = index_name
        self.guard_index_name = index_name + GUARD_INDEX_SUFFIX
        self.relations = relations
        self.shards = shards
        self.replicas = replicas
        self.refresh = refresh
        self.index_settings = dict(index_settings or {})
        self._ready = False
        self._ready_lock = threading.Lock()

    # --- index management ---------------------------------------------------------------

    def document_mappings(self) -> dict[str, Any]:
        """Return the mapping of the document index."""
        properties: dict[str, Any] = {
            "identity": {"type": "keyword"},
            "objectId": {"type": "keyword"},
            "objectType": {"type": "keyword"},
            "relation": {"type": "keyword"},
            "planId": {"type": "keyword"},
            "parentIdentity": {"type": "keyword"},
            "planVersion": {"type": "long"},
            "body": {"type": "object", "dynamic": True},
            "text": {"type": "text"},
            "stored": {"type": "object", "enabled": False},
        }
        if self.relations.children:
            properties["plan_join"] = {"type": "join", "relations": self.relations.children}
        return {
            "dynamic": "strict",
            "date_detection": False,
            # Whole numbers map to double, so that a later 12.5 in the same member still
            # indexes and range queries compare real values.
            "dynamic_templates": [
                {
                    "body_numbers": {
                        "path_match": "body.*",
                        "match_mapping_type": "long",
                        "mapping": {"type": "double"},
                    }
                }
            ],
            "properties": properties,
        }

    def ensure_index(self) -> None:
        with self._translated("create the search indices"):
            self._create_or_update(self.index_name, self.document_mappings(), self.index_settings)
            self._create_or_update(self.guard_index_name, GUARD_MAPPINGS, {})
            # Another process may have created the indices a moment ago; searching them before
            # their primary shards start fails with "all shards failed".
            self.client.cluster.health(index=f"{self.index_name},{self.guard_index_name}",
                                       wait_for_status="yellow")
        self._ready = True

    def _create_or_update(
        self, name: str, mappings: dict[str, Any], extra_settings: Mapping[str, Any]
    ) -> None:
        settings = {
            "index": {
                "number_of_shards": self.shards,
                "number_of_replicas": self.replicas,
                **extra_settings,
            }
        }
        try:
            self.client.indices.create(
                index=name, body={"settings": settings, "mappings": mappings}
            )
            logger.info("search index created", extra={"index": name})
            return
        except TransportError as error:
            if error.error != "resource_already_exists_exception":
                raise

        # The index exists, perhaps created by a concurrent process, so new relations or
        # fields are added to its mapping. A mapping that cannot take them is reported.
        try:
            self.client.indices.put_mapping(index=name, body=mappings)
        except TransportError as error:
            if error.status_code == 400:
                raise SearchIndexError(
                    f"The existing index {name} has a mapping that the current plan schema cannot "
                    f"use ({_describe(error.info)}); recreate it with "
                    "`scripts/index_admin.py rebuild --recreate`."
                ) from error
            raise

    def delete_index(self) -> None:
        """Delete the document index and the guard index, ignoring missing ones."""
        with self._translated("delete the search indices"):
            self.client.indices.delete(
                index=f"{self.index_name},{self.guard_index_name}",
                params={"ignore_unavailable": "true"},
            )
        self._ready = False
        logger.info("search index deleted", extra={"index": self.index_name})

    def _ensure_ready(self) -> None:
        if not self._ready:
            with self._ready_lock:
                if not self._ready:
                    self.ensure_index()

    # --- writes -------------------------------------------------------------------------

    def apply_events(self, events: list[dict[str, Any]]) -> None:
        self._apply(events, replace_same_version=False)

    def reapply_events(self, events: list[dict[str, Any]]) -> None:
        """Apply events even when the index already has their version (operator repair).

        Documents of the same version are overwritten, so a plan whose documents went missing
        or were changed by hand is restored. An older version still changes nothing.
        """
        # NOTE: a document deleted outside this adapter without `version_type=external_gte`
        # leaves a deletion marker one version higher for `index.gc_deletes` (60 s by default).
        # Until it expires, re-applying that version cannot restore the document.
        self._apply(events, replace_same_version=True)

    def _apply(self, events: list[Any], *, replace_same_version: bool) -> None:
        started = time.monotonic()
        batch = select_latest(events)
        rejected: list[PermanentEventError] = list(batch.rejected)
        failures: dict[str, PlanFailure] = {}
        applied: list[PlanEvent] = []
        skipped = 0
        if batch.latest:
            self._ensure_ready()
            guards = self._read_guards([event.plan_id for event in batch.latest])
            due = [
                event
                for event in batch.latest
                if is_due(
                    event, guards.get(event.plan_id), replace_same_version=replace_same_version
                )
            ]
            skipped = len(batch.latest) - len(due)

            documents: dict[str, list[IndexDocument]] = {}
            for event in due:
                try:
                    documents[event.plan_id] = build_documents(event, self.relations)
                except PermanentEventError as error:
                    rejected.append(error)
            due = [event for event in due if event.plan_id in documents]

            if due:
                version_type = "external_gte" if replace_same_version else "external"
                stale = self._stale_identities(due, documents)
                failures = self._write_documents(due, documents, stale, version_type)
                applied = [event for event in due if event.plan_id not in failures]
                self._write_guards(applied, version_type)

        logger.info(
            "search events applied",
            extra={
                "index": self.index_name,
                "events": len(events),
                "plans": len(batch.latest),
                "applied": len(applied),
                "skipped_as_old": skipped,
                "failed": len(failures) + len(rejected),
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        _raise_failures(
            due_events={event.plan_id: event for event in batch.latest},
            failures=failures,
            rejected=rejected,
        )

    def _read_guards(self, plan_ids: list[str]) -> dict[str, int]:
        with self._translated("read the plan versions"):
            response = self.client.mget(
                index=self.guard_index_name,
                body={"ids": plan_ids},
                params={"realtime": "true", "_source_includes": "version"},
            )
        versions = {}
        for doc in response["docs"]:
            if "error" in doc:
                error_type = doc["error"].get("type")
                if error_type in INDEX_MISSING_ERRORS:
                    # Someone deleted the index under a running process; the next attempt
                    # creates it again.
                    self._ready = False
                raise SearchIndexError(
                    f"Reading the version of plan {doc.get('_id')} from {self.guard_index_name} "
                    f"failed: {_describe(doc['error'])}"
                )
            if doc.get("found"):
                versions[doc["_id"]] = int(doc["_source"]["version"])
        return versions

    def _stale_identities(
        self, due: list[PlanEvent], documents: dict[str, list[IndexDocument]]
    ) -> dict[str, list[str]]:
        """Return, per plan, the indexed documents that the new snapshot no longer contains."""
        searches: list[tuple[str, dict[str, Any]]] = []
        for event in due:
            query = {
                "bool": {
                    "filter": [
                        {"term": {"planId": event.plan_id}},
                        {"range": {"planVersion": {"lte": event.version}}},
                    ]
                }
            }
            searches.append((event.plan_id, query))
        found = self._multi_search(searches, fields=False)

        stale = {}
        for event in due:
            keep = {document.identity for document in documents[event.plan_id]}
            stale[event.plan_id] = [
                hit["_id"] for hit in found[event.plan_id] if hit["_id"] not in keep
            ]
        return stale

    def _write_documents(
        self,
        due: list[PlanEvent],
        documents: dict[str, list[IndexDocument]],
        stale: dict[str, list[str]],
        version_type: str,
    ) -> dict[str, PlanFailure]:
        actions: list[BulkAction] = []
        for event in due:
            meta = {
                "_index": self.index_name,
                "routing": event.plan_id,
                "version": event.version,
                "version_type": version_type,
            }
            for document in documents[event.plan_id]:
                actions.append(
                    BulkAction(
                        event.plan_id,
                        document.identity,
                        ({"index": {**meta, "_id": document.identity}}, document.source()),
                    )
                )
            for identity in stale[event.plan_id]:
                actions.append(
                    BulkAction(event.plan_id, identity, ({"delete": {**meta, "_id": identity}},))
                )

        failures: dict[str, PlanFailure] = {}
        conflicts: list[BulkAction] = []
        for chunk, payload in _bulk_chunks(actions):
            with self._translated("write plan documents"):
                response = self.client.bulk(body=payload, params={"refresh": self.refresh})
            for action, item in zip(chunk, response["items"]):
                operation, result = next(iter(item.items()))
                if operation == "index" and result.get("status") == 409:
                    conflicts.append(action)
                    continue
                failure = _item_failure(operation, result)
                if failure is None:
                    continue
                if result.get("error", {}).get("type") in INDEX_MISSING_ERRORS:
                    self._ready = False
                self._log_failure(action, operation, failure)
                failures.setdefault(action.plan_id, failure)

        if conflicts:
            events = {event.plan_id: event for event in due}
            for action, failure in self._foreign_conflicts(conflicts, events):
                self._log_failure(action, "index", failure)
                failures.setdefault(action.plan_id, failure)
        return failures

    def _foreign_conflicts(
        self, conflicts: list[BulkAction], events: dict[str, PlanEvent]
    ) -> list[tuple[BulkAction, PlanFailure]]:
        """Return the version conflicts that another plan caused, as retryable failures.

        A conflict normally means that a newer version of the same plan is indexed. But `_id`
        is the object's identity, so an object that moved between plans conflicts with the
        document or the deletion marker of its former plan, whose versions are unrelated.
        """
        plan_ids = sorted({action.plan_id for action in conflicts})
        docs = [
            {
                "_index": self.index_name,
                "_id": action.identity,
                "routing": action.plan_id,
                "_source": ["planId"],
            }
            for action in conflicts
        ]
        docs += [
            {"_index": self.guard_index_name, "_id": plan_id, "_source": ["version"]}
            for plan_id in plan_ids
        ]
        with self._translated("read conflicting documents"):
            response = self.client.mget(body={"docs": docs}, params={"realtime": "true"})
        results = response["docs"]
        guard_versions = {
            plan_id: int(result["_source"]["version"])
            for plan_id, result in zip(plan_ids, results[len(conflicts) :])
            if result.get("found")
        }

        foreign = []
        for action, result in zip(conflicts, results):
            event = events[action.plan_id]
            if "error" in result:
                reason = f"reading {action.identity} failed: {_describe(result['error'])}"
            elif result.get("found"):
                owner = result["_source"]["planId"]
                if owner == action.plan_id:
                    continue
                reason = f"{action.identity} is still indexed for plan {owner}"
            elif guard_versions.get(action.plan_id, 0) > event.version:
                continue
            else:
                # NOTE: the deletion marker blocks the write until `index.gc_deletes` (60 s by
                # default) has passed, so the batch succeeds only on a retry after that.
                reason = (
                    f"{action.identity} was deleted from the index less than "
                    "index.gc_deletes ago, probably by the plan that owned it before"
                )
            foreign.append((action, PlanFailure(permanent=False, reason=f"status 409, {reason}")))
        return foreign

    def _log_failure(self, action: BulkAction, operation: str, failure: PlanFailure) -> None:
        logger.warning(
            "search document rejected",
            extra={
                "index": self.index_name,
                "plan_id": action.plan_id,
                "identity": action.identity,
                "operation": operation,
                "permanent": failure.permanent,
                "reason": failure.reason,
            },
        )

    def _write_guards(self, applied: list[PlanEvent], version_type: str) -> None:
        if not applied:
            return
        applied_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        lines: list[dict[str, Any]] = []
        for event in applied:
            lines.append(
                {
                    "index": {
                        "_index": self.guard_index_name,
                        "_id": event.plan_id,
                        "version": event.version,
                        "version_type": version_type,
                    }
                }
            )
            lines.append(
                {
                    "planId": event.plan_id,
                    "version": event.version,
                    "deleted": event.deleted,
                    "etag": event.etag,
                    "eventId": event.event_id,
                    "appliedAt": applied_at,
                }
            )
        with self._translated("write the plan versions"):
            response = self.client.bulk(body=_ndjson(lines), params={"refresh": self.refresh})
        for event, item in zip(applied, response["items"]):
            operation, result = next(iter(item.items()))
            failure = _item_failure(operation, result)
            if failure is not None:
                raise SearchIndexError(
                    f"Writing the version of plan {event.plan_id} failed ({failure.reason}); "
                    "its documents are written and the batch can be retried."
                )

    # --- reads --------------------------------------------------------------------------

    def get_plan(self, plan_id: str) -> dict[str, Any] | None:
        objects = self._fetch_plans([plan_id]).get(plan_id, {})
        root = find_root(objects)
        if root is None:
            return None
        plan = try_assemble(root, objects)
        if plan is None:
            logger.warning("indexed plan is incomplete", extra={"plan_id": plan_id})
        return plan

    def find_objects(self, object_id: str) -> list[dict[str, Any]]:
        hits = self._hit_pairs({"term": {"objectId": object_id}})
        return assemble_objects(hits, self._fetch_plans(sorted({plan for plan, _ in hits})))

    def find_children(self, object_id: str, parent_type: str) -> list[dict[str, Any]]:
        parent_query = {
            "bool": {
                "filter": [
                    {"term": {"objectId": object_id}},
                    {
                        "bool": {
                            "should": [
                                {"term": {"objectType": parent_type}},
                                {"term": {"relation": parent_type}},
                            ],
                            "minimum_should_match": 1,
                        }
                    },
                ]
            }
        }
        parents = list(self._search_all(parent_query, ["identity", "plan_join"]))

        if not parents:
            return []
        clauses: list[dict[str, Any]] = []
        join_names = sorted(
            {
                hit["_source"]["plan_join"]["name"]
                for hit in parents
                if "plan_join" in hit["_source"]
            }
        )
        for join_name in join_names:
            if join_name in self.relations.children:
                clauses.append({"has_parent": {"parent_type": join_name, "query": parent_query}})
        # Children without a join value (see documents._join_name) are found by their parent's
        # identity instead.
        clauses.append(
            {
                "bool": {
                    "filter": [
                        {
                            "terms": {
                                "parentIdentity": sorted(
                                    hit["_source"]["identity"] for hit in parents
                                )
                            }
                        }
                    ],
                    "must_not": [{"exists": {"field": "plan_join"}}],
                }
            }
        )

        hits = self._hit_pairs({"bool": {"should": clauses, "minimum_should_match": 1}})
        return assemble_children(hits, self._fetch_plans(sorted({plan for plan, _ in hits})))

    def search_text(self, query: str) -> list[dict[str, Any]]:
        """Return the objects whose own string values contain every word of `query`."""
        if not query.strip():
            return []
        hits = self._hit_pairs({"match": {"text": {"query": query, "operator": "and"}}})
        return assemble_objects(hits, self._fetch_plans(sorted({plan for plan, _ in hits})))

    def plan_versions(self) -> dict[str, int]:
        hits = self._search_all(
            {"term": {"deleted": False}},
            ["planId", "version"],
            index=self.guard_index_name,
            sort_fields=("planId",),
        )
        return {hit["_source"]["planId"]: int(hit["_source"]["version"]) for hit in hits}

    def indexed_plan_ids(self) -> list[str]:
        """Return the id of every plan that has documents in the index, deleted or not."""
        plan_ids: list[str] = []
        after: dict[str, Any] | None = None
        for _ in range(MAX_PAGES):
            composite: dict[str, Any] = {
                "size": 1000,
                "sources": [{"plan": {"terms": {"field": "planId"}}}],
            }
            if after is not None:
                composite["after"] = after
            with self._translated("list the indexed plans"):
                response = self.client.search(
                    index=self.index_name,
                    params=READ_PARAMS,
                    body={"size": 0, "aggs": {"plans": {"composite": composite}}},
                )
            aggregation = response.get("aggregations", {}).get("plans", {})
            buckets = aggregation.get("buckets", [])
            plan_ids.extend(bucket["key"]["plan"] for bucket in buckets)
            after = aggregation.get("after_key")
            if not buckets or after is None:
                return plan_ids
        raise SearchIndexError(
            f"Listing the plans of {self.index_name} did not finish within {MAX_PAGES} pages."
        )

    def indexed_objects(self, plan_id: str) -> list[IndexedObject]:
        hits = self._search_all(
            {"term": {"planId": plan_id}}, ["identity", "planVersion"], routing=plan_id
        )
        return [
            IndexedObject(
                identity=hit["_source"]["identity"],
                plan_id=plan_id,
                plan_version=int(hit["_source"]["planVersion"]),
            )
            for hit in hits
        ]

    def remove_plan_documents(self, plan_id: str) -> None:
        hits = list(
            self._search_all(
                {"term": {"planId": plan_id}}, ["planVersion"], routing=plan_id, with_version=True
            )
        )
        guard_version = self._read_guards([plan_id]).get(plan_id, 0)

        # Each delete carries the document's own version, so the deletion is remembered at that
        # version and an older event cannot write the document again.
        actions = [
            BulkAction(
                plan_id,
                hit["_id"],
                (
                    {
                        "delete": {
                            "_index": self.index_name,
                            "_id": hit["_id"],
                            "routing": plan_id,
                            "version": hit["_version"],
                            "version_type": "external_gte",
                        }
                    },
                ),
            )
            for hit in hits
        ]
        for chunk, payload in _bulk_chunks(actions):
            with self._translated("remove plan documents"):
                response = self.client.bulk(body=payload, params={"refresh": self.refresh})
            for action, item in zip(chunk, response["items"]):
                failure = _item_failure(*next(iter(item.items())))
                if failure is not None:
                    raise SearchIndexError(
                        f"Removing {action.identity} of plan {plan_id} failed: {failure.reason}"
                    )

        version = max([guard_version, *(int(hit["_source"]["planVersion"]) for hit in hits)])
        if version > 0:
            marker = PlanEvent(
                event_id=f"{plan_id}:{version}",
                plan_id=plan_id,
                version=version,
                deleted=True,
                etag=None,
                plan=None,
            )
            self._write_guards([marker], "external_gte")
        logger.info(
            "plan documents removed",
            extra={"index": self.index_name, "plan_id": plan_id, "documents": len(hits)},
        )

    def check_health(self) -> None:
        with self._translated("check the cluster health"):
            health = self.client.cluster.health()
        if health.get("status") not in ("green", "yellow"):
            raise SearchIndexError(f"The search cluster status is {health.get('status')!r}.")

    # --- helpers ------------------------------------------------------------------------

    def _translated(self, action: str) -> AbstractContextManager[None]:
        return _translated_errors(action, self.index_name)

    def _search_all(
        self,
        query: dict[str, Any],
        fields: list[str] | bool,
        *,
        routing: str | None = None,
        index: str | None = None,
        sort_fields: tuple[str, ...] = ("planId", "identity"),
        with_version: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Yield every hit of `query`, page by page with `search_after`."""
        params = dict(READ_PARAMS)
        if routing is not None:
            params["routing"] = routing
        search_after: list[Any] | None = None
        for _ in range(MAX_PAGES):
            body: dict[str, Any] = {
                "query": query,
                "_source": fields,
                "size": PAGE_SIZE,
                "sort": [{field: "asc"} for field in sort_fields],
                "track_total_hits": False,
                "version": with_version,
            }
            if search_after is not None:
                body["search_after"] = search_after
            with self._translated("search the index"):
                response = self.client.search(
                    index=index or self.index_name, body=body, params=params
                )
            hits = response["hits"]["hits"]
            yield from hits
            if len(hits) < PAGE_SIZE:
                return
            search_after = hits[-1]["sort"]
        raise SearchIndexError(
            f"A search of {self.index_name} did not finish within {MAX_PAGES} pages."
        )

    def _hit_pairs(self, query: dict[str, Any]) -> list[tuple[str, str]]:
        return [
            (hit["_source"]["planId"], hit["_source"]["identity"])
            for hit in self._search_all(query, ["planId", "identity"])
        ]

    def _multi_search(
        self, searches: list[tuple[str, dict[str, Any]]], fields: list[str] | bool
    ) -> dict[str, list[dict[str, Any]]]:
        """Run one search per plan in one `_msearch` request and return the hits per plan."""
        if not searches:
            return {}
        lines: list[dict[str, Any]] = []
        for plan_id, query in searches:
            lines.append({"index": self.index_name, "routing": plan_id, "ignore_unavailable": True})
            lines.append(
                {
                    "query": query,
                    "_source": fields,
                    "size": PAGE_SIZE,
                    "sort": [{"identity": "asc"}],
                    "track_total_hits": True,
                }
            )
        with self._translated("search the index"):
            response = self.client.msearch(body=_ndjson(lines))

        found: dict[str, list[dict[str, Any]]] = {}
        for (plan_id, query), result in zip(searches, response["responses"]):
            if "error" in result:
                raise SearchIndexError(
                    f"Searching the documents of plan {plan_id} failed: "
                    f"{_describe(result['error'])}"
                )
            hits = result["hits"]["hits"]
            if result["hits"]["total"]["value"] > len(hits):
                # Only a plan with leftovers of failed batches exceeds one page.
                hits = list(
                    self._search_all(query, fields, routing=plan_id, sort_fields=("identity",))
                )
            found[plan_id] = hits
        return found

    def _fetch_plans(self, plan_ids: list[str]) -> dict[str, dict[str, StoredObject]]:
        """Return the stored objects of each plan, read from the documents' `stored` field."""
        searches = [(plan_id, {"term": {"planId": plan_id}}) for plan_id in plan_ids]
        found = self._multi_search(searches, fields=["stored"])
        return {
            plan_id: {hit["_id"]: StoredObject.from_json(hit["_source"]["stored"]) for hit in hits}
            for plan_id, hits in found.items()
        }


@contextmanager
def _translated_errors(action: str, index_name: str) -> Iterator[None]:
    """Turn client and transport failures into SearchIndexError, naming what was attempted."""
    try:
        yield
    except TransportError as error:
        detail = _describe(error.info) if isinstance(error.info, dict) else str(error)
        raise SearchIndexError(f"Failed to {action} on {index_name}: {detail}") from error
    except (SerializationError, ImproperlyConfigured) as error:
        raise SearchIndexError(f"Failed to {action} on {index_name}: {error}") from error


def _ndjson(lines: Iterable[dict[str, Any]]) -> str:
    return "".join(
        json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n" for line in lines
    )


def _bulk_chunks(actions: list[BulkAction]) -> Iterator[tuple[list[BulkAction], str]]:
    """Yield actions with their NDJSON body, split so that no body exceeds MAX_BULK_BYTES."""
    chunk: list[BulkAction] = []
    parts: list[str] = []
    size = 0
    for action in actions:
        text = _ndjson(action.lines)
        length = len(text.encode("utf-8"))
        if chunk and size + length > MAX_BULK_BYTES:
            yield chunk, "".join(parts)
            chunk, parts, size = [], [], 0
        chunk.append(action)
        parts.append(text)
        size += length
    if chunk:
        yield chunk, "".join(parts)


def _item_failure(operation: str, result: dict[str, Any]) -> PlanFailure | None:
    """Classify one `_bulk` item, returning None when it succeeded or lost to a newer version."""
    status = int(result.get("status", 500))
    if status < 300:
        return None
    if status == 409:
        return None
    if operation == "delete" and status == 404 and "error" not in result:
        return None
    error = result.get("error") or {}
    permanent = status == 400 and error.get("type") not in TRANSIENT_REQUEST_ERRORS
    return PlanFailure(permanent=permanent, reason=f"status {status}, {_describe(error)}")


def _describe(error: Any) -> str:
    """Return an error's type and reason without the field values that some reasons quote."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if not isinstance(error, dict):
        return str(error)[:300]
    # Mapping errors quote the rejected value after this marker, and a nested cause such as a
    # number_format_exception quotes it in its reason, so only the cause's type is kept.
    reason = str(error.get("reason", "")).split("Preview of field's value")[0].rstrip(" .'")
    caused_by = error.get("caused_by")
    if isinstance(caused_by, dict) and caused_by.get("type"):
        reason = f"{reason} (caused by {caused_by['type']})"
    return f"{error.get('type', 'error')}: {reason}"[:500]


def _raise_failures(
    due_events: dict[str, PlanEvent],
    failures: dict[str, PlanFailure],
    rejected: list[PermanentEventError],
) -> None:
    transient = {plan_id: failure for plan_id, failure in failures.items() if not failure.permanent}
    if transient:
        plan_id, failure = min(transient.items())
        raise SearchIndexError(
            f"{len(transient)} plan(s) failed to index and the batch should be retried; "
            f"plan {plan_id}: {failure.reason}"
        )

    permanent: list[PermanentEventError] = list(rejected)
    for plan_id, failure in sorted(failures.items()):
        event = due_events[plan_id]
        permanent.append(
            MappingConflictError(
                f"The index rejected a document of plan {plan_id} at version {event.version}: "
                f"{failure.reason}",
                [event.event_id],
            )
        )
    raise_permanent(permanent)
