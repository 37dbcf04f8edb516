"""Keep-alive beats with several backends (BACKENDS_FILE) under the gevent server: a stream queued for the slot
of a backend at its max_concurrency gets beats while it waits, then its answer; a stream whose first backend
refuses is failed over behind the beats and answered by the next."""
from __future__ import annotations

import threading

import requests

from tests.support.fakes import FakeUpstream
from tests.support.pool_proxy import backend, openai_fake

BEAT = b": keep-alive\n\n"
BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def stream(url: str) -> requests.Response:
    return requests.post(url + "/v1/chat/completions", json=BODY, stream=True, timeout=20)


def test_a_stream_queued_for_a_slot_gets_beats_then_its_answer(pool_proxy):
    gate = threading.Event()
    gpu = openai_fake("Hello", " world", gate=gate, gate_at=1)
    try:
        proxy = pool_proxy(backend("gpu", gpu, 'models = ["m"]\nmax_concurrency = 1\n'), wsgi=True,
                           KEEPALIVE_S="0.2")
        holder = stream(proxy.url)
        first = holder.iter_content(chunk_size=None)
        assert next(first).startswith(b"data: ")  # the holder has the only slot, its answer held half way
        queued = stream(proxy.url)
        pieces = queued.iter_content(chunk_size=None)
        assert next(pieces) == BEAT and next(pieces) == BEAT  # waiting for the slot
        assert len(gpu.calls("/v1/chat/completions")) == 1
        gate.set()
        assert b"".join(first).endswith(b"data: [DONE]\n\n")
        rest = b"".join(pieces)
        assert b"Hello" in rest and rest.endswith(b"data: [DONE]\n\n")
    finally:
        gpu.stop()


def test_a_refusing_backend_is_failed_over_behind_the_beats(pool_proxy):
    refusing = FakeUpstream().start()
    url = refusing.url
    refusing.stop()  # nothing listens there any more: connection refused
    good = openai_fake("Hello", hang=0.6)
    try:
        toml = backend("down", url, 'models = ["m"]\n') + backend("up", good, 'models = ["m"]\n') \
            + '[routing]\nretries = 1\n'
        proxy = pool_proxy(toml, wsgi=True, KEEPALIVE_S="0.2")
        for _ in range(2):  # round-robin: one of the two starts at the refusing backend
            raw = stream(proxy.url).content
            assert raw.startswith(BEAT) and b"Hello" in raw and raw.endswith(b"data: [DONE]\n\n")
        assert len(good.calls("/v1/chat/completions")) == 2
    finally:
        good.stop()
