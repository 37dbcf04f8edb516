"""The log view as a debugger over Flask's test client: the new list filters and a filter that cannot match,
stepping through a filtered list, exports, compare, the running list, and replay (CSRF and Origin checks, a
linked exchange through the app's own gate)."""
from __future__ import annotations

import csv
import io
import re

import pytest

from proxy.streaming import Answer
from tests.support.store import wait_for
from tests.views.test_ui import add, make_app, store_of

ORIGIN = {"Origin": "http://localhost"}


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    yield app
    store_of(app).close()


@pytest.fixture
def client(app):
    return app.test_client()


def chat(client, text: str, model: str = "stub", **extra):
    r = client.post("/api/chat", json={"model": model, "stream": False,
                                       "messages": [{"role": "user", "content": text}], **extra})
    assert r.status_code == 200, r.text
    return r


def ids(client, query: str) -> list[int]:
    return [r["id"] for r in client.get("/ui/api/logs?" + query).json["items"]]


def test_new_filters_select_by_upstream_model_agent_cached_and_first_token(app, client):
    one = add(app, {"model": "a", "messages": [{"role": "user", "content": "x"}]})
    two = add(app, {"model": "b", "messages": [{"role": "user", "content": "y"}]})
    assert ids(client, "upstream=b") == [two] and ids(client, "agent=HomeAssistant") == [two, one]
    assert ids(client, "cached=1") == [] and ids(client, "cached=0") == [two, one]
    assert ids(client, "ttfc_min=0") == []  # whole answers have no first chunk
    assert client.get("/ui/api/logs?cached=maybe").status_code == 400


def test_a_filter_that_cannot_match_says_so_instead_of_an_empty_list(client):
    r = client.get("/ui/logs?status=50x")
    assert r.status_code == 400 and 'id="cannot-match"' in r.text and "status must be a code" in r.text
    r = client.get("/ui/logs?status=999")
    assert r.status_code == 200 and "HTTP statuses run from 100 to 599" in r.text
    assert "Nothing can match these filters" in r.text
    assert 'id="cannot-match"' not in client.get("/ui/logs?status=500").text


def test_failed_rows_show_their_error_and_are_one_click_away(app, client):
    add(app, {"model": "m", "messages": []}, status=502, outcome="backend_error")
    store_of(app).read(lambda m: m.Exchange.update(error="the backend hung up").execute())
    html = client.get("/ui/logs").text
    assert 'class="err"' in html and "the backend hung up" in html
    assert 'id="quick-failed"' in html and 'href="/ui/logs?status=error"' in html
    assert 'href="/ui/logs?outcome=cancelled"' in html


def test_stepping_from_an_exchange_keeps_the_list_filters(app, client):
    a = add(app, {"model": "keep", "messages": []})
    add(app, {"model": "other", "messages": []})
    c = add(app, {"model": "keep", "messages": []})
    html = client.get(f"/ui/logs/{c}?model=keep").text
    assert f'href="/ui/logs/{a}?model=keep" id="older"' in html and 'id="newer"' not in html
    assert 'href="/ui/logs?model=keep" id="back"' in html
    assert f'href="/ui/logs/{c}?model=keep"' in client.get("/ui/logs?model=keep").text


def test_exchange_page_has_a_summary_strip_and_the_answer_first(app, client):
    answer = Answer()
    answer.content.append("**Done.** The light is on.")
    ident = add(app, {"model": "qwen", "messages": [{"role": "user", "content": f"turn {i}"} for i in range(61)]},
                answer=answer, upstream={"model": "qwen-8b", "messages": []})
    html = client.get(f"/ui/logs/{ident}").text
    for part in ('id="s-model"', "qwen → qwen-8b", 'id="s-status"', 'id="jump-answer"', "rewritten"):
        assert part in html, part
    assert html.index('id="answer"') < html.index('id="conversation"')
    assert "<strong>Done.</strong>" in html  # markdown rendered
    assert html.count("<details class=\"msg role-user\" id=\"turn-") == 61 and html.count(" open>") <= 2


def test_exports_give_markdown_csv_and_curl_without_secrets(app, client):
    ident = add(app, {"model": "m", "messages": [{"role": "user", "content": "hello there"}]})
    md = client.get(f"/ui/logs/{ident}/markdown")
    assert md.status_code == 200 and "## 1. user\n\nhello there" in md.text and "attachment" in \
        md.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(client.get("/ui/export.csv?model=m").text)))
    assert [r["id"] for r in rows] == [str(ident)]
    assert "hello there" in client.get("/ui/export.md").text
    page = client.get(f"/ui/logs/{ident}", headers={"Authorization": "Bearer sk-secret"}).text
    assert "$LLM_PROXY_KEY" in page and "sk-secret" not in page


def test_compare_shows_both_answers_and_a_word_diff(app, client):
    first, second = Answer(), Answer()
    first.content.append("The capital is Paris.")
    second.content.append("The capital is Lyon.")
    a = add(app, {"model": "m", "messages": []}, answer=first)
    b = add(app, {"model": "n", "messages": []}, answer=second)
    html = client.get(f"/ui/compare?a={a}&b={b}").text
    assert "<del>Paris</del><ins>Lyon</ins>" in html
    assert "model renamed (m → n)" in html
    assert "There is no exchange 999" in client.get(f"/ui/compare?a={a}&b=999").text


def test_the_running_list_is_empty_when_nothing_runs(client):
    assert client.get("/ui/api/running").json == {"items": []}
    r = client.get("/ui/api/running/nope").json
    assert r == {"request_id": "nope", "done": True, "log_url": None}


