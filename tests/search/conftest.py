"""Fixtures: a real OpenSearch index (from SEARCH_URL) and a real SQLite index, one per module."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.config import Settings, load_settings
from chalicelib.search.factory import build_search_index
from chalicelib.search.opensearch_index import OpenSearchIndex
from chalicelib.search.sqlite_index import SqliteSearchIndex


def required_search_url() -> str:
    """Return SEARCH_URL, or fail: these tests need a real OpenSearch node, never a stand-in."""
    url = os.environ.get("SEARCH_URL")
    if not url:
        pytest.fail(
            "SEARCH_URL is not set: run the tests with scripts/test.sh, which starts "
            "an OpenSearch node",
            pytrace=False,
        )
    return url


def unique_index_name() -> str:
    return f"test-plans-{uuid.uuid4().hex[:12]}"


def opensearch_settings(sqlite_path: Path) -> Settings:
    return load_settings(
        {
            "SEARCH_URL": required_search_url(),
            "SEARCH_INDEX": unique_index_name(),
            "SQLITE_PATH": str(sqlite_path),
        }
    )


def sqlite_settings(sqlite_path: Path) -> Settings:
    return load_settings({"SQLITE_PATH": str(sqlite_path)})


@pytest.fixture(scope="module")
def opensearch_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSearchIndex]:
    index = build_search_index(
        opensearch_settings(tmp_path_factory.mktemp("os") / "unused.sqlite3")
    )
    assert isinstance(index, OpenSearchIndex)
    index.ensure_index()
    yield index
    index.delete_index()


@pytest.fixture(scope="module")
def sqlite_index(tmp_path_factory: pytest.TempPathFactory) -> SqliteSearchIndex:
    index = build_search_index(sqlite_settings(tmp_path_factory.mktemp("sqlite") / "plans.sqlite3"))
    assert isinstance(index, SqliteSearchIndex)
    index.ensure_index()
    return index


@pytest.fixture(params=["opensearch", "sqlite"])
def index(request: pytest.FixtureRequest) -> OpenSearchIndex | SqliteSearchIndex:
    """Each test that uses this runs once against OpenSearch and once against SQLite."""
    return request.getfixturevalue(f"{request.param}_index")  # type: ignore[no-any-return]


@pytest.fixture
def tag() -> str:
    """A suffix that makes a test's object ids unique in the module's shared index."""
    return uuid.uuid4().hex[:10]
