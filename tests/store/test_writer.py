"""The log writer: a burst loses nothing, a full queue drops and counts (never blocks), a database that
is down does not fail requests, and shutdown — close(), SIGTERM under gevent, gunicorn worker exit —
writes what is still queued."""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from proxy.store.record import Record
from tests.support import REPO_ROOT, free_port
from tests.support.store import make_exchange, open_store, store_of, wait_for

BODY = {"model": "stub", "messages": [{"role": "user", "content": "burst"}], "stream": False}


def count(store) -> int:
    return store.read(lambda m: m.Exchange.select().count())


def test_burst_of_1000_requests_gives_1000_rows(make_proxy, db_url):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS=0, DATABASE_URL=db_url)
    store = store_of(proxy)
    session = requests.Session()

    def send(i: int) -> int:
        return requests.post(proxy.url + "/api/chat", json={**BODY, "messages": [
            {"role": "user", "content": f"burst {i}"}]}).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, range(1000)))
    session.close()
    assert statuses == [200] * 1000
    try:
        wait_for(lambda: count(store) >= 1000, timeout=30)
        assert count(store) == 1000
        previews = store.read(lambda m: {r.preview for r in m.Exchange.select(m.Exchange.preview)})
        assert previews == {f"burst {i}" for i in range(1000)}
        assert store.writer.stats()["dropped_queue_full"] == 0
    finally:
        store.close()


def test_a_batch_larger_than_one_transaction_is_written_whole(sqlite_url, monkeypatch):
    from proxy.store import writer as writer_module

    monkeypatch.setattr(writer_module, "WRITE_BYTES", 1)  # every record is a transaction of its own
    store = open_store(sqlite_url)
    writer = store.writer
    try:
        writer._stop = True  # hold the loop: the batch is written by one _write call below
        wait_for(lambda: not writer._running)
        batch = [Record.of(make_exchange(f"tx{i}")) for i in range(10)]
        writer._write(batch)
        assert batch == [] and count(store) == 10
    finally:
        store.close()


def test_the_sqlite_writer_keeps_a_small_page_cache_of_its_own(sqlite_url):
    from proxy.store.writer import WRITER_SQLITE_CACHE_KIB

    store = open_store(sqlite_url)
    writer = store.writer
    try:
        writer.submit(Record.of(make_exchange("cache")))
        wait_for(lambda: count(store) == 1)
        conn = writer._tuned  # the connection the writer wrote on, in its own thread
        assert conn is not None and conn.execute("PRAGMA cache_size").fetchone()[0] == -WRITER_SQLITE_CACHE_KIB
        assert writer.db.connection() is not conn  # readers (this thread) keep the default
        assert writer.db.connection().execute("PRAGMA cache_size").fetchone()[0] != -WRITER_SQLITE_CACHE_KIB
    finally:
        store.close()


def test_full_queue_drops_and_counts_with_a_warning_without_blocking(sqlite_url, caplog):
    store = open_store(sqlite_url, LOG_QUEUE_SIZE=3)
    writer = store.writer
    writer._stop = True  # hold the writer so the queue fills
    wait_for(lambda: not writer._running)
    with caplog.at_level(logging.WARNING, logger="proxy.store.writer"):
        started = time.perf_counter()
        accepted = [writer.submit(Record.of(make_exchange(f"n{i}"))) for i in range(10)]
        elapsed = time.perf_counter() - started
    assert accepted == [True] * 3 + [False] * 7
    assert writer.stats()["dropped_queue_full"] == 7
    assert elapsed < 0.5
    assert any("log queue full" in r.getMessage() for r in caplog.records)
    store.close()  # the three accepted ones are written
    assert store.read(lambda m: m.Exchange.select().count()) == 3


def test_database_down_requests_still_succeed_and_drops_are_counted(make_proxy, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database folder should be")
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS=0, LOG_QUEUE_SIZE=5,
                       DATABASE_URL=f"sqlite:///{blocker}/log.db")
    store = store_of(proxy)
    for _i in range(20):
        r = requests.post(proxy.url + "/api/chat", json=BODY)
        assert r.status_code == 200 and r.json()["done"] is True
    stats = store.writer.stats()
    assert stats["dropped_queue_full"] >= 15
    assert stats["written"] == 0 and stats["last_error"]
    page = requests.get(proxy.url + "/ui/")
    assert page.status_code == 200 and "Dropped" in page.text
    store.writer._stop = True


def test_postgres_down_requests_still_succeed(make_proxy):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS=0, LOG_QUEUE_SIZE=2,
                       DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    for _ in range(6):
        assert requests.post(proxy.url + "/v1/chat/completions", json=BODY).status_code == 200
    assert store_of(proxy).writer.stats()["dropped_queue_full"] >= 4
    store_of(proxy).writer._stop = True


