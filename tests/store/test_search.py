"""Reading the log: filters, newest-first keyset pages, live mode's after_id, and full-text search
(SQLite FTS5, PostgreSQL tsvector) that never chokes on what a person types."""
from __future__ import annotations

import time

import pytest

from proxy.store import search
from proxy.store.record import Record
from proxy.streaming import Answer
from tests.support.store import make_exchange, open_store, wait_for


@pytest.fixture
def filled(db_url):
    store = open_store(db_url)
    now = time.time() - 500
    specs = [("the kitchen light is off", "/api/chat", "llama3", 200, "ok"),
             ("summarise this contract", "/v1/chat/completions", "qwen3", 200, "ok"),
             ("translate to Grüße", "/v1/chat/completions", "qwen3", 404, "client_error"),
             ("why is the sky blue", "/api/generate", "llama3", 502, "backend_error")]
    for i, (text, endpoint, model, status, outcome) in enumerate(specs):
        answer = Answer()
        answer.content.append(f"answer number {i} about photosynthesis" if i == 3 else f"answer {i}")
        store.writer.submit(Record.of(make_exchange(text, endpoint=endpoint, model=model, status=status,
                                                    outcome=outcome, started=now + i, answer=answer,
                                                    backend_name="gpu" if i % 2 else "nas",
                                                    session_id="s-odd" if i % 2 else None)))
    wait_for(lambda: store.writer.written == 4)
    yield store
    store.close()


def previews(store, **filters) -> list[str]:
    return [r["preview"] for r in store.read(search.list_exchanges, search.Filters(**filters))["items"]]


def test_a_session_lists_its_exchanges_oldest_first_with_totals(filled):
    page = filled.read(search.session_exchanges, "s-odd")
    assert [r["preview"] for r in page["items"]] == ["summarise this contract", "why is the sky blue"]
    assert page["totals"]["exchanges"] == 2 and not page["more"]
    assert filled.read(search.session_exchanges, "none")["items"] == []


def test_newest_first(filled):
    assert previews(filled) == ["why is the sky blue", "translate to Grüße", "summarise this contract",
                                "the kitchen light is off"]


@pytest.mark.parametrize("filters, expected", [
    ({"model": "llama3"}, ["why is the sky blue", "the kitchen light is off"]),
    ({"endpoint": "/v1/chat/completions"}, ["translate to Grüße", "summarise this contract"]),
    ({"status": "4xx"}, ["translate to Grüße"]),
    ({"status": "502"}, ["why is the sky blue"]),
    ({"status": "error"}, ["why is the sky blue", "translate to Grüße"]),
    ({"outcome": "ok", "model": "qwen3"}, ["summarise this contract"]),
    ({"client": "10.9.9.9"}, []),
    ({"backend": "gpu"}, ["why is the sky blue", "summarise this contract"]),
    ({"backend": "nas", "status": "error"}, ["translate to Grüße"]),
    ({"session": "s-odd"}, ["why is the sky blue", "summarise this contract"]),
    ({"session": "s-odd", "status": "error"}, ["why is the sky blue"]),
])
def test_filters(filled, filters, expected):
    assert previews(filled, **filters) == expected


@pytest.mark.parametrize("q, expected", [
    ("kitchen", ["the kitchen light is off"]),
    ("KITCHEN light", ["the kitchen light is off"]),
    ("photosynthesis", ["why is the sky blue"]),  # words of the answer are found too
    ("contract summarise", ["summarise this contract"]),
    ("nothing-like-this", []),
])
def test_full_text_search(filled, q, expected):
    assert previews(filled, q=q) == expected


@pytest.mark.parametrize("q", ['"', "a AND OR NOT", "kitchen*", "(", "NEAR(x y)", "'; DROP TABLE exchanges; --",
                               "-kitchen", "*", "col:kitchen"])
def test_search_accepts_anything_a_person_types(filled, q):
    previews(filled, q=q)  # no exception
    assert len(previews(filled)) == 4


def test_search_combines_with_filters(filled):
    assert previews(filled, q="answer", model="qwen3") == ["translate to Grüße", "summarise this contract"]


def test_keyset_pages_cover_every_row_once(db_url):
    store = open_store(db_url)
    try:
        base = time.time() - 1000
        for i in range(120):
            store.writer.submit(Record.of(make_exchange(f"row {i}", started=base + i // 3)))  # equal times too
        wait_for(lambda: store.writer.written == 120)
        seen, cursor, pages = [], "", 0
        while True:
            page = store.read(search.list_exchanges, search.Filters(limit=50, before=cursor))
            seen.extend(r["id"] for r in page["items"])
            pages += 1
            if not page["next"]:
                break
            cursor = page["next"]
        assert pages == 3 and len(seen) == 120 and len(set(seen)) == 120
        assert seen == sorted(seen, reverse=True)
    finally:
        store.close()


def test_live_mode_gets_only_rows_after_an_id(filled):
    newest = filled.read(search.list_exchanges, search.Filters(limit=1))["items"][0]["id"]
    assert filled.read(search.list_exchanges, search.Filters(after_id=newest))["items"] == []
    filled.writer.submit(Record.of(make_exchange("a new one")))
    wait_for(lambda: filled.writer.written == 5)
    assert [r["preview"] for r in filled.read(search.list_exchanges, search.Filters(after_id=newest))["items"]] \
        == ["a new one"]


def test_fts5_query_quotes_every_word():
    assert search.fts5_query('kitchen "light" AND x*') == '"kitchen" "light" "AND" "x"*'
    assert search.fts5_query('say "hi') == '"say" "hi"'
    assert search.fts5_query("   ") == ""


def test_counts_of_the_last_hour_and_day(filled):
    figures = filled.read(search.counts, time.time())
    assert figures["hour"]["requests"] == 4 and figures["hour"]["errors"] == 2
    assert figures["day"]["requests"] == 4


def test_search_results_page_through_every_match_once(db_url):
    store = open_store(db_url)
    try:
        base = time.time() - 1000
        for i in range(30):
            word = "needle" if i % 3 == 0 else "hay"
            store.writer.submit(Record.of(make_exchange(f"{word} {i}", started=base + i)))
        wait_for(lambda: store.writer.written == 30)
        seen, cursor = [], ""
        while True:
            page = store.read(search.list_exchanges, search.Filters(q="needle", limit=3, before=cursor))
            seen.extend(r["preview"] for r in page["items"])
            if not page["next"]:
                break
            cursor = page["next"]
        assert seen == [f"needle {i}" for i in range(27, -1, -3)]
    finally:
        store.close()
