"""Settings from the environment (with the seed's `.env` aliases) and the shipped examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.config import ConfigurationError, load_settings
from tests.support.plans import SEED_PATCH, SEED_PLAN

ROOT = Path(__file__).resolve().parents[2]


def test_nothing_configured_means_embedded_backends() -> None:
    settings = load_settings({})
    assert (settings.redis_url, settings.rabbitmq_url, settings.search_url) == (None, None, None)
    assert settings.stage == "dev"
    assert settings.trust_dev_key


def test_explicit_urls_win_over_seed_aliases() -> None:
    settings = load_settings({"REDIS_URL": "redis://a:1/0", "REDIS_DEV_HOST": "b"})
    assert settings.redis_url == "redis://a:1/0"


def test_seed_dev_aliases_are_read() -> None:
    settings = load_settings({"REDIS_DEV_HOST": "cache", "REDIS_DEV_PORT": "6380",
                              "RABBITMQ_DEV_HOST": "broker", "DEV_ELASTIC_HOST": "search:9201",
                              "DEV_OAUTH_CLIENT_ID": "client-dev"})
    assert settings.redis_url == "redis://cache:6380/0"
    assert settings.rabbitmq_url == "amqp://guest:guest@broker:5672/%2F"
    assert settings.search_url == "http://search:9201"
    assert settings.client_id == "client-dev"


def test_python_env_production_picks_the_prod_aliases() -> None:
    settings = load_settings({"PYTHON_ENV": "production", "REDIS_DEV_HOST": "dev-cache",
                              "REDIS_PROD_HOST": "prod-cache", "PROD_OAUTH_CLIENT_ID": "client-prod",
                              "PROD_ELASTIC_HOST": "https://search.example.com"})
    assert settings.redis_url == "redis://prod-cache:6379/0"
    assert settings.client_id == "client-prod"
    assert settings.search_url == "https://search.example.com"


def test_prod_stage_never_trusts_the_dev_key() -> None:
    settings = load_settings({"APP_STAGE": "prod", "DEV_TOKENS": "on"})
    assert not settings.trust_dev_key
    assert settings.client_id == ""


def test_unknown_stage_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        load_settings({"APP_STAGE": "staging"})


def test_issuers_are_comma_separated() -> None:
    settings = load_settings({"OAUTH_ISSUERS": "https://a.example, https://b.example"})
    assert settings.issuers == ("https://a.example", "https://b.example")


def test_examples_are_the_seed_documents() -> None:
    assert json.loads((ROOT / "examples/plan.json").read_text()) == SEED_PLAN
    assert json.loads((ROOT / "examples/plan-patch.json").read_text()) == SEED_PATCH


def test_postman_collection_holds_the_seed_requests_and_a_token_variable() -> None:
    collection = json.loads((ROOT / "postman/plan-api.postman_collection.json").read_text())
    variables = {variable["key"] for variable in collection["variable"]}
    assert {"token", "baseUrl"} <= variables
    assert collection["auth"]["bearer"][0]["value"] == "{{token}}"
    bodies = {item["request"]["method"]: item["request"].get("body", {}).get("raw")
              for item in collection["item"]}
    assert json.loads(bodies["POST"]) == SEED_PLAN
    assert json.loads(bodies["PATCH"]) == SEED_PATCH


def test_chalice_config_sets_only_the_stage() -> None:
    config = json.loads((ROOT / ".chalice/config.json").read_text())
    for stage, values in config["stages"].items():
        assert values["environment_variables"] == {"APP_STAGE": stage}


def test_each_store_gets_its_own_embedded_search_file() -> None:
    from chalicelib.search.factory import sqlite_search_path

    sqlite_only = sqlite_search_path(load_settings({"SQLITE_PATH": "d/p.sqlite3"}))
    on_redis = sqlite_search_path(load_settings({"SQLITE_PATH": "d/p.sqlite3",
                                                 "REDIS_URL": "redis://a:1/0"}))
    other_prefix = sqlite_search_path(load_settings({"SQLITE_PATH": "d/p.sqlite3",
                                                     "REDIS_URL": "redis://a:1/0",
                                                     "REDIS_KEY_PREFIX": "other:"}))
    assert sqlite_only == "d/p.sqlite3-search"
    assert on_redis.startswith("d/p.sqlite3-search-redis-")
    assert len({sqlite_only, on_redis, other_prefix}) == 3