def test_close_writes_everything_still_queued(db_url):
    store = open_store(db_url)
    writer = store.writer
    writer._stop = True
    wait_for(lambda: not writer._running)
    for i in range(250):
        assert writer.submit(Record.of(make_exchange(f"queued {i}")))
    assert writer.pending() == 250
    store.close()
    assert store.read(lambda m: m.Exchange.select().count()) == 250


def _sqlite_count(path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0]


def test_sigterm_flushes_the_queue_of_the_gevent_server(wsgi_proxy, tmp_path):
    db = tmp_path / "wsgi.db"
    proxy = wsgi_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS=0, DATABASE_URL=f"sqlite:///{db}")
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: requests.post(proxy.url + "/api/chat", json=BODY).status_code,
                                 range(200)))
    assert statuses == [200] * 200
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(timeout=20) is not None
    assert _sqlite_count(db) == 200, proxy.output()


def test_gunicorn_workers_flush_on_exit_and_share_one_sqlite_file(fake_upstream, tmp_path):
    db = tmp_path / "gunicorn.db"
    port = free_port()
    env = {**os.environ, "BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0", "DATABASE_URL": f"sqlite:///{db}",
           "LOG_LEVEL": "WARNING", "LOG_CLEANUP_MINUTES": "0"}
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - the server process writes it; closed when it stops
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2", "--bind",
                             f"127.0.0.1:{port}", "--graceful-timeout", "10", "wsgi:app"],
                            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.2)
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: requests.post(url + "/api/chat", json=BODY).status_code,
                                     range(300)))
        assert statuses == [200] * 300
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    assert _sqlite_count(db) == 300, (tmp_path / "gunicorn.log").read_text()


def test_log_disabled_opens_no_database_and_requests_work(make_proxy, tmp_path):
    proxy = make_proxy(BACKEND_TYPE="stub", STUB_DELAY_MS=0, LOG_ENABLED="false",
                       DATABASE_URL=f"sqlite:///{tmp_path}/never/log.db")
    assert requests.post(proxy.url + "/api/chat", json=BODY).status_code == 200
    assert store_of(proxy) is None
    assert not (tmp_path / "never").exists()


def test_log_pages_say_when_the_database_cannot_be_read(make_proxy, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proxy = make_proxy(BACKEND_TYPE="stub", DATABASE_URL=f"sqlite:///{blocker}/log.db")
    r = requests.get(proxy.url + "/ui/logs")
    assert r.status_code == 503 and "log database cannot be read" in r.text  # unavailable, not a failure
    assert r.headers["Content-Type"].startswith("text/html")
    r = requests.get(proxy.url + "/ui/api/logs")
    assert r.status_code == 503 and "log database cannot be read" in r.json()["error"]
    store_of(proxy).writer._stop = True


EXIT_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import sys
from proxy import create_app
from proxy.config import Settings
app = create_app(Settings.from_env({"BACKEND_TYPE": "stub", "STUB_DELAY_MS": "0", "LOG_LEVEL": "WARNING",
                                    "DATABASE_URL": sys.argv[1]}))
client = app.test_client()
for i in range(300):
    client.post("/api/chat", json={"model": "stub", "stream": False, "messages": [{"role": "user", "content": "x"}]})
print(app.extensions["llm_proxy"].extras["log_store"].writer.pending())
"""


def test_records_still_queued_at_interpreter_exit_are_written_under_gevent(tmp_path):
    db = tmp_path / "exit.db"
    out = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, f"sqlite:///{db}"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == 300  # nothing was written before exit (the hub never ran)...
    assert _sqlite_count(db) == 300  # ...and atexit wrote them all


def test_a_batch_of_large_records_is_written_in_bounded_transactions_without_duplicates(db_url, monkeypatch):
    from proxy.store import writer as writer_module

    store = open_store(db_url)
    writer = store.writer
    writer._stop = True
    wait_for(lambda: not writer._running)
    commits: list[int] = []
    insert = writer._insert

    def counting_insert(prepared):
        commits.append(len(prepared))
        if len(commits) == 3:
            raise RuntimeError("the third transaction fails")  # the rest is retried one by one
        return insert(prepared)

    monkeypatch.setattr(writer, "_insert", counting_insert)
    big = "long stream " * 4000  # ~48 KB of text per record
    batch = [Record.of(make_exchange(f"{i} {big}")) for i in range(60)]
    per_transaction = writer_module.WRITE_BYTES // (len(big) * 2) + 1
    try:
        writer._write(batch)
    except RuntimeError:
        writer._one_by_one(batch)
    store.close()
    assert commits[0] <= per_transaction + 1 and len(commits) > 3  # bounded, not one transaction of 60
    assert store.read(lambda m: m.Exchange.select().count()) == 60  # every record once
