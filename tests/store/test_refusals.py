"""Refused requests (issue 10, item 7 and part of 24): stored compact, with the model they asked for, on a
budget of their own (LOG_MAX_REFUSED) so that a flood of them never evicts an admitted exchange, and never
holding more than their share of the writer's queue."""
from __future__ import annotations

import time

import requests

from proxy.store.record import Record
from proxy.store.writer import LogWriter
from tests.support.policy import ALICE, chat_body
from tests.support.store import make_exchange, rows, store_of, wait_for

KEYS = f"alice:{ALICE}"


def test_a_flood_of_refused_requests_never_evicts_admitted_exchanges(logged_proxy):
    setup = logged_proxy("openai", API_KEYS=KEYS, LOG_MAX_REQUESTS="5", LOG_MAX_REFUSED="50")
    setup.script_chat()
    url = setup.proxy.url + "/v1/chat/completions"
    for i in range(5):
        resp = requests.post(url, json=chat_body(setup.model, f"genuine {i}"),
                             headers={"Authorization": f"Bearer {ALICE}"}, timeout=10)
        assert resp.status_code == 200, resp.text
    store = store_of(setup.proxy)
    big = {"model": "wanted-model", "messages": [{"role": "user", "content": "x" * 30000}]}
    with requests.Session() as session:
        for i in range(300):
            resp = session.post(url, json=big, headers={"Authorization": "Bearer wrong"} if i % 2 else {},
                                timeout=10)
            assert resp.status_code == 401
    # every record has reached the database (a batch being written is no longer pending, and not yet written)
    wait_for(lambda: store.writer.pending() == 0 and store.writer.written >= 5 + 300, timeout=30)
    store.read(lambda models: store.retention.run(time.time()))
    admitted = rows(store, outcome="ok")
    assert sorted(r["preview"] for r in admitted) == [f"genuine {i}" for i in range(5)]
    refused = rows(store, outcome="refused")
    assert 0 < len(refused) <= 50
    assert all(r["status"] == 401 and r["model"] == "wanted-model" for r in refused)
    detail = store.read(__import__("proxy.store.search", fromlist=["x"]).get_exchange, refused[0]["id"])
    assert all(len(b["text"]) <= 1024 for b in detail["bodies"].values())


def test_refusals_are_not_stored_when_their_budget_is_zero(logged_proxy):
    setup = logged_proxy("openai", API_KEYS=KEYS, LOG_MAX_REFUSED="0")
    setup.script_chat()
    url = setup.proxy.url + "/v1/chat/completions"
    assert requests.post(url, json=chat_body(setup.model), timeout=10).status_code == 401
    assert requests.post(url, json=chat_body(setup.model), headers={"Authorization": f"Bearer {ALICE}"},
                         timeout=10).status_code == 200
    store = store_of(setup.proxy)
    wait_for(lambda: store.writer.written >= 1)
    time.sleep(0.3)
    assert [r["status"] for r in rows(store)] == [200]


def test_refusals_take_at_most_a_quarter_of_the_writer_queue(sqlite_url):
    from tests.support.store import open_store

    store = open_store(sqlite_url)
    try:
        writer = LogWriter(store.models, queue_size=8)  # never started: the queue only fills
        taken = [writer.submit(Record.of(make_exchange("no", status=401, outcome="refused"))) for _ in range(10)]
        assert taken.count(True) == 2 and writer.dropped_refused == 8
        assert all(writer.submit(Record.of(make_exchange("yes"))) for _ in range(6))
    finally:
        store.close()
