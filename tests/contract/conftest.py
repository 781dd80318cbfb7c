"""Fixtures of the HTTP contract tests: API servers on each store, bearer tokens and example plans.

Every test module runs once per store (`sqlite` and `redis`) against a server that
`scripts/serve.sh` started. Servers are shared by the whole session, so every test builds its
plans with fresh object ids and never depends on what other tests stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from chalicelib.plan_graph import identity_of, is_stored_object
from chalicelib.store.base import PlanSnapshot, PlanStore
from chalicelib.store.redis_store import RedisPlanStore
from chalicelib.store.sqlite_store import SqlitePlanStore
from tests.support.jwt_factory import TokenFactory
from tests.support.plans import SEED_PATCH as EXAMPLE_PATCH
from tests.support.plans import SEED_PLAN as EXAMPLE_PLAN
from tests.support.plans import with_suffix
from tests.support.server import running_server

STORE_KINDS = ("sqlite", "redis")
REQUEST_TIMEOUT_SECONDS = 30.0
PROBLEM_MEMBERS = ("type", "title", "status", "detail")
_DEFAULT_TOKEN: Any = object()

# The API contract's example plan and example PATCH. Merging the PATCH into the plan gives
# planCostShares deductible 2056300 and copay 2235533, and three linkedPlanServices.



def with_unique_ids(document: Any, suffix: str) -> Any:
    """Return a copy of `document` with `-<suffix>` appended to every objectId in it."""
    return with_suffix(document, f"-{suffix}")


def new_suffix() -> str:
    return uuid.uuid4().hex


def example_plan(suffix: str | None = None) -> dict[str, Any]:
    """Return the example plan with object ids that no other test uses."""
    plan: dict[str, Any] = with_unique_ids(EXAMPLE_PLAN, suffix or new_suffix())
    return plan


def example_patch(suffix: str) -> dict[str, Any]:
    """Return the example PATCH for the plan that `example_plan(suffix)` returned."""
    patch: dict[str, Any] = with_unique_ids(EXAMPLE_PATCH, suffix)
    return patch


def identities_of(document: Any) -> set[str]:
    """Return the identity (`objectType:objectId`) of every stored object in `document`."""
    found: set[str] = set()
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            if is_stored_object(value):
                found.add(identity_of(value["objectType"], value["objectId"]))
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return found


def assert_problem(response: requests.Response, status: int) -> dict[str, Any]:
    """Assert that `response` is an RFC 9457 problem with `status`, and return its body."""
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {response.text[:500]}")
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    assert media_type == "application/problem+json"
    problem: dict[str, Any] = response.json()
    missing = [member for member in PROBLEM_MEMBERS if member not in problem]
    assert not missing, f"problem lacks {missing}: {problem}"
    assert problem["status"] == status
    assert isinstance(problem["type"], str) and problem["type"]
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    return problem


def error_paths(problem: dict[str, Any]) -> list[str]:
    """Return the sorted JSON Pointers of a problem's `errors` entries."""
    errors = problem.get("errors")
    assert isinstance(errors, list) and errors, f"problem has no errors list: {problem}"
    for entry in errors:
        assert isinstance(entry.get("path"), str), entry
        assert isinstance(entry.get("message"), str) and entry["message"], entry
    return sorted(entry["path"] for entry in errors)


def fresh_token(tokens: TokenFactory, **claim_overrides: Any) -> str:
    """Mint a token that is valid now (the factory's clock is otherwise fixed in the past)."""
    tokens.now = time.time()
    return tokens.token(**claim_overrides)


@dataclass
class Deployment:
    """One running API server, the token factory it trusts, and a handle on its store."""

    store_kind: str
    base_url: str
    store: PlanStore
    tokens: TokenFactory
    log_path: Path
    stored_object_exists: Callable[[str], bool]
    """Return whether the store still contains the stored object with this identity."""
    settings: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, *, document: Any = None, data: bytes | None = None,
             headers: dict[str, str] | None = None, token: Any = _DEFAULT_TOKEN,
             params: dict[str, str] | None = None) -> requests.Response:
        """Send one request on a new connection and return the response.

        `document` is sent as application/json, and `data` as raw bytes without a Content-Type
        unless `headers` sets one. A fresh valid bearer token is sent unless `token` is None or
        another token. `headers` override every header the call adds.
        """
        request_headers: dict[str, str] = {}
        if token is _DEFAULT_TOKEN:
            token = fresh_token(self.tokens)
        if token is not None:
            request_headers["Authorization"] = f"Bearer {token}"
        if document is not None:
            data = json.dumps(document).encode("utf-8")
            request_headers["Content-Type"] = "application/json"
        request_headers.update(headers or {})
        return requests.request(method, f"{self.base_url}{path}", data=data,
                                headers=request_headers, params=params,
                                timeout=REQUEST_TIMEOUT_SECONDS)

    def create(self, document: dict[str, Any]) -> str:
        """POST `document`, assert that it was created, and return its ETag."""
        response = self.call("POST", "/v1/plan", document=document)
        assert response.status_code == 201, response.text[:500]
        return response.headers["ETag"]

    def snapshot(self, plan_id: str) -> PlanSnapshot | None:
        return self.store.get(plan_id)

    def version(self, plan_id: str) -> int | None:
        """Return the plan's stored version, or None when the store has no such plan."""
        snapshot = self.store.get(plan_id)
        return None if snapshot is None else snapshot.version


