"""HTTPBackend against a raw TCP server: what goes on the wire, how answers are read and bounded, when a
connection is reused, and which ProxyError each failure becomes (always naming the backend).

No mocks: every test talks over a real loopback socket to `RawServer` (tests/backends/fake_raw.py), which
records requests and answers with scripted raw bytes.
"""
from __future__ import annotations

import gzip
import json
import socket
import threading
import zlib

import pytest

from proxy.backends.base import HTTPBackend
from proxy.config import Settings
from proxy.errors import BackendTimeout, BackendUnavailable, UpstreamStatus
from tests.backends.fake_raw import CHUNKED_HEAD, RawServer, Reply, chunked, http

WAIT = 5.0  # upper bound for anything that should happen at once (never reached when green)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    srv = RawServer().start()
    yield srv
    srv.stop()


def backend_for(url: str, **env: str) -> HTTPBackend:
    settings = Settings.from_env({"BACKEND_URL": url, "BACKEND_TIMEOUT": "2", "BACKEND_CONNECT_TIMEOUT": "2", **env})
    return HTTPBackend(settings)


def body_of(backend: HTTPBackend, path: str = "/x", method: str = "GET") -> bytes:
    upstream = backend.open(method, path)
    try:
        return upstream.read()
    finally:
        upstream.close()


# --------------------------------------------------------------------------------------------
# reading answers
# --------------------------------------------------------------------------------------------


def test_chunked_body_with_extensions_and_trailers_is_decoded_and_the_connection_reused(server):
    backend = backend_for(server.url)
    body = (b"5;name=value\r\nhello\r\n7;a=1\r\n, world\r\n0;final\r\nX-Trailer: yes\r\n\r\n")
    server.script(CHUNKED_HEAD + body, http(body=b"next"))
    assert body_of(backend) == b"hello, world"
    assert body_of(backend) == b"next" and len(server.conns) == 1


def test_chunked_data_is_handed_on_before_the_rest_arrives(server):
    backend = backend_for(server.url)
    gate = threading.Event()
    server.script(Reply([CHUNKED_HEAD + b"5\r\nfirst\r\n", b"6\r\nsecond\r\n" + b"0\r\n\r\n"], gate=gate))
    upstream = backend.open("POST", "/x", b"{}", stream=True)
    pieces = upstream.stream()
    assert next(pieces) == b"first"  # would block until the read timeout if it waited for more
    gate.set()
    assert b"".join(pieces) == b"second"


