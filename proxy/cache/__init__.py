"""The response cache (CACHE=memory|redis): identical deterministic requests answered without the backend.

``key`` makes the key (the request as the backend would see it), ``entry`` the dialect-free answer kept,
``replay`` the hit in the client's dialect, ``stores`` the memory and Redis stores. ``Cache`` ties a store
to its counters on /metrics. The front doors use it through ``views.caching``; docs/cache.md says what is
cached and why.
"""
from __future__ import annotations

import logging
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge

from .. import jsonio
from ..config import Settings
from .stores import MemoryStore, RedisStore

log = logging.getLogger(__name__)
HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"


class Cache:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None):
        registry = registry or CollectorRegistry()
        self.cache_all = settings.cache_all
        self.lookups = Counter("llm_proxy_cache_requests", "Cacheable requests by what the cache did: hit, miss "
                               "or bypass (not looked up)", ["result"], registry=registry)
        self.stores = Counter("llm_proxy_cache_stores", "Answers written to the response cache", registry=registry)
        self.evictions = Counter("llm_proxy_cache_evictions", "Entries evicted to stay within CACHE_MAX_BYTES",
                                 registry=registry)
        self.errors = Counter("llm_proxy_cache_errors", "Response cache reads or writes that failed (Redis) or "
                              "were dropped", registry=registry)
        self.size = Gauge("llm_proxy_cache_bytes", "Bytes held by the in-memory response cache (keys and "
                          "entries)", registry=registry, multiprocess_mode="livesum")
        self._results = {name: self.lookups.labels(name.lower()) for name in (HIT, MISS, BYPASS)}
        self.store: MemoryStore | RedisStore
        if settings.cache == "redis":
            self.store = RedisStore(settings.redis_url, settings.cache_ttl, settings.redis_timeout,
                                    on_store=self.stores.inc, on_error=self.errors.inc)
        else:
            self.store = MemoryStore(settings.cache_max_bytes, settings.cache_ttl, on_evict=self.evictions.inc,
                                     on_store=self._stored)

    def describe(self) -> str:
        return f"response cache in {self.store.describe()}"

    def _stored(self) -> None:
        self.stores.inc()
        self.size.set(self.store.bytes)

    def count(self, result: str) -> None:
        self._results[result].inc()

    def get(self, key: str) -> dict | None:
        """The entry under ``key``, or None; a Redis that fails is a miss (counted, logged)."""
        try:
            raw = self.store.get(key)
        except redis.RedisError as exc:
            self.errors.inc()
            log.warning("could not read the response cache in Redis (answered by the backend): %s", exc)
            return None
        if raw is None:
            return None
        try:
            entry = jsonio.loads(raw)
        except ValueError:
            return None
        return entry if isinstance(entry, dict) else None

    def keep(self, key: str, entry: dict[str, Any]) -> None:
        self.store.put(key, jsonio.dumps(entry))


def make_cache(settings: Settings, registry: CollectorRegistry | None = None) -> Cache | None:
    """The cache CACHE asks for, or None when it is off."""
    if settings.cache == "off":
        return None
    cache = Cache(settings, registry)
    log.info("%s, entries kept %s", cache.describe(),
             f"{settings.cache_ttl:g} s" if settings.cache_ttl else "until evicted")
    return cache
