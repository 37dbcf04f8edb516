"""The log view over Flask's test client: who may see it (ADMIN_TOKEN, loopback only), the security
headers, escaping of stored text, the pages, the JSON and the export, and the redirect at `/`."""
from __future__ import annotations

import json
import re
import time

import orjson
import pytest

from proxy import create_app
from proxy.config import Settings
from proxy.exchange import Exchange
from proxy.store.record import Record
from proxy.streaming import Answer
from tests.support.store import wait_for

PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
EVIL = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
REMOTE = {"REMOTE_ADDR": "192.0.2.7"}


def make_app(tmp_path, **env):
    settings = Settings.from_env({"BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0", "LOG_LEVEL": "WARNING",
                                  "LOG_CLEANUP_MINUTES": "0", "DATABASE_URL": f"sqlite:///{tmp_path}/ui.db",
                                  **{k: str(v) for k, v in env.items()}})
    return create_app(settings)


def store_of(app):
    return app.extensions["llm_proxy"].extras["log_store"]


def add(app, request_body: dict, *, answer: Answer | None = None, upstream: dict | None = None,
        endpoint: str = "/api/chat", front: str = "ollama", status: int = 200, outcome: str = "ok") -> int:
    store = store_of(app)
    raw = orjson.dumps(request_body)
    exchange = Exchange(request_id=f"req-{time.time_ns()}", front=front, endpoint=endpoint, method="POST",
                        client="127.0.0.1", user_agent="HomeAssistant/2025.1", client_body=raw, max_body=1 << 20,
                        sinks=())
    exchange.sent_upstream(orjson.dumps(upstream if upstream is not None else request_body))
    exchange.model_requested = exchange.model_upstream = request_body.get("model")
    exchange.status, exchange.outcome, exchange.answer = status, outcome, answer
    exchange.finish()
    before = store.writer.written
    store.writer.submit(Record.of(exchange))
    wait_for(lambda: store.writer.written > before)
    return store.read(lambda m: m.Exchange.select().order_by(m.Exchange.id.desc()).first().id)


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    yield app
    store_of(app).close()


@pytest.fixture
def client(app):
    return app.test_client()


# --- the root ---------------------------------------------------------------------------------------

def test_browser_at_root_is_sent_to_the_log_view(client):
    r = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/ui/")


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_api_clients_at_root_still_get_ollama_is_running(client, accept):
    r = client.get("/", headers={"Accept": accept} if accept else {})
    assert r.status_code == 200 and r.text == "Ollama is running"
    assert client.head("/", headers={"Accept": "text/html"}).status_code == 200


# --- who may see it ---------------------------------------------------------------------------------

def test_without_token_only_loopback_clients_are_served_and_others_are_told_why(client):
    assert client.get("/ui/").status_code == 200
    r = client.get("/ui/logs", environ_base=REMOTE)
    assert r.status_code == 403 and "ADMIN_TOKEN" in r.text and "only on this machine" in r.text
    r = client.get("/ui/api/logs", environ_base=REMOTE)
    assert r.status_code == 403 and "ADMIN_TOKEN" in r.json["error"]


