"""Settings read from the process environment, with the `.env` names of the
project this one replaces as aliases.

`.chalice/config.json` sets only `APP_STAGE`, because Chalice copies a stage's variables over
the shell's. Everything else comes from the environment, with defaults here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from chalicelib.schema import DEFAULT_SCHEMA_PATH

GOOGLE_JWKS_URL = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
DEV_CLIENT_ID = "plan-api-dev"


class ConfigurationError(ValueError):
    """An environment variable has a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    stage: str
    redis_url: str | None
    rabbitmq_url: str | None
    search_url: str | None
    sqlite_path: str
    schema_path: str
    redis_key_prefix: str
    queue_name: str
    search_index: str
    jwks_url: str
    issuers: tuple[str, ...]
    client_id: str
    trust_dev_key: bool
    dev_key_path: str

    @property
    def is_prod(self) -> bool:
        return self.stage == "prod"


def _seed_value(env: Mapping[str, str], prod: bool, dev_name: str, prod_name: str) -> str | None:
    """Return the seed's `.env` value for this environment, e.g. REDIS_DEV_HOST or REDIS_PROD_HOST."""
    return (env.get(prod_name) if prod else env.get(dev_name)) or None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    stage = env.get("APP_STAGE", "dev").strip().lower() or "dev"
    if stage not in ("dev", "prod"):
        raise ConfigurationError(f"APP_STAGE must be 'dev' or 'prod', got {stage!r}.")
    seed_env = env.get("PYTHON_ENV", "").strip().lower()
    seed_prod = seed_env in ("prod", "production") if seed_env else stage == "prod"

    redis_url = env.get("REDIS_URL") or None
    if redis_url is None:
        host = _seed_value(env, seed_prod, "REDIS_DEV_HOST", "REDIS_PROD_HOST")
        port = _seed_value(env, seed_prod, "REDIS_DEV_PORT", "REDIS_PROD_PORT") or "6379"
        if host:
            redis_url = f"redis://{host}:{port}/0"

    rabbitmq_url = env.get("RABBITMQ_URL") or None
    if rabbitmq_url is None:
        host = _seed_value(env, seed_prod, "RABBITMQ_DEV_HOST", "RABBITMQ_PROD_HOST")
        if host:
            rabbitmq_url = f"amqp://guest:guest@{_with_default_port(host, 5672)}/{quote('/', safe='')}"

    search_url = env.get("SEARCH_URL") or None
    if search_url is None:
        host = _seed_value(env, seed_prod, "DEV_ELASTIC_HOST", "PROD_ELASTIC_HOST")
        if host:
            search_url = host if "://" in host else f"http://{_with_default_port(host, 9200)}"

    client_id = (env.get("OAUTH_CLIENT_ID")
                 or _seed_value(env, seed_prod, "DEV_OAUTH_CLIENT_ID", "PROD_OAUTH_CLIENT_ID")
                 or ("" if stage == "prod" else DEV_CLIENT_ID))
    issuers = tuple(issuer.strip() for issuer in env.get("OAUTH_ISSUERS", "").split(",")
                    if issuer.strip()) or GOOGLE_ISSUERS

    return Settings(
        stage=stage,
        redis_url=redis_url,
        rabbitmq_url=rabbitmq_url,
        search_url=search_url,
        sqlite_path=env.get("SQLITE_PATH") or os.path.join("data", "plan-api.sqlite3"),
        schema_path=env.get("PLAN_SCHEMA_PATH") or DEFAULT_SCHEMA_PATH,
        redis_key_prefix=env.get("REDIS_KEY_PREFIX", "plan-api:"),
        queue_name=env.get("QUEUE_NAME") or "plan-events",
        search_index=env.get("SEARCH_INDEX") or "plans",
        jwks_url=env.get("OAUTH_JWKS_URL") or GOOGLE_JWKS_URL,
        issuers=issuers,
        client_id=client_id,
        # The development key is never trusted in prod, whatever DEV_TOKENS is set to.
        trust_dev_key=stage == "dev" and env.get("DEV_TOKENS", "on").lower() not in ("off", "0", "false"),
        dev_key_path=env.get("DEV_SIGNING_KEY_PATH") or os.path.join(".dev", "dev-signing-key.pem"),
    )


def _with_default_port(host: str, port: int) -> str:
    return host if ":" in host else f"{host}:{port}"
