"""The response cache's tests: its pure parts (key, entry, replay, stores) and the proxy on real sockets with
CACHE=memory and CACHE=redis (TEST_REDIS_URL; a database number of the cache's own, emptied first)."""
from __future__ import annotations

import os

import pytest

REDIS_ENV = "TEST_REDIS_URL"
CACHE_DB = 9  # the cache tests' own Redis database: emptied before each test that uses it


@pytest.fixture
def cache_redis_url() -> str:
    """TEST_REDIS_URL with the cache tests' own database number, emptied; skipped without TEST_REDIS_URL."""
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set (e.g. redis://127.0.0.1:6379/0); Redis cache tests skipped")
    import redis

    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    own = f"{base}/{CACHE_DB}"
    client = redis.Redis.from_url(own, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        pytest.fail(f"{REDIS_ENV}={url} is set but Redis does not answer: {exc}")
    return own
