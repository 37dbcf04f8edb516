"""CACHE=redis shared by two proxy processes (`python wsgi.py`, gevent): an answer the first fetched from the
backend is a hit in the second, in the other dialect and streamed; the backend is called once."""
from __future__ import annotations

import json
import time

import requests

from tests.support import OPENAI_MODELS

HELLO = [{"role": "user", "content": "Say hello."}]


def _wait_for_entries(url: str, count: int, timeout: float = 10.0) -> None:
    """The first proxy writes its entry off the request's path: wait until Redis holds it."""
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while len(client.keys("llm-proxy:cache:*")) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"Redis did not get {count} cache entries in {timeout} s")
        time.sleep(0.02)


def test_a_miss_in_one_process_is_a_hit_in_another(cache_redis_url, wsgi_proxy, fake_upstream):
    from tests.support import fakes

    fake_upstream.serve_openai_models(*OPENAI_MODELS)
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(("Hello", " there")))
    env = {"CACHE": "redis", "REDIS_URL": cache_redis_url, "CACHE_TTL": "60"}
    first, second = wsgi_proxy(**env), wsgi_proxy(**env)
    body = {"model": "qwen3-8b", "messages": HELLO, "temperature": 0}
    miss = requests.post(first.url + "/v1/chat/completions", json=body, timeout=10)
    assert miss.headers["X-Cache"] == "MISS" and miss.json()["choices"][0]["message"]["content"] == "Hello there"
    _wait_for_entries(cache_redis_url, 1)
    hit = requests.post(second.url + "/api/chat", json={"model": "qwen3-8b", "messages": HELLO, "stream": True,
                                                        "options": {"temperature": 0}}, timeout=10)
    lines = [json.loads(line) for line in hit.text.splitlines() if line.strip()]
    assert hit.headers["X-Cache"] == "HIT"
    assert "".join(line["message"]["content"] for line in lines) == "Hello there" and lines[-1]["done"] is True
    assert len(fake_upstream.calls("/v1/chat/completions", "POST")) == 1
    metrics = requests.get(second.url + "/metrics", timeout=5).text
    assert 'llm_proxy_cache_requests_total{result="hit"} 1.0' in metrics
