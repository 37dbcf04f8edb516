"""The log view in a real browser (headless Debian Chromium driven by Playwright): open the list, filter,
search, open an exchange and see its system prompt and tool call, live mode, that a stored <script>
never runs, and that the token is demanded when set."""
from __future__ import annotations

import pytest
import requests

from tests.support.store import store_of, wait_rows

EVIL = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"
SYSTEM = "You are a voice assistant for Home Assistant. Answer briefly."


def chat(setup, text: str, *, system: str | None = None, tools: list | None = None, front: str = "openai"):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    body = {"model": setup.model, "messages": messages, "stream": False, **({"tools": tools} if tools else {})}
    path = "/v1/chat/completions" if front == "openai" else "/api/chat"
    r = requests.post(setup.url + path, json=body)
    assert r.status_code == 200, r.text
    return r


@pytest.fixture
def recorded(backend_setup, tmp_path):
    """A proxy (OpenAI fake behind it) with three exchanges: a tool call, a stored <script>, a plain one."""
    setup = backend_setup("openai", DATABASE_URL=f"sqlite:///{tmp_path}/browser.db")
    tools = [{"type": "function", "function": {"name": "HassTurnOn", "description": "Turns on a device",
                                               "parameters": {"type": "object"}}}]
    setup.script_chat((), tool_calls=[("HassTurnOn", '{"name": "kitchen light"}', "call_7")])
    chat(setup, "turn on the kitchen light", system=SYSTEM, tools=tools, front="ollama")
    setup.script_chat(("Fine.",))
    chat(setup, EVIL)
    chat(setup, "what is the capital of France")
    wait_rows(store_of(setup.proxy), 3)
    yield setup
    store_of(setup.proxy).close()


def rows(page):
    return page.locator("#log-rows tr[data-id]")


def test_list_filter_search_and_open_an_exchange(recorded, page):
    page.goto(recorded.url + "/ui/logs")
    assert rows(page).count() == 3
    page.fill("#f-q", "kitchen")
    with page.expect_navigation():
        page.click("#apply")
    assert "q=kitchen" in page.url and rows(page).count() == 1
    page.fill("#f-q", "")
    page.fill("#f-endpoint", "/v1/chat/completions")
    with page.expect_navigation():
        page.click("#apply")
    assert "endpoint=%2Fv1%2Fchat%2Fcompletions" in page.url and rows(page).count() == 2
    page.goto(recorded.url + "/ui/logs?endpoint=/api/chat")
    rows(page).first.locator("td.preview a").click()
    page.wait_for_url("**/ui/logs/*")
    system = page.locator(".msg.role-system")
    assert SYSTEM in system.inner_text()
    answer = page.locator("#answer")
    assert "HassTurnOn" in answer.inner_text() and "kitchen light" in answer.inner_text()
    assert "HassTurnOn" in page.locator("#tools summary").inner_text()
    assert page.locator("#unchanged").is_visible()  # the same JSON in another key order: nothing changed
    assert "translated" in page.locator("#response-diff-summary").inner_text()  # the answer went Ollama's way
    button = page.locator("button.copy").first
    button.click()
    # the clipboard API answers through a promise: wait for the mark instead of reading it at once
    page.locator("button.copy.done").wait_for(state="attached", timeout=5000)
    assert page.locator("button.copy.done").count() == 1 and button.inner_text() == "copied"


def test_a_stored_script_does_not_run(recorded, page):
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    page.goto(recorded.url + "/ui/logs")
    assert page.evaluate("window.__pwned") is None
    assert EVIL[:20] in page.locator("#log-rows").inner_text()  # shown as text
    page.locator("td.preview a", has_text="window.__pwned").first.click()
    page.wait_for_url("**/ui/logs/*")
    page.wait_for_load_state("load")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src=x]").count() == 0
    assert page.dialogs == []
    assert "<script>window.__pwned = 1</script>" in page.locator(".msg.role-user").inner_text()


def test_live_mode_shows_new_exchanges_as_they_arrive(recorded, page):
    page.goto(recorded.url + "/ui/logs")
    page.check("#live")
    chat(recorded, "a brand new question")
    page.wait_for_selector("#log-rows tr.new", timeout=10_000)
    assert "a brand new question" in rows(page).first.inner_text()
    assert rows(page).count() == 4


def test_the_token_is_demanded_when_set(backend_setup, tmp_path, page):
    setup = backend_setup("openai", DATABASE_URL=f"sqlite:///{tmp_path}/token.db", ADMIN_TOKEN="letmein-42")
    try:
        page.goto(setup.url + "/ui/logs")
        page.wait_for_url("**/ui/login**")
        page.fill("#token", "wrong")
        page.click("form.login button")
        assert "not the proxy" in page.locator("#login-error").inner_text()
        page.fill("#token", "letmein-42")
        page.click("form.login button")
        page.wait_for_url("**/ui/logs")
        assert page.locator("h1").inner_text() == "Log"
        page.click("form.logout button")
        page.wait_for_url("**/ui/login**")
    finally:
        store_of(setup.proxy).close()


@pytest.fixture
def pool_served(tmp_path):
    """A proxy over a real socket with BACKENDS_FILE: dead (refuses connections, tried first) and local (the
    stub), and one chat answered by local after dead failed."""
    import threading

    from werkzeug.serving import make_server

    from proxy import create_app
    from proxy.config import Settings
    from tests.support import free_port

    path = tmp_path / "backends.toml"
    path.write_text(f'[backends.dead]\ntype = "openai"\nurl = "http://127.0.0.1:{free_port()}"\nmodels = ["stub"]\n'
                    'weight = 9\n[backends.local]\ntype = "stub"\n[routing]\nstrategy = "weighted"\n')
    app = create_app(Settings.from_env({"BACKENDS_FILE": str(path), "STUB_DELAY_MS": "0", "LOG_LEVEL": "WARNING",
                                        "LOG_CLEANUP_MINUTES": "0", "DATABASE_URL": f"sqlite:///{tmp_path}/pool.db"}))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    r = requests.post(url + "/api/chat", json={"model": "stub", "stream": False,
                                               "messages": [{"role": "user", "content": "who answers?"}]})
    assert r.status_code == 200, r.text
    wait_rows(store_of(app), 1)
    yield url
    server.shutdown()
    server.server_close()
    store_of(app).close()
    app.extensions["llm_proxy"].extras["shutdown"]()


def test_the_attempts_show_on_an_exchange_page(pool_served, page):
    page.goto(pool_served + "/ui/")
    assert page.locator("#backends tr[data-backend]").count() == 2
    page.locator("#backends tr[data-backend=local] a").click()
    page.wait_for_url("**/ui/logs?backend=local")
    assert page.locator("#f-backend").input_value() == "local" and rows(page).count() == 1
    rows(page).first.locator("td.preview a").click()
    page.wait_for_url("**/ui/logs/*")
    attempts = page.locator("#attempts")
    assert attempts.is_visible()
    failed = attempts.locator("tr.failed").inner_text()
    assert "dead" in failed and "refused" in failed and "ms" in failed
    assert "local" in attempts.locator("tr.answered").inner_text()
