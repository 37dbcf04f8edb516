"""The log view with several backends (BACKENDS_FILE): the overview lists every backend and its state, the log
list filters by the backend that answered (kept in the URL like the other filters), and an exchange's page
shows the attempts before the answer (backend, status or error, milliseconds)."""
from __future__ import annotations

import re

import pytest

from proxy import create_app
from proxy.config import Settings
from tests.support import free_port
from tests.support.store import wait_for

CHAT = {"model": "stub", "stream": False, "messages": [{"role": "user", "content": "which backend?"}]}


def pool_app(tmp_path, toml: str):
    path = tmp_path / "backends.toml"
    path.write_text(toml)
    return create_app(Settings.from_env({"BACKENDS_FILE": str(path), "STUB_DELAY_MS": "0", "LOG_LEVEL": "WARNING",
                                         "LOG_CLEANUP_MINUTES": "0", "DATABASE_URL": f"sqlite:///{tmp_path}/ui.db"}))


def dead(weight: int = 9) -> str:
    """An OpenAI backend nothing listens for: every attempt there is refused; down after one failure."""
    return (f'[backends.dead]\ntype = "openai"\nurl = "http://127.0.0.1:{free_port()}"\nmodels = ["stub"]\n'
            f'weight = {weight}\nhealth = {{ unhealthy_after = 1, interval_s = 60 }}\n')


@pytest.fixture
def app(tmp_path):
    """dead (tried first, by weight) and local (the stub): a request fails over from dead to local."""
    app = pool_app(tmp_path, dead() + '[backends.local]\ntype = "stub"\n[routing]\nstrategy = "weighted"\n')
    yield app
    app.extensions["llm_proxy"].extras["log_store"].close()
    app.extensions["llm_proxy"].extras["shutdown"]()


def chat(app, body=CHAT) -> int:
    """One request through the app; the id of its log row once written."""
    store = app.extensions["llm_proxy"].extras["log_store"]
    before = store.writer.written
    app.test_client().post("/api/chat", json=body)
    wait_for(lambda: store.writer.written > before)
    return store.read(lambda m: m.Exchange.select().order_by(m.Exchange.id.desc()).first().id)


def test_overview_lists_every_backend_with_its_state(app):
    client = app.test_client()
    html = client.get("/ui/").text
    assert re.search(r'id="backends-healthy"[^>]*>2 of 2 healthy<', html)
    chat(app)
    html = client.get("/ui/").text
    assert re.search(r'id="backends-healthy"[^>]*>1 of 2 healthy<', html)
    rows = dict(re.findall(r'<tr data-backend="(\w+)">(.*?)</tr>', html, re.S))
    assert set(rows) == {"dead", "local"}
    assert re.search(r'class="state bad">down<', rows["dead"]) and "refused" in rows["dead"]
    assert re.search(r'class="state ok">healthy<', rows["local"]) and re.search(r"\d\.\d ms", rows["local"])
    assert 'href="/ui/logs?backend=local"' in rows["local"]
    assert 'id="backend-status"' not in html  # one backend's reachability check is not made for a pool


def test_log_list_filters_by_backend_and_keeps_the_filter_in_its_links(app):
    chat(app)
    client = app.test_client()
    html = client.get("/ui/logs?backend=local").text
    assert "which backend?" in html and 'id="f-backend"' in html and 'value="local"' in html
    assert '<option value="local">' in client.get("/ui/logs").text  # offered in the field's suggestions
    assert "No exchanges match these filters" in client.get("/ui/logs?backend=dead").text
    data = client.get("/ui/api/logs?backend=local&limit=1").json
    assert [r["backend_name"] for r in data["items"]] == ["local"]
    assert client.get("/ui/api/logs?backend=dead").json["items"] == []
    chat(app)
    data = client.get("/ui/api/logs?backend=local&limit=1").json
    assert "backend=local" in data["next_url"] and client.get(data["next_url"]).json["items"]
    assert client.get("/ui/logs?backend=a%00b").status_code == 400


def test_exchange_page_shows_the_attempts_before_the_answer(app):
    ident = chat(app)
    html = app.test_client().get(f"/ui/logs/{ident}").text
    section = re.search(r'<section class="card" id="attempts">(.*?)</section>', html, re.S)
    assert section, html
    failed = re.findall(r'<tr class="failed">(.*?)</tr>', section.group(1), re.S)
    assert len(failed) == 1 and "dead" in failed[0] and "refused" in failed[0] and " ms<" in failed[0]
    answered = re.search(r'<tr class="answered">(.*?)</tr>', section.group(1), re.S)
    assert answered and "local" in answered.group(1) and "200 · answered" in answered.group(1)
    attempts = app.test_client().get(f"/ui/api/logs/{ident}").json["attempts"]
    assert [(a["backend"], a["status"]) for a in attempts] == [("dead", None)]


def test_exchange_page_says_when_every_attempt_failed(tmp_path):
    app = pool_app(tmp_path, dead() + "[routing]\nretries = 0\n")
    try:
        html = app.test_client().get(f"/ui/logs/{chat(app)}").text
        assert 'id="attempts"' in html and "Every attempt failed" in html and 'class="answered"' not in html
    finally:
        app.extensions["llm_proxy"].extras["log_store"].close()
        app.extensions["llm_proxy"].extras["shutdown"]()


def test_one_backend_pages_have_no_pool_parts(tmp_path):
    app = create_app(Settings.from_env({"BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0", "LOG_LEVEL": "WARNING",
                                        "LOG_CLEANUP_MINUTES": "0", "DATABASE_URL": f"sqlite:///{tmp_path}/one.db"}))
    try:
        ident = chat(app)
        client = app.test_client()
        html = client.get("/ui/").text
        assert 'id="backend-status"' in html and 'id="backends"' not in html
        assert 'id="attempts"' not in client.get(f"/ui/logs/{ident}").text
    finally:
        app.extensions["llm_proxy"].extras["log_store"].close()
