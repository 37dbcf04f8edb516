"""Hostile input at every endpoint of both fronts (property-based, hypothesis): malformed bodies, wrong
types, huge numbers, odd unicode, bad headers, with and without keys. The whole WSGI stack runs (access
log, gate, views, stub backend, log store): never a 500, never an error logged, always the caller's
dialect. A second part sends malformed HTTP through gevent's server on a real socket."""
from __future__ import annotations

import json
import logging
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy import create_app
from proxy.config import Settings

KEY = "sk-fuzz-key"
ENDPOINTS = [
    ("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("GET", "/api/tags"), ("HEAD", "/api/tags"),
    ("GET", "/api/ps"), ("POST", "/api/show"), ("POST", "/api/chat"), ("POST", "/api/generate"),
    ("POST", "/api/embed"), ("POST", "/api/embeddings"), ("POST", "/api/pull"), ("POST", "/api/push"),
    ("POST", "/api/create"), ("POST", "/api/copy"), ("DELETE", "/api/delete"), ("POST", "/api/blobs/sha256:ab"),
    ("HEAD", "/api/blobs/sha256:ab"), ("GET", "/api/nope"), ("PUT", "/api/chat"),
    ("GET", "/v1/models"), ("GET", "/v1/models/stub"), ("GET", "/v1/models/%F0%9F%92%A5"),
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"), ("GET", "/v1/chat/completions"), ("DELETE", "/v1/models/stub"),
    ("POST", "/v1/messages"), ("POST", "/v1/messages?beta=true"), ("POST", "/v1/messages/count_tokens"),
    ("GET", "/v1/messages"),
]
ODD_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["", " ", "\x00", "\u202e\u200b", "🤖" * 20, "a\nb", "\ud7ff", "ʻokina", "stub", "stub-embed", "stub:latest",
     "../../etc/passwd", "%s%n", "{{7*7}}", "<script>", "\ufeffstub"])
NUMBERS = st.integers(min_value=-(10 ** 40), max_value=10 ** 40) | st.floats(allow_nan=False) | st.sampled_from(
    [0, -1, 2 ** 63, -(2 ** 63) - 1, 1e308, -1e308, 5e-324, 10 ** 30])
LEAVES = st.none() | st.booleans() | NUMBERS | ODD_TEXT
JSON_VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner,
                                                                                                 max_size=4),
                           max_leaves=12)
MESSAGE = st.fixed_dictionaries({}, optional={
    "role": st.sampled_from(["user", "system", "assistant", "tool", "developer"]) | JSON_VALUES,
    "content": ODD_TEXT | JSON_VALUES | st.lists(st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url", "input_audio", "x", "image", "tool_use", "tool_result",
                                  "thinking"]) | JSON_VALUES},
        optional={"text": JSON_VALUES, "image_url": JSON_VALUES, "source": JSON_VALUES, "id": JSON_VALUES,
                  "name": JSON_VALUES, "input": JSON_VALUES, "tool_use_id": JSON_VALUES, "content": JSON_VALUES,
                  "is_error": JSON_VALUES, "thinking": JSON_VALUES, "cache_control": JSON_VALUES}), max_size=3),
    "images": JSON_VALUES | st.lists(ODD_TEXT, max_size=2),
    "tool_calls": JSON_VALUES, "thinking": JSON_VALUES, "name": JSON_VALUES, "tool_call_id": JSON_VALUES})
