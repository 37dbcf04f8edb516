"""Request size limits, CORS and request ids — through real sockets (gevent's server for sizes, since
how a refused body is left unread is the server's business)."""
from __future__ import annotations

import json
import re
import socket
import time

import openai
import pytest

from tests.support.policy import ALICE, assert_openai_error, call, chat_body

KEYS = f"alice:{ALICE}"
ORIGIN = "https://chat.example.org"


# --- request size ----------------------------------------------------------------------------------------

def _raw_exchange(url: str, head: bytes, body_parts=(), read_timeout: float = 10.0) -> bytes:
    """Send raw bytes, then read the response until the server closes or a whole JSON body came."""
    host, port = url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:
                break
        data = b""
        deadline = time.monotonic() + read_timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                match = re.search(rb"(?i)content-length:\s*(\d+)", data[:head_end])
                if match and len(data) - head_end - 4 >= int(match.group(1)):
                    break
        return data


def _status_and_json(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.parametrize("path, dialect", [("/v1/chat/completions", "openai"), ("/api/chat", "ollama")])
def test_body_over_the_limit_by_content_length_is_413_before_any_byte_is_read(wsgi_proxy, fake_upstream, path,
                                                                               dialect):
    proxy = wsgi_proxy(MAX_REQUEST_BYTES=1000)
    # Announce 10 GB and send none of it: a server that tried to read the body would wait forever.
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 10000000000\r\n\r\n").encode()
    status, body = _status_and_json(_raw_exchange(proxy.url, head, read_timeout=5))
    assert status == 413
    if dialect == "openai":
        assert "1000 bytes (MAX_REQUEST_BYTES)" in body["error"]["message"]
        assert body["error"]["type"] == "invalid_request_error"
    else:
        assert "1000 bytes (MAX_REQUEST_BYTES)" in body["error"]
    assert fake_upstream.calls("/v1/chat/completions") == []


def test_chunked_body_over_the_limit_is_413_in_the_callers_dialect(wsgi_proxy, fake_upstream):
    proxy = wsgi_proxy(MAX_REQUEST_BYTES=1000)
    head = b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b'{"model":"m","prompt":"' + b"x" * 600
    parts = [b"%x\r\n%s\r\n" % (len(piece), piece)] * 3 + [b"0\r\n\r\n"]
    status, body = _status_and_json(_raw_exchange(proxy.url, head, parts))
    assert status == 413
    assert set(body) == {"error"} and "MAX_REQUEST_BYTES" in body["error"]
    assert fake_upstream.requests.to("/v1/completions") == []


def test_oversize_request_from_the_openai_sdk_gets_a_413_status_error(wsgi_proxy, openai_client):
    proxy = wsgi_proxy(MAX_REQUEST_BYTES=50_000)
    client = openai_client(proxy)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 200_000}])
    assert info.value.status_code == 413
    assert "MAX_REQUEST_BYTES" in info.value.message


def test_body_exactly_at_the_limit_passes(backend_setup):
    body = json.dumps(chat_body("qwen3-8b")).encode()
    setup = backend_setup("openai", MAX_REQUEST_BYTES=len(body) + 10)
    setup.script_chat()
    padded = body + b" " * 10
    resp = call(setup.proxy, "POST", "/v1/chat/completions", data=padded, headers={"Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    over = call(setup.proxy, "POST", "/v1/chat/completions", data=padded + b" ",
                headers={"Content-Type": "application/json"})
    assert_openai_error(over, 413)


def test_large_image_bodies_pass_under_the_default_limit(backend_setup):
    setup = backend_setup("openai")
    setup.script_chat()
    image = "A" * (8 * 1024 * 1024)
    body = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "what is it?", "images": [image]}],
            "stream": False}
    assert call(setup.proxy, "POST", "/api/chat", json=body, timeout=60).status_code == 200


# --- CORS ---------------------------------------------------------------------------------------------------

def _preflight(proxy, path, origin=ORIGIN):
    return call(proxy, "OPTIONS", path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "authorization, content-type"})


def test_cors_preflight_is_answered_without_a_key(backend_setup):
    setup = backend_setup("openai", API_KEYS=KEYS, CORS_ORIGINS=f"{ORIGIN},https://other.example")
    resp = _preflight(setup.proxy, "/v1/chat/completions")
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert _preflight(setup.proxy, "/api/chat").headers["Access-Control-Allow-Origin"] == ORIGIN


