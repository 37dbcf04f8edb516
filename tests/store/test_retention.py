"""Retention: LOG_MAX_REQUESTS keeps the newest rows, LOG_MAX_AGE_DAYS drops old ones, in small batches,
bodies and search entries going with their rows; the first run happens at start-up."""
from __future__ import annotations

import time

from proxy.store import search
from proxy.store.db import kind_of_database
from proxy.store.record import Record
from proxy.store.retention import Retention
from tests.support.store import make_exchange, open_store, wait_for

DAY = 86400


def fill(store, n: int, start: float, step: float = 1.0, text: str = "row") -> None:
    for i in range(n):
        store.writer.submit(Record.of(make_exchange(f"{text} {i}", started=start + i * step)))
    wait_for(lambda: store.writer.pending() == 0)
    wait_for(lambda: store.writer.written >= n)


def table_counts(store) -> tuple[int, int, int]:
    def counts(m):
        db = m.database
        kind = kind_of_database(db)
        if kind == "sqlite":
            fts = db.execute_sql("SELECT COUNT(*) FROM exchange_fts").fetchone()[0]
        elif kind == "postgres":
            fts = db.execute_sql("SELECT COUNT(*) FROM exchange_search").fetchone()[0]
        else:  # MySQL searches the bodies themselves
            fts = m.ExchangeBody.select().count()
        return m.Exchange.select().count(), m.ExchangeBody.select().count(), fts
    return store.read(counts)


def test_max_requests_keeps_the_newest_rows_and_their_bodies(db_url):
    store = open_store(db_url)
    try:
        fill(store, 120, time.time() - 1000)
        retention = Retention(store.models, max_requests=50, max_age_days=0, batch=20)
        batches = 0
        while retention.step(time.time()):
            batches += 1
        assert batches == 4  # 70 rows in batches of at most 20
        assert table_counts(store) == (50, 50, 50)
        kept = store.read(search.list_exchanges, search.Filters(limit=500))["items"]
        assert sorted(int(r["preview"].split()[1]) for r in kept) == list(range(70, 120))
    finally:
        store.close()


def test_max_age_deletes_rows_older_than_the_limit(db_url):
    store = open_store(db_url)
    try:
        now = time.time()
        fill(store, 30, now - 10 * DAY, step=60, text="old")
        fill(store, 10, now - 3600, step=1, text="new")
        deleted = Retention(store.models, max_requests=0, max_age_days=7).run(now)
        assert deleted == 30
        assert table_counts(store) == (10, 10, 10)
    finally:
        store.close()


def test_search_finds_nothing_of_deleted_rows(db_url):
    store = open_store(db_url)
    try:
        fill(store, 5, time.time() - 10 * DAY, text="zebra")
        fill(store, 1, time.time(), text="giraffe")
        Retention(store.models, max_requests=0, max_age_days=1).run(time.time())
        assert store.read(search.list_exchanges, search.Filters(q="zebra"))["items"] == []
        assert len(store.read(search.list_exchanges, search.Filters(q="giraffe"))["items"]) == 1
    finally:
        store.close()


def test_old_polling_counts_go_too(sqlite_url):
    store = open_store(sqlite_url)
    try:
        now = time.time()
        store.count_poll("/api/tags", "127.0.0.1", now - 40 * DAY)
        store.count_poll("/api/tags", "127.0.0.1", now)
        store.writer.close()
        Retention(store.models, max_requests=0, max_age_days=0).run(now)  # 30 days without an age limit
        remaining = store.read(lambda m: [r.minute for r in m.PollCount.select()])
        assert remaining == [int(now // 60)]
    finally:
        store.close()


def test_cleanup_runs_at_start_up(sqlite_url):
    first = open_store(sqlite_url)
    fill(first, 30, time.time() - 100)
    first.close()
    second = open_store(sqlite_url, LOG_MAX_REQUESTS=10, LOG_CLEANUP_MINUTES=60)
    try:
        wait_for(lambda: table_counts(second)[0] == 10)
    finally:
        second.close()


def test_no_cleanup_when_interval_is_zero(sqlite_url):
    first = open_store(sqlite_url)
    fill(first, 30, time.time() - 100)
    first.close()
    second = open_store(sqlite_url, LOG_MAX_REQUESTS=10, LOG_CLEANUP_MINUTES=0)
    try:
        time.sleep(0.5)
        assert table_counts(second)[0] == 30
    finally:
        second.close()
