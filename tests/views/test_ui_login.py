"""Signing in to the log view: token guesses limited per client, Secure cookies over TLS (direct or by a
trusted proxy's word), logging out ends the session for every copy of the cookie (in every worker with
REDIS_URL), and TRUSTED_PROXIES deciding whose X-Forwarded-* headers name the client."""
from __future__ import annotations

import os
import uuid

import pytest
import requests

from proxy import create_app
from proxy.config import Settings
from proxy.forwarded import client_of
from proxy.policy.keys import Networks
from proxy.views import ui_auth

REMOTE = {"REMOTE_ADDR": "192.0.2.7"}
OTHER = {"REMOTE_ADDR": "192.0.2.8"}


def make_app(tmp_path, **env):
    return create_app(Settings.from_env({"BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0", "LOG_LEVEL": "WARNING",
                                         "LOG_ENABLED": "false", "ADMIN_TOKEN": "s3cret-admin",
                                         **{k: str(v) for k, v in env.items()}}))


@pytest.fixture
def client(tmp_path):
    return make_app(tmp_path).test_client()


def login(client, token="s3cret-admin", **kw):
    return client.post("/ui/login", data={"token": token, "next": "/ui/logs"}, **kw)


# --- guesses ----------------------------------------------------------------------------------------------

def test_token_guesses_are_limited_per_client(client):
    for _ in range(5):
        assert login(client, "guess", environ_base=REMOTE).status_code == 401
    r = login(client, environ_base=REMOTE)  # even the right token: the client is waiting
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 60 and "Set-Cookie" not in r.headers
    assert "try again" in r.text
    assert login(client, environ_base=OTHER).status_code == 302  # another client is not held up


def test_bearer_guesses_count_against_the_same_limit(client):
    for _ in range(3):
        login(client, "guess", environ_base=REMOTE)
    for _ in range(2):
        assert client.get("/ui/api/logs", headers={"Authorization": "Bearer guess"},
                          environ_base=REMOTE).status_code == 401
    r = client.get("/ui/api/logs", headers={"Authorization": "Bearer s3cret-admin"}, environ_base=REMOTE)
    assert r.status_code == 429 and r.headers["Retry-After"] and "try again" in r.json["error"]


def test_a_good_token_clears_the_count(client):
    for _ in range(4):
        login(client, "guess", environ_base=REMOTE)
    assert login(client, environ_base=REMOTE).status_code == 302
    for _ in range(4):
        assert login(client, "guess", environ_base=REMOTE).status_code == 401


def test_ipv6_guesses_are_counted_per_64(tmp_path):
    client = make_app(tmp_path).test_client()
    for i in range(5):
        login(client, "guess", environ_base={"REMOTE_ADDR": f"2001:db8:1:2::{i + 1}"})
    assert login(client, environ_base={"REMOTE_ADDR": "2001:db8:1:2::99"}).status_code == 429
    assert login(client, environ_base={"REMOTE_ADDR": "2001:db8:1:3::1"}).status_code == 302


# --- Secure cookies ---------------------------------------------------------------------------------------

def test_the_cookie_is_secure_over_tls_and_only_then(tmp_path):
    app = make_app(tmp_path)
    plain = login(app.test_client()).headers["Set-Cookie"]
    assert "Secure" not in plain and "HttpOnly" in plain
    direct = login(app.test_client(), base_url="https://localhost").headers["Set-Cookie"]
    assert "Secure" in direct
    proxied = login(app.test_client(), headers={"X-Forwarded-Proto": "https"}).headers["Set-Cookie"]
    assert "Secure" in proxied  # the loopback peer is a trusted proxy by default
    untrusted = login(app.test_client(), headers={"X-Forwarded-Proto": "https"}, environ_base=REMOTE)
    assert "Secure" not in untrusted.headers["Set-Cookie"]


# --- logging out -------------------------------------------------------------------------------------------

def _cookie(response) -> str:
    return response.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]


