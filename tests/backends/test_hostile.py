"""A hostile or broken backend cannot freeze or exhaust the proxy: an endless chunked trailer, a stream without
line or event separators, a compressed body that inflates without end (the proxy asks for none), a huge
non-streamed body and a huge error text are each bounded, and answered 502 naming the backend (an error chunk
once a stream has begun); meanwhile other clients are served. Raw bytes come from tests/backends/fake_raw.py on real
sockets; the proxy runs in process and as `python wsgi.py` (gevent)."""
from __future__ import annotations

import gzip
import itertools
import json
import threading
import time

import pytest
import requests

from proxy.backends.base import HTTPBackend
from proxy.config import Settings
from proxy.errors import BackendUnavailable, UpstreamStatus
from proxy.framing import FrameTooLarge, Lines, NDJSONFraming, SSEFraming
from tests.backends.fake_raw import CHUNKED_HEAD, RawServer, Reply, chunked, http

MODELS = json.dumps({"object": "list", "data": [{"id": "m1", "object": "model", "owned_by": "someone"}]}).encode()
PAD = b"X-Pad: " + b"a" * 1000 + b"\r\n"


def endless(first: bytes, then: bytes) -> Reply:
    return Reply(itertools.chain([first], itertools.repeat(then)))


@pytest.fixture
def raw():
    srv = RawServer().start()
    srv.route("GET", "/v1/models", http(body=MODELS, headers=(("Content-Type", "application/json"),)))
    yield srv
    srv.stop()


def backend_for(url: str, **env: str) -> HTTPBackend:
    return HTTPBackend(Settings.from_env({"BACKEND_URL": url, "BACKEND_TIMEOUT": "5", **env}))


def read_whole(backend: HTTPBackend, stream: bool = False) -> bytes:
    upstream = backend.open("POST", "/x", b"{}", stream=stream)
    try:
        return b"".join(upstream.stream())
    finally:
        upstream.close()


# --------------------------------------------------------------------------------------------
# the client against a raw server: each bound, a 502 naming the backend, no waiting
# --------------------------------------------------------------------------------------------


def test_endless_chunked_trailer_is_cut_off(raw):
    raw.script(endless(CHUNKED_HEAD + b"2\r\n{}\r\n0\r\n", PAD))
    backend = backend_for(raw.url)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="trailer") as info:
        read_whole(backend)
    assert f"127.0.0.1:{raw.port}" in info.value.message and info.value.status == 502
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_non_streamed_body_beyond_max_response_bytes_is_refused(raw, framing):
    body = b"x" * 300_000
    raw.script(http(body=body) if framing == "length" else CHUNKED_HEAD + chunked(*[body[i:i + 1000] for i in
                                                                                      range(0, len(body), 1000)]))
    backend = backend_for(raw.url, MAX_RESPONSE_BYTES="100000")
    with pytest.raises(BackendUnavailable, match="MAX_RESPONSE_BYTES") as info:
        read_whole(backend)
    assert f"127.0.0.1:{raw.port}" in info.value.message
    assert raw.conns[0].eof.wait(5)  # the rest was never read: the connection is gone


def test_a_stream_is_not_bounded_by_max_response_bytes(raw):
    body = b"data: x\n\n" * 30_000
    raw.script(CHUNKED_HEAD + chunked(*[body[i:i + 9000] for i in range(0, len(body), 9000)]))
    assert read_whole(backend_for(raw.url, MAX_RESPONSE_BYTES="100000"), stream=True) == body


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_compressed_body_inflating_beyond_the_bound_is_refused(raw, stream):
    bomb = gzip.compress(b"\0" * 64 * 1024 * 1024)  # ~64 KiB on the wire
    raw.script(http(body=bomb, headers=(("Content-Encoding", "gzip"),)))
    backend = backend_for(raw.url, MAX_RESPONSE_BYTES="1000000")
    with pytest.raises(BackendUnavailable, match="decodes to") as info:
        read_whole(backend, stream=stream)
    assert f"127.0.0.1:{raw.port}" in info.value.message


def test_the_proxy_asks_for_no_compression(raw):
    raw.script(http(body=b"{}"))
    read_whole(backend_for(raw.url))
    assert raw.requests[0].header("Accept-Encoding") == "identity"


def test_huge_error_text_is_clipped(raw):
    raw.script(http(400, json.dumps({"error": {"message": "bad " * 200_000}}).encode()))
    with pytest.raises(UpstreamStatus) as info:
        read_whole(backend_for(raw.url))
    assert info.value.status == 400 and info.value.message.startswith("bad bad")
    assert len(info.value.message) < 2100


