"""Streaming behaviour over real sockets: the first chunk reaches the client while the upstream
is still paused (in-process and under the real gevent server of `python wsgi.py`), a client
that goes away closes the upstream connection, hostile upstream framing (events split across
TCP chunks, split UTF-8, CRLF, comments) is reassembled, and stream headers are set."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from tests.support import OLLAMA_MODELS, OPENAI_MODELS, fakes
from tests.support.fakes import Reply, sse_reply
from tests.support.wire_checks import assert_ollama_chat_line, ndjson_strict, post, sse_strict

CHAT = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}
COMBOS = [("ollama", "openai"), ("openai", "ollama"), ("openai", "openai"), ("ollama", "ollama")]
COMBO_IDS = [f"{f}-front-{k}-backend" for f, k in COMBOS]


def chat_body(model: str, **kw) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True, **kw}


def read_until(chunks, needle: bytes, limit: int = 1 << 20) -> bytes:
    """Read from an iterator of byte chunks until `needle` has been seen."""
    got = b""
    for chunk in chunks:
        got += chunk
        if needle in got or len(got) > limit:
            return got
    return got


def open_stream(url: str, body: dict, read_timeout: float = 10) -> requests.Response:
    r = requests.post(url, json=body, stream=True, timeout=(3, read_timeout))
    assert r.status_code == 200, r.text
    return r


# =============================================================================================
# first chunk while the upstream is paused
# =============================================================================================


def first_chunk_arrives_while_upstream_paused(url: str, model: str, fake, chat_path: str,
                                              front: str, kind: str) -> None:
    gate = threading.Event()
    pieces = ["FIRSTPIECE", " second", " third"]
    if kind == "openai":
        # role chunk, FIRSTPIECE, <gate> second, third, finish, [DONE]
        fake.default("POST", chat_path, fakes.openai_chat_responder(pieces, gate=gate, gate_at=2))
    else:
        # FIRSTPIECE, <gate> second, third, done
        fake.default("POST", chat_path, fakes.ollama_chat_responder(pieces, gate=gate, gate_at=1))
    with open_stream(url + CHAT[front], chat_body(model)) as r:
        chunks = r.iter_content(chunk_size=None)
        try:
            head = read_until(chunks, b"FIRSTPIECE")
        except requests.exceptions.ConnectionError as exc:  # read timeout while streaming
            pytest.fail(f"first chunk held back while upstream paused: {exc}")
        assert b"FIRSTPIECE" in head, head
        assert not gate.is_set()
        (ex,) = fake.exchanges_to(chat_path)
        assert not ex.completed, "upstream finished already: the test proves nothing"
        gate.set()
        rest = head + b"".join(chunks)
    assert b"third" in rest
    if front == "ollama":
        lines = ndjson_strict(rest)
        assert "".join(line["message"]["content"] for line in lines) == "".join(pieces)
        assert lines[-1]["done"] is True
    else:
        payloads = sse_strict(rest)
        assert payloads[-1] == "[DONE]"
        text = "".join(ch["delta"].get("content") or "" for p in payloads[:-1]
                       for ch in p["choices"])
        assert text == "".join(pieces)


@pytest.mark.parametrize("front, kind", COMBOS, ids=COMBO_IDS)
def test_first_chunk_reaches_client_while_upstream_is_paused(backend_setup, front, kind):
    setup = backend_setup(kind)
    first_chunk_arrives_while_upstream_paused(setup.url, setup.model, setup.fake, setup.chat_path,
                                              front, kind)


@pytest.mark.parametrize("front, kind", COMBOS, ids=COMBO_IDS)
def test_first_chunk_reaches_client_while_upstream_is_paused_under_gevent(
        fake_upstream, wsgi_proxy, front, kind):
    if kind == "openai":
        fake_upstream.serve_openai_models(*OPENAI_MODELS)
        model, chat_path = OPENAI_MODELS[0], "/v1/chat/completions"
    else:
        fake_upstream.serve_ollama_models(*OLLAMA_MODELS)
        model, chat_path = "llama3.2", "/api/chat"
    proxy = wsgi_proxy(BACKEND_TYPE=kind)
    first_chunk_arrives_while_upstream_paused(proxy.url, model, fake_upstream, chat_path, front, kind)


def test_paused_streams_do_not_block_each_other_under_gevent(fake_upstream, wsgi_proxy):
    fake_upstream.serve_openai_models(*OPENAI_MODELS)
    gate = threading.Event()
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(
        ["FIRSTPIECE", " more"], gate=gate, gate_at=2))
    proxy = wsgi_proxy(BACKEND_TYPE="openai")
    streams = [open_stream(proxy.url + "/api/chat", chat_body(OPENAI_MODELS[0])) for _ in range(3)]
    try:
        for r in streams:  # all three are paused upstream at once, each got its first piece
            assert b"FIRSTPIECE" in read_until(r.iter_content(chunk_size=None), b"FIRSTPIECE")
        assert requests.get(proxy.url + "/health", timeout=2).text.strip() == "OK"
    finally:
        gate.set()
        for r in streams:
            r.close()


def test_chunks_are_relayed_one_by_one_not_at_the_end(openai_backend):
    openai_backend.script_chat([f"p{i} " for i in range(6)], delay=0.2)
    arrivals = []
    t0 = time.monotonic()
    with open_stream(openai_backend.url + "/api/chat", chat_body(openai_backend.model)) as r:
        for chunk in r.iter_content(chunk_size=None):
            if b'"p' in chunk:
                arrivals.append(time.monotonic() - t0)
    assert len(arrivals) >= 4, arrivals
    assert arrivals[-1] - arrivals[0] >= 0.6, arrivals  # spread over time, as sent


# =============================================================================================
# client disconnect closes the upstream connection
# =============================================================================================


def disconnect_closes_upstream(url: str, model: str, fake, chat_path: str, front: str,
                               kind: str) -> None:
    pieces = ["FIRSTPIECE"] + [f" w{i}" for i in range(300)]
    if kind == "openai":
        fake.default("POST", chat_path, fakes.openai_chat_responder(pieces, delay=0.01))
    else:
        fake.default("POST", chat_path, fakes.ollama_chat_responder(pieces, delay=0.01))
    r = open_stream(url + CHAT[front], chat_body(model))
    assert b"FIRSTPIECE" in read_until(r.iter_content(chunk_size=None), b"FIRSTPIECE")
    r.close()  # mid-stream: urllib3 closes the socket
    (ex,) = fake.exchanges_to(chat_path)
    assert ex.done.wait(5), "upstream kept streaming after the client left"
    assert ex.client_disconnected, "upstream connection was not closed by the proxy"
    assert not ex.completed and ex.chunks_sent < len(pieces)


@pytest.mark.parametrize("front, kind", COMBOS, ids=COMBO_IDS)
def test_client_disconnect_closes_the_upstream_connection(backend_setup, front, kind):
    setup = backend_setup(kind)
    disconnect_closes_upstream(setup.url, setup.model, setup.fake, setup.chat_path, front, kind)


@pytest.mark.parametrize("front, kind", [("ollama", "openai"), ("openai", "openai")],
                         ids=["translated", "passthrough"])
def test_client_disconnect_closes_the_upstream_connection_under_gevent(
        fake_upstream, wsgi_proxy, front, kind):
    fake_upstream.serve_openai_models(*OPENAI_MODELS)
    proxy = wsgi_proxy(BACKEND_TYPE=kind)
    disconnect_closes_upstream(proxy.url, OPENAI_MODELS[0], fake_upstream, "/v1/chat/completions",
                               front, kind)


def test_proxy_keeps_serving_after_clients_disconnect(openai_backend):
    for _ in range(3):
        disconnect_closes_upstream(openai_backend.url, openai_backend.model, openai_backend.fake,
                                   "/v1/chat/completions", "ollama", "openai")
        openai_backend.fake.exchanges.clear()
    openai_backend.script_chat(["fine"])
    lines = ndjson_strict(post(openai_backend.url + "/api/chat",
                               chat_body(openai_backend.model)).content)
    assert "".join(line["message"]["content"] for line in lines) == "fine"


# =============================================================================================
# hostile upstream framing
# =============================================================================================


def split_every(raw: bytes, n: int) -> list[bytes]:
    return [raw[i:i + n] for i in range(0, len(raw), n)]


def ollama_chat_from(openai_backend, reply: Reply) -> list[dict]:
    openai_backend.fake.default("POST", "/v1/chat/completions", reply)
    r = post(openai_backend.url + "/api/chat", chat_body(openai_backend.model))
    assert r.status_code == 200, r.text
    lines = ndjson_strict(r.content)
    for line in lines:
        assert_ollama_chat_line(line)
    return lines


def summary(lines: list[dict]) -> tuple:
    return ("".join(line["message"].get("thinking") or "" for line in lines),
            "".join(line["message"]["content"] for line in lines),
            [c["function"] for line in lines for c in line["message"].get("tool_calls") or []],
            lines[-1].get("done_reason"), lines[-1].get("eval_count"))


@pytest.mark.parametrize("fixture", ["openai_chat_stream_tool_call.sse",
                                     "deepseek_chat_stream_reasoning_content.sse",
                                     "llamacpp_chat_stream_reasoning.SYNTHETIC.sse"])
@pytest.mark.parametrize("step", [1, 7, 64])
def test_sse_events_split_across_tcp_chunks_are_reassembled(openai_backend, fixture, step):
    raw = fakes.wire_path(fixture).read_bytes()
    if step == 1 and len(raw) > 10000:
        step = 3  # keep the byte-at-a-time case fast on the big DeepSeek recording
    whole = summary(ollama_chat_from(openai_backend, sse_reply(fixture)))
    pieces = Reply(headers={"Content-Type": "text/event-stream"}, chunks=split_every(raw, step))
    assert summary(ollama_chat_from(openai_backend, pieces)) == whole
    assert whole[1] or whole[2]


def test_utf8_split_inside_a_character_is_reassembled(openai_backend):
    text = "héllo wörld — 日本語 🦙"
    raw = b"".join(fakes.encode_sse(e) for e in fakes.openai_stream_events([text]))
    reply = Reply(headers={"Content-Type": "text/event-stream"}, chunks=split_every(raw, 1))
    lines = ollama_chat_from(openai_backend, reply)
    assert "".join(line["message"]["content"] for line in lines) == text


def test_crlf_sse_framing_and_comments_are_understood(openai_backend):
    events = fakes.openai_stream_events(["Hello", " there"])
    raw = b": keep-alive\n\n" + b"".join(fakes.encode_sse(e) for e in events)
    raw = raw.replace(b"data: ", b"data:", 2).replace(b"\n", b"\r\n")
    reply = Reply(headers={"Content-Type": "text/event-stream"}, chunks=split_every(raw, 50))
    lines = ollama_chat_from(openai_backend, reply)
    assert "".join(line["message"]["content"] for line in lines) == "Hello there"
    assert lines[-1]["done"] is True


def test_ndjson_lines_split_across_tcp_chunks_are_reassembled(ollama_backend):
    name = "ollama-cloud_generate_stream_thinking_gpt-oss-20b.ndjson"
    raw = fakes.wire_path(name).read_bytes()
    objs = fakes.ndjson_objects(name)
    ollama_backend.fake.default("POST", "/api/generate", Reply(
        headers={"Content-Type": "application/x-ndjson"}, chunks=split_every(raw, 5)))
    r = post(ollama_backend.url + "/v1/completions", {"model": ollama_backend.model,
                                                      "prompt": "rabbit", "stream": True})
    payloads = sse_strict(r.content)
    assert payloads[-1] == "[DONE]"
    text = "".join(c["text"] for p in payloads[:-1] for c in p["choices"])
    assert text == "".join(o["response"] for o in objs)


def test_ndjson_split_for_openai_chat_from_ollama_backend(ollama_backend):
    lines = [fakes.ollama_chat_chunk(w) for w in ["Ünï", "cödé ", "🦙"]] + [
        fakes.ollama_chat_chunk("", done=True, done_reason="stop", **fakes.DEFAULT_METRICS)]
    raw = b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)
    ollama_backend.fake.default("POST", "/api/chat", Reply(
        headers={"Content-Type": "application/x-ndjson"}, chunks=split_every(raw, 3)))
    r = post(ollama_backend.url + "/v1/chat/completions", chat_body(ollama_backend.model))
    payloads = sse_strict(r.content)
    text = "".join(ch["delta"].get("content") or "" for p in payloads[:-1] for ch in p["choices"])
    assert text == "Ünïcödé 🦙"


# =============================================================================================
# stream headers
# =============================================================================================


@pytest.mark.parametrize("front, kind", COMBOS, ids=COMBO_IDS)
def test_streams_are_marked_uncacheable_and_unbuffered(backend_setup, front, kind):
    setup = backend_setup(kind)
    setup.script_chat(["x"])
    r = post(setup.url + CHAT[front], chat_body(setup.model))
    want = "application/x-ndjson" if front == "ollama" else "text/event-stream"
    assert r.headers["Content-Type"].startswith(want)
    assert "no-cache" in r.headers.get("Cache-Control", "")
    assert r.headers.get("X-Accel-Buffering") == "no"
    assert "Content-Length" not in r.headers
