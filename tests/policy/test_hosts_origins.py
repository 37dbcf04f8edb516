"""Other websites cannot use the proxy through a visitor's browser: a DNS-rebinding page (a Host the proxy
does not answer to) and a cross-site page (an Origin that is neither the proxy's own nor in CORS_ORIGINS)
get 403 in the caller's dialect, over real sockets; clients that send no Origin are untouched."""
from __future__ import annotations

import json
import socket

import pytest
import requests

from proxy.config import Settings
from proxy.hostguard import HostGuard, split_host

EVIL = "http://evil.example:11434"
CHAT = {"messages": [{"role": "user", "content": "hi"}], "stream": False}


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, dict, bytes]:
    """One request with exactly the headers given (requests would fix Host up), answer parsed loosely."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


# --- DNS rebinding: the Host header -------------------------------------------------------------------------

def test_a_rebinding_page_cannot_read_the_log_view(backend_setup):
    setup = backend_setup("openai")
    status, _, body = raw_request(setup.url, "GET /ui/api/logs HTTP/1.1\r\nHost: evil.example:11434\r\n")
    assert status == 403
    assert "ALLOWED_HOSTS" in json.loads(body)["error"] and "items" not in body.decode()
    status, headers, body = raw_request(setup.url, "GET /ui/ HTTP/1.1\r\nHost: evil.example\r\n")
    assert status == 403 and headers["content-type"].startswith("text/html") and b"ALLOWED_HOSTS" in body


def test_a_rebinding_page_cannot_chat_and_is_told_in_each_dialect(backend_setup):
    setup = backend_setup("openai")
    setup.script_chat()
    body = json.dumps({**CHAT, "model": setup.model}).encode()
    status, _, answer = raw_request(setup.url, "POST /api/chat HTTP/1.1\r\nHost: evil.example\r\n"
                                               "Content-Type: text/plain\r\n", body)
    assert status == 403 and list(json.loads(answer)) == ["error"] and "ALLOWED_HOSTS" in json.loads(answer)["error"]
    status, _, answer = raw_request(setup.url, "POST /v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\n"
                                               "Content-Type: text/plain\r\n", body)
    error = json.loads(answer)["error"]
    assert status == 403 and error["code"] == "host_not_allowed" and error["type"] == "permission_error"
    assert setup.chat_calls() == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "192.168.1.20", "[fd00::5]", "homeserver",
                                  "box.local", "llm.home.arpa", "app.localhost", "llm.internal"])
def test_addresses_and_names_no_public_dns_can_hold_are_served(backend_setup, host):
    setup = backend_setup("openai")
    status, _, _ = raw_request(setup.url, f"GET /api/tags HTTP/1.1\r\nHost: {host}:11434\r\n")
    assert status == 200


def test_allowed_hosts_adds_names_and_domains(backend_setup):
    setup = backend_setup("openai", ALLOWED_HOSTS="llm.example.com, .example.org")
    for host, expected in (("llm.example.com", 200), ("LLM.Example.COM.", 200), ("a.b.example.org", 200),
                           ("example.org", 200), ("other.example.com", 403), ("example.org.evil.example", 403)):
        status, _, _ = raw_request(setup.url, f"GET /api/tags HTTP/1.1\r\nHost: {host}\r\n")
        assert status == expected, host


def test_allowed_hosts_star_turns_the_host_check_off(backend_setup):
    setup = backend_setup("openai", ALLOWED_HOSTS="*")
    assert raw_request(setup.url, "GET /api/tags HTTP/1.1\r\nHost: evil.example\r\n")[0] == 200


def test_a_trusted_reverse_proxy_names_the_host_the_browser_used(backend_setup):
    setup = backend_setup("openai", ALLOWED_HOSTS="llm.example.com")
    ok = raw_request(setup.url, "POST /api/show HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Host: llm.example.com\r\n"
                                "Origin: https://llm.example.com\r\nContent-Type: application/json\r\n",
                     json.dumps({"model": setup.model}).encode())
    assert ok[0] == 200
    refused = raw_request(setup.url, "GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Host: evil.example\r\n")
    assert refused[0] == 403


# --- cross-site pages: the Origin header --------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_a_cross_site_text_plain_post_is_refused_before_it_reaches_the_backend(backend_setup, path):
    setup = backend_setup("openai")
    setup.script_chat()
    r = requests.post(setup.url + path, data=json.dumps({**CHAT, "model": setup.model}),
                      headers={"Content-Type": "text/plain", "Origin": "https://evil.example"})
    assert r.status_code == 403
    error = r.json()["error"]
    message = error["message"] if path.startswith("/v1") else error
    assert "https://evil.example" in message and "CORS_ORIGINS" in message
    assert setup.chat_calls() == []


def test_same_origin_pages_and_clients_without_origin_are_served(backend_setup):
    setup = backend_setup("openai")
    setup.script_chat()
    port = setup.proxy.port
    for origin in (f"http://127.0.0.1:{port}", None):
        headers = {"Origin": origin} if origin else {}
        r = requests.post(setup.url + "/api/chat", json={**CHAT, "model": setup.model}, headers=headers)
        assert r.status_code == 200, origin
    other_port = requests.post(setup.url + "/api/chat", json={**CHAT, "model": setup.model},
                               headers={"Origin": f"http://127.0.0.1:{port + 1}"})
    assert other_port.status_code == 403  # another web app on this machine is another origin


def test_cors_origins_are_served_on_the_api_but_never_on_the_log_view(backend_setup):
    origin = "https://chat.example.org"
    setup = backend_setup("openai", CORS_ORIGINS=origin)
    setup.script_chat()
    r = requests.post(setup.url + "/v1/chat/completions", json={**CHAT, "model": setup.model},
                      headers={"Origin": origin})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == origin
    pre = requests.options(setup.url + "/api/chat", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 200 and pre.headers["Access-Control-Allow-Origin"] == origin
    assert requests.options(setup.url + "/api/chat", headers={"Origin": "https://evil.example",
                                                              "Access-Control-Request-Method": "POST"}).status_code == 403
    ui = requests.get(setup.url + "/ui/api/logs", headers={"Origin": origin})
    assert ui.status_code == 403 and "log view" in ui.json()["error"]


def test_a_cross_site_login_post_and_a_null_origin_are_refused(backend_setup):
    setup = backend_setup("openai", ADMIN_TOKEN="s3cret")
    r = requests.post(setup.url + "/ui/login", data={"token": "s3cret"}, headers={"Origin": "https://evil.example"},
                      allow_redirects=False)
    assert r.status_code == 403 and "Set-Cookie" not in r.headers
    r = requests.post(setup.url + "/api/chat", json={**CHAT, "model": setup.model}, headers={"Origin": "null"})
    assert r.status_code == 403


# --- the pieces ----------------------------------------------------------------------------------------------

def test_host_headers_are_parsed_strictly():
    assert split_host("Example.COM:8080") == ("example.com", 8080)
    assert split_host("[::1]:11434") == ("::1", 11434)
    assert split_host("localhost.") == ("localhost", None)
    for bad in ("evil.example/x", "a b", "[::1", "[zz::1]", "host:port", "host:123456", "ex\u00e4mple.com"):
        assert split_host(bad) is None, bad


def test_the_bound_name_and_the_machine_name_are_served():
    settings = Settings.from_env({"HOST": "llm-box.lan", "BACKEND_TYPE": "stub"})
    guard = HostGuard(settings)
    assert guard.host_allowed("llm-box.lan:11434") and guard.host_allowed(socket.gethostname())
    assert not guard.host_allowed("llm-box.lan.evil.example")


def test_a_null_origin_is_ours_only_when_the_browser_says_same_origin(backend_setup):
    setup = backend_setup("openai", ADMIN_TOKEN="s3cret")
    ours = requests.post(setup.url + "/ui/login", data={"token": "s3cret"}, allow_redirects=False,
                         headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert ours.status_code == 302 and "Set-Cookie" in ours.headers
    theirs = requests.post(setup.url + "/ui/login", data={"token": "s3cret"}, allow_redirects=False,
                           headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"})
    assert theirs.status_code == 403
    # the log view's pages make browsers send their real Origin on their own form posts
    assert requests.get(setup.url + "/ui/login").headers["Referrer-Policy"] == "same-origin"
