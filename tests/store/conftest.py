"""The log store's tests: a database URL per kind of database (SQLite file; PostgreSQL when
TEST_POSTGRES_URL is set, in a schema of its own dropped afterwards; MySQL when TEST_MYSQL_URL is
set), and a proxy recording into it. Helpers that read the store are in tests.support.store.
"""
from __future__ import annotations

from typing import Any

import pytest

from tests.support.store import (
    _drop_pg_schema,
    _mysql_database,
    _pg_schema_url,
    mysql_url_or_skip,
    pg_url_or_skip,
    store_of,
)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/log.db"


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def db_url(request, tmp_path) -> Any:
    """The log database URL, once per kind of database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/log.db"
        return
    if request.param == "mysql":
        base = mysql_url_or_skip()
        name = _mysql_database(base, create=True)
        yield base.rsplit("/", 1)[0] + "/" + name
        _mysql_database(base, create=False, name=name)
        return
    base = pg_url_or_skip()
    url, schema = _pg_schema_url(base)
    yield url
    _drop_pg_schema(base, schema)


@pytest.fixture
def logged_proxy(backend_setup, db_url) -> Any:
    """Factory: `logged_proxy(kind, **env)` -> BackendSetup whose proxy records into `db_url`.
    Stores are closed after the test (before a PostgreSQL schema is dropped)."""
    made: list[Any] = []

    def factory(kind: str = "openai", **env: Any):
        setup = backend_setup(kind, DATABASE_URL=db_url, **env)
        made.append(setup)
        return setup

    yield factory
    for setup in made:
        store = store_of(setup.proxy)
        if store is not None:
            store.close()
