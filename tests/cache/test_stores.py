"""The memory store: least recently used entries go past the byte budget, entries go after the TTL; and the
Redis store against a real server (TEST_REDIS_URL): written off the caller's path, read back, expired by Redis."""
from __future__ import annotations

import pytest

from proxy.cache.stores import MemoryStore, RedisStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_least_recently_used_entries_go_when_the_bytes_run_out():
    evicted: list[int] = []
    store = MemoryStore(max_bytes=30, ttl=0, on_evict=evicted.append)
    store.put("a", b"x" * 9)  # 10 bytes with its key
    store.put("b", b"x" * 9)
    store.put("c", b"x" * 9)
    assert store.get("a") is not None  # a is now the most recently used
    store.put("d", b"x" * 9)
    assert store.get("b") is None and store.get("a") and store.get("c") and store.get("d")
    assert store.bytes == 30 and evicted == [1]
    store.put("e", b"x" * 29)  # the whole budget: everything else goes
    assert len(store) == 1 and evicted == [1, 3]
    store.put("f", b"x" * 40)  # larger than the budget: not kept, nothing evicted for it
    assert store.get("f") is None and store.get("e") and evicted == [1, 3]


def test_a_replaced_entry_counts_its_new_size_only():
    store = MemoryStore(max_bytes=100, ttl=0)
    store.put("k", b"x" * 50)
    store.put("k", b"y" * 10)
    assert store.bytes == 11 and store.get("k") == b"y" * 10


def test_entries_expire_after_the_ttl():
    clock = Clock()
    store = MemoryStore(max_bytes=100, ttl=60, clock=clock)
    store.put("k", b"v")
    clock.now += 59
    assert store.get("k") == b"v"
    clock.now += 1
    assert store.get("k") is None and store.bytes == 0 and len(store) == 0


def test_redis_store_writes_in_the_background_and_redis_expires_entries(cache_redis_url):
    import redis

    stored: list[int] = []
    store = RedisStore(cache_redis_url, ttl=30, timeout=2, on_store=lambda: stored.append(1))
    store.put("abc", b"entry")
    assert store.flush() and stored == [1]
    assert store.get("abc") == b"entry"
    ttl = redis.Redis.from_url(cache_redis_url).ttl("llm-proxy:cache:abc")
    assert 0 < ttl <= 30
    assert store.get("nothing") is None


def test_an_unreachable_redis_is_a_miss_not_a_failure():
    from prometheus_client import CollectorRegistry

    from proxy.cache import Cache
    from proxy.config import Settings

    registry = CollectorRegistry()
    cache = Cache(Settings.from_env({"CACHE": "redis", "REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_TIMEOUT": "0.2"}),
                  registry)
    assert cache.get("abc") is None
    assert registry.get_sample_value("llm_proxy_cache_errors_total") == 1


@pytest.mark.parametrize("env, message", [({"CACHE": "redis"}, "CACHE=redis needs REDIS_URL"),
                                          ({"CACHE": "disk"}, "CACHE='disk' is not valid")])
def test_a_cache_setting_that_cannot_work_stops_start_up(env, message):
    from proxy.config import ConfigError, Settings

    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
