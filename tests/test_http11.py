"""proxy/backends/http11.py (and base.HTTPBackend on top of it) against a raw TCP server.

No mocks: every test talks over a real loopback socket to `RawServer` (tests/fake_raw.py), which
records requests and answers with scripted raw bytes.
"""
from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib

import pytest
from fake_raw import CHUNKED_HEAD, RawServer, Reply, chunked, http

from proxy.backends.base import HTTPBackend
from proxy.backends.http11 import ConnectTimeout, Headers, HTTPProtocolError, Origin, Pool, Response, encode_headers
from proxy.config import Settings
from proxy.errors import BackendTimeout, BackendUnavailable, UpstreamStatus

WAIT = 5.0  # upper bound for anything that should happen at once (never reached when green)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def get(pool: Pool, target: str = "/", *, method: str = "GET", body: bytes | None = None,
        head_lines: bytes = b"", timeout: float = 2.0) -> Response:
    return pool.request(method, target, head_lines, body, timeout)


def wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    srv = RawServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def pool(server):
    p = Pool(Origin(server.url), connect_timeout=2.0)
    yield p
    p.close()


def backend_for(url: str, **env: str) -> HTTPBackend:
    settings = Settings.from_env({"BACKEND_URL": url, "BACKEND_TIMEOUT": "2", "BACKEND_CONNECT_TIMEOUT": "2", **env})
    return HTTPBackend(settings)


# --------------------------------------------------------------------------------------------
# Origin
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, host_header, port", [
    ("http://example.com", "example.com", 80),
    ("http://example.com:80/v1", "example.com", 80),
    ("https://example.com", "example.com", 443),
    ("https://example.com:443", "example.com", 443),
    ("http://example.com:8080", "example.com:8080", 8080),
    ("https://example.com:80", "example.com:80", 80),
    ("http://[::1]:8080", "[::1]:8080", 8080),
    ("http://[::1]", "[::1]", 80),
])
def test_origin_host_header_omits_only_the_scheme_default_port(url, host_header, port):
    origin = Origin(url)
    assert origin.host_header == host_header and origin.port == port


@pytest.mark.parametrize("url, prefix", [("http://h:1", ""), ("http://h:1/", ""), ("http://h:1/api", "/api"),
                                         ("http://h:1/api/v1/", "/api/v1")])
def test_origin_path_prefix_has_no_trailing_slash(url, prefix):
    assert Origin(url).path_prefix == prefix


def test_origin_refuses_schemes_other_than_http_and_https():
    with pytest.raises(ValueError, match="ftp"):
        Origin("ftp://example.com")


# --------------------------------------------------------------------------------------------
# the request on the wire
# --------------------------------------------------------------------------------------------


def test_get_writes_request_line_host_with_explicit_port_header_lines_and_no_body(server, pool):
    server.script(http(body=b"ok"))
    resp = get(pool, "/v1/models?x=1", head_lines=encode_headers({"Accept": "*/*", "X-Test": "yes"}))
    assert resp.read() == b"ok"
    [req] = server.requests
    assert req.head == (b"GET /v1/models?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: */*\r\nX-Test: yes\r\n\r\n"
                        % server.port)
    assert req.body == b"" and req.header("Content-Length") is None


def test_host_header_on_the_wire_omits_the_default_port(server):
    # Port 80 cannot be bound in a test: build the origin for the default port, then point
    # its socket at the test server; the Host header must stay the one for port 80.
    origin = Origin("http://127.0.0.1/api")
    origin.port = server.port
    server.script(http(body=b"ok"))
    assert get(Pool(origin, 2.0), "/api/x").read() == b"ok"
    assert server.requests[0].header("Host") == "127.0.0.1"


def test_post_body_is_written_after_the_head_with_its_content_length(server, pool):
    body = json.dumps({"model": "m", "prompt": "héllo"}).encode()
    server.script(http(body=b"{}"))
    get(pool, "/v1/completions", method="POST", body=body,
        head_lines=encode_headers({"Content-Type": "application/json"})).read()
    [req] = server.requests
    assert req.method == "POST" and req.target == "/v1/completions"
    assert req.header("Content-Length") == str(len(body)) and req.body == body
    assert req.header("Content-Type") == "application/json"


