"""A hit in the log: recorded as cached, answered by "cache" with no backend time, its answer and tokens kept;
the log's list filters on it (``?cached=1`` / ``cached=0``)."""
from __future__ import annotations

import requests

from tests.support.store import one, store_of, wait_rows

HELLO = [{"role": "user", "content": "Say hello."}]


def test_a_hit_is_recorded_as_cached_without_backend_time_and_the_list_filters_on_it(backend_setup):
    setup = backend_setup("openai", CACHE="memory")
    setup.script_chat(("Hello", " there"))
    body = {"model": setup.model, "messages": HELLO, "temperature": 0}
    for expected in ("MISS", "HIT"):
        assert requests.post(setup.url + "/v1/chat/completions", json=body).headers["X-Cache"] == expected
    store = store_of(setup.proxy)
    wait_rows(store, 2)
    [hit] = wait_rows(store, 1, cached="1")
    [miss] = wait_rows(store, 1, cached="0")
    assert hit["backend_name"] == "cache" and hit["ttfb_ms"] is None and hit["cached"]
    assert miss["backend_name"] != "cache" and miss["ttfb_ms"] is not None and not miss["cached"]
    detail = one(store, hit["id"])
    assert detail["answer"]["content"] == "Hello there"
    assert (detail["prompt_tokens"], detail["completion_tokens"]) == (miss["prompt_tokens"], miss["completion_tokens"])
    listed = requests.get(setup.url + "/ui/api/logs", params={"cached": "1"}).json()["items"]
    assert [row["id"] for row in listed] == [hit["id"]]
    assert "answered from the cache" in requests.get(setup.url + f"/ui/logs/{hit['id']}").text
    bad = requests.get(setup.url + "/ui/api/logs", params={"cached": "yes"})
    assert bad.status_code == 400 and "cached must be 1" in bad.text
