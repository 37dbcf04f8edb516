"""Creating the log schema on first start and migrating older ones (playhouse.migrate).

``ensure_schema`` runs under a database-wide lock (SQLite's write lock, a PostgreSQL advisory lock,
MySQL's GET_LOCK) so several workers starting together do it once. A fresh database gets the
current tables and ``SCHEMA_VERSION``; an older one gets each step of ``MIGRATIONS`` above its version.
A new schema change is: change the model, add one step here, bump ``SCHEMA_VERSION``, add a test.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import peewee as pw
from playhouse.migrate import SchemaMigrator, migrate

from .db import kind_of_database
from .models import Models

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5
LOCK_KEY = 0x11A9_0C5E  # PostgreSQL advisory lock id for schema work
FTS_TABLE = "exchange_fts"  # SQLite FTS5: rowid = exchanges.id, one column of searchable text
SEARCH_TABLE = "exchange_search"  # PostgreSQL: exchange_id, tsvector


def _add_key_name(models: Models, migrator: SchemaMigrator) -> None:
    """Version 2: the API key's name (set by the keys feature) on each exchange."""
    migrate(migrator.add_column("exchanges", "key_name", pw.CharField(max_length=100, null=True)))


def _add_attempts(models: Models, migrator: SchemaMigrator) -> None:
    """Version 3: the failed attempts before the backend that answered (BACKENDS_FILE), as JSON."""
    if "attempts" not in {c.name for c in models.database.get_columns("exchanges")}:
        migrate(migrator.add_column("exchanges", "attempts", pw.TextField(null=True)))


def _add_queued_ms(models: Models, migrator: SchemaMigrator) -> None:
    """Version 4: the time spent waiting for a backend's slot (max_concurrency), in milliseconds."""
    if "queued_ms" not in {c.name for c in models.database.get_columns("exchanges")}:
        migrate(migrator.add_column("exchanges", "queued_ms", pw.FloatField(null=True)))


def _add_session_cached_replay(models: Models, migrator: SchemaMigrator) -> None:
    """Version 5: the session an exchange belongs to (indexed), whether the cache answered it, and the
    exchange it replays (the log view's replay)."""
    have = {c.name for c in models.database.get_columns("exchanges")}
    steps = []
    if "session_id" not in have:
        steps += [migrator.add_column("exchanges", "session_id", pw.CharField(max_length=128, null=True)),
                  migrator.add_index("exchanges", ("session_id", "started"), False)]
    if "cached" not in have:
        steps.append(migrator.add_column("exchanges", "cached", pw.BooleanField(default=False)))
    if "replay_of" not in have:
        steps.append(migrator.add_column("exchanges", "replay_of", pw.BigIntegerField(null=True)))
    migrate(*steps)


# version reached -> step; each step takes the database from version-1 to version.
MIGRATIONS: dict[int, Callable[[Models, SchemaMigrator], None]] = {
    2: _add_key_name,
    3: _add_attempts,
    4: _add_queued_ms,
    5: _add_session_cached_replay,
}


@contextmanager
def schema_lock(db: pw.Database) -> Iterator[None]:
    kind = kind_of_database(db)
    if kind == "mysql":
        db.execute_sql("SELECT GET_LOCK('llm_proxy_schema', 60)")
        try:
            yield
        finally:
            db.execute_sql("SELECT RELEASE_LOCK('llm_proxy_schema')")
        return
    with db.atomic():
        if kind == "postgres":
            db.execute_sql(f"SELECT pg_advisory_xact_lock({LOCK_KEY})")
        yield


def ensure_schema(models: Models) -> int:
    """Create or migrate the schema; returns the version found before (0 for a new database)."""
    db = models.database
    with schema_lock(db):
        tables = set(db.get_tables())
        if models.SchemaVersion._meta.table_name not in tables:
            found = 1 if models.Exchange._meta.table_name in tables else 0
        else:
            row = models.SchemaVersion.get_or_none(models.SchemaVersion.id == 1)
            found = row.version if row else 0
        if found == 0:
            db.create_tables(models.all, safe=True)
        else:
            db.create_tables([models.SchemaVersion], safe=True)
            migrator = SchemaMigrator.from_database(db)
            for version in range(found + 1, SCHEMA_VERSION + 1):
                log.info("log database: migrating schema to version %d", version)
                MIGRATIONS[version](models, migrator)
            db.create_tables(models.all, safe=True)  # tables added since that version
        _create_search(db)
        if found != SCHEMA_VERSION:
            models.SchemaVersion.delete().execute()
            models.SchemaVersion.insert(id=1, version=SCHEMA_VERSION, updated=time.time()).execute()
    return found


def _create_search(db: pw.Database) -> None:
    kind = kind_of_database(db)
    if kind in ("sqlite", "postgres"):  # the log view's "replayed as" links: a partial index, tiny and idempotent
        db.execute_sql("CREATE INDEX IF NOT EXISTS exchanges_replay_of ON exchanges (replay_of) "
                       "WHERE replay_of IS NOT NULL")
    if kind == "sqlite":
        db.execute_sql(f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
                       "body, tokenize = 'unicode61 remove_diacritics 2')")
    elif kind == "postgres":
        db.execute_sql(f"CREATE TABLE IF NOT EXISTS {SEARCH_TABLE} "
                       "(exchange_id BIGINT PRIMARY KEY, doc TSVECTOR NOT NULL)")
        db.execute_sql(f"CREATE INDEX IF NOT EXISTS {SEARCH_TABLE}_doc ON {SEARCH_TABLE} USING GIN (doc)")


def schema_version(models: Models) -> int:
    row = models.SchemaVersion.get_or_none(models.SchemaVersion.id == 1)
    return row.version if row else 0