def test_http10_body_without_length_is_read_until_close(server):
    server.script(Reply([b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ", b"part two"],
                        pause=0.01, close=True))
    assert body_of(backend_for(server.url)) == b"part one, part two"


@pytest.mark.parametrize("name, pack", [("gzip", gzip.compress), ("x-gzip", gzip.compress),
                                        ("deflate", zlib.compress)])
def test_a_compressed_body_is_decoded_although_none_was_asked_for(server, name, pack):
    server.script(http(body=pack(b"zipped"), headers=(("Content-Encoding", name),)))
    assert body_of(backend_for(server.url)) == b"zipped"


@pytest.mark.parametrize("raw", [http(body=b"0123456789"), CHUNKED_HEAD + chunked(b"01234", b"56789")],
                         ids=["content-length", "chunked"])
def test_closing_before_the_body_end_drops_the_connection(server, raw):
    backend = backend_for(server.url)
    server.script(Reply([raw[:-8]]), http(body=b"fresh"))  # the rest never comes
    upstream = backend.open("POST", "/x", b"{}", stream=True)
    assert next(upstream.stream())
    upstream.close()
    assert server.conns[0].eof.wait(WAIT), "the server did not see the client leave"
    assert body_of(backend) == b"fresh" and len(server.conns) == 2


def test_an_oversized_response_head_is_backend_unavailable(server):
    server.script(Reply([b"HTTP/1.1 200 OK\r\n" + (b"X-Big: " + b"a" * 1000 + b"\r\n") * 70],
                        gate=threading.Event()))
    with pytest.raises(BackendUnavailable, match="response head") as info:
        backend_for(server.url).open("GET", "/x")
    assert server.url in info.value.message


# --------------------------------------------------------------------------------------------
# A connection with unread data is never reused: stray bytes on it would be read as the next answer.
# --------------------------------------------------------------------------------------------


def test_backend_answer_is_never_taken_from_stray_bytes_on_a_pooled_connection(server):
    backend = backend_for(server.url)
    first = Reply([http(body=b'{"n": 1}'), http(body=b'{"n": "forged"}')], pause=0.2)
    server.script(first, http(body=b'{"n": 2}'))
    assert backend.get_json("/x") == {"n": 1}
    assert first.sent.wait(5)  # the forged answer is on the idle connection now
    assert backend.get_json("/x") == {"n": 2}


# --------------------------------------------------------------------------------------------
# through HTTPBackend
# --------------------------------------------------------------------------------------------


def test_backend_sends_path_prefix_default_headers_and_no_authorization(server):
    backend = backend_for(server.url + "/api")
    server.script(http(body=b'{"data": []}'))
    assert backend.get_json("/v1/models") == {"data": []}
    [req] = server.requests
    assert req.target == "/api/v1/models"
    assert req.header("Host") == f"127.0.0.1:{server.port}"
    assert req.header("Accept-Encoding") == "identity" and req.header("Content-Type") == "application/json"
    assert req.header("Authorization") is None and req.header("X-Request-ID") is None



def test_backend_sends_authorization_when_an_api_key_is_set(server):
    backend = backend_for(server.url, BACKEND_API_KEY="sk-test-123")
    server.script(http(body=b"{}"))
    backend.get_json("/v1/models")
    assert server.requests[0].header("Authorization") == "Bearer sk-test-123"


def test_backend_sends_x_request_id_when_given(server):
    backend = backend_for(server.url)
    server.script(http(body=b'{"ok": true}'), http(body=b'{"ok": true}'))
    raw, data = backend.post_json("/v1/chat/completions", {"model": "m"}, request_id="req-42")
    assert data == {"ok": True} and raw == b'{"ok": true}'
    req = server.requests[0]
    assert req.header("X-Request-ID") == "req-42" and json.loads(req.body) == {"model": "m"}
    backend.post_json("/v1/chat/completions", {"model": "m"})
    assert server.requests[1].header("X-Request-ID") is None  # not left in the shared head lines


def test_backend_refused_port_is_backend_unavailable_naming_the_url():
    url = f"http://127.0.0.1:{closed_port()}"
    backend = backend_for(url)
    with pytest.raises(BackendUnavailable) as info:
        backend.open("GET", "/v1/models")
    assert url in info.value.message and "refused" in info.value.message
    assert info.value.status == 502


def test_backend_read_timeout_is_backend_timeout(server):
    backend = backend_for(server.url, BACKEND_TIMEOUT="0.2")
    server.script(Reply(hang=True))
    with pytest.raises(BackendTimeout) as info:
        backend.open("GET", "/v1/models")
    assert server.url in info.value.message and "0.2 s" in info.value.message
    assert info.value.status == 504


def test_backend_per_call_timeout_is_backend_timeout(server):
    backend = backend_for(server.url)
    server.script(Reply(hang=True))
    with pytest.raises(BackendTimeout):
        backend.get_json("/v1/models", timeout=0.2)


def test_backend_stream_stalling_is_backend_timeout(server):
    backend = backend_for(server.url, BACKEND_TIMEOUT="0.2")
    server.script(Reply([CHUNKED_HEAD + b"5\r\nfirst\r\n"], gate=threading.Event()))
    upstream = backend.open("POST", "/v1/chat/completions", b"{}")
    chunks = upstream.stream()
    assert next(chunks) == b"first"
    with pytest.raises(BackendTimeout, match="stopped sending"):
        next(chunks)
    upstream.close()


def test_backend_stream_broken_mid_body_is_backend_unavailable(server):
    backend = backend_for(server.url)
    server.script(Reply([CHUNKED_HEAD + b"5\r\nfirst\r\n"], close=True))
    upstream = backend.open("POST", "/v1/chat/completions", b"{}")
    with pytest.raises(BackendUnavailable) as info:
        upstream.read()
    assert server.url in info.value.message and "broke" in info.value.message
    upstream.close()


def test_backend_non_json_body_is_backend_unavailable(server):
    backend = backend_for(server.url)
    server.script(http(body=b"<html>oops</html>"))
    with pytest.raises(BackendUnavailable, match="not JSON"):
        backend.get_json("/v1/models")


@pytest.mark.parametrize("status, body, message", [
    (400, b'{"error": {"message": "model is required", "type": "invalid_request_error"}}', "model is required"),
    (404, b'{"error": "model \\"x\\" not found"}', 'model "x" not found'),
    (500, b"upstream exploded", "upstream exploded"),
    (503, b'{"detail": "Service Unavailable"}', "Service Unavailable"),
])
def test_backend_error_status_is_upstream_status_with_the_backend_message(server, status, body, message):
    backend = backend_for(server.url)
    server.script(http(status, body, reason="Err"), http(body=b"{}"))
    with pytest.raises(UpstreamStatus) as info:
        backend.open("POST", "/v1/chat/completions", b"{}")
    assert info.value.status == status and info.value.message == message
    # the error body was read; the connection stays usable (one connection below)
    assert backend.get_json("/v1/models") == {} and len(server.conns) == 1


def test_backend_error_status_without_body_names_the_backend(server):
    backend = backend_for(server.url)
    server.script(http(502, b"", reason="Bad Gateway"))
    with pytest.raises(UpstreamStatus) as info:
        backend.open("GET", "/v1/models")
    assert info.value.status == 502
    assert info.value.message == f"http backend at {server.url} answered HTTP 502"


def test_backend_context_overflow_error_code_is_mapped(server):
    backend = backend_for(server.url)
    server.script(http(400, b'{"error": {"code": 400, "message": "too long", "type": "exceed_context_size_error"}}'))
    with pytest.raises(UpstreamStatus) as info:
        backend.open("POST", "/v1/chat/completions", b"{}")
    assert info.value.code == "context_length_exceeded" and info.value.message == "too long"


def test_backend_retries_a_connection_the_server_closed_while_idle(server):
    backend = backend_for(server.url)
    server.script(Reply([http(body=b'{"n": 1}')], close=True), http(body=b'{"n": 2}'))
    assert backend.get_json("/v1/models") == {"n": 1}
    assert server.conns[0].closed.wait(WAIT)
    assert backend.get_json("/v1/models") == {"n": 2}


def test_backend_connection_closed_before_an_answer_is_backend_unavailable(server):
    backend = backend_for(server.url)
    server.script(Reply([], close=True))
    with pytest.raises(BackendUnavailable) as info:
        backend.open("GET", "/v1/models")
    assert server.url in info.value.message


def test_backend_corrupt_compressed_body_is_backend_unavailable(server):
    backend = backend_for(server.url)
    server.script(http(body=b"not gzip", headers=(("Content-Encoding", "gzip"),)))
    with pytest.raises(BackendUnavailable, match="does not decode"):
        backend.get_json("/v1/models")




def test_a_request_id_that_would_break_the_request_head_is_never_sent(server):
    backend = backend_for(server.url)
    with pytest.raises(BackendUnavailable) as info:
        backend.open("GET", "/x", request_id="r1\r\nX-Forged: yes")
    assert server.url in info.value.message and server.requests == []
