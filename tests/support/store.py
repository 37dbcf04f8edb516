"""Helpers for tests that read the log store: the test databases (PostgreSQL and MySQL servers,
a schema or database of their own), the store behind a proxy, its rows, waits for the writer,
and exchanges made without a request. The fixtures are in tests/store/conftest.py.
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from proxy.store import search

PG_ENV = "TEST_POSTGRES_URL"
MYSQL_ENV = "TEST_MYSQL_URL"


def pg_url_or_skip() -> str:
    """The PostgreSQL server to test against; skip when not configured, fail when configured but down."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set (e.g. postgresql://postgres@127.0.0.1:5432/test); "
                    "PostgreSQL store tests skipped")
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        pytest.fail(f"{PG_ENV}={url} is set but the server cannot be reached: {exc}")
    return url


def _pg_schema_url(base: str) -> tuple[str, str]:
    schema = "llmproxy_test_" + uuid.uuid4().hex[:10]
    import psycopg2

    conn = psycopg2.connect(base)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE SCHEMA {schema}")
    conn.close()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote('-c search_path=' + schema)}", schema


def _drop_pg_schema(base: str, schema: str) -> None:
    import psycopg2

    conn = psycopg2.connect(base)
    conn.autocommit = True
    conn.cursor().execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.close()


def mysql_url_or_skip() -> str:
    """A MySQL/MariaDB server (optional: the store supports it, CI tests SQLite and PostgreSQL)."""
    url = os.environ.get(MYSQL_ENV)
    if not url:
        pytest.skip(f"{MYSQL_ENV} is not set (e.g. mysql://root@127.0.0.1:3306/test); MySQL store tests skipped")
    pytest.importorskip("pymysql", reason="MySQL needs the pymysql driver")
    return url


def _mysql_database(base: str, create: bool, name: str = "") -> str:
    import pymysql
    from playhouse.db_url import parse

    params = parse(base)
    conn = pymysql.connect(host=params.get("host", "127.0.0.1"), port=params.get("port", 3306),
                           user=params.get("user", "root"), password=params.get("passwd", ""))
    name = name or "llmproxy_test_" + uuid.uuid4().hex[:10]
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4" if create else f"DROP DATABASE IF EXISTS {name}")
    conn.close()
    return name


def store_of(proxy: Any) -> Any:
    app = proxy.app if hasattr(proxy, "app") else proxy
    return app.extensions["llm_proxy"].extras.get("log_store")


def rows(store: Any, **filters: Any) -> list[dict]:
    """All listed rows (newest first) matching the filters."""
    f = search.Filters(limit=500, **filters)
    return store.read(search.list_exchanges, f)["items"]


def one(store: Any, ident: int) -> dict:
    return store.read(search.get_exchange, ident)


def wait_rows(store: Any, count: int, timeout: float = 15.0, **filters: Any) -> list[dict]:
    """Wait until at least `count` rows are listed (the writer batches off the request path)."""
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < deadline:
        found = rows(store, **filters)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {count} log rows, found {len(found)}; writer: {store.writer.stats()}")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def make_exchange(text: str = "hello", *, endpoint: str = "/v1/chat/completions", model: str = "m",
                  started: float | None = None, status: int = 200, outcome: str = "ok", **fields: Any) -> Any:
    """A finished Exchange without a request (for writer, retention and search tests)."""
    import orjson

    from proxy.exchange import Exchange

    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}]})
    exchange = Exchange(request_id=uuid.uuid4().hex, front="openai", endpoint=endpoint, method="POST",
                        client="127.0.0.1", user_agent="test", client_body=body, max_body=1 << 20, sinks=())
    if started is not None:
        exchange.started = started
    exchange.model_requested = exchange.model_upstream = model
    exchange.status, exchange.outcome = status, outcome
    for name, value in fields.items():
        setattr(exchange, name, value)
    exchange.finish()
    return exchange


def open_store(url: str, **env: Any) -> Any:
    """A LogStore (schema created, writer running) for `url`; close it when done."""
    from proxy.config import Settings
    from proxy.store import LogStore

    settings = Settings.from_env({"DATABASE_URL": url, "LOG_CLEANUP_MINUTES": "0",
                                  **{k: str(v) for k, v in env.items()}})
    return LogStore(settings).open()
