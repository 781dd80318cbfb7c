"""Wire concrete adapters to the service from the settings, once per process.

Construction is lazy so that importing `app.py` never touches a backend, and guarded by a lock
because `chalice local` serves requests on several threads.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from chalicelib.auth import AuthSettings, TokenVerifier
from chalicelib.config import Settings, load_settings
from chalicelib.dev_keys import DEV_ISSUER, load_or_create_dev_key
from chalicelib.queue.relay import (
    NotifyingPlanStore,
    OutboxRelay,
    build_relay,
    relay_enabled_in_api,
)
from chalicelib.search_service import SearchService
from chalicelib.service import PlanService
from chalicelib.store.base import PlanStore

logger = logging.getLogger(__name__)


@dataclass
class Components:
    settings: Settings
    store: PlanStore
    service: PlanService
    verifier: TokenVerifier
    relay: OutboxRelay | None = None
    _search: SearchService | None = None

    def search_service(self) -> SearchService:
        """Build the search index on first use, so plan routes never depend on it."""
        if self._search is None:
            with _lock:
                if self._search is None:
                    from chalicelib.search.factory import build_search_index

                    index = build_search_index(self.settings)
                    try:
                        index.ensure_index()
                    except Exception as error:
                        # Reads then fail with 503 until the index is reachable.
                        logger.warning("search index not ready", extra={"error": str(error)})
                    self._search = SearchService(index)
        return self._search


_lock = threading.RLock()
_components: Components | None = None


def build_store(settings: Settings) -> PlanStore:
    if settings.redis_url:
        from chalicelib.store.redis_store import RedisPlanStore

        return RedisPlanStore(settings.redis_url, prefix=settings.redis_key_prefix)
    from chalicelib.store.sqlite_store import SqlitePlanStore

    return SqlitePlanStore(settings.sqlite_path)


def build_verifier(settings: Settings) -> TokenVerifier:
    extra_keys: tuple[dict, ...] = ()
    extra_issuers: tuple[str, ...] = ()
    if settings.trust_dev_key:
        extra_keys = (load_or_create_dev_key(settings.dev_key_path).public_jwk,)
        extra_issuers = (DEV_ISSUER,)
    return TokenVerifier(AuthSettings(
        jwks_url=settings.jwks_url,
        issuers=settings.issuers,
        client_id=settings.client_id or "unset-client-id",
        extra_public_keys=extra_keys,
        extra_issuers=extra_issuers,
    ))


_verifier: TokenVerifier | None = None


def token_verifier() -> TokenVerifier:
    """Return the process's token verifier, built apart from the store.

    The authorizer uses only this, so a store that cannot be opened yields a problem+json 503
    from the route instead of failing the authorizer.
    """
    global _verifier
    if _verifier is None:
        with _lock:
            if _verifier is None:
                _verifier = build_verifier(load_settings())
    return _verifier


def components() -> Components:
    global _components
    if _components is None:
        with _lock:
            if _components is None:
                settings = load_settings()
                if not settings.client_id:
                    logger.error("OAUTH_CLIENT_ID is not set, so every bearer token is rejected")
                store = build_store(settings)
                relay = build_relay(settings, store) if relay_enabled_in_api() else None
                if relay is not None:
                    # Every committed write wakes the relay, so events reach the queue quickly.
                    store = NotifyingPlanStore(store, relay.notify)
                    relay.start()
                _components = Components(
                    settings=settings,
                    store=store,
                    service=PlanService(store, settings.schema_path),
                    verifier=token_verifier(),
                    relay=relay,
                )
                logger.info("plan API started", extra={
                    "stage": settings.stage,
                    "store": "redis" if settings.redis_url else "sqlite",
                    "dev_key_trusted": settings.trust_dev_key,
                    "outbox_relay": type(relay.sink).__name__ if relay else "off",
                })
    return _components
