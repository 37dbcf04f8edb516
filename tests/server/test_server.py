"""The gevent server of `python wsgi.py` (proxy/server.py): pywsgi's own handler with strict framing and
bounded heads, checked as a unit and over raw sockets against the real process."""
from __future__ import annotations

import io
import socket

import pytest
from gevent.pywsgi import headers_factory

from proxy.server import framing_problem
from tests.server.framing_cases import AMBIGUOUS_FRAMING, SMUGGLED


def parsed(raw: bytes):
    return headers_factory(io.BytesIO(b"Host: x\r\n" + raw + b"\r\n"))


# The rest (folded, malformed and bare-CR lines) are refused as the lines are read: see the socket tests below.
@pytest.mark.parametrize("name", [n for n in AMBIGUOUS_FRAMING if not any(
    word in n for word in ("bare CR", "folded", "colon"))])
def test_every_ambiguous_framing_is_named_a_problem(name):
    assert framing_problem(parsed(AMBIGUOUS_FRAMING[name]), "HTTP/1.1")


@pytest.mark.parametrize("raw", [b"Content-Length: 5\r\n", b"Content-Length: 5\r\nContent-Length: 5\r\n",
                                 b"Content-Length: \t5 \r\n", b"Transfer-Encoding:  Chunked \r\n", b""])
def test_plain_framings_are_not_a_problem(raw):
    assert framing_problem(parsed(raw), "HTTP/1.1") is None


def test_transfer_encoding_is_a_problem_in_http_1_0():
    assert "HTTP/1.0" in framing_problem(parsed(b"Transfer-Encoding: chunked\r\n"), "HTTP/1.0")


# --- the real server ---------------------------------------------------------------------------


def exchange(url: str, raw: bytes, *, until: bytes | None = None) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                break
            if not piece:
                break
            data += piece
            if until is not None and data.count(until) >= 1 and data.endswith(until):
                break
    return data


