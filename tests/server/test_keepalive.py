"""Early bytes over real sockets (KEEPALIVE_S): a streamed chat completion whose backend is slow to its first
byte gets SSE comment beats until the answer, and the official SDK, with a read timeout shorter than the
wait, gets the answer; failures before anything went out keep their status, later ones are error events."""

from __future__ import annotations

import time

import requests

from tests.support.fakes import openai_stream

BEAT = b": keep-alive\n\n"


def chat(url: str, **kw) -> requests.Response:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    return requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=kw.pop("timeout", 10), **kw)


def test_slow_first_byte_is_preceded_by_beats_and_then_answered(make_proxy, fake_upstream, openai_client):
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", "/v1/chat/completions", openai_stream(["Hello", " world"], hang=1.2))
    proxy = make_proxy(KEEPALIVE_S="0.3")
    started = time.monotonic()
    r = chat(proxy.url)
    assert r.status_code == 200
    pieces = list(r.iter_content(chunk_size=None))
    assert pieces[0] == BEAT and time.monotonic() - started >= 1.2
    raw = b"".join(pieces)
    assert raw.count(BEAT) >= 2 and raw.index(b"data:") > raw.rindex(BEAT)
    assert b"Hello" in raw and raw.endswith(b"data: [DONE]\n\n")