def replay_token(client, ident: int) -> str:
    html = client.get(f"/ui/logs/{ident}/replay").text
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', html).group(1)


def test_replay_is_refused_without_the_csrf_token_or_from_another_site(app, client):
    chat(client, "first question")
    wait_for(lambda: store_of(app).read(lambda m: m.Exchange.select().count()) == 1)
    token = replay_token(client, 1)
    form = {"body": '{"model": "stub", "stream": false, "messages": []}', "csrf": token}
    r = client.post("/ui/logs/1/replay", data={**form, "csrf": "0" * 64}, headers=ORIGIN)
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post("/ui/logs/1/replay", data=form, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = client.post("/ui/logs/1/replay", data=form)  # no Origin, no Sec-Fetch-Site
    assert r.status_code == 403 and "Origin" in r.text


def test_replay_to_another_model_is_a_linked_exchange(tmp_path):
    app = make_app(tmp_path, MODEL_MAP="stub-two=stub")
    client = app.test_client()
    chat(client, "which model?")
    store = store_of(app)
    wait_for(lambda: store.read(lambda m: m.Exchange.select().count()) == 1)
    form = {"body": client.get("/ui/api/logs/1").json["bodies"]["client_request"]["text"], "model": "stub-two",
            "csrf": replay_token(client, 1)}
    r = client.post("/ui/logs/1/replay", data=form, headers=ORIGIN)
    assert r.status_code == 303, r.text
    new = int(re.search(r"b=(\d+)", r.headers["Location"]).group(1))
    row = client.get(f"/ui/api/logs/{new}").json
    assert row["replay_of"] == 1 and row["model"] == "stub-two" and row["user_agent"] == "llm-proxy-replay"
    assert f"replayed as #{new}" in client.get("/ui/logs/1").text
    assert 'id="s-replay-of"' in client.get(f"/ui/logs/{new}").text
    store.close()


def test_replay_goes_through_the_gate_so_a_key_is_needed_when_keys_are_set(tmp_path):
    app = make_app(tmp_path, API_KEYS="ops:sk-ops-1")
    client = app.test_client()
    try:
        r = client.post("/api/chat", json={"model": "stub", "stream": False, "messages": []},
                        headers={"Authorization": "Bearer sk-ops-1"})
        assert r.status_code == 200
        wait_for(lambda: store_of(app).read(lambda m: m.Exchange.select().count()) == 1)
        form = {"body": '{"model": "stub", "stream": false, "messages": []}', "csrf": replay_token(client, 1)}
        assert 'id="r-key"' in client.get("/ui/logs/1/replay").text
        r = client.post("/ui/logs/1/replay", data=form, headers=ORIGIN)
        assert "401" in r.text or "API key" in r.text
        r = client.post("/ui/logs/1/replay", data={**form, "key": "sk-ops-1"}, headers=ORIGIN)
        assert r.status_code == 303
        new = int(re.search(r"b=(\d+)", r.headers["Location"]).group(1))
        assert client.get(f"/ui/api/logs/{new}").json["key_name"] == "ops"
    finally:
        store_of(app).close()


def test_replay_to_a_chosen_backend_of_several(tmp_path):
    from tests.views.test_ui_backends import pool_app

    app = pool_app(tmp_path, '[backends.one]\ntype = "stub"\n[backends.two]\ntype = "stub"\n'
                             '[routing]\nstrategy = "round-robin"\n')
    client = app.test_client()
    try:
        chat(client, "where do I go?")
        wait_for(lambda: store_of(app).read(lambda m: m.Exchange.select().count()) == 1)
        first = client.get("/ui/api/logs/1").json["backend_name"]
        other = "two" if first == "one" else "one"
        html = client.get("/ui/logs/1/replay").text
        assert 'id="r-backend"' in html and f'<option value="{other}"' in html
        form = {"body": '{"model": "stub", "stream": false, "messages": [{"role": "user", "content": "hi"}]}',
                "csrf": replay_token(client, 1)}
        for backend in (other, other, first):
            r = client.post("/ui/logs/1/replay", data={**form, "backend": backend}, headers=ORIGIN)
            assert r.status_code == 303, r.text
            new = int(re.search(r"b=(\d+)", r.headers["Location"]).group(1))
            assert client.get(f"/ui/api/logs/{new}").json["backend_name"] == backend
        r = client.post("/ui/logs/1/replay", data={**form, "backend": "three"}, headers=ORIGIN)
        assert r.status_code == 503 and "three" in r.text
    finally:
        store_of(app).close()
        app.extensions["llm_proxy"].extras["shutdown"]()


def test_agent_front_requests_read_as_turns_on_the_exchange_page(app, client):
    anthropic = {"model": "claude-local", "max_tokens": 512, "system": [{"type": "text", "text": "You are terse."}],
                 "messages": [{"role": "user", "content": "read it"},
                              {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "Read",
                                                                 "input": {"file_path": "a.py"}}]},
                              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9",
                                                            "content": "print(1)", "is_error": True}]}]}
    html = client.get(f"/ui/logs/{add(app, anthropic, endpoint='/v1/messages', front='anthropic')}").text
    assert 'class="msg role-system"' in html and "You are terse." in html
    assert '<code class="fn">Read</code>' in html and "tool result (error)" in html and "toolu_9" in html
    responses = {"model": "codex-local", "instructions": "Be careful.",
                 "input": [{"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch",
                            "input": "*** Begin Patch\n-old line\n+new line\n*** End Patch"}]}
    html = client.get(f"/ui/logs/{add(app, responses, endpoint='/v1/responses', front='responses')}").text
    assert '<span class="del">-old line</span>' in html and '<span class="add">+new line</span>' in html
