"""The log's record of several backends: the attempts column (schema version 3) and the time queued (4), session, cache mark and replay link (5),
each migrated into an older database with its rows kept, written from an exchange and read back by the log
view's JSON."""
from __future__ import annotations

from playhouse.migrate import SchemaMigrator, migrate

from proxy.store.db import open_database
from proxy.store.models import build_models
from proxy.store.record import Record
from proxy.store.schema import SCHEMA_VERSION, ensure_schema, schema_version
from proxy.store.search import get_exchange
from tests.support.store import make_exchange, open_store, rows


def test_version_2_database_gets_the_attempts_column_and_keeps_its_rows(db_url):
    store = open_store(db_url)
    store.writer.submit(Record.of(make_exchange("kept across the migration")))
    store.close()
    models = build_models(open_database(db_url))
    migrate(SchemaMigrator.from_database(models.database).drop_column("exchanges", "attempts"))
    models.SchemaVersion.update(version=2).execute()
    assert ensure_schema(models) == 2
    assert "attempts" in {c.name for c in models.database.get_columns("exchanges")}
    assert schema_version(models) == SCHEMA_VERSION
    models.database.close()
    store = open_store(db_url)
    try:
        [row] = rows(store)
        assert row["preview"] == "kept across the migration"
        assert get_exchange(store.models, row["id"])["attempts"] == []
    finally:
        store.close()


def test_attempts_are_written_and_read_back(db_url):
    store = open_store(db_url)
    try:
        exchange = make_exchange("failed over")
        exchange.backend_name = "good"
        exchange.note_attempt("dead", None, "cannot connect: connection refused", 0.84)
        exchange.note_attempt("broken", 500, "overloaded", 3.21)
        store.writer.submit(Record.of(exchange))
        store.writer.submit(Record.of(make_exchange("one backend")))
        store.close()
        store = open_store(db_url)
        first, second = sorted(rows(store), key=lambda r: r["id"])
        detail = get_exchange(store.models, first["id"])
        assert detail is not None and detail["backend_name"] == "good"
        assert detail["attempts"] == [
            {"backend": "dead", "status": None, "error": "cannot connect: connection refused", "ms": 0.8},
            {"backend": "broken", "status": 500, "error": "overloaded", "ms": 3.2}]
        assert get_exchange(store.models, second["id"])["attempts"] == []
    finally:
        store.close()


def test_version_3_database_gets_the_queued_ms_column_and_keeps_its_rows(db_url):
    store = open_store(db_url)
    store.writer.submit(Record.of(make_exchange("kept across the migration")))
    store.close()
    models = build_models(open_database(db_url))
    migrate(SchemaMigrator.from_database(models.database).drop_column("exchanges", "queued_ms"))
    models.SchemaVersion.update(version=3).execute()
    assert ensure_schema(models) == 3
    assert "queued_ms" in {c.name for c in models.database.get_columns("exchanges")}
    assert schema_version(models) == SCHEMA_VERSION
    models.database.close()
    store = open_store(db_url)
    try:
        [row] = rows(store)
        assert row["preview"] == "kept across the migration"
        assert get_exchange(store.models, row["id"])["queued_ms"] is None
    finally:
        store.close()


def test_time_queued_is_written_and_read_back(db_url):
    store = open_store(db_url)
    try:
        exchange = make_exchange("waited for a slot")
        exchange.note_queued(0.25)
        exchange.note_queued(0.0125)
        store.writer.submit(Record.of(exchange))
        store.writer.submit(Record.of(make_exchange("never waited")))
        store.close()
        store = open_store(db_url)
        first, second = sorted(rows(store), key=lambda r: r["id"])
        assert get_exchange(store.models, first["id"])["queued_ms"] == 262.5
        assert get_exchange(store.models, second["id"])["queued_ms"] is None
    finally:
        store.close()


def test_version_4_database_gets_session_cached_and_replay_columns_and_keeps_its_rows(db_url):
    store = open_store(db_url)
    store.writer.submit(Record.of(make_exchange("kept across the migration")))
    store.close()
    models = build_models(open_database(db_url))
    migrator = SchemaMigrator.from_database(models.database)
    if "exchanges_replay_of" in {i.name for i in models.database.get_indexes("exchanges")}:  # the log view's
        migrate(migrator.drop_index("exchanges", "exchanges_replay_of"))  # partial index, made at start since
    migrate(migrator.drop_index("exchanges", "exchanges_session_id_started"),
            *(migrator.drop_column("exchanges", c) for c in ("session_id", "cached", "replay_of")))
    models.SchemaVersion.update(version=4).execute()
    assert ensure_schema(models) == 4
    assert {"session_id", "cached", "replay_of"} <= {c.name for c in models.database.get_columns("exchanges")}
    assert schema_version(models) == SCHEMA_VERSION
    models.database.close()
    store = open_store(db_url)
    try:
        [row] = rows(store)
        detail = get_exchange(store.models, row["id"])
        assert row["preview"] == "kept across the migration"
        assert (detail["session_id"], bool(detail["cached"]), detail["replay_of"]) == (None, False, None)
    finally:
        store.close()


def test_session_cache_mark_and_replay_link_are_written_and_read_back(db_url):
    store = open_store(db_url)
    try:
        exchange = make_exchange("a cached turn of a session")
        exchange.session_id, exchange.cached, exchange.replay_of = "sess-1", True, 41
        store.writer.submit(Record.of(exchange))
        store.close()
        store = open_store(db_url)
        [row] = rows(store)
        detail = get_exchange(store.models, row["id"])
        assert (detail["session_id"], bool(detail["cached"]), detail["replay_of"]) == ("sess-1", True, 41)
    finally:
        store.close()