def test_a_request_relayed_by_a_reverse_proxy_is_not_local(client):
    r = client.get("/ui/", headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 403


@pytest.fixture
def token_client(tmp_path):
    app = make_app(tmp_path, ADMIN_TOKEN="s3cret-admin")
    yield app.test_client()
    store_of(app).close()


def test_with_token_scripts_need_the_bearer_header(token_client):
    r = token_client.get("/ui/api/logs")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert token_client.get("/ui/api/logs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = token_client.get("/ui/api/logs", headers={"Authorization": "Bearer s3cret-admin"}, environ_base=REMOTE)
    assert r.status_code == 200 and r.json["items"] == []


def test_with_token_people_log_in_once_with_a_form_and_a_cookie(token_client):
    r = token_client.get("/ui/logs?model=x")
    assert r.status_code == 302 and "/ui/login" in r.headers["Location"]
    assert token_client.get("/ui/").status_code == 302  # loopback is not enough once a token is set
    r = token_client.post("/ui/login", data={"token": "nope", "next": "/ui/logs"})
    assert r.status_code == 401 and "not the proxy" in r.text
    r = token_client.post("/ui/login", data={"token": "s3cret-admin", "next": "/ui/logs?model=x"})
    assert r.status_code == 302 and r.headers["Location"] == "/ui/logs?model=x"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "s3cret-admin" not in cookie
    assert token_client.get("/ui/logs", environ_base=REMOTE).status_code == 200
    token_client.post("/ui/logout")
    assert token_client.get("/ui/logs").status_code == 302


def test_cookie_of_another_token_is_refused(tmp_path, token_client):
    from proxy.views import ui_auth

    token_client.set_cookie(ui_auth.COOKIE, ui_auth.session_value("other-token"), path="/ui")
    assert token_client.get("/ui/logs").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/api/chat", "javascript:x"])
def test_login_does_not_redirect_outside_the_log_view(token_client, target):
    r = token_client.post("/ui/login", data={"token": "s3cret-admin", "next": target})
    assert r.status_code == 302 and r.headers["Location"] == "/ui/"


# --- safety of the pages ------------------------------------------------------------------------------

PAGES = ("/ui/", "/ui/logs", "/ui/stats", "/ui/logs/{id}", "/ui/logs?q=script", "/ui/login")


def test_every_page_has_a_csp_and_no_inline_script_or_handler(app, client):
    ident = add(app, {"model": "m", "messages": [{"role": "user", "content": EVIL}]})
    for page in PAGES:
        r = client.get(page.format(id=ident))
        assert r.status_code in (200, 302), page
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        html = r.text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", html), page


def test_stored_markup_is_shown_as_text_never_as_markup(app, client):
    answer = Answer()
    answer.content.append(EVIL)
    ident = add(app, {"model": EVIL, "messages": [{"role": "system", "content": EVIL},
                                                  {"role": "user", "content": EVIL}]}, answer=answer)
    for page in (f"/ui/logs/{ident}", "/ui/logs", "/ui/stats"):
        html = client.get(page).text
        assert "<script>document.title" not in html and "<img src=x" not in html, page
    assert "&lt;script&gt;document.title" in client.get(f"/ui/logs/{ident}").text


# --- pages ------------------------------------------------------------------------------------------------

def test_exchange_page_reads_like_a_conversation(app, client):
    answer = Answer()
    answer.thinking.append("the user wants the light on")
    answer.content.append("Done.")
    answer.tool_calls.append({"function": {"name": "HassTurnOn", "arguments": {"name": "kitchen"}}})
    body = {"model": "llama3.2", "messages": [
        {"role": "system", "content": "You are a voice assistant for Home Assistant."},
        {"role": "user", "content": "what is on this photo?", "images": [PNG]},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "GetLiveContext",
                                                                           "arguments": {}}}]},
        {"role": "tool", "content": "kitchen light: off", "tool_name": "GetLiveContext"},
        {"role": "user", "content": "turn on the kitchen"}],
        "tools": [{"type": "function", "function": {"name": "HassTurnOn", "description": "Turns on a device",
                                                    "parameters": {"type": "object"}}}]}
    ident = add(app, body, answer=answer, upstream={**body, "model": "qwen3-8b"})
    html = client.get(f"/ui/logs/{ident}").text
    assert "You are a voice assistant for Home Assistant." in html
    assert 'class="msg role-system"' in html and 'class="msg role-tool"' in html
    assert f'src="data:image/png;base64,{PNG}"' in html
    assert "HassTurnOn" in html and "Turns on a device" in html
    assert re.search(r'<details class="thinking" id="answer-thinking">', html)  # collapsed
    assert "&#34;name&#34;: &#34;kitchen&#34;" in html or '"name": "kitchen"' in html
    assert 'id="diff"' in html and "qwen3-8b" in html  # what the proxy changed
    assert f"/ui/api/logs/{ident}?download=1" in html
    assert html.count('class="copy"') == 5  # four bodies and the curl command


def test_unchanged_request_says_so(app, client):
    ident = add(app, {"model": "m", "prompt": "hi"}, endpoint="/api/generate")
    assert 'id="unchanged"' in client.get(f"/ui/logs/{ident}").text


def test_missing_exchange_is_a_404_page(client):
    r = client.get("/ui/logs/999999")
    assert r.status_code == 404 and "There is no exchange 999999" in r.text


def test_list_shows_rows_filters_and_preview(app, client):
    add(app, {"model": "llama3", "messages": [{"role": "user", "content": "first question"}]})
    add(app, {"model": "qwen3", "messages": [{"role": "user", "content": "second question"}]},
        endpoint="/v1/chat/completions", front="openai", status=502, outcome="backend_error")
    html = client.get("/ui/logs").text
    assert html.index("second question") < html.index("first question")
    html = client.get("/ui/logs?model=llama3").text
    assert "first question" in html and "second question" not in html
    assert "second question" in client.get("/ui/logs?status=5xx").text
    assert "first question" not in client.get("/ui/logs?q=second").text


