"""The configured keys (and the admin token, the backend key, and keys clients got wrong) appear nowhere:
not on stdout at the chattiest log settings, not in the log database file, not in the log view — while
the key *names* do, which shows each of those places was really searched."""
from __future__ import annotations

import glob
import json
import secrets
import time
from pathlib import Path

import ollama
import openai
import pytest
import requests

from proxy.store.db import sqlite_path
from tests.support import fakes
from tests.support.policy import write_keys


def _secret(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_configured_keys_never_reach_stdout_the_log_database_or_the_ui(wsgi_proxy, fake_upstream, tmp_path,
                                                                        log_format):
    alice, bob, carol = _secret("sk-alice"), _secret("sk-bob"), _secret("sk-carol")
    backend_key, admin, wrong = _secret("sk-backend"), _secret("admin"), _secret("sk-wrong")
    hidden = {"alice's key": alice, "bob's key": bob, "carol's key": carol, "BACKEND_API_KEY": backend_key,
              "ADMIN_TOKEN": admin, "a wrong key": wrong}
    fake_upstream.serve_openai_models("qwen3-8b", "text-embed-3")
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(("Hello", " there")))
    fake_upstream.default("POST", "/v1/embeddings", fakes.json_reply(fakes.openai_embeddings([[0.5, 0.5]])))
    keys_file = write_keys(tmp_path / "keys.toml", f'[keys.carol]\nkey = "{carol}"\nmodels = ["qwen3-*"]\n'
                                                   f'[keys.alice]\nrpm = 4\n')
    db_file = tmp_path / f"secrets-{log_format}.db"
    proxy = wsgi_proxy(API_KEYS=f"alice:{alice},bob:{bob}", KEYS_FILE=keys_file, BACKEND_API_KEY=backend_key,
                       ADMIN_TOKEN=admin, DATABASE_URL=f"sqlite:///{db_file}", LOG_LEVEL="DEBUG",
                       LOG_FORMAT=log_format, LOG_MESSAGES="true", LOG_RAW_REQUESTS="true",
                       LOG_RAW_RESPONSES="true", LOG_POLLING="true")

    # every way a key travels: both headers, both fronts, streams, refusals of every kind
    oa = openai.OpenAI(base_url=proxy.url + "/v1", api_key=alice, max_retries=0,
                       default_headers={"X-Request-ID": "secrets-probe-1"})
    oa.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "hi"}])
    list(oa.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "hi"}], stream=True))
    oa.embeddings.create(model="text-embed-3", input="x")
    with pytest.raises(openai.RateLimitError):
        for _ in range(3):
            oa.models.list()
    ol = ollama.Client(host=proxy.url, headers={"X-API-Key": bob})
    ol.chat(model="qwen3-8b", messages=[{"role": "user", "content": "hi"}])
    ol.list()
    carol_client = ollama.Client(host=proxy.url, headers={"Authorization": f"Bearer {carol}"})
    with pytest.raises(ollama.ResponseError):
        carol_client.embed(model="text-embed-3", input="x")  # 403: not her model
    for headers in ({"Authorization": f"Bearer {wrong}"}, {"X-API-Key": wrong}):
        assert requests.post(proxy.url + "/api/chat", headers=headers, timeout=10,
                             json={"model": "qwen3-8b", "messages": []}).status_code == 401
        assert requests.get(proxy.url + "/v1/models", headers=headers, timeout=10).status_code == 401

    # the log view, as its admin sees it
    ui = requests.Session()
    ui.headers["Authorization"] = f"Bearer {admin}"
    pages = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listing = ui.get(proxy.url + "/ui/api/logs", timeout=10)
        if listing.status_code == 200 and len(listing.json()["items"]) >= 8:
            break
        time.sleep(0.2)
    pages["/ui/api/logs"] = listing.text
    for path in ("/ui/", "/ui/logs", "/ui/stats", "/metrics", "/healthz", "/ui/api/export"):
        pages[path] = ui.get(proxy.url + path, timeout=10).text
    for item in listing.json()["items"]:
        for path in (f"/ui/api/logs/{item['id']}", f"/ui/logs/{item['id']}"):
            pages[path] = ui.get(proxy.url + path, timeout=10).text
    proxy.stop()  # the writer flushes on SIGTERM

    stdout = proxy.output()
    database = b"".join(Path(path).read_bytes() for path in glob.glob(sqlite_path(f"sqlite:///{db_file}") + "*"))
    places = {"stdout": stdout.encode(), "the log database": database,
              **{f"UI page {p}": text.encode() for p, text in pages.items()}}
    for place, content in places.items():
        for what, value in hidden.items():
            assert value.encode() not in content, f"{what} appears in {place}"

    # the same places do show what they should, so the search above looked at real content
    assert "secrets-probe-1" in stdout
    if log_format == "json":
        assert any(json.loads(line).get("key") == "alice" for line in stdout.splitlines() if line.startswith("{"))
    assert b"secrets-probe-1" in database and b"alice" in database and b"carol" in database
    assert "alice" in pages["/ui/api/logs"] and "bob" in pages["/ui/api/logs"]