def test_logging_out_ends_the_session_for_every_copy_of_the_cookie(client):
    value = _cookie(login(client))
    assert client.get("/ui/").status_code == 200
    assert client.post("/ui/logout").status_code == 302
    client.set_cookie(ui_auth.COOKIE, value, path="/ui")  # a copy kept from before
    r = client.get("/ui/")
    assert r.status_code == 302 and "/ui/login" in r.headers["Location"]
    assert login(client).status_code == 302 and client.get("/ui/").status_code == 200  # a new session works


def test_a_forged_or_old_format_cookie_is_refused(client):
    for value in ("1700000000.deadbeef", f"{int(__import__('time').time())}.x.y", "garbage", ""):
        client.set_cookie(ui_auth.COOKIE, value, path="/ui")
        assert client.get("/ui/").status_code == 302


@pytest.mark.skipif(not os.environ.get("TEST_REDIS_URL"), reason="TEST_REDIS_URL not set")
def test_with_redis_a_logout_and_the_guesses_are_shared_by_every_worker(tmp_path):
    env = {"REDIS_URL": os.environ["TEST_REDIS_URL"], "ADMIN_TOKEN": f"tok-{uuid.uuid4().hex}"}
    one, two = make_app(tmp_path, **env).test_client(), make_app(tmp_path, **env).test_client()
    value = _cookie(login(one, env["ADMIN_TOKEN"]))
    two.set_cookie(ui_auth.COOKIE, value, path="/ui")
    assert two.get("/ui/").status_code == 200
    one.post("/ui/logout")
    assert two.get("/ui/").status_code == 302
    address = {"REMOTE_ADDR": f"198.18.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"}
    for app in (one, two, one, two, one):
        login(app, "guess", environ_base=address)
    assert login(two, env["ADMIN_TOKEN"], environ_base=address).status_code == 429


# --- TRUSTED_PROXIES ----------------------------------------------------------------------------------------

def test_the_client_is_the_first_untrusted_hop_from_the_right():
    trusted = Networks(["127.0.0.0/8", "10.0.0.0/8"])
    assert client_of("198.51.100.4, 10.0.0.7", "127.0.0.1", trusted) == ("198.51.100.4", True)
    assert client_of("127.0.0.1, 198.51.100.4", "127.0.0.1", trusted) == ("198.51.100.4", True)  # spoofed left
    assert client_of("10.0.0.1", "127.0.0.1", trusted) == ("10.0.0.1", True)
    assert client_of("[2001:db8::1]:5000, 10.0.0.7:80", "127.0.0.1", trusted) == ("2001:db8::1", True)
    assert client_of("junk, 10.0.0.7", "127.0.0.1", trusted) == ("10.0.0.7", False)


def test_a_trusted_proxy_names_the_client_and_an_untrusted_one_does_not(tmp_path):
    client = make_app(tmp_path, ADMIN_TOKEN="").test_client()
    assert client.get("/ui/", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200  # via local nginx
    assert client.get("/ui/", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    assert client.get("/ui/", headers={"X-Real-IP": "203.0.113.9"}).status_code == 403
    assert client.get("/ui/", headers={"Forwarded": "for=203.0.113.9"}).status_code == 403  # not followed
    assert client.get("/ui/", headers={"X-Forwarded-For": "127.0.0.1"}, environ_base=REMOTE).status_code == 403
    none = make_app(tmp_path, ADMIN_TOKEN="", TRUSTED_PROXIES="").test_client()
    assert none.get("/ui/", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 403  # relayed: not local
    assert none.get("/ui/").status_code == 200


def test_the_gate_and_the_access_log_see_the_forwarded_client(make_proxy):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS="0", API_KEYS="alice:sk-alice",
                       ALLOWED_NETWORKS="198.51.100.0/24", TRUSTED_PROXIES="127.0.0.1,10.0.0.0/8")
    chat = {"model": "stub", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
    assert requests.post(proxy.url + "/api/chat", json=chat).status_code == 401
    ok = requests.post(proxy.url + "/api/chat", json=chat,
                       headers={"X-Forwarded-For": "198.51.100.4, 10.1.2.3"})
    assert ok.status_code == 200
    spoofed = requests.post(proxy.url + "/api/chat", json=chat,
                            headers={"X-Forwarded-For": "198.51.100.4, 203.0.113.50"})
    assert spoofed.status_code == 401
