"""Stdout logging: one access line per request, JSON lines with request ids, optional bodies, no secrets."""
import json
import subprocess
import sys
import time

import requests

from tests.support import REPO_ROOT

ROOT = REPO_ROOT


def run_proxy(tmp_path, port, **env):
    full = {"PATH": "/usr/bin:/bin", "HOST": "127.0.0.1", "PORT": str(port), "BACKEND_TYPE": "stub",
            "STUB_DELAY_MS": "0", "DATABASE_URL": f"sqlite:///{tmp_path}/log.db", "LOG_CLEANUP_MINUTES": "0", **env}
    proc = subprocess.Popen([sys.executable, "wsgi.py"], cwd=ROOT, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if requests.get(url + "/health", timeout=0.5).text == "OK":
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.stdout.read())


def stop(proc) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=15)
    return out


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_text_access_line_per_request_with_status_bytes_and_model(tmp_path):
    proc, url = run_proxy(tmp_path, free_port())
    try:
        requests.post(url + "/api/chat", json={"model": "stub", "messages": [{"role": "user", "content": "hi"}]},
                      headers={"Authorization": "Bearer sk-client-secret"})
        requests.get(url + "/api/tags")
    finally:
        out = stop(proc)
    lines = [line for line in out.splitlines() if "proxy.access" in line]
    chat = next(line for line in lines if '"POST /api/chat"' in line)
    assert "127.0.0.1" in chat and " 200 " in chat and "model=stub" in chat and "tokens=" in chat and "ms id=" in chat
    assert any('"GET /api/tags" 200' in line for line in lines)
    assert "sk-client-secret" not in out


def test_json_lines_carry_the_request_id_and_optional_bodies(tmp_path):
    proc, url = run_proxy(tmp_path, free_port(), LOG_FORMAT="json", LOG_MESSAGES="true", LOG_RAW_REQUESTS="true",
                          LOG_RAW_RESPONSES="true", BACKEND_API_KEY="sk-backend-secret")
    try:
        r = requests.post(url + "/api/chat", headers={"X-Request-ID": "req-42", "X-API-Key": "sk-client-secret"},
                          json={"model": "stub", "stream": False, "messages": [{"role": "user", "content": "hello"}]})
        assert r.headers["X-Request-ID"] == "req-42"
    finally:
        out = stop(proc)
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    access = next(r for r in records if r.get("event") == "access" and r.get("path") == "/api/chat")
    assert access["request_id"] == "req-42" and access["status"] == 200 and access["model"] == "stub"
    events = {r["event"] for r in records if r.get("request_id") == "req-42"}
    assert {"messages", "client_request", "upstream_request", "upstream_response", "client_response"} <= events
    summary = next(r for r in records if r.get("event") == "messages")
    assert "user[5]: hello" in summary["body"]
    assert "sk-backend-secret" not in out and "sk-client-secret" not in out


def test_a_stream_gets_one_access_line_with_the_bytes_the_client_received(tmp_path):
    import json

    proc, url = run_proxy(tmp_path, free_port(), LOG_FORMAT="json")
    try:
        streamed = requests.post(url + "/api/chat", json={"model": "stub", "messages": [
            {"role": "user", "content": "one two three four"}]})  # Ollama streams by default
        whole = requests.post(url + "/api/chat", json={"model": "stub", "stream": False, "messages": [
            {"role": "user", "content": "one two"}]})
    finally:
        out = stop(proc)
    access = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"event": "access"' in line]
    chats = [a for a in access if a["path"] == "/api/chat"]
    assert len(chats) == 2
    assert chats[0]["stream"] is True and chats[0]["bytes"] == len(streamed.content) > 0
    assert chats[1]["stream"] is False and chats[1]["bytes"] == len(whole.content)


def _send_raw(url: str, request_line: bytes, headers: bytes = b"") -> bytes:
    import socket

    host, port = url.split("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request_line + b"\r\nHost: 127.0.0.1\r\n" + headers + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


FORGED = b"GET /api/x%0A2026-01-01%2000:00:00,000%20INFO%20proxy.access:%20%1B[2J%1B]0;pwned%07%C2%9B31m%22%5C HTTP/1.1"


def test_control_characters_in_the_path_cannot_forge_or_colour_access_lines(tmp_path):
    proc, url = run_proxy(tmp_path, free_port())
    try:
        _send_raw(url, FORGED)
        _send_raw(url, b"GET /v1/\x1b[31mred HTTP/1.1", b"User-Agent: x\x1b[2J\r\n")
        requests.post(url + "/api/chat", json={"model": "stub\n1999-01-01 INFO proxy.access: fake\x1b[0m",
                                               "messages": [{"role": "user", "content": "hi"}]})
    finally:
        out = stop(proc)
    assert "\x1b" not in out and "\x07" not in out and "\u009b" not in out
    lines = [line for line in out.splitlines() if "proxy.access" in line]
    assert not any(line.startswith("2026-01-01") or line.startswith("1999-01-01") for line in out.splitlines())
    forged = next(line for line in lines if "/api/x" in line)
    assert '"GET /api/x\\x0a2026-01-01 00:00:00,000 INFO proxy.access: \\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\x22\\x5c" 404' \
        in forged
    assert any("\\x1b[31mred" in line for line in lines)
    assert any("model=stub\\x0a1999-01-01" in line for line in lines)


def test_json_access_lines_escape_what_json_leaves_raw(tmp_path):
    proc, url = run_proxy(tmp_path, free_port(), LOG_FORMAT="json")
    try:
        _send_raw(url, FORGED)
    finally:
        out = stop(proc)
    assert "\x1b" not in out and "\u009b" not in out and "\u2028" not in out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    access = next(r for r in records if r.get("event") == "access" and r["path"].startswith("/api/x"))
    assert access["path"].startswith("/api/x\\x0a2026-01-01") and "\\x9b31m" in access["path"]


def test_printable_escapes_controls_quotes_and_backslashes_only():
    from proxy.accesslog import controls_escaped, printable

    assert printable("/api/chat") == "/api/chat"
    assert printable('a\nb\r\x1b\x7f\x85"\\ é\u2028') == 'a\\x0ab\\x0d\\x1b\\x7f\\x85\\x22\\x5c é\\u2028'
    assert controls_escaped('{"a": "b"}\n') == '{"a": "b"}\\x0a'
