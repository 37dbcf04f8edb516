"""Self-tests of the test infrastructure: the fake upstream, the fixture splitters, the reply
builders and the OpenAI schema helper. No proxy involved."""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time

import pytest
import requests

from tests.support import fakes
from tests.support.fakes import Reply, json_reply, ndjson_reply, sse_reply
from tests.support.openai_schema import assert_openai_schema, openai_schema_errors


def test_queued_replies_are_used_in_order_then_the_default(fake_upstream):
    fake_upstream.expect("GET", "/x", json_reply({"n": 1}), json_reply({"n": 2}))
    fake_upstream.default("GET", "/x", json_reply({"n": 0}))
    got = [requests.get(fake_upstream.url + "/x", timeout=5).json()["n"] for _ in range(4)]
    assert got == [1, 2, 0, 0]
    assert fake_upstream.pending() == {}


def test_unscripted_route_answers_404_in_the_dialect_of_its_path(fake_upstream):
    r = requests.post(fake_upstream.url + "/v1/nothing", json={}, timeout=5)
    assert r.status_code == 404
    assert_openai_schema(r.json(), "ErrorResponse")
    r = requests.post(fake_upstream.url + "/api/nothing", json={}, timeout=5)
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


def test_every_request_is_recorded_with_headers_and_parsed_json(fake_upstream):
    fake_upstream.default("POST", "/v1/chat/completions", json_reply(fakes.openai_completion()))
    requests.post(fake_upstream.url + "/v1/chat/completions?a=1", json={"model": "m"},
                  headers={"Authorization": "Bearer k"}, timeout=5)
    requests.post(fake_upstream.url + "/v1/chat/completions", data=b"not json", timeout=5)
    first, second = fake_upstream.calls("/v1/chat/completions")
    assert first.method == "POST" and first.json == {"model": "m"}
    assert first.header("authorization") == "Bearer k" and first.query == {"a": ["1"]}
    assert second.json is None and second.body == b"not json"


def test_chunked_request_bodies_are_read(fake_upstream):
    fake_upstream.default("POST", "/api/chat", json_reply({}))
    requests.post(fake_upstream.url + "/api/chat", data=iter([b'{"a":', b"1}"]), timeout=5)
    assert fake_upstream.last("/api/chat").json == {"a": 1}


