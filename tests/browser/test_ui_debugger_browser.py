"""The log view as a debugger in headless Chromium, at a desktop (1366x900) and a phone (390x844) size: no page
scrolls sideways, a long agent conversation's answer is on the first screen, markdown is rendered and stored
script stays inert, the keyboard walks the list, a replay to another model makes a linked exchange (and a
cross-site post is refused), and a slow stream shows up as a running row that completes."""
from __future__ import annotations

import threading

import pytest
import requests

from tests.support.store import store_of, wait_for, wait_rows

SIZES = {"desktop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}
LONG = "This paragraph is long on purpose, as agent prompts are. " * 40


@pytest.fixture
def served(tmp_path):
    """A proxy over a real socket (stub backend, 40 ms between streamed words, MODEL_MAP alias) with three
    exchanges: a 61-message agent conversation answered in markdown, a stored <script>, a failed one."""
    from werkzeug.serving import make_server

    from proxy import create_app
    from proxy.config import Settings

    app = create_app(Settings.from_env({"BACKEND_TYPE": "stub", "STUB_DELAY_MS": "40", "LOG_LEVEL": "WARNING",
                                        "LOG_CLEANUP_MINUTES": "0", "MODEL_MAP": "stub-two=stub",
                                        "DATABASE_URL": f"sqlite:///{tmp_path}/debugger.db"}))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    messages = [{"role": "system", "content": LONG}]
    for i in range(30):
        messages += [{"role": "user", "content": f"step {i}: {LONG}"}, {"role": "assistant", "content": LONG}]
    post = lambda body: requests.post(url + "/api/chat", json={"model": "stub", "stream": False, **body})  # noqa: E731
    assert post({"messages": messages}).status_code == 200  # 61 messages
    assert post({"messages": [{"role": "user", "content": "# Heading\n\n<script>window.__pwned = 1</script> "
                                                          "**bold** [link](javascript:window.__pwned=2)"}]}).ok
    assert post({"model": "no-such-model", "messages": []}).status_code == 404
    wait_rows(store_of(app), 3)
    yield url
    server.shutdown()
    server.server_close()
    store_of(app).close()
    app.extensions["llm_proxy"].extras["shutdown"]()


@pytest.fixture(params=list(SIZES))
def sized(request, browser):
    context = browser.new_context(viewport=SIZES[request.param])
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def overflow(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def test_no_page_scrolls_sideways(served, sized):
    for path in ("/ui/", "/ui/logs", "/ui/logs?status=50x", "/ui/logs/1", "/ui/logs/2", "/ui/logs/3", "/ui/stats",
                 "/ui/stats?window=7d", "/ui/compare?a=1&b=2", "/ui/logs/1/replay"):
        sized.goto(served + path)
        assert overflow(sized) <= 0, path


def test_the_long_conversations_answer_is_on_the_first_screen(served, sized):
    sized.goto(served + "/ui/logs/1")
    box = sized.locator("#answer").bounding_box()
    assert box is not None and box["y"] < sized.viewport_size["height"]
    assert sized.locator("#conversation details.msg").count() == 61
    assert sized.locator("#conversation details.msg[open]").count() <= 2
    sized.locator("#turn-5 > summary").click()
    assert sized.locator("#turn-5").get_attribute("open") is not None


def test_markdown_is_rendered_and_a_stored_script_is_inert(served, page):
    page.goto(served + "/ui/logs/2")
    turn = page.locator("#turn-1")
    assert turn.locator("h1").inner_text() == "Heading" and turn.locator("strong").inner_text() == "bold"
    assert page.evaluate("window.__pwned") is None
    assert turn.locator("a[href^=javascript]").count() == 0
    assert "<script>window.__pwned = 1</script>" in turn.inner_text()
    page.click("#raw-toggle")  # the text as written
    assert "**bold**" in turn.inner_text()


def test_keyboard_walks_the_list_and_steps_between_exchanges(served, page):
    page.goto(served + "/ui/logs")
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert page.locator("#log-rows tr.sel").get_attribute("data-id") == "2"
    page.keyboard.press("k")
    assert page.locator("#log-rows tr.sel").get_attribute("data-id") == "3"
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "f-q"
    page.keyboard.press("Escape")
    page.locator("h1").click()
    page.keyboard.press("k")  # still the first row
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/ui/logs/3")
    with page.expect_navigation():
        page.keyboard.press("]")
    assert page.url.endswith("/ui/logs/2")
    with page.expect_navigation():
        page.keyboard.press("[")
    assert page.url.endswith("/ui/logs/3")
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()


def test_the_theme_toggle_is_remembered(served, page):
    page.goto(served + "/ui/logs")
    page.click("#theme-toggle")
    chosen = page.evaluate("document.documentElement.getAttribute('data-theme')")
    page.reload()
    assert page.evaluate("document.documentElement.getAttribute('data-theme')") == chosen


def test_replay_to_another_model_opens_a_comparison_with_a_linked_exchange(served, page):
    page.goto(served + "/ui/logs/2")
    page.click("#replay")
    page.fill("#r-model", "stub-two")
    with page.expect_navigation():
        page.click("#r-send")
    assert "/ui/compare?a=2&b=4" in page.url
    assert page.locator("#compare section").count() == 2
    row = requests.get(served + "/ui/api/logs/4").json()
    assert row["replay_of"] == 2 and row["model"] == "stub-two"
    page.goto(served + "/ui/logs/2")
    assert "replayed as #4" in page.locator("#strip").inner_text()


def test_a_cross_site_replay_post_is_refused(served, page):
    page.goto(served + "/ui/logs/2/replay")
    token = page.locator("input[name=csrf]").input_value()
    r = page.request.post(served + "/ui/logs/2/replay", form={"body": "{}", "csrf": "f" * 64},
                          headers={"Origin": served})
    assert r.status == 403 and "CSRF" in r.text()
    r = page.request.post(served + "/ui/logs/2/replay", form={"body": "{}", "csrf": token},
                          headers={"Origin": "http://evil.example"})
    assert r.status == 403


def test_a_slow_stream_shows_as_a_running_row_that_completes(served, page):
    from playwright.sync_api import expect  # importable whenever ``page`` is (conftest skips otherwise)

    page.goto(served + "/ui/logs")
    page.check("#live")
    done = threading.Event()

    def stream():
        body = {"model": "stub", "stream": True, "messages": [{"role": "user", "content": "tell me a long story " + "word " * 80}]}
        with requests.post(served + "/api/chat", json=body, stream=True) as r:
            for _ in r.iter_lines():
                pass
        done.set()

    threading.Thread(target=stream, daemon=True).start()
    running = page.locator("#log-rows tr.running")
    running.first.wait_for(timeout=10_000)
    assert "streaming" in running.first.inner_text() or "waiting" in running.first.inner_text()
    follower = page.context.new_page()  # the running request opened in a second tab: its answer grows
    follower.goto(served + running.first.locator("td.preview a").get_attribute("href"))
    expect(follower.locator("#running-answer")).to_contain_text("word", timeout=15_000)  # locators: no eval (CSP)
    follower.wait_for_url("**/ui/logs/4", timeout=15_000)  # when it ends, the page opens its log entry
    assert done.wait(30)
    page.wait_for_selector("#log-rows tr.new", timeout=10_000)
    expect(page.locator("#log-rows tr.running")).to_have_count(0, timeout=10_000)
    assert "tell me a long story" in page.locator("#log-rows tr[data-id]").first.inner_text()


def test_an_image_enlarges_on_click(served, page):
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    r = requests.post(served + "/api/chat", json={"model": "stub", "stream": False, "messages": [
        {"role": "user", "content": "what is this?", "images": [png]}]})
    assert r.status_code == 200
    wait_for(lambda: requests.get(served + "/ui/api/logs/4").status_code == 200)  # written in the background
    page.goto(served + "/ui/logs/4")
    image = page.locator("#turn-1 img.thumb")
    assert "big" not in (image.get_attribute("class") or "")
    image.click()
    assert "big" in image.get_attribute("class")


def test_the_first_exchange_of_the_list_is_on_the_first_screen(served, sized):
    sized.goto(served + "/ui/logs")
    box = sized.locator("#log-rows tr[data-id]").first.bounding_box()
    assert box is not None and box["y"] + 40 < sized.viewport_size["height"]
    sized.goto(served + "/ui/logs?model=stub")  # filters in use stay in sight
    assert sized.locator("#f-model").is_visible()