def required_redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail("REDIS_URL is not set: run the contract tests with scripts/test.sh, which "
                    "starts a Redis server and exports REDIS_URL.", pytrace=False)
    return url


def _sqlite_object_probe(path: str) -> Callable[[str], bool]:
    def exists(identity: str) -> bool:
        # Reads the store's table directly, because a snapshot of a deleted plan is None and so
        # cannot show which of its objects are left behind.
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
            row = connection.execute(
                "SELECT 1 FROM stored_objects WHERE identity = ?", (identity,)).fetchone()
        return row is not None

    return exists


def _redis_object_probe(store: RedisPlanStore) -> Callable[[str], bool]:
    def exists(identity: str) -> bool:
        # The object's own key and its entry in the ownership hash must both be gone.
        return bool(store.client.exists(f"{store.prefix}object:{identity}")
                    or store.client.hexists(f"{store.prefix}owners", identity))

    return exists


def _remove_redis_keys(store: RedisPlanStore) -> None:
    batch: list[bytes] = []
    for key in store.client.scan_iter(match=f"{store.prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            store.client.delete(*batch)
            batch.clear()
    if batch:
        store.client.delete(*batch)


@pytest.fixture(scope="session")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenFactory:
    """The token factory whose JWKS file, issuer and audience every test server trusts."""
    return TokenFactory.create(tmp_path_factory.mktemp("jwks"), now=time.time())


@pytest.fixture(scope="session")
def dev_key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the development signing key that `dev`-stage servers trust and create."""
    return tmp_path_factory.mktemp("dev-key") / "dev-signing-key.pem"


DeploymentStarter = Callable[..., contextlib.AbstractContextManager[Deployment]]


@pytest.fixture(scope="session")
def start_deployment(tmp_path_factory: pytest.TempPathFactory, tokens: TokenFactory,
                     dev_key_path: Path) -> DeploymentStarter:
    """Return a context manager that runs a server on an empty store of the given kind."""

    @contextlib.contextmanager
    def start(store_kind: str, stage: str = "dev") -> Iterator[Deployment]:
        directory = tmp_path_factory.mktemp(f"api-{store_kind}-{stage}")
        settings = {
            "OAUTH_JWKS_URL": tokens.jwks_url,
            "OAUTH_ISSUERS": tokens.issuer,
            "OAUTH_CLIENT_ID": tokens.audience,
            "DEV_SIGNING_KEY_PATH": str(dev_key_path),
            # Also set for Redis: the embedded search index keeps its file next to this path,
            # and the default lies inside the repository.
            "SQLITE_PATH": str(directory / "plans.sqlite3"),
        }
        if store_kind == "redis":
            settings["REDIS_URL"] = required_redis_url()
            settings["REDIS_KEY_PREFIX"] = f"contract-{uuid.uuid4().hex}:"
        elif store_kind != "sqlite":
            raise ValueError(f"unknown store kind {store_kind!r}; use one of {STORE_KINDS}")

        redis_store = None
        if store_kind == "redis":
            redis_store = RedisPlanStore(settings["REDIS_URL"], prefix=settings["REDIS_KEY_PREFIX"])
        try:
            with running_server(settings, directory / "server.log", stage=stage) as server:
                store: PlanStore
                if redis_store is not None:
                    store, probe = redis_store, _redis_object_probe(redis_store)
                else:
                    store = SqlitePlanStore(settings["SQLITE_PATH"])
                    probe = _sqlite_object_probe(settings["SQLITE_PATH"])
                yield Deployment(store_kind=store_kind, base_url=server.base_url, store=store,
                                 tokens=tokens, log_path=server.log_path,
                                 stored_object_exists=probe, settings=settings)
        finally:
            # The server has stopped here, so no write can land after the cleanup.
            if redis_store is not None:
                _remove_redis_keys(redis_store)
                redis_store.client.close()

    return start


@pytest.fixture(scope="session", params=STORE_KINDS)
def api(request: pytest.FixtureRequest,
        start_deployment: DeploymentStarter) -> Iterator[Deployment]:
    """The shared `dev`-stage server of one store kind. Every test module runs once per kind."""
    with start_deployment(request.param) as deployment:
        yield deployment


@pytest.fixture
def plan() -> dict[str, Any]:
    """The example plan with fresh object ids, not yet stored."""
    return example_plan()


@dataclass(frozen=True)
class StoredPlan:
    """A plan created through POST: the document sent, the ETag returned, and its id suffix."""

    document: dict[str, Any]
    etag: str
    suffix: str

    @property
    def plan_id(self) -> str:
        return str(self.document["objectId"])

    @property
    def path(self) -> str:
        return f"/v1/plan/{self.plan_id}"


@pytest.fixture
def stored_plan(api: Deployment) -> StoredPlan:
    """The example plan with fresh object ids, stored through POST."""
    suffix = new_suffix()
    document = example_plan(suffix)
    return StoredPlan(document=document, etag=api.create(document), suffix=suffix)
