"""Credentials inside URLs (BACKEND_URL, DATABASE_URL, REDIS_URL) are masked wherever a URL is shown — the UI's
configuration table, /healthz, error messages, stored rows, stdout — and BACKEND_URL's user:password@ is sent to
the backend as basic auth (as `requests` would), never as part of the request."""
from __future__ import annotations

import base64
import glob
import secrets
import time
from pathlib import Path

import pytest
import requests

from proxy.config import ConfigError, Settings
from proxy.store.db import sqlite_path
from proxy.values import mask_url
from tests.support import fakes, free_port


@pytest.mark.parametrize("url, shown", [
    ("postgresql://app:s3cret@db.example:5432/logs", "postgresql://app:***@db.example:5432/logs"),
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("https://sk-s3cret@api.example.com/v1", "https://***@api.example.com/v1"),
    ("http://us%40er:p%3Ass@[::1]:8080", "http://us%40er:***@[::1]:8080"),
    ("mysql://root:a@b@db/x", "mysql://root:***@db/x"),
    ("postgresql://db/logs?user=app&password=s3cret&sslmode=require",
     "postgresql://db/logs?user=app&password=***&sslmode=require"),
    ("https://api.example.com/v1?api_key=s3cret#frag", "https://api.example.com/v1?api_key=***#frag"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("sqlite:///data/proxy.db", "sqlite:///data/proxy.db"),
    ("", "(not set)"),
])
def test_mask_url_hides_every_credential_and_keeps_the_rest(url, shown):
    assert mask_url(url) == shown


def test_the_configuration_table_masks_url_credentials():
    settings = Settings.from_env({"BACKEND_URL": "http://bob:b-s3cret@127.0.0.1:8080",
                                  "DATABASE_URL": "postgresql://app:d-s3cret@127.0.0.1:1/logs",
                                  "REDIS_URL": "redis://:r-s3cret@127.0.0.1:6379/0"})
    shown = dict(settings.public_items())
    assert shown["BACKEND_URL"] == "http://bob:***@127.0.0.1:8080"
    assert shown["DATABASE_URL"] == "postgresql://app:***@127.0.0.1:1/logs"
    assert shown["REDIS_URL"] == "redis://:***@127.0.0.1:6379/0"
    assert "s3cret" not in repr(settings.public_items())


def test_a_bad_url_is_reported_with_its_password_masked():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"BACKEND_URL": "ftp://bob:b-s3cret@host", "DATABASE_URL": "oracle://app:d-s3cret@db"})
    assert "BACKEND_URL" in str(info.value) and "DATABASE_URL" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_url_credentials_and_a_backend_api_key_together_are_refused_at_start_up():
    with pytest.raises(ConfigError, match="BACKEND_URL carries credentials and BACKEND_API_KEY is set") as info:
        Settings.from_env({"BACKEND_URL": "http://bob:b-s3cret@127.0.0.1:8080", "BACKEND_API_KEY": "sk-k"})
    assert "s3cret" not in str(info.value)


def _wait_rows(ui: requests.Session, url: str, count: int) -> dict:
    deadline = time.monotonic() + 10
    while True:
        listing = ui.get(url + "/ui/api/logs", timeout=10)
        if listing.status_code == 200 and len(listing.json()["items"]) >= count or time.monotonic() > deadline:
            return listing.json()
        time.sleep(0.2)


def test_backend_url_credentials_go_as_basic_auth_and_are_shown_nowhere(wsgi_proxy, fake_upstream, tmp_path):
    password = "pw-" + secrets.token_hex(10)
    user = "bob"
    fake_upstream.serve_openai_models("m1")
    fake_upstream.expect("POST", "/v1/chat/completions",
                         fakes.openai_chat_responder(("Hello",)),
                         fakes.Reply(chunks=[b"<html>not json</html>"]))
    db_file = tmp_path / "creds.db"
    backend_url = f"http://{user}:{password}@127.0.0.1:{fake_upstream.port}"
    proxy = wsgi_proxy(BACKEND_URL=backend_url, DATABASE_URL=f"sqlite:///{db_file}", LOG_LEVEL="DEBUG",
                       LOG_RAW_REQUESTS="true", LOG_RAW_RESPONSES="true", LOG_POLLING="true")
    chat = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}

    ok = requests.post(proxy.url + "/v1/chat/completions", json=chat, timeout=10)
    assert ok.status_code == 200, ok.text
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    assert all(r.header("authorization") == expected for r in fake_upstream.requests), fake_upstream.requests

    bad = requests.post(proxy.url + "/api/chat", json={**chat, "stream": False}, timeout=10)
    assert bad.status_code == 502
    assert f"127.0.0.1:{fake_upstream.port}" in bad.json()["error"]  # the backend is named, without credentials

    pages = {"502 answer": bad.text}
    health = requests.get(proxy.url + "/healthz", timeout=10)
    assert health.json()["backend"]["url"] == f"http://127.0.0.1:{fake_upstream.port}"
    pages["/healthz"] = health.text
    ui = requests.Session()
    listing = _wait_rows(ui, proxy.url, 2)
    assert len(listing["items"]) >= 2
    for path in ("/ui/", "/ui/logs", "/ui/api/logs", "/ui/api/export"):
        pages[path] = ui.get(proxy.url + path, timeout=10).text
    for item in listing["items"]:
        pages[f"/ui/api/logs/{item['id']}"] = ui.get(proxy.url + f"/ui/api/logs/{item['id']}", timeout=10).text
    assert f"{user}:***@127.0.0.1:{fake_upstream.port}" in pages["/ui/"]  # the configuration table, masked
    proxy.stop()
    database = b"".join(Path(p).read_bytes() for p in glob.glob(sqlite_path(f"sqlite:///{db_file}") + "*"))
    assert f"127.0.0.1:{fake_upstream.port}".encode() in database  # the rows do name the backend
    places = {**{k: v.encode() for k, v in pages.items()}, "stdout": proxy.output().encode(),
              "the log database": database}
    for place, content in places.items():
        assert password.encode() not in content, f"the BACKEND_URL password appears in {place}"


def test_database_url_password_is_masked_in_the_ui_even_when_the_database_is_down(make_proxy):
    password = "pw-" + secrets.token_hex(10)
    proxy = make_proxy(BACKEND_TYPE="stub", DATABASE_URL=f"postgresql://loguser:{password}@127.0.0.1:{free_port()}/x")
    page = requests.get(proxy.url + "/ui/", timeout=20)
    assert page.status_code == 200
    assert "loguser:***@127.0.0.1" in page.text
    assert password not in page.text