def test_endless_error_body_is_not_read_to_its_end(raw):
    raw.script(endless(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n", b"1000\r\n" + b"e" * 4096 + b"\r\n"))
    started = time.monotonic()
    with pytest.raises(UpstreamStatus) as info:
        read_whole(backend_for(raw.url))
    assert info.value.status == 500 and len(info.value.message) <= 600
    assert time.monotonic() - started < 2


# --------------------------------------------------------------------------------------------
# framing: bounded, and linear in what it is fed
# --------------------------------------------------------------------------------------------


def test_a_line_that_never_ends_is_refused_at_the_frame_limit():
    lines = Lines(limit=10_000)
    with pytest.raises(FrameTooLarge):
        for _ in range(100):
            lines.lines(b"x" * 1000)
    assert lines.lines(b"ok\nnext") == [b"ok"] and lines.rest() == b"next"  # usable again, nothing kept


@pytest.mark.parametrize("make", [SSEFraming, NDJSONFraming])
def test_framings_refuse_a_frame_beyond_the_limit(make):
    framing = make(limit=10_000)
    with pytest.raises(FrameTooLarge):
        for _ in range(100):
            framing.feed(b"data: " + b"x" * 1000)


def test_an_sse_event_of_endless_data_lines_is_refused():
    framing = SSEFraming(limit=10_000)
    with pytest.raises(FrameTooLarge):
        for _ in range(100):
            framing.feed(b"data: " + b"x" * 200 + b"\n")


def test_framing_a_long_line_in_small_pieces_takes_linear_time():
    lines = Lines()
    started = time.monotonic()
    for _ in range(4000):
        lines.lines(b"x" * 4096)  # 16 MiB less a little, in 4 KiB pieces: quadratic rescans would take minutes
    assert lines.lines(b"\n") == [b"x" * 4096 * 4000]
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------------------------
# through the proxy
# --------------------------------------------------------------------------------------------

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"], ids=["translated", "passthrough"])
def test_a_stream_without_separators_ends_in_an_error_naming_the_backend(make_proxy, raw, path):
    raw.route("POST", "/v1/chat/completions", lambda: endless(CHUNKED_HEAD, b"10000\r\n" + b"x" * 65536 + b"\r\n"))
    proxy = make_proxy(BACKEND_URL=raw.url)
    started = time.monotonic()
    r = requests.post(proxy.url + path, json={**CHAT, "stream": True}, timeout=60)
    assert r.status_code == 200
    assert f"127.0.0.1:{raw.port}" in r.text and "longer than" in r.text, r.text[-500:]
    assert time.monotonic() - started < 30


def _completion(padding: int) -> bytes:
    """A valid chat completion, made as large as wanted with whitespace a JSON parser skips."""
    return (b'{"id": "c1", "object": "chat.completion", "created": 1, "model": "m1", "choices": [{"index": 0, '
            b'"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]' + b" " * padding + b"}")


@pytest.mark.parametrize("reply", [
    endless(CHUNKED_HEAD + b"%x\r\n%s\r\n0\r\n" % (len(_completion(0)), _completion(0)), PAD),
    Reply([http(body=gzip.compress(_completion(64 * 1024 * 1024)), headers=(("Content-Encoding", "gzip"),))]),
    Reply([http(body=_completion(3_000_000))]),
], ids=["trailer", "gzip-bomb", "too-large"])
@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_hostile_whole_answers_are_502_in_the_callers_dialect_naming_the_backend(make_proxy, raw, reply, path):
    raw.route("POST", "/v1/chat/completions", reply)
    proxy = make_proxy(BACKEND_URL=raw.url, MAX_RESPONSE_BYTES="1000000")
    r = requests.post(proxy.url + path, json={**CHAT, "stream": False}, timeout=30)
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    message = error if path.startswith("/api") else error["message"]
    assert f"127.0.0.1:{raw.port}" in message


def _latencies_while(proxy_url: str, busy: threading.Event) -> list[float]:
    out = []
    while busy.is_set() or not out:
        started = time.monotonic()
        assert requests.get(proxy_url + "/api/version", timeout=30).status_code == 200
        out.append(time.monotonic() - started)
        time.sleep(0.02)
    return out


def test_other_clients_are_served_while_a_backend_floods_a_stream(wsgi_proxy, raw):
    """A backend writing a valid stream as fast as the socket takes it, relayed to a client reading as fast:
    no read ever waits, and only the client read's cooperative yield lets the others in."""
    event = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "x" * 400}}]}).encode() + b"\n\n"
    raw.route("POST", "/v1/chat/completions", lambda: endless(CHUNKED_HEAD, b"%x\r\n%s\r\n" % (len(event) * 100,
                                                                                              event * 100)))
    proxy = wsgi_proxy(BACKEND_URL=raw.url, LOG_LEVEL="WARNING")
    busy = threading.Event()
    busy.set()
    flowing = threading.Event()
    received = 0

    def flood() -> None:
        nonlocal received
        try:
            with requests.post(proxy.url + "/v1/chat/completions", json={**CHAT, "stream": True}, stream=True,
                               timeout=30) as r:
                deadline = time.monotonic() + 3
                for piece in r.iter_content(65536):
                    received += len(piece)
                    flowing.set()
                    if time.monotonic() > deadline:
                        break
        finally:
            busy.clear()

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    assert flowing.wait(10), "the flood never reached the client"
    latencies = _latencies_while(proxy.url, busy)
    thread.join(10)
    assert received > 10_000_000, received  # the flood really ran
    assert len(latencies) >= 5 and max(latencies) < 1.0, latencies


def test_stray_bytes_after_an_answer_never_become_the_next_clients_answer(make_proxy, raw):
    """Issue 10 item 10 over the whole proxy: the backend writes a forged answer on the idle keep-alive
    connection after a real one; the next request is served on a fresh connection with its own answer."""
    def completion(text: str) -> bytes:
        return json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m1", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}).encode()

    forging = Reply([http(body=completion("first")), http(body=completion("forged"))], pause=0.2)
    raw.script(forging, http(body=completion("second")))
    proxy = make_proxy(BACKEND_URL=raw.url)
    first = requests.post(proxy.url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert first.json()["choices"][0]["message"]["content"] == "first"
    assert forging.sent.wait(5)  # the forged answer is on the idle connection now
    second = requests.post(proxy.url + "/v1/chat/completions", json=CHAT, timeout=10)
    assert second.json()["choices"][0]["message"]["content"] == "second"
