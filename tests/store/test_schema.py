"""Schema: created on first start with its version, older databases migrated (playhouse.migrate) with
their rows kept, several workers starting at once, and SQLite set up for several processes."""
from __future__ import annotations

import threading

from playhouse.migrate import SchemaMigrator, migrate

from proxy.store.db import open_database
from proxy.store.models import build_models
from proxy.store.record import Record
from proxy.store.schema import MIGRATIONS, SCHEMA_VERSION, ensure_schema, schema_version
from tests.support.store import make_exchange, open_store, rows


def columns(models) -> set[str]:
    return {c.name for c in models.database.get_columns("exchanges")}


def test_fresh_database_gets_the_current_schema_and_version(db_url):
    models = build_models(open_database(db_url))
    assert ensure_schema(models) == 0
    assert schema_version(models) == SCHEMA_VERSION
    assert {"exchanges", "exchange_bodies", "poll_counts", "schema_version"} <= set(models.database.get_tables())
    assert "key_name" in columns(models)
    assert ensure_schema(models) == SCHEMA_VERSION  # a second start changes nothing
    models.database.close()


def test_every_version_has_a_migration_step():
    assert sorted(MIGRATIONS) == list(range(2, SCHEMA_VERSION + 1))


def test_version_1_database_is_migrated_and_keeps_its_rows(db_url):
    store = open_store(db_url)
    store.writer.submit(Record.of(make_exchange("kept across the migration")))
    store.close()
    # turn it back into a version 1 database: no key_name column, no version table
    models = build_models(open_database(db_url))
    db = models.database
    migrate(SchemaMigrator.from_database(db).drop_column("exchanges", "key_name"))
    db.drop_tables([models.SchemaVersion])
    assert "key_name" not in columns(models)

    assert ensure_schema(models) == 1
    assert "key_name" in columns(models) and schema_version(models) == SCHEMA_VERSION
    db.close()
    store = open_store(db_url)
    try:
        [row] = rows(store)
        assert row["preview"] == "kept across the migration" and row["key_name"] is None
    finally:
        store.close()


def test_workers_starting_together_create_the_schema_once(db_url):
    errors: list[BaseException] = []
    found: list[int] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        models = build_models(open_database(db_url))
        try:
            barrier.wait()
            found.append(ensure_schema(models))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        finally:
            models.database.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(found) == [0, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(sqlite_url):
    db = open_database(sqlite_url)
    db.connect()
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 5000
    db.close()


def test_sqlite_folder_is_created_on_first_start(tmp_path):
    url = f"sqlite:///{tmp_path}/new/folder/proxy.db"
    store = open_store(url)
    store.close()
    assert (tmp_path / "new" / "folder" / "proxy.db").exists()