def test_keep_alive_connection_serves_several_requests(fake_upstream):
    fake_upstream.default("GET", "/a", json_reply({"ok": True}))
    conn = http.client.HTTPConnection("127.0.0.1", fake_upstream.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/a")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read()) == {"ok": True}
    conn.close()


def test_stream_is_sent_chunked_and_each_chunk_arrives_separately(fake_upstream):
    gate = threading.Event()
    fake_upstream.default("POST", "/s", Reply(chunks=[b"one\n", b"two\n"], gate=gate, gate_at=1))
    with requests.post(fake_upstream.url + "/s", stream=True, timeout=5) as r:
        assert r.headers["Transfer-Encoding"] == "chunked"
        it = r.iter_content(chunk_size=None)
        assert next(it) == b"one\n"  # arrives while the gate is still closed
        ex = fake_upstream.exchanges[-1]
        deadline = time.monotonic() + 2  # the server thread counts a chunk just after writing it
        while ex.chunks_sent < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert ex.chunks_sent == 1 and not gate.is_set()
        gate.set()
        assert b"".join(it) == b"two\n"
    ex.done.wait(5)
    assert ex.completed and ex.chunks_sent == 2


def test_delay_spaces_out_chunks(fake_upstream):
    fake_upstream.default("GET", "/d", Reply(chunks=[b"a", b"b", b"c"], delay=0.15))
    t0 = time.monotonic()
    body = requests.get(fake_upstream.url + "/d", timeout=5).content
    assert body == b"abc" and time.monotonic() - t0 >= 0.29


def test_close_after_breaks_the_stream_without_a_terminating_chunk(fake_upstream):
    fake_upstream.default("GET", "/c", Reply(chunks=[b"a\n", b"b\n", b"c\n"], close_after=2))
    with (pytest.raises(requests.exceptions.ChunkedEncodingError),
          requests.get(fake_upstream.url + "/c", stream=True, timeout=5) as r):
        b"".join(r.iter_content(chunk_size=None))
    ex = fake_upstream.exchanges[-1]
    ex.done.wait(5)
    assert ex.aborted and ex.chunks_sent == 2 and not ex.completed


def test_hang_provokes_a_client_read_timeout(fake_upstream):
    fake_upstream.default("GET", "/h", Reply(chunks=[b"late"], hang=math.inf))
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(fake_upstream.url + "/h", timeout=(2, 0.3))
    assert time.monotonic() - t0 < 2


def test_gate_never_opened_stalls_mid_stream(fake_upstream):
    fake_upstream.default("GET", "/g", Reply(chunks=[b"a", b"b"], gate=threading.Event()))
    with requests.get(fake_upstream.url + "/g", stream=True, timeout=(2, 0.3)) as r:
        it = r.iter_content(chunk_size=None)
        assert next(it) == b"a"
        with pytest.raises(requests.exceptions.ConnectionError):
            next(it)


def test_client_disconnect_is_recorded(fake_upstream):
    fake_upstream.default("GET", "/long", Reply(chunks=[b"x\n"] * 200, delay=0.01))
    with requests.get(fake_upstream.url + "/long", stream=True, timeout=5) as r:
        next(r.iter_content(chunk_size=None))
    # leaving the `with` closes the connection mid-stream
    ex = fake_upstream.exchanges[-1]
    assert ex.done.wait(5)
    assert ex.client_disconnected and not ex.completed and ex.chunks_sent < 200


def test_client_disconnect_is_seen_even_during_a_gate_pause(fake_upstream):
    gate = threading.Event()
    fake_upstream.default("GET", "/p", Reply(chunks=[b"a", b"b", b"c"], gate=gate))
    sock = socket.create_connection(("127.0.0.1", fake_upstream.port))
    sock.sendall(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n1\r\na\r\n" not in got:  # headers, then the first chunk
        got += sock.recv(1024)
    assert got.startswith(b"HTTP/1.1 200")
    sock.close()
    gate.set()
    ex = fake_upstream.exchanges[-1]
    assert ex.done.wait(5)
    assert ex.client_disconnected and ex.chunks_sent == 1


def test_stopping_the_server_releases_hanging_handlers():
    fake = fakes.FakeUpstream().start()
    fake.default("GET", "/h", Reply(chunks=[b"x"], hang=math.inf))
    def call():
        with pytest.raises(requests.ConnectionError):
            requests.get(fake.url + "/h", timeout=10)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    fake.wait_for("/h")
    t0 = time.monotonic()
    fake.stop()
    assert fake.exchanges[-1].done.wait(2)
    assert time.monotonic() - t0 < 3


# -- fixture files ------------------------------------------------------------------------------


def test_sse_fixture_splits_into_events_ending_with_done():
    events = fakes.sse_events("openai_chat_stream_tool_call.sse")
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    assert events[-1] == b"data: [DONE]\n\n"
    payloads = fakes.sse_payloads("openai_chat_stream_tool_call.sse")
    assert len(payloads) == len(events)
    assert payloads[-2]["choices"] == [] and payloads[-2]["usage"]["total_tokens"] == 68


def test_sse_error_event_keeps_its_event_line_with_its_data():
    events = fakes.sse_events("groq_chat_stream_midstream_error_event.sse")
    assert events[-1].startswith(b"event: error\ndata: {")
    assert fakes.sse_payloads("groq_chat_stream_midstream_error_event.sse")[-1]["error"]["code"] \
        == "tool_use_failed"


def test_ndjson_fixture_splits_into_lines():
    lines = fakes.ndjson_lines("ollama_docs_chat_stream_tool_call.ndjson")
    assert len(lines) == 2 and all(line.endswith(b"\n") for line in lines)
    objs = fakes.ndjson_objects("ollama-cloud_generate_stream_thinking_gpt-oss-20b.ndjson")
    assert objs[-1]["done"] is True and objs[-1]["eval_count"] == 172


def test_fixture_replies_replay_the_file_bytes_exactly(fake_upstream):
    name = "deepseek_chat_stream_reasoning_content.sse"
    fake_upstream.default("POST", "/v1/chat/completions", sse_reply(name))
    r = requests.post(fake_upstream.url + "/v1/chat/completions", json={}, timeout=5)
    assert r.headers["Content-Type"] == "text/event-stream"
    assert r.content == fakes.wire_path(name).read_bytes()
    fake_upstream.default("POST", "/api/chat", ndjson_reply("ollama_docs_chat_stream_tool_call.ndjson"))
    r = requests.post(fake_upstream.url + "/api/chat", json={}, timeout=5)
    assert r.headers["Content-Type"] == "application/x-ndjson"
    assert r.content == fakes.wire_path("ollama_docs_chat_stream_tool_call.ndjson").read_bytes()


# -- builders -----------------------------------------------------------------------------------


def test_synthetic_openai_stream_is_schema_valid_and_well_framed():
    frags = fakes.tool_call_fragments("get_weather", '{"city":"Tokyo"}')
    events = fakes.openai_stream_events(["Hi"], reasoning=["hm"], tool_calls=frags,
                                        finish="tool_calls")
    for e in events[:-1]:
        assert_openai_schema(e, "CreateChatCompletionStreamResponse")
    assert events[-1] == "[DONE]"
    args = "".join(e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                   for e in events[:-1] if e["choices"] and "tool_calls" in e["choices"][0]["delta"])
    assert json.loads(args) == {"city": "Tokyo"}


def test_synthetic_openai_bodies_are_schema_valid():
    assert_openai_schema(fakes.openai_completion(), "CreateChatCompletionResponse")
    assert_openai_schema(
        fakes.openai_completion(None, tool_calls=[fakes.openai_tool_call("f", "{}")]),
        "CreateChatCompletionResponse")
    assert_openai_schema(fakes.openai_models("a", "b"), "ListModelsResponse")
    assert_openai_schema(fakes.openai_embeddings([[0.5, 0.25]]), "CreateEmbeddingResponse")
    assert_openai_schema(fakes.openai_text_completion(), "CreateCompletionResponse")
    for e in fakes.openai_text_completion_events()[:-1]:
        assert_openai_schema(e, "CreateCompletionStreamResponse")


def test_schema_helper_rejects_what_clients_would_choke_on():
    assert openai_schema_errors({"error": {"message": "x"}}, "ErrorResponse")
    bare_usage = {"usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    assert openai_schema_errors(bare_usage, "CreateChatCompletionStreamResponse")
    with pytest.raises(AssertionError):
        assert_openai_schema({"object": "list"}, "ListModelsResponse")


def test_base64_floats_round_trip():
    vec = [0.5, -0.25, 1.0]
    assert fakes.unpack_floats(fakes.pack_floats(vec)) == vec


def test_image_constants_carry_the_magic_bytes_the_proxy_sniffs():
    assert fakes.PNG_1PX.startswith("iVBOR")
    assert fakes.JPEG_MAGIC.startswith("/9j/")
    assert fakes.GIF_1PX.startswith("R0lGOD")
    assert fakes.WEBP_MAGIC.startswith("UklGR")


# -- responders ---------------------------------------------------------------------------------


def test_openai_responder_answers_stream_and_non_stream_requests(fake_upstream):
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(
        ["Hi", "!"], tool_calls=[("f", '{"a":1}', "call_1")]))
    url = fake_upstream.url + "/v1/chat/completions"
    whole = requests.post(url, json={"model": "m"}, timeout=5).json()
    assert_openai_schema(whole, "CreateChatCompletionResponse")
    assert whole["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"a":1}'
    plain = fakes.sse_payloads(requests.post(url, json={"stream": True}, timeout=5).content)
    assert plain[-1] == "[DONE]" and all(p["choices"] for p in plain[:-1])
    with_usage = fakes.sse_payloads(requests.post(
        url, json={"stream": True, "stream_options": {"include_usage": True}}, timeout=5).content)
    assert with_usage[-2]["choices"] == [] and with_usage[-2]["usage"]["prompt_tokens"] == 7


def test_ollama_responder_streams_unless_told_not_to(fake_upstream):
    fake_upstream.default("POST", "/api/chat", fakes.ollama_chat_responder(["a", "b"]))
    url = fake_upstream.url + "/api/chat"
    r = requests.post(url, json={"model": "m"}, timeout=5)
    assert r.headers["Content-Type"] == fakes.NDJSON
    lines = fakes.ndjson_objects(r.content)
    assert [line["message"]["content"] for line in lines] == ["a", "b", ""] and lines[-1]["done"]
    one = requests.post(url, json={"model": "m", "stream": False}, timeout=5).json()
    assert one["message"]["content"] == "ab" and one["done"] is True