def test_cors_actual_request_carries_the_headers_and_exposes_request_id_and_retry_after(backend_setup):
    setup = backend_setup("openai", API_KEYS=KEYS, CORS_ORIGINS=ORIGIN, RATE_LIMIT="1/minute")
    ok = call(setup.proxy, "GET", "/v1/models", ALICE, headers={"Origin": ORIGIN})
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = ok.headers["Access-Control-Expose-Headers"].lower()
    assert "x-request-id" in exposed and "retry-after" in exposed
    # refusals must be readable by the page too
    limited = call(setup.proxy, "GET", "/v1/models", ALICE, headers={"Origin": ORIGIN})
    assert limited.status_code == 429 and limited.headers["Access-Control-Allow-Origin"] == ORIGIN
    denied = call(setup.proxy, "GET", "/api/tags", headers={"Origin": ORIGIN})
    assert denied.status_code == 401 and denied.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_cors_other_origins_get_no_allow_origin(backend_setup):
    setup = backend_setup("openai", CORS_ORIGINS=ORIGIN)
    assert "Access-Control-Allow-Origin" not in _preflight(setup.proxy, "/v1/chat/completions",
                                                            "https://evil.example").headers
    assert "Access-Control-Allow-Origin" not in call(setup.proxy, "GET", "/api/tags",
                                                     headers={"Origin": "https://evil.example"}).headers


def test_cors_star_allows_any_origin_but_never_credentials(backend_setup):
    setup = backend_setup("openai", CORS_ORIGINS="*")
    resp = call(setup.proxy, "GET", "/api/tags", headers={"Origin": "https://anywhere.example",
                                                          "Cookie": "session=1"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    pre = _preflight(setup.proxy, "/v1/embeddings", "https://anywhere.example")
    assert pre.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in pre.headers


@pytest.mark.parametrize("path", ["/", "/health", "/ui/", "/ui/logs", "/ui/api/logs"])
def test_cors_never_reaches_the_ui_or_other_paths(backend_setup, path):
    setup = backend_setup("openai", CORS_ORIGINS="*")
    resp = call(setup.proxy, "GET", path, headers={"Origin": ORIGIN}, allow_redirects=False)
    assert "Access-Control-Allow-Origin" not in resp.headers
    pre = call(setup.proxy, "OPTIONS", path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in pre.headers


def test_cors_is_off_without_cors_origins(backend_setup):
    setup = backend_setup("openai")
    assert "Access-Control-Allow-Origin" not in call(setup.proxy, "GET", "/api/tags", headers={"Origin": ORIGIN}).headers


# --- request ids ------------------------------------------------------------------------------------------

def test_client_request_id_is_returned_and_sent_upstream(backend_setup):
    setup = backend_setup("openai", API_KEYS=KEYS)
    setup.script_chat()
    resp = call(setup.proxy, "POST", "/v1/chat/completions", ALICE, json=chat_body(setup.model),
                headers={"X-Request-ID": "trace-42.a:b_c"})
    assert resp.headers["X-Request-ID"] == "trace-42.a:b_c"
    assert setup.fake.last(setup.chat_path).header("x-request-id") == "trace-42.a:b_c"


@pytest.mark.parametrize("given", ["has space", "x" * 129, "quote\"s", "ünïcode", ""])
def test_malformed_request_id_is_replaced_by_a_generated_one(backend_setup, given):
    setup = backend_setup("ollama", API_KEYS=KEYS)
    setup.script_chat()
    resp = call(setup.proxy, "POST", "/api/chat", ALICE, json=chat_body(setup.model, stream=False),
                headers={"X-Request-ID": given.encode("utf-8")})
    rid = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert setup.fake.last(setup.chat_path).header("x-request-id") == rid


def test_refusals_carry_a_request_id_too(backend_setup):
    setup = backend_setup("openai", API_KEYS=KEYS)
    assert call(setup.proxy, "GET", "/v1/models", headers={"X-Request-ID": "r-401"}).headers["X-Request-ID"] == "r-401"
    assert re.fullmatch(r"[0-9a-f]{32}", call(setup.proxy, "GET", "/api/tags").headers["X-Request-ID"])


def test_request_id_and_key_name_are_printed_in_the_access_line(wsgi_proxy, fake_upstream):
    fake_upstream.serve_openai_models("qwen3-8b")
    from tests.support import fakes

    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder())
    proxy = wsgi_proxy(API_KEYS=KEYS, LOG_LEVEL="INFO", LOG_FORMAT="json")
    call(proxy, "POST", "/v1/chat/completions", ALICE, json=chat_body("qwen3-8b"), headers={"X-Request-ID": "acc-1"})
    call(proxy, "GET", "/api/tags", headers={"X-Request-ID": "acc-2"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and '"acc-2"' not in proxy.output():
        time.sleep(0.05)
    lines = [json.loads(line) for line in proxy.output().splitlines() if line.startswith("{")]
    access = {line["request_id"]: line for line in lines if line.get("event") == "access"}
    assert access["acc-1"]["status"] == 200 and access["acc-1"]["key"] == "alice"
    assert access["acc-2"]["status"] == 401