def chat_post(body: bytes) -> bytes:
    """A plain POST /api/chat with a Content-Length body, on a connection the server closes after."""
    return (b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body


def test_a_request_with_odd_header_case_is_served(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    body = b'{"model": "stub", "messages": [{"role": "user", "content": "hi"}]}'
    raw = (b"POST /api/chat HTTP/1.1\r\nhost: x\r\ncontent-TYPE: application/json\r\n"
           b"CONTENT-LENGTH: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
    reply = exchange(proxy.url, raw)
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply[:300]
    assert b'"done":true' in rest.replace(b" ", b"")


def test_keep_alive_serves_two_requests_on_one_connection(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    one = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = exchange(proxy.url, one + one.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert reply.count(b"HTTP/1.1 200") == 2 and reply.count(b"OK") >= 2


def test_a_request_after_a_stream_on_the_same_connection_is_read_with_its_own_headers(wsgi_proxy):
    # the handler lets go of a request's headers once its response head is out
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    body = b'{"model": "stub", "messages": [{"role": "user", "content": "one two"}], "stream": true}'
    stream = (b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body)) + body
    second = b"GET /api/version HTTP/1.1\r\nHost: y\r\nX-Request-ID: second-one\r\nConnection: close\r\n\r\n"
    reply = exchange(proxy.url, stream + second)
    assert reply.count(b"HTTP/1.1 200") == 2, reply[:500]
    first, _, last = reply.rpartition(b"HTTP/1.1 200")
    assert b'"done":true' in first.replace(b" ", b"") and b"x-request-id: second-one" in last.lower()


def test_too_many_headers_get_400_not_500_and_no_traceback(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    raw = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(150)) + b"\r\n"
    reply, closed = exchange_closed(proxy.url, raw)
    assert reply.startswith(b"HTTP/1.1 400") and closed, reply[:200]
    proxy.stop()
    assert "Traceback" not in proxy.output()


@pytest.mark.parametrize("head", [
    b"X-Big: " + b"a" * 70000 + b"\r\n",  # one overlong line
    b"".join(b"H%d: %s\r\n" % (i, b"v" * 1000) for i in range(70)),  # 70 lines of 1 KB: over the 64 KiB head
])
def test_a_head_over_64_kib_gets_400_and_is_closed(wsgi_proxy, head):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    reply, closed = exchange_closed(proxy.url, b"GET /health HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 400") and closed, reply[:200]


@pytest.mark.parametrize("line", [b"GET /health\r\n", b"GET /health HTTP/2.0\r\n", b"GET /health HTTP/0.9\r\n"])
def test_only_http_1_requests_are_served(wsgi_proxy, line):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    reply, closed = exchange_closed(proxy.url, line + b"Host: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400") and closed, reply[:200]


def test_chunked_request_bodies_are_read(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    body = b'{"model": "stub", "messages": [{"role": "user", "content": "hi"}], "stream": false}'
    raw = (b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           + b"%x\r\n" % 10 + body[:10] + b"\r\n" + b"%x\r\n" % (len(body) - 10) + body[10:] + b"\r\n0\r\n\r\n")
    reply = exchange(proxy.url, raw)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert b"stub" in reply


def test_a_streamed_reply_is_chunked_and_complete(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    body = b'{"model": "stub", "messages": [{"role": "user", "content": "one two three"}]}'
    raw = chat_post(body)
    reply = exchange(proxy.url, raw)
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert rest.endswith(b"0\r\n\r\n")
    decoded, pos = b"", 0
    while True:
        nl = rest.index(b"\r\n", pos)
        size = int(rest[pos:nl], 16)
        if size == 0:
            break
        decoded += rest[nl + 2:nl + 2 + size]
        pos = nl + 2 + size + 2
    lines = [line for line in decoded.split(b"\n") if line]
    assert len(lines) > 2 and b'"done":true' in lines[-1].replace(b" ", b"")


def test_the_server_writes_no_access_line_of_its_own(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub", LOG_LEVEL="INFO")
    exchange(proxy.url, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    exchange(proxy.url, b"GET /api/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    proxy.stop()
    out = proxy.output()
    assert '"GET /api/version HTTP/1.1"' not in out  # pywsgi's own format
    assert "/api/version" in out  # ours


def test_a_body_far_larger_than_the_read_buffer_arrives_whole(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    word = "lorem "
    text = word * 50000  # 300 KB, against a 1 KiB connection buffer
    body = (f'{{"model": "stub", "stream": false, "messages": [{{"role": "user", "content": "{text}"}}]}}').encode()
    raw = chat_post(body)
    reply = exchange(proxy.url, raw)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    import json
    answer = json.loads(reply.partition(b"\r\n\r\n")[2])
    assert answer["prompt_eval_count"] >= 50000  # the stub counted every word it was sent


# --- request framing: nothing ambiguous is served, nothing is smuggled (#10 item 13) ---------------


def test_ambiguous_framing_gets_400_closes_the_connection_and_serves_nothing_smuggled(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    problems = []
    for name, framing in AMBIGUOUS_FRAMING.items():
        raw = b"POST /api/chat HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + b"0\r\n\r\n" + SMUGGLED
        reply, closed = exchange_closed(proxy.url, raw)
        if not reply.startswith(b"HTTP/1.1 400") or reply.count(b"HTTP/1.1 ") != 1 or not closed:
            problems.append(f"{name}: closed={closed} {reply[:200]!r}")
        elif b"smuggled" in reply.lower() or b"Traceback" in reply:
            problems.append(f"{name}: {reply!r}")
    assert not problems, "\n".join(problems)
    assert "Traceback" not in proxy.output()


def test_transfer_encoding_in_http_1_0_and_unknown_codings_are_refused(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    reply, closed = exchange_closed(proxy.url, b"POST /api/chat HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                               b"\r\n0\r\n\r\n" + SMUGGLED)
    assert reply.startswith(b"HTTP/1.1 400") and reply.count(b"HTTP/1.1 ") == 1 and closed, reply[:300]
    reply, closed = exchange_closed(proxy.url, b"POST /api/chat HTTP/1.1\r\nHost: x\r\n"
                                               b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + SMUGGLED)
    assert reply.startswith(b"HTTP/1.1 400") and reply.count(b"HTTP/1.1 ") == 1 and closed, reply[:300]


def test_a_framing_refusal_names_its_reason_in_the_server_log(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    head = b"Host: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
    reply, closed = exchange_closed(proxy.url, b"POST /v1/chat/completions HTTP/1.1\r\n" + head)
    assert reply.startswith(b"HTTP/1.1 400") and closed
    proxy.stop()
    assert "conflicting Content-Length values" in proxy.output()


def test_identical_content_length_values_and_padded_values_are_accepted(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub")
    body = b'{"model": "stub", "stream": false, "messages": [{"role": "user", "content": "hi"}]}'
    for framing in (b"Content-Length: %d\r\nContent-Length: %d\r\n" % (len(body), len(body)),
                    b"Content-Length: \t%d \r\n" % len(body), b"Transfer-Encoding:  Chunked \r\n"):
        sent = body if b"Chunked" not in framing else b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        reply = exchange(proxy.url, b"POST /api/chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + framing
                         + b"\r\n" + sent)
        assert reply.startswith(b"HTTP/1.1 200"), (framing, reply[:300])


def exchange_closed(url: str, raw: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``raw``; everything the server answers, and whether it closed the connection (rather than
    leaving it open until ``timeout``)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass
        data = b""
        while True:
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                return data, False
            except ConnectionResetError:
                return data, True
            if not piece:
                return data, True
            data += piece