@pytest.mark.parametrize("body", [None, b""])
def test_empty_post_sends_content_length_zero(server, pool, body):
    server.script(http(body=b"ok"))
    assert get(pool, "/x", method="POST", body=body).read() == b"ok"
    [req] = server.requests
    assert req.header("Content-Length") == "0" and req.body == b""
    assert req.head.endswith(b"Content-Length: 0\r\n\r\n")


def test_non_ascii_target_is_sent_as_utf8(server, pool):
    server.script(http(body=b"ok"))
    get(pool, "/models/caf\u00e9").read()
    assert server.requests[0].head.startswith("GET /models/café HTTP/1.1\r\n".encode())


def test_encode_headers_writes_one_crlf_terminated_line_per_header():
    assert encode_headers({"A": "1", "X-Long": "a b, c"}) == b"A: 1\r\nX-Long: a b, c\r\n"
    assert encode_headers({}) == b""


@pytest.mark.parametrize("headers", [{"X": "a\r\nInjected: 1"}, {"X": "a\nb"}, {"X": "a\rb"}, {"X\r\nY": "v"}])
def test_encode_headers_refuses_line_breaks(headers):
    with pytest.raises(ValueError, match="line break"):
        encode_headers(headers)


# --------------------------------------------------------------------------------------------
# response heads and Headers
# --------------------------------------------------------------------------------------------


def test_status_reason_and_headers_are_parsed(server, pool):
    server.script(http(201, b"x", reason="Created Fine", headers=(("X-Pad", "   spaced   "), ("Content-Type", "a/b"))))
    resp = get(pool)
    assert (resp.status, resp.reason) == (201, "Created Fine")
    assert resp.headers["x-pad"] == "spaced" and resp.headers.get("CONTENT-TYPE") == "a/b"
    assert resp.read() == b"x"


