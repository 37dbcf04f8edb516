"""A log database that is down, or stalled, as the real gevent server (`python wsgi.py`) meets it (issue 10,
items 8 and 23): API requests never wait for it or for the log view's reads (which once held every thread of
gevent's hub pool, the one that resolves the backend's host name); the log view answers 503; and the console
gets one line when the database goes away and one when it is back, with the reason, never a traceback flood.
"""
from __future__ import annotations

import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.support.store import wait_for


def _black_hole() -> socket.socket:
    """A TCP port that completes connections and never answers: a stalled database server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def test_api_requests_never_wait_on_a_stalled_log_database_or_the_log_view(wsgi_proxy, fake_upstream):
    from tests.support import fakes

    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["Hello", " world"]))
    hole = _black_hole()
    try:
        proxy = wsgi_proxy(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{hole.getsockname()[1]}/x",
                           BACKEND_URL=f"http://localhost:{fake_upstream.port}")  # a name gevent resolves in threads
        stop = threading.Event()
        ui_statuses: list[int] = []

        def browse() -> None:
            while not stop.is_set():
                try:
                    ui_statuses.append(requests.get(proxy.url + "/ui/logs", timeout=30).status_code)
                except requests.RequestException:
                    pass

        browsers = [threading.Thread(target=browse, daemon=True) for _ in range(15)]
        for thread in browsers:
            thread.start()
        time.sleep(1.0)  # every browser waits on the database now

        def chat(i: int) -> float:
            start = time.monotonic()
            resp = requests.post(proxy.url + "/v1/chat/completions", timeout=30,
                                 json={"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}]})
            assert resp.status_code == 200, resp.text
            return time.monotonic() - start

        with ThreadPoolExecutor(6) as pool:  # concurrent: new upstream connections, each resolving `localhost`
            took = list(pool.map(chat, range(6)))
        stop.set()
        for thread in browsers:
            thread.join(timeout=30)
        assert max(took) < 2.0, took
        assert ui_statuses and set(ui_statuses) == {503}, set(ui_statuses)
        assert "Traceback" not in proxy.output()
    finally:
        hole.close()


def test_a_database_down_at_start_is_one_line_and_its_return_another(wsgi_proxy, fake_upstream, tmp_path):
    fake_upstream.serve_openai_models("m")
    blocker = tmp_path / "db"
    blocker.write_text("a file where the database's directory should be")
    proxy = wsgi_proxy(DATABASE_URL=f"sqlite:///{blocker}/log.db", LOG_LEVEL="INFO")
    assert requests.get(proxy.url + "/v1/models", timeout=10).status_code == 200
    assert requests.post(proxy.url + "/api/show", json={"model": "m"}, timeout=10).status_code == 200
    for _ in range(3):
        page = requests.get(proxy.url + "/ui/logs", timeout=15)
        assert page.status_code == 503 and "cannot be read now" in page.text
    time.sleep(2.0)  # the writer retries meanwhile
    blocker.unlink()
    blocker.mkdir()

    def recorded() -> bool:
        resp = requests.get(proxy.url + "/ui/api/logs", timeout=15)
        return resp.status_code == 200 and any(r["endpoint"] == "/api/show" for r in resp.json()["items"])

    wait_for(recorded, timeout=45)
    out = proxy.output()
    store_lines = [line for line in out.splitlines() if "log database" in line]
    assert len(store_lines) == 2, out
    assert "unavailable (at start): unable to open database file" in store_lines[0]
    assert "available again" in store_lines[1]
    assert "Traceback" not in out and "failed with" not in out
    shutil.rmtree(blocker)


def test_a_locked_postgresql_table_stalls_only_the_log_view(wsgi_proxy, fake_upstream):
    """The database answers connections but a query waits on a lock: pages give 503 after the read limit,
    API requests (and their records, which wait in the queue) are not held up."""
    import psycopg2

    from tests.support import fakes
    from tests.support.store import _drop_pg_schema, _pg_schema_url, pg_url_or_skip

    base = pg_url_or_skip()
    url, schema = _pg_schema_url(base)
    fake_upstream.serve_openai_models("m")
    fake_upstream.default("POST", "/v1/chat/completions", fakes.openai_chat_responder(["Hello"]))
    proxy = wsgi_proxy(DATABASE_URL=url, BACKEND_URL=f"http://localhost:{fake_upstream.port}")
    locker = psycopg2.connect(base)
    try:
        locker.cursor().execute(f"LOCK TABLE {schema}.exchanges IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(15) as pages:
            waiting = [pages.submit(requests.get, proxy.url + "/ui/logs", timeout=60) for _ in range(15)]
            time.sleep(1.0)

            def chat(i: int) -> float:
                start = time.monotonic()
                resp = requests.post(proxy.url + "/v1/chat/completions", timeout=30,
                                     json={"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}]})
                assert resp.status_code == 200, resp.text
                return time.monotonic() - start

            with ThreadPoolExecutor(6) as pool:
                took = list(pool.map(chat, range(6)))
            assert max(took) < 2.0, took
            statuses = [f.result().status_code for f in waiting]
        assert set(statuses) == {503}, statuses
    finally:
        locker.rollback()
        locker.close()
    wait_for(lambda: requests.get(proxy.url + "/ui/api/logs", timeout=30).json().get("items"), timeout=30)
    proxy.stop()
    _drop_pg_schema(base, schema)