def test_stats_page_draws_svg_charts(app, client):
    add(app, {"model": "llama3", "messages": [{"role": "user", "content": "x"}]})
    html = client.get("/ui/stats?window=24h").text
    assert '<svg class="chart" id="chart-requests"' in html and "<rect" in html
    assert 'id="chart-tokens"' in html or "No requests" in html


def test_overview_masks_secrets_and_shows_counts(tmp_path):
    app = make_app(tmp_path, BACKEND_API_KEY="sk-very-secret-key")
    try:
        client = app.test_client()
        client.post("/api/chat", json={"model": "stub", "stream": False,
                                       "messages": [{"role": "user", "content": "hi"}]})
        wait_for(lambda: store_of(app).writer.written >= 1)
        html = client.get("/ui/").text
        assert "sk-very-secret-key" not in html and "********" in html
        assert re.search(r'id="counts-hour">.*?<dt>Requests</dt><dd>1</dd>', html, re.S)
    finally:
        store_of(app).close()


def test_log_off_says_so(tmp_path):
    app = make_app(tmp_path, LOG_ENABLED="false")
    client = app.test_client()
    assert client.get("/ui/").status_code == 200
    r = client.get("/ui/logs")
    assert r.status_code == 404 and "LOG_ENABLED=false" in r.text


# --- JSON -------------------------------------------------------------------------------------------------

def test_api_lists_newest_first_with_filters_and_pages(app, client):
    for i in range(5):
        add(app, {"model": "a" if i % 2 else "b", "messages": [{"role": "user", "content": f"n{i}"}]})
    data = client.get("/ui/api/logs?limit=2").json
    assert [r["preview"] for r in data["items"]] == ["n4", "n3"] and data["next"]
    data = client.get(data["next_url"]).json
    assert [r["preview"] for r in data["items"]] == ["n2", "n1"]
    assert [r["preview"] for r in client.get("/ui/api/logs?model=b").json["items"]] == ["n4", "n2", "n0"]
    data = client.get("/ui/api/logs?endpoint=/api/chat&limit=4").json  # a filter named like url_for's argument
    assert "endpoint=%2Fapi%2Fchat" in data["next_url"] and len(client.get(data["next_url"]).json["items"]) == 1
    assert client.get("/ui/logs?endpoint=/api/chat&limit=2").status_code == 200


def test_api_one_exchange_has_bodies_timings_and_tokens(app, client):
    answer = Answer()
    answer.content.append("ok")
    answer.prompt_tokens, answer.completion_tokens = 12, 3
    ident = add(app, {"model": "m", "messages": [{"role": "user", "content": "q"}]}, answer=answer)
    data = client.get(f"/ui/api/logs/{ident}").json
    assert set(data["bodies"]) == {"client_request", "upstream_request", "upstream_response", "client_response"}
    assert json.loads(data["bodies"]["client_request"]["text"])["messages"][0]["content"] == "q"
    assert data["prompt_tokens"] == 12 and data["completion_tokens"] == 3 and data["answer"]["content"] == "ok"
    assert "duration_ms" in data and "ttfb_ms" in data
    r = client.get(f"/ui/api/logs/{ident}?download=1")
    assert r.headers["Content-Disposition"] == f'attachment; filename="exchange-{ident}.json"'
    assert client.get("/ui/api/logs/424242").status_code == 404


def test_export_time_range_as_json_lines(app, client):
    first = add(app, {"model": "m", "messages": [{"role": "user", "content": "one"}]})
    add(app, {"model": "m", "messages": [{"role": "user", "content": "two"}]})
    r = client.get("/ui/api/export")
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.data.splitlines()]
    assert [x["preview"] for x in lines] == ["one", "two"] and "bodies" in lines[0]
    row = client.get(f"/ui/api/logs/{first}").json
    r = client.get(f"/ui/api/export?since={row['started'] + 1e-3}")
    assert [json.loads(x)["preview"] for x in r.data.splitlines()] == ["two"]
    assert client.get("/ui/api/export?until=2000-01-01T00:00").data == b""
    assert client.get("/ui/api/export?since=yesterday").status_code == 400