def test_status_line_without_reason_is_accepted(server, pool):
    server.script(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok")
    resp = get(pool)
    assert (resp.status, resp.reason, resp.read()) == (200, "", b"ok")


def test_headers_are_case_insensitive_and_repeated_names_are_joined():
    headers = Headers([("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2"),
                       ("SET-COOKIE", "c=3")])
    assert headers.get("content-type") == headers["CONTENT-TYPE"] == "text/plain"
    assert headers["Set-Cookie"] == "a=1, b=2, c=3"
    assert "content-TYPE" in headers and "x-missing" not in headers and 42 not in headers
    assert headers.get("x-missing") is None and headers.get("x-missing", "d") == "d"
    with pytest.raises(KeyError):
        headers["x-missing"]
    assert headers.items() == [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2"),
                               ("SET-COOKIE", "c=3")]


def test_repeated_response_headers_on_the_wire_are_joined(server, pool):
    server.script(http(body=b"", headers=(("Vary", "Accept"), ("vary", "Origin"))))
    assert get(pool).headers["VARY"] == "Accept, Origin"


def test_head_split_into_single_bytes_is_parsed(server, pool):
    raw = http(body=b"hello", headers=(("X-A", "1"),))
    server.script(Reply([raw[i:i + 1] for i in range(len(raw))], pause=0.001))
    resp = get(pool)
    assert resp.headers["x-a"] == "1" and resp.read() == b"hello"


def test_interim_1xx_responses_are_skipped_before_the_final_one(server, pool):
    server.script(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                  b"HTTP/1.1 100 Continue\r\n\r\n" + http(body=b"final"),
                  http(body=b"second"))
    resp = get(pool)
    assert resp.status == 200 and resp.read() == b"final"
    assert get(pool).read() == b"second"  # the pooled connection holds nothing left over


# --------------------------------------------------------------------------------------------
# body framing
# --------------------------------------------------------------------------------------------


def test_content_length_body_is_read_exactly_across_pieces(server, pool):
    body = bytes(range(256)) * 300  # larger than one receive
    raw = http(body=body)
    server.script(Reply([raw[:50], raw[50:1000], raw[1000:]], pause=0.005))
    resp = get(pool)
    assert resp.read() == body and resp.complete


def test_zero_content_length_response_is_complete_at_once_and_pooled(server, pool):
    server.script(http(body=b""))
    resp = get(pool)
    assert resp.complete and pool.idle() == 1 and resp.read() == b""


def test_chunked_body_with_extensions_trailers_and_uppercase_hex_is_decoded(server, pool):
    big = b"z" * 26
    body = (b"5;name=value\r\nhello\r\n"
            b"7 ; a=1;b=\"x\"\r\n, world\r\n"
            b"1A\r\n" + big + b"\r\n"
            b"0;final\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n")
    server.script(CHUNKED_HEAD + body, http(body=b"next"))
    resp = get(pool)
    assert resp.chunked and resp.read() == b"hello, world" + big
    assert resp.complete and pool.idle() == 1
    assert get(pool).read() == b"next"  # the trailer was consumed, nothing left on the connection
    assert len(server.conns) == 1


def test_chunked_response_split_at_every_byte_offset_decodes_identically(server, pool):
    raw = (CHUNKED_HEAD + b"3;ext=1\r\nabc\r\n" + b"10\r\n" + b"0123456789abcdef" + b"\r\n"
           + b"1\r\n\n\r\n" + b"0\r\nX-T: v\r\n\r\n")
    expected = b"abc0123456789abcdef\n"
    for cut in range(1, len(raw)):
        server.script(Reply([raw[:cut], raw[cut:]], pause=0.002))
        resp = get(pool)
        assert resp.read() == expected, f"split at byte {cut}: {raw[:cut]!r} | {raw[cut:]!r}"
        assert resp.complete and pool.idle() == 1, f"split at byte {cut} left the connection unpooled"
    assert len(server.conns) == 1


def test_chunked_body_of_many_chunks_in_one_receive_is_joined(server, pool):
    chunks = [b"%d," % i for i in range(100)]
    server.script(CHUNKED_HEAD + chunked(*chunks))
    assert list(get(pool).iter_bytes()) == [b"".join(chunks)]


def test_chunked_data_is_yielded_before_the_rest_arrives(server, pool):
    gate = threading.Event()
    server.script(Reply([CHUNKED_HEAD + b"5\r\nfirst\r\n", b"6\r\nsecond\r\n" + b"0\r\n\r\n"], gate=gate))
    resp = get(pool)
    pieces = resp.iter_bytes()
    assert next(pieces) == b"first"  # would block until the read timeout if it waited for more
    assert not resp.complete
    gate.set()
    assert b"".join(pieces) == b"second" and resp.complete


def test_partial_chunk_data_is_yielded_as_it_arrives(server, pool):
    gate = threading.Event()
    server.script(Reply([CHUNKED_HEAD + b"a\r\n01234", b"56789\r\n0\r\n\r\n"], gate=gate))
    pieces = get(pool).iter_bytes()
    assert next(pieces) == b"01234"
    gate.set()
    assert b"".join(pieces) == b"56789"


def test_content_length_data_is_yielded_before_the_rest_arrives(server, pool):
    gate = threading.Event()
    raw = http(body=b"firstsecond")
    server.script(Reply([raw[:-6], raw[-6:]], gate=gate))
    pieces = get(pool).iter_bytes()
    assert next(pieces) == b"first"
    gate.set()
    assert b"".join(pieces) == b"second"


def test_http10_body_without_length_is_read_until_close_and_not_pooled(server, pool):
    server.script(Reply([b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ", b"part two"],
                        pause=0.01, close=True))
    resp = get(pool)
    assert resp.read() == b"part one, part two" and resp.complete
    assert pool.idle() == 0


def test_http11_body_without_length_or_chunking_is_read_until_close(server, pool):
    server.script(Reply([http(body=b"all of it", length=False)], close=True))
    resp = get(pool)
    assert resp.read() == b"all of it" and pool.idle() == 0


def test_chunked_wins_over_content_length(server, pool):
    server.script(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"hello"))
    assert get(pool).read() == b"hello"


def test_head_response_has_no_body_despite_content_length(server, pool):
    server.script(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", http(body=b"after"))
    resp = get(pool, method="HEAD")
    assert resp.complete and resp.read() == b"" and resp.headers["content-length"] == "1234"
    assert pool.idle() == 1
    assert get(pool).read() == b"after" and len(server.conns) == 1


@pytest.mark.parametrize("status", [204, 304])
def test_no_content_and_not_modified_have_no_body(server, pool, status):
    server.script(f"HTTP/1.1 {status} Whatever\r\nETag: x\r\n\r\n".encode(), http(body=b"after"))
    resp = get(pool)
    assert resp.status == status and resp.complete and resp.read() == b"" and pool.idle() == 1
    assert get(pool).read() == b"after" and len(server.conns) == 1


def test_reading_a_finished_body_again_gives_nothing(server, pool):
    server.script(CHUNKED_HEAD + chunked(b"once"))
    resp = get(pool)
    assert resp.read() == b"once" and resp.read() == b""


# --------------------------------------------------------------------------------------------
# content encodings
# --------------------------------------------------------------------------------------------


def test_gzip_body_is_decoded_across_chunks(server, pool):
    text = b"".join(b'data: {"n": %d}\n\n' % i for i in range(500))
    packed = gzip.compress(text)
    pieces = [packed[i:i + 100] for i in range(0, len(packed), 100)]
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(*pieces)
    server.script(Reply([raw[:200], raw[200:600], raw[600:]], pause=0.005))
    resp = get(pool)
    assert resp.read() == text and pool.idle() == 1


@pytest.mark.parametrize("name", ["gzip", "x-gzip", "GZIP"])
def test_gzip_content_encoding_names_are_decoded(server, pool, name):
    server.script(http(body=gzip.compress(b"zipped"), headers=(("Content-Encoding", name),)))
    assert get(pool).read() == b"zipped"


def test_deflate_body_is_decoded(server, pool):
    text = b'{"answer": "' + b"x" * 5000 + b'"}'
    server.script(http(body=zlib.compress(text), headers=(("Content-Encoding", "deflate"),)))
    assert get(pool).read() == text


def test_identity_body_is_passed_through(server, pool):
    packed = gzip.compress(b"raw")
    server.script(http(body=packed, headers=(("Content-Encoding", "identity"),)))
    assert get(pool).read() == packed


def test_corrupt_gzip_body_raises_protocol_error(server, pool):
    server.script(http(body=b"this is not gzip at all", headers=(("Content-Encoding", "gzip"),)))
    with pytest.raises(HTTPProtocolError):
        get(pool).read()


# --------------------------------------------------------------------------------------------
# keep-alive and the pool
# --------------------------------------------------------------------------------------------


def test_connection_returns_to_the_pool_after_the_body_and_is_reused(server, pool):
    server.script(http(body=b"one"), CHUNKED_HEAD + chunked(b"two"), http(body=b"three"))
    first = get(pool, "/1")
    assert pool.idle() == 0
    assert first.read() == b"one" and pool.idle() == 1
    assert get(pool, "/2").read() == b"two" and pool.idle() == 1
    assert get(pool, "/3", method="POST", body=b"{}").read() == b"three"
    assert [r.target for r in server.requests] == ["/1", "/2", "/3"]
    assert [r.conn for r in server.requests] == [0, 0, 0] and len(server.conns) == 1


def test_http10_keep_alive_response_is_pooled(server, pool):
    server.script(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", http(body=b"again"))
    assert get(pool).read() == b"ok" and pool.idle() == 1
    assert get(pool).read() == b"again" and len(server.conns) == 1


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close"])
def test_connection_close_response_is_not_pooled(server, pool, value):
    server.script(http(body=b"bye", headers=(("Connection", value),)))  # the server itself keeps it open
    assert get(pool).read() == b"bye"
    assert pool.idle() == 0
    assert server.conns[0].eof.wait(WAIT), "the client did not close the connection"


@pytest.mark.parametrize("raw", [
    http(body=b"0123456789"),
    CHUNKED_HEAD + chunked(b"01234", b"56789"),
], ids=["content-length", "chunked"])
def test_close_before_the_body_end_drops_the_connection(server, pool, raw):
    server.script(Reply([raw[:-8]]), http(body=b"fresh"))  # the rest never comes
    resp = get(pool)
    pieces = resp.iter_bytes()
    assert next(pieces)
    resp.close()
    assert resp.complete and pool.idle() == 0
    assert server.conns[0].eof.wait(WAIT), "the server did not see the client leave"
    assert get(pool).read() == b"fresh"
    assert len(server.conns) == 2


def test_close_before_reading_anything_drops_the_connection(server, pool):
    server.script(http(body=b"unread"))
    resp = get(pool)
    resp.close()
    assert pool.idle() == 0 and server.conns[0].eof.wait(WAIT)


def test_close_after_the_body_end_keeps_the_connection_pooled(server, pool):
    server.script(http(body=b"done"))
    resp = get(pool)
    assert resp.read() == b"done"
    resp.close()
    assert pool.idle() == 1 and not server.conns[0].eof.is_set()


def test_pooled_connection_closed_by_the_server_while_idle_is_retried_on_a_fresh_one(server, pool):
    server.script(Reply([http(body=b"first")], close=True), http(body=b"second"))
    assert get(pool, "/1").read() == b"first" and pool.idle() == 1
    assert server.conns[0].closed.wait(WAIT)
    assert get(pool, "/2", method="POST", body=b"{}").read() == b"second"
    assert len(server.conns) == 2
    assert [(r.conn, r.target) for r in server.requests] == [(0, "/1"), (1, "/2")]
    assert server.requests[1].body == b"{}"


def test_every_stale_pooled_connection_is_skipped(server):
    pool = Pool(Origin(server.url), 2.0)
    server.script(Reply([http(body=b"a")], close=True), Reply([http(body=b"b")], close=True), http(body=b"c"))
    first, second = get(pool, "/a"), get(pool, "/b")  # two connections open at once
    assert first.read() == b"a" and second.read() == b"b" and pool.idle() == 2
    assert server.conns[0].closed.wait(WAIT) and server.conns[1].closed.wait(WAIT)
    assert get(pool, "/c").read() == b"c"
    assert len(server.conns) == 3 and pool.idle() == 1
    pool.close()


def test_fresh_connection_closed_before_any_answer_is_not_retried(server, pool):
    server.script(Reply([], close=True), http(body=b"never asked for"))
    with pytest.raises(HTTPProtocolError, match="before a complete response head"):
        get(pool)
    assert len(server.conns) == 1 and len(server.requests) == 1


def test_pooled_connection_that_breaks_mid_head_is_not_retried(server, pool):
    server.script(http(body=b"ok"), Reply([b"HTTP/1.1 200 OK\r\nContent-"], close=True))
    assert get(pool).read() == b"ok"
    with pytest.raises(HTTPProtocolError):
        get(pool)
    assert len(server.conns) == 1


def test_pool_keeps_at_most_max_idle_connections(server):
    pool = Pool(Origin(server.url), 2.0, max_idle=1)
    server.script(http(body=b"1"), http(body=b"2"))
    first, second = get(pool), get(pool)
    assert first.read() == b"1" and second.read() == b"2"
    assert pool.idle() == 1
    wait_for(lambda: any(c.eof.is_set() for c in server.conns), "the surplus connection to be closed")
    pool.close()


def test_pool_close_closes_idle_connections(server, pool):
    server.script(http(body=b"x"))
    get(pool).read()
    assert pool.idle() == 1
    pool.close()
    assert pool.idle() == 0 and server.conns[0].eof.wait(WAIT)


# A connection with unread data is never reused: stray bytes on it would be read as the next request's answer.
FORGED = http(body=b"forged")


@pytest.mark.parametrize("first", [
    http(body=b"first") + FORGED,
    CHUNKED_HEAD + chunked(b"first") + FORGED,
    CHUNKED_HEAD + chunked(b"first", trailer=b"X-T: 1\r\n") + FORGED,
    http(204, length=False) + FORGED,
], ids=["length", "chunked", "chunked-trailer", "no-body"])
def test_bytes_after_the_end_of_a_response_drop_its_connection(server, pool, first):
    server.script(Reply([first]), http(body=b"second"))
    assert get(pool).read() in (b"first", b"")
    assert pool.idle() == 0
    assert get(pool).read() == b"second"
    assert server.requests[1].conn == 1


@pytest.mark.parametrize("first", [http(body=b"first"), CHUNKED_HEAD + chunked(b"first")], ids=["length", "chunked"])
def test_stray_bytes_arriving_on_an_idle_connection_are_never_read_as_the_next_answer(server, pool, first):
    server.script(Reply([first, FORGED], pause=0.2), http(body=b"second"))
    assert get(pool).read() == b"first"
    assert pool.idle() == 1  # clean when it went back to the pool
    time.sleep(0.5)  # the stray answer arrives while the connection is idle
    assert get(pool).read() == b"second"
    assert server.requests[1].conn == 1
    assert server.conns[0].eof.wait(WAIT)  # the tainted connection was closed


def test_idle_connection_closed_by_the_backend_is_dropped_before_anything_is_sent_on_it(server, pool):
    server.script(Reply([http(body=b"first")], close=True), http(body=b"second"))
    get(pool).read()
    assert server.conns[0].closed.wait(WAIT)
    time.sleep(0.05)
    assert get(pool, method="POST", body=b"payload").read() == b"second"
    assert [r.conn for r in server.requests] == [0, 1]


def test_backend_answer_is_never_taken_from_stray_bytes_on_a_pooled_connection(server):
    backend = backend_for(server.url)
    server.script(Reply([http(body=b'{"n": 1}'), http(body=b'{"n": "forged"}')], pause=0.2),
                  http(body=b'{"n": 2}'))
    assert backend.get_json("/x") == {"n": 1}
    time.sleep(0.5)
    assert backend.get_json("/x") == {"n": 2}


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_protocol_errors_are_os_errors():
    assert issubclass(HTTPProtocolError, OSError) and issubclass(ConnectTimeout, TimeoutError)


@pytest.mark.parametrize("status_line", [b"garbage", b"HTTP/1.1 abc OK", b"ICY 200 OK", b"HTTP/2 200 OK", b""])
def test_malformed_status_line_raises_protocol_error(server, pool, status_line):
    server.script(status_line + b"\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(HTTPProtocolError):
        get(pool)
    assert pool.idle() == 0


@pytest.mark.parametrize("value", ["abc", "-1", "", "12abc", "1_0", "+5", "5, 5"])
def test_bad_content_length_raises_protocol_error(server, pool, value):
    server.script(f"HTTP/1.1 200 OK\r\nContent-Length: {value}\r\n\r\nhello".encode())
    with pytest.raises(HTTPProtocolError, match="Content-Length"):
        get(pool)
    assert pool.idle() == 0


@pytest.mark.parametrize("size_line", [b"zz", b"-5", b"", b"5 5"])
def test_bad_chunk_size_raises_protocol_error(server, pool, size_line):
    server.script(CHUNKED_HEAD + size_line + b"\r\nhello\r\n0\r\n\r\n")
    with pytest.raises(HTTPProtocolError):
        get(pool).read()
    assert pool.idle() == 0


def test_chunk_data_not_followed_by_crlf_raises_protocol_error(server, pool):
    server.script(CHUNKED_HEAD + b"3\r\nabcdef\r\n0\r\n\r\n")
    with pytest.raises(HTTPProtocolError, match="CRLF"):
        get(pool).read()


def test_endless_chunk_size_line_raises_protocol_error(server, pool):
    server.script(Reply([CHUNKED_HEAD + b"5" + b"0" * 2000], gate=threading.Event()))  # never ends its line
    with pytest.raises(HTTPProtocolError, match="1 KiB"):
        get(pool).read()


def test_oversized_response_head_raises_protocol_error(server, pool):
    server.script(Reply([b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n"], gate=threading.Event()))
    with pytest.raises(HTTPProtocolError, match="64 KiB"):
        get(pool)


@pytest.mark.parametrize("raw", [
    http(body=b"0123456789")[:-4],
    CHUNKED_HEAD + b"a\r\n01234",
    CHUNKED_HEAD + b"5\r\nhello\r\n",
    CHUNKED_HEAD + b"5\r\nhello\r",
    CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-Trailer: cut",
], ids=["length", "chunk-data", "between-chunks", "chunk-crlf", "trailer"])
def test_connection_closed_mid_body_raises_protocol_error(server, pool, raw):
    server.script(Reply([raw], close=True))
    resp = get(pool)
    with pytest.raises(HTTPProtocolError, match="closed"):
        resp.read()
    resp.close()
    assert pool.idle() == 0


def test_connection_closed_before_a_complete_head_raises_protocol_error(server, pool):
    server.script(Reply([b"HTTP/1.1 200 OK\r\nContent-Le"], close=True))
    with pytest.raises(HTTPProtocolError, match="before a complete response head"):
        get(pool)


def test_no_answer_within_the_read_timeout_raises_timeout(server, pool):
    server.script(Reply(hang=True))
    started = time.monotonic()
    with pytest.raises(socket.timeout) as info:
        get(pool, timeout=0.2)
    assert isinstance(info.value, TimeoutError) and not isinstance(info.value, ConnectTimeout)
    assert 0.15 < time.monotonic() - started < 2
    assert pool.idle() == 0


def test_body_stalling_beyond_the_read_timeout_raises_timeout(server, pool):
    server.script(Reply([CHUNKED_HEAD + b"5\r\nfirst\r\n", b"0\r\n\r\n"], gate=threading.Event()))
    resp = get(pool, timeout=0.2)
    pieces = resp.iter_bytes()
    assert next(pieces) == b"first"
    with pytest.raises(TimeoutError):
        next(pieces)
    resp.close()
    assert pool.idle() == 0


def test_connecting_to_a_closed_port_raises_connection_refused():
    pool = Pool(Origin(f"http://127.0.0.1:{closed_port()}"), 2.0)
    with pytest.raises(ConnectionRefusedError):
        get(pool)


def test_no_connection_within_the_connect_timeout_raises_connect_timeout():
    # A listener whose accept queue is full: Linux drops further SYNs, so connect() hangs.
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.05)
        pool = Pool(Origin(f"http://127.0.0.1:{port}"), connect_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(ConnectTimeout, match="0.2 s"):
            get(pool)
        assert time.monotonic() - started < 2
    finally:
        for s in fillers:
            s.close()
        listener.close()


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
    assert backend.pool.idle() == 1


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
    chunks = upstream.iter_bytes()
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
    assert backend.pool.idle() == 0


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
    assert backend.pool.idle() == 1  # the error body was read; the connection stays usable
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


def test_send_all_delivers_a_message_larger_than_the_kernel_takes_at_once():
    import threading

    from proxy.backends.http11 import send_all

    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 16384  # 4 MiB: many partial sends
    received = bytearray()

    def read():
        while len(received) < len(data):
            piece = b.recv(65536)
            if not piece:
                break
            received.extend(piece)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        send_all(a, data)
        reader.join(timeout=10)
    finally:
        a.close()
        b.close()
    assert bytes(received) == data
