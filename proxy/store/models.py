"""The log's peewee models, built per database by ``build_models`` (no global database binding).

Every app (and every test) gets model classes bound to its own database, so two apps in one process
never write into each other's log. The list columns live in ``exchanges``; the four bodies and the
assembled answer live in ``exchange_bodies`` (one row per exchange, same id) so list queries stay
narrow. Full-text tables are created in ``schema.py`` because they are database specific.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee as pw


class BigTextField(pw.TextField):
    """TEXT that holds a whole body (LONGTEXT on MySQL)."""

    field_type = "BIGTEXT"


# Columns of ``exchanges`` in insert order (the writer inserts by these names).
EXCHANGE_COLUMNS = (
    "id", "started", "ended", "request_id", "client", "user_agent", "key_name", "front", "endpoint", "method",
    "backend_name", "backend_type", "model", "upstream_model", "stream", "status", "outcome", "error",
    "duration_ms", "ttfb_ms", "ttfc_ms", "overhead_ms", "prompt_tokens", "completion_tokens", "tokens_estimated",
    "tokens_per_second", "tool_calls", "truncated", "preview", "attempts", "queued_ms", "session_id", "cached",
    "replay_of",
)  # indexes cost every insert: only the list's filters have one (time, model, endpoint, status, client)
BODY_NAMES = ("client_request", "upstream_request", "upstream_response", "client_response")
BODY_COLUMNS = ("exchange_id", *BODY_NAMES, *(f"{n}_size" for n in BODY_NAMES),
                *(f"{n}_truncated" for n in BODY_NAMES), "answer")
POLL_COLUMNS = ("minute", "endpoint", "client", "count")


@dataclass(frozen=True)
class Models:
    database: pw.Database
    Exchange: Any  # a peewee model class built for one database (peewee has no type information)
    ExchangeBody: Any  # a peewee model class built for one database (peewee has no type information)
    PollCount: Any  # a peewee model class built for one database (peewee has no type information)
    SchemaVersion: Any  # a peewee model class built for one database (peewee has no type information)

    @property
    def all(self) -> tuple[Any, ...]:
        return (self.Exchange, self.ExchangeBody, self.PollCount, self.SchemaVersion)


def build_models(database: pw.Database) -> Models:
    class Base(pw.Model):
        class Meta:
            legacy_table_names = False

    class Exchange(Base):
        id = pw.BigAutoField()
        started = pw.DoubleField(index=True)  # time.time() when the request arrived
        ended = pw.DoubleField()
        request_id = pw.CharField(max_length=128)  # found through full-text search
        client = pw.CharField(max_length=64)
        user_agent = pw.CharField(max_length=300, default="")
        key_name = pw.CharField(max_length=100, null=True)  # schema version 2
        front = pw.CharField(max_length=10)  # "ollama", "openai" or "anthropic": the dialect the client spoke
        endpoint = pw.CharField(max_length=100)
        method = pw.CharField(max_length=10)
        backend_name = pw.CharField(max_length=255, default="")
        backend_type = pw.CharField(max_length=32, default="")
        model = pw.CharField(max_length=255, null=True)  # as the client asked
        upstream_model = pw.CharField(max_length=255, null=True)  # as sent to the backend
        stream = pw.BooleanField(default=False)
        status = pw.IntegerField(null=True)
        outcome = pw.CharField(max_length=20)  # ok, client_error, backend_error, timeout, cancelled, error
        error = pw.TextField(null=True)
        duration_ms = pw.FloatField()
        ttfb_ms = pw.FloatField(null=True)  # the backend's first byte
        ttfc_ms = pw.FloatField(null=True)  # the client's first chunk (streams)
        overhead_ms = pw.FloatField(null=True)  # backend first byte -> client first chunk (or end)
        prompt_tokens = pw.IntegerField(null=True)
        completion_tokens = pw.IntegerField(null=True)
        tokens_estimated = pw.BooleanField(default=False)
        tokens_per_second = pw.FloatField(null=True)
        tool_calls = pw.IntegerField(default=0)
        truncated = pw.BooleanField(default=False)  # any of the four bodies
        preview = pw.CharField(max_length=200, default="")  # the last user message, one line
        # schema version 3: several backends' failed attempts before the one that answered, JSON (null: none)
        attempts = pw.TextField(null=True)
        # schema version 4: time spent waiting for a backend's slot (max_concurrency; null: never waited)
        queued_ms = pw.FloatField(null=True)
        # schema version 5: the conversation (agent session) it belongs to, a cache hit, the exchange it replays
        session_id = pw.CharField(max_length=128, null=True)
        cached = pw.BooleanField(default=False)
        replay_of = pw.BigIntegerField(null=True)

        class Meta:
            table_name = "exchanges"
            indexes = (
                (("model", "started"), False),
                (("endpoint", "started"), False),
                (("status", "started"), False),
                (("client", "started"), False),
                (("session_id", "started"), False),
            )

    class ExchangeBody(Base):
        exchange_id = pw.BigIntegerField(primary_key=True)
        client_request = BigTextField(default="")
        upstream_request = BigTextField(default="")
        upstream_response = BigTextField(default="")
        client_response = BigTextField(default="")
        client_request_size = pw.IntegerField(default=0)  # bytes as sent, before truncation
        upstream_request_size = pw.IntegerField(default=0)
        upstream_response_size = pw.IntegerField(default=0)
        client_response_size = pw.IntegerField(default=0)
        client_request_truncated = pw.BooleanField(default=False)
        upstream_request_truncated = pw.BooleanField(default=False)
        upstream_response_truncated = pw.BooleanField(default=False)
        client_response_truncated = pw.BooleanField(default=False)
        answer = BigTextField(null=True)  # JSON: content, thinking, tool_calls, finish_reason, usage

        class Meta:
            table_name = "exchange_bodies"

    class PollCount(Base):
        """Polling requests (model lists, version) counted per minute, endpoint and client."""
        minute = pw.IntegerField(index=True)  # int(time.time() // 60)
        endpoint = pw.CharField(max_length=100)
        client = pw.CharField(max_length=64)
        count = pw.IntegerField()

        class Meta:
            table_name = "poll_counts"

    class SchemaVersion(Base):
        id = pw.IntegerField(primary_key=True)
        version = pw.IntegerField()
        updated = pw.DoubleField()

        class Meta:
            table_name = "schema_version"

    for model in (Exchange, ExchangeBody, PollCount, SchemaVersion):
        model.bind(database)
    return Models(database, Exchange, ExchangeBody, PollCount, SchemaVersion)