FIELDS = {
    "model": st.sampled_from(["stub", "stub-embed", "nope"]) | JSON_VALUES, "name": JSON_VALUES,
    "messages": st.lists(MESSAGE, max_size=3) | JSON_VALUES, "prompt": ODD_TEXT | JSON_VALUES,
    "input": ODD_TEXT | st.lists(ODD_TEXT, max_size=3) | JSON_VALUES, "stream": st.booleans() | JSON_VALUES,
    "options": st.dictionaries(st.sampled_from(["num_ctx", "temperature", "top_p", "num_predict", "stop", "seed"]),
                               JSON_VALUES, max_size=3) | JSON_VALUES,
    "tools": JSON_VALUES, "tool_choice": JSON_VALUES, "format": JSON_VALUES, "keep_alive": JSON_VALUES,
    "think": JSON_VALUES, "max_tokens": NUMBERS | JSON_VALUES, "n": NUMBERS, "temperature": NUMBERS,
    "stream_options": JSON_VALUES, "response_format": JSON_VALUES, "encoding_format": JSON_VALUES,
    "suffix": JSON_VALUES, "images": JSON_VALUES, "system": JSON_VALUES, "raw": JSON_VALUES,
    "source": JSON_VALUES, "destination": JSON_VALUES, "logprobs": JSON_VALUES, "stop": JSON_VALUES,
    "stop_sequences": JSON_VALUES, "thinking": JSON_VALUES, "metadata": JSON_VALUES, "output_config": JSON_VALUES,
    "top_k": NUMBERS | JSON_VALUES,
}
BODY_OBJECTS = st.fixed_dictionaries({}, optional=FIELDS)
RAW_BODIES = st.one_of(
    BODY_OBJECTS.map(lambda b: json.dumps(b).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"null", b"[]", b'{"model": 1e999999}', b'{"model":"stub","messages":[' * 50,
                     b"[" * 5000 + b"]" * 5000, b'{"model":"stub","stream":true,"prompt":"\xff\xfe"}',
                     b'\xef\xbb\xbf{"model":"stub","prompt":"bom"}', b'{"model":"stub","model":"x"}',
                     b'{"model":"stub","messages":[{"role":"user","content":"hi"}],"n":99999999999999999999}']))
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
HEADERS = st.fixed_dictionaries({}, optional={
    "Content-Type": st.sampled_from(["application/json", "text/plain", "multipart/form-data; boundary=x",
                                     "application/x-www-form-urlencoded", "application/json; charset=latin-1"])
    | HEADER_TEXT,
    "X-Request-ID": HEADER_TEXT, "Authorization": st.sampled_from([f"Bearer {KEY}", "Bearer", "Basic eDp5"])
    | HEADER_TEXT, "X-API-Key": st.just(KEY) | HEADER_TEXT, "Accept": HEADER_TEXT, "User-Agent": HEADER_TEXT,
    "Accept-Encoding": HEADER_TEXT, "Origin": HEADER_TEXT, "X-Forwarded-For": HEADER_TEXT,
    "Content-Encoding": st.sampled_from(["gzip", "br", "identity"]) | HEADER_TEXT,
})


class _Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    keys = tmp_path_factory.mktemp("fuzz") / "keys.toml"
    keys.write_text('[keys.fuzz]\nmodels = ["stub*"]\nconcurrency = 50\ntpm = 100000000\n')
    env = {"BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0", "API_KEYS": f"fuzz:{KEY}", "KEYS_FILE": str(keys),
           "RATE_LIMIT": "100000/second", "CORS_ORIGINS": "*", "LOG_LEVEL": "ERROR", "MAX_REQUEST_BYTES": "65536",
           "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('fuzzdb')}/fuzz.db", "LOG_CLEANUP_MINUTES": "0"}
    app = create_app(Settings.from_env(env))
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    yield app, errors
    logging.getLogger().removeHandler(errors)
    shutdown = app.extensions["llm_proxy"].extras.get("shutdown")
    if shutdown:
        shutdown()


def check_dialect(method: str, path: str, status: int, headers, body: bytes) -> None:
    assert status < 500 or status == 501, (status, body[:300])
    if method == "HEAD" or status < 400 or not (path.startswith(("/api/", "/v1/")) or path == "/"):
        return
    assert headers.get("Content-Type", "").startswith("application/json"), (status, headers, body[:200])
    data = json.loads(body)
    if path.startswith("/v1/messages"):
        assert data["type"] == "error" and set(data["error"]) == {"type", "message"} and data["error"]["message"]
    elif path.startswith("/v1/"):
        assert isinstance(data["error"]["message"], str) and data["error"]["message"]
        assert isinstance(data["error"]["type"], str)
    else:
        assert list(data) == ["error"] and isinstance(data["error"], str) and data["error"]


