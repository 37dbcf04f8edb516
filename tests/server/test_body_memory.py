"""A large request body is held once: `python wsgi.py` (gevent) takes a body at MAX_REQUEST_BYTES and
forwards it, and its peak resident memory for that request stays near what parsing it needs (the raw
body, orjson's working copy, the parsed text), with no further copies on reading, logging or sending.
Measured from outside, through /proc: the process's high-water mark is reset, the request sent, the mark read."""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.fakes import openai_chat_responder

BODY_BYTES = 32 * 1024 * 1024  # the default MAX_REQUEST_BYTES
PEAK_LIMIT = 3.5  # peak growth over the body's size: reading, parsing and sending it (it was 4.1)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _chat_body(size: int, content_char: bytes = b"a") -> bytes:
    head, tail = b'{"model":"qwen3-8b","messages":[{"role":"user","content":"', b'"}]}'
    return head + content_char * (size - len(head) - len(tail)) + tail


def _post(url: str, body: bytes) -> bytes:
    host, port = url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_body_at_the_size_limit_is_held_once_on_its_way_upstream(wsgi_proxy, fake_upstream):
    fake_upstream.serve_openai_models("qwen3-8b")
    fake_upstream.default("POST", "/v1/chat/completions", openai_chat_responder(["ok"]))
    proxy = wsgi_proxy(LOG_LEVEL="WARNING")
    pid = proxy.process.pid
    body = _chat_body(BODY_BYTES)
    warm = _chat_body(BODY_BYTES // 8)  # the allocator's arenas and the pools are warm before measuring
    assert _post(proxy.url, warm).startswith(b"HTTP/1.1 200")
    time.sleep(0.5)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before = _status(pid, "VmRSS")
    answer = _post(proxy.url, body)
    peak = _status(pid, "VmHWM") - before
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    sent = fake_upstream.last("/v1/chat/completions").body
    assert len(sent) >= BODY_BYTES - 200  # the whole prompt went upstream
    assert peak < PEAK_LIMIT * BODY_BYTES, f"peak grew {peak / BODY_BYTES:.2f}x the body ({peak >> 20} MiB)"


def test_a_chunked_body_is_read_once_and_refused_past_the_limit(wsgi_proxy, fake_upstream):
    fake_upstream.serve_openai_models("qwen3-8b")
    fake_upstream.default("POST", "/v1/chat/completions", openai_chat_responder(["ok"]))
    proxy = wsgi_proxy(LOG_LEVEL="WARNING", MAX_REQUEST_BYTES="65536")

    def chunked(body: bytes):
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    ok = requests.post(proxy.url + "/v1/chat/completions", data=chunked(_chat_body(60000)),
                       headers={"Content-Type": "application/json"}, timeout=30)
    assert ok.status_code == 200, ok.text
    assert len(fake_upstream.last("/v1/chat/completions").body) > 59000
    big = requests.post(proxy.url + "/v1/chat/completions", data=chunked(_chat_body(70000)),
                        headers={"Content-Type": "application/json"}, timeout=30)
    assert big.status_code == 413 and "MAX_REQUEST_BYTES" in big.json()["error"]["message"]
