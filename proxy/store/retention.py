"""Retention: LOG_MAX_REQUESTS rows kept, rows older than LOG_MAX_AGE_DAYS deleted, in small batches.

Requests the gate refused have a budget of their own (LOG_MAX_REFUSED): anyone who can reach the port can
send them, so they never count toward, or evict, the exchanges that were admitted.

``Retention.step`` deletes at most one batch (its own short transaction) and says whether more is
due, so the writer can write new records between batches and no cleanup holds the database long.
Polling counts are kept as long as rows are (30 days when no age limit is set).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from .db import kind_of_database
from .models import Models
from .record import REFUSED
from .schema import FTS_TABLE, SEARCH_TABLE

log = logging.getLogger(__name__)

BATCH = 500
POLL_DAYS_WITHOUT_AGE_LIMIT = 30


class Retention:
    def __init__(self, models: Models, max_requests: int, max_age_days: int, batch: int = BATCH,
                 max_refused: int = 0):
        self.models = models
        self.db = models.database
        self.kind = kind_of_database(self.db)
        self.max_requests = max_requests
        self.max_age_days = max_age_days
        self.max_refused = max_refused
        self.batch = batch
        self.deleted = 0
        self._run: Iterator[int] | None = None

    def step(self, now: float) -> bool:
        """Delete one batch of what is due; False when this run is over (the next one starts afresh)."""
        if self._run is None:
            self._run = self._batches(now)
        try:
            self.deleted += next(self._run)
            return True
        except StopIteration:
            self._run = None
            return False

    def run(self, now: float) -> int:
        """A whole run at once (tests, scripts): the number of rows deleted."""
        before = self.deleted
        while self.step(now):
            pass
        return self.deleted - before

    def _batches(self, now: float) -> Iterator[int]:
        e = self.models.Exchange
        if self.max_age_days > 0:
            cutoff = now - self.max_age_days * 86400
            while True:
                ids = [r[0] for r in e.select(e.id).where(e.started < cutoff).order_by(e.started).limit(self.batch)
                       .tuples()]
                if not ids:
                    break
                yield self._delete(ids)
        # LOG_MAX_REQUESTS=0 keeps every admitted exchange; LOG_MAX_REFUSED=0 keeps no refusal
        for keep, kind, zero_is_none in ((self.max_requests, e.outcome != REFUSED, False),
                                         (self.max_refused, e.outcome == REFUSED, True)):
            if keep <= 0 and not zero_is_none:
                continue
            if keep > 0:
                row = e.select(e.id).where(kind).order_by(e.id.desc()).offset(keep).limit(1).tuples().first()
                if row is None:
                    continue
                kind = kind & (e.id <= row[0])
            while True:
                ids = [r[0] for r in e.select(e.id).where(kind).order_by(e.id).limit(self.batch).tuples()]
                if not ids:
                    break
                yield self._delete(ids)
        days = self.max_age_days if self.max_age_days > 0 else POLL_DAYS_WITHOUT_AGE_LIMIT
        p = self.models.PollCount
        minute = int((now - days * 86400) // 60)
        while True:
            ids = [r[0] for r in p.select(p.id).where(p.minute < minute).limit(self.batch).tuples()]
            if not ids:
                break
            with self.db.atomic():
                p.delete().where(p.id.in_(ids)).execute()
            yield 0

    def _delete(self, ids: list[int]) -> int:
        m = self.models
        with self.db.atomic():
            m.ExchangeBody.delete().where(m.ExchangeBody.exchange_id.in_(ids)).execute()
            marks = ", ".join([self.db.param] * len(ids))
            if self.kind == "sqlite":
                self.db.execute_sql(f"DELETE FROM {FTS_TABLE} WHERE rowid IN ({marks})", ids)
            elif self.kind == "postgres":
                self.db.execute_sql(f"DELETE FROM {SEARCH_TABLE} WHERE exchange_id IN ({marks})", ids)
            count = m.Exchange.delete().where(m.Exchange.id.in_(ids)).execute()
        log.debug("retention: deleted %d exchanges", count)
        return count