def check_stream(content_type: str, body: bytes) -> None:
    """Streamed answers stay well-formed to the end (a failure after the first byte is an in-band chunk)."""
    if content_type.startswith("application/x-ndjson"):
        for line in body.splitlines():
            if line.strip():
                json.loads(line)
    elif content_type.startswith("text/event-stream"):
        for line in body.splitlines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                json.loads(line[6:])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(endpoint=st.sampled_from(ENDPOINTS), body=RAW_BODIES, headers=HEADERS,
       query=st.sampled_from(["", "?stream=true", "?x=%ff", "?" + "a" * 300]))
def test_hostile_requests_never_get_a_500_and_always_the_callers_dialect(fuzz_app, endpoint, body, headers, query):
    app, errors = fuzz_app
    errors.records.clear()
    method, path = endpoint
    with app.test_client() as client:
        resp = client.open(path + query, method=method, data=body if method not in ("GET", "HEAD") else None,
                           headers=headers, buffered=False)
        data = b"".join(resp.response) if resp.status_code == 200 else resp.get_data()
        resp.close()
    check_dialect(method, path, resp.status_code, resp.headers, data)
    if resp.status_code == 200:
        check_stream(resp.headers.get("Content-Type", ""), data)
    assert not errors.records, [r.getMessage() for r in errors.records]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from([e for e in ENDPOINTS if e[0] == "POST"]), body=BODY_OBJECTS,
       keyed=st.booleans(), stream=st.booleans())
def test_wellformed_json_with_wrong_types_is_answered_in_dialect(fuzz_app, endpoint, body, keyed, stream):
    app, errors = fuzz_app
    errors.records.clear()
    method, path = endpoint
    body = {"model": "stub", "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "input": "hi",
            **body, "stream": stream}
    with app.test_client() as client:
        resp = client.open(path, method=method, json=body, headers={"Authorization": f"Bearer {KEY}"} if keyed else {},
                           buffered=False)
        data = b"".join(resp.response) if resp.status_code == 200 else resp.get_data()
        resp.close()
    check_dialect(method, path, resp.status_code, resp.headers, data)
    if resp.status_code == 200:
        check_stream(resp.headers.get("Content-Type", ""), data)
    assert not errors.records, [r.getMessage() for r in errors.records]


# --- malformed HTTP on a real socket (gevent's server) ----------------------------------------------------------

RAW_REQUESTS = [
    b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"model\":",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"mod",
    b"GET /api/tags HTTP/1.1\r\nHost: x\r\nX-Request-ID: \xff\xfe\r\nAuthorization: Bearer \xc3\x28\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"X-Junk: " + b"a" * 20000 + b"\r\n\r\n",
    b"GET /v1/models/" + "💥".encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"POST /api/chat HTTP/1.0\r\n\r\n",
    b"GET /api/ps HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
]


def _send(url: str, raw: bytes) -> bytes:
    host, port = url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
        return data


def test_malformed_http_never_gets_a_500_or_kills_the_server(wsgi_proxy):
    proxy = wsgi_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0", API_KEYS=f"fuzz:{KEY}", MAX_REQUEST_BYTES="4096",
                       LOG_LEVEL="WARNING")
    for raw in RAW_REQUESTS:
        answer = _send(proxy.url, raw)
        if answer:
            status_line = answer.split(b"\r\n", 1)[0]
            assert status_line.startswith(b"HTTP/1."), answer[:200]
            status = int(status_line.split(b" ")[1])
            assert status < 500, (raw[:80], answer[:300])
    healthy = _send(proxy.url, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert healthy.startswith(b"HTTP/1.1 200") and healthy.endswith(b"OK")
    assert "Traceback" not in proxy.output(), proxy.output()[-3000:]
