"""Sessions in the log view: the list filters by ``?session=``, the session page shows the session's
exchanges in the order they started with tokens, times and status (an attached twin marked), and the
exchange page links to its session."""
from __future__ import annotations

import time

import pytest

from proxy.store.record import Record
from proxy.streaming import Answer
from tests.support.store import make_exchange, wait_for
from tests.views.test_ui import make_app, store_of

EVIL = "<script>alert(1)</script>"


def write(app, *exchanges) -> list[int]:
    store = store_of(app)
    before = store.writer.written
    for exchange in exchanges:
        store.writer.submit(Record.of(exchange))
    wait_for(lambda: store.writer.written >= before + len(exchanges))
    return store.read(lambda m: [r.id for r in m.Exchange.select().order_by(m.Exchange.id)])


def answered(prompt: int, completion: int) -> Answer:
    answer = Answer()
    answer.prompt_tokens, answer.completion_tokens = prompt, completion
    return answer


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    base = time.time() - 60
    write(app,
          make_exchange("second turn", started=base + 2, session_id="s-1", answer=answered(300, 20)),
          make_exchange("other session", started=base + 1, session_id="s-2"),
          make_exchange("first turn", started=base, session_id="s-1", answer=answered(100, 10)),
          make_exchange("second turn", started=base + 3, session_id="s-1", outcome="attached",
                        attempts=[{"attached_to": "req-leader"}]))
    yield app
    store_of(app).close()


def test_the_log_list_filters_by_session(app):
    client = app.test_client()
    html = client.get("/ui/logs?session=s-1").text
    assert "first turn" in html and "other session" not in html
    items = client.get("/ui/api/logs?session=s-2").json["items"]
    assert [r["session_id"] for r in items] == ["s-2"]


def test_the_session_page_lists_its_turns_in_order_with_tokens_and_totals(app):
    html = app.test_client().get("/ui/sessions/s-1").text
    assert html.index("first turn") < html.index("second turn") and "other session" not in html
    assert "100 / 10" in html and "300 / 20" in html and "400 / 30" in html  # per turn, then the totals
    assert 'class="tag">attached' in html


def test_the_session_json_has_the_turns_and_totals(app):
    data = app.test_client().get("/ui/api/sessions/s-1").json
    assert data["totals"]["exchanges"] == 3 and data["totals"]["prompt_tokens"] == 400
    assert [r["preview"] for r in data["items"]] == ["first turn", "second turn", "second turn"]


def test_an_unknown_session_is_a_404_and_markup_in_its_id_is_text(app):
    client = app.test_client()
    r = client.get("/ui/sessions/" + EVIL)
    assert r.status_code == 404 and "<script>" not in r.text
    assert client.get("/ui/api/sessions/nope").status_code == 404


def test_the_exchange_page_links_to_its_session_and_names_the_twin(app):
    client = app.test_client()
    ids = store_of(app).read(lambda m: [r.id for r in m.Exchange.select().order_by(m.Exchange.started)])
    html = client.get(f"/ui/logs/{ids[-1]}").text
    assert 'href="/ui/sessions/s-1"' in html and "req-leader" in html
    assert 'id="attempts"' not in html  # the note is not a failed attempt
