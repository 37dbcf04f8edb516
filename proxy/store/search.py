"""Reading the log: the filtered, newest-first list (keyset pages), one exchange, counts, export.

Functions take the ``Models`` first and run inside ``LogStore.read`` (their own connection, off the
gevent hub). Full-text search uses SQLite FTS5 or PostgreSQL's tsvector; elsewhere a LIKE scan.
Nothing here renders HTML.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import peewee as pw

from .. import jsonio
from .db import kind_of_database
from .models import BODY_NAMES, Models
from .schema import FTS_TABLE, SEARCH_TABLE

PAGE = 50
MAX_PAGE = 500
MAX_ID = 2 ** 63 - 1  # a BIGINT
EARLIEST, LATEST = -62135596800.0, 253402300799.0  # 0001-01-01 and 9999-12-31T23:59:59, UTC
LIST_FIELDS = ("id", "started", "ended", "request_id", "client", "user_agent", "key_name", "front", "endpoint",
               "method", "backend_name", "backend_type", "model", "upstream_model", "stream", "status", "outcome",
               "error", "duration_ms", "ttfb_ms", "ttfc_ms", "overhead_ms", "prompt_tokens", "completion_tokens",
               "tokens_estimated", "tokens_per_second", "tool_calls", "truncated", "preview", "queued_ms",
               "session_id", "cached", "replay_of")
EXTRA_FILTERS = ("key", "upstream", "session", "agent")
STATUS_CLASS = re.compile(r"^([1-5])xx$", re.I)
_WORD = re.compile(r'"[^"]*"|\S+')


@dataclass(frozen=True)
class Filters:
    model: str = ""
    endpoint: str = ""
    status: str = ""  # "200", "4xx", "error" (>= 400)
    client: str = ""
    outcome: str = ""
    backend: str = ""  # the backend that answered (with several, its name in BACKENDS_FILE)
    key: str = ""  # the API key's name (API_KEYS)
    upstream: str = ""  # the model as sent to the backend
    session: str = ""  # the agent session (conversation) id
    agent: str = ""  # words of the user agent
    cached: str = ""  # "1": answered from the response cache, "0": not
    ttfc_min: float | None = None  # time to first chunk at least this many ms
    q: str = ""
    before: str = ""  # cursor "<started>_<id>": rows older than it
    after_id: int = 0  # live mode: rows inserted after this id
    since: float | None = None
    until: float | None = None
    limit: int = PAGE
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> Filters:
        """Filters from URL arguments; BadFilter (a 400) for one that cannot be a filter."""
        text = {name: text_arg(args, name) for name in ("model", "endpoint", "status", "client", "outcome", "backend",
                                                          "q", "before", "limit", "after_id", "since", "until",
                                                          *EXTRA_FILTERS, "cached", "ttfc_min")}
        status = text["status"]
        if status and not (STATUS_CLASS.match(status) or status.lower() in ("error", "errors")
                           or status.isdigit() and len(status) == 3):
            raise BadFilter(f"status must be a code (200), a class (4xx) or 'error', not {status[:40]!r}")
        if text["before"] and _parse_cursor(text["before"]) is None:
            raise BadFilter("before must be a cursor of the form <started>_<id>, as the previous page gave it")
        limit = int_arg(text["limit"], "limit", 1, None)
        if text["cached"] not in ("", "0", "1"):
            raise BadFilter(f"cached must be 1 (answered from the cache) or 0 (not), not {text['cached'][:40]!r}")
        ttfc = int_arg(text["ttfc_min"], "ttfc_min", 0, 10 ** 9)
        return cls(model=text["model"], endpoint=text["endpoint"], status=status, client=text["client"],
                   outcome=text["outcome"], backend=text["backend"][:255], q=text["q"][:500], before=text["before"],
                   key=text["key"][:255], upstream=text["upstream"][:255], session=text["session"][:255],
                   agent=text["agent"][:255], cached=text["cached"],
                   ttfc_min=float(ttfc) if ttfc is not None else None,
                   after_id=int_arg(text["after_id"], "after_id", 0, MAX_ID) or 0,
                   since=time_arg(text["since"], "since"), until=time_arg(text["until"], "until"),
                   limit=PAGE if limit is None else min(MAX_PAGE, limit))

    def query_args(self, **changes: Any) -> dict[str, str]:
        """The non-empty filters as URL arguments (for links), with ``changes`` applied."""
        f = replace(self, **changes) if changes else self
        out = {name: getattr(f, name) for name in ("model", "endpoint", "status", "client", "outcome", "backend",
                                                   *EXTRA_FILTERS, "cached", "ttfc_min", "q", "before")}
        if f.ttfc_min is not None:
            out["ttfc_min"] = int(f.ttfc_min)
        if f.limit != PAGE:
            out["limit"] = f.limit
        return {k: str(v) for k, v in out.items() if v not in ("", None, 0)}

    @property
    def active(self) -> bool:
        return any((self.model, self.endpoint, self.status, self.client, self.outcome, self.backend, self.q,
                    self.key, self.upstream, self.session, self.agent, self.cached, self.ttfc_min is not None))


def cursor_of(row: dict) -> str:
    return f"{row['started']!r}_{row['id']}"


def _parse_cursor(value: str) -> tuple[float, int] | None:
    started, _, ident = value.partition("_")
    try:
        when, number = float(started), int(ident)
    except ValueError:
        return None
    return (when, number) if math.isfinite(when) and 0 <= number <= MAX_ID else None


# --- URL arguments ------------------------------------------------------------------------------
# Every value reaches SQL as a parameter; these keep it to what every database takes: no NUL (PostgreSQL
# refuses it in text), integers that fit a BIGINT, finite times within the years a datetime can hold.

class BadFilter(ValueError):
    """A URL argument of the log view that cannot be a filter: its message is shown with a 400."""


def text_arg(args: Mapping[str, str], name: str) -> str:
    value = args.get(name, "").strip()
    if "\x00" in value:
        raise BadFilter(f"{name} must not contain NUL characters")
    return value


def int_arg(value: str, name: str, low: int, high: int | None) -> int | None:
    """An integer argument, None when empty; one below ``low`` or above ``high`` (None: what a BIGINT holds) is
    refused."""
    if not value:
        return None
    top = MAX_ID if high is None else high
    if not value.isdigit() or len(value) > 19 or not low <= int(value):
        raise BadFilter(f"{name} must be a whole number from {low} to {top}, not {value[:40]!r}")
    number = int(value)
    if high is not None and number > high:
        raise BadFilter(f"{name} must be a whole number from {low} to {top}, not {value[:40]!r}")
    return number


def time_arg(value: str, name: str) -> float | None:
    """Epoch seconds, or an ISO date/time (UTC unless it says otherwise); None when empty."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadFilter(f"{name} must be epoch seconds or an ISO date/time, not {value[:40]!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            seconds = parsed.timestamp()
        except (OverflowError, ValueError):
            seconds = math.nan
    if not EARLIEST <= seconds <= LATEST:  # also NaN and the infinities
        raise BadFilter(f"{name} must be a time between the years 1 and 9999, not {value[:40]!r}")
    return seconds


def fts5_query(text: str) -> str:
    """User words as an FTS5 query: each word quoted (no syntax errors), all required; a trailing * is a prefix."""
    terms = []
    for word in _WORD.findall(text):
        prefix = word.endswith("*") and not word.startswith('"')
        word = word.strip('"').rstrip("*")
        if word:
            terms.append('"' + word.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(terms)


def _search_condition(models: Models, q: str) -> pw.Expression | None:
    e = models.Exchange
    db = models.database
    kind = kind_of_database(db)
    if kind == "sqlite":
        query = fts5_query(q)
        if not query:
            return None
        return e.id.in_(pw.SQL(f"(SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?)", [query]))
    if kind == "postgres":
        return e.id.in_(pw.SQL(f"(SELECT exchange_id FROM {SEARCH_TABLE} WHERE doc @@ plainto_tsquery('simple', %s))",
                               [q]))
    b = models.ExchangeBody  # MySQL and others: every word somewhere in the request, response or answer
    words = [w.strip('"') for w in _WORD.findall(q) if w.strip('"*')][:10]
    if not words:
        return None
    found = [b.client_request.contains(w) | b.client_response.contains(w) | b.answer.contains(w) for w in words]
    return e.id.in_(b.select(b.exchange_id).where(*found))


def _conditions(models: Models, f: Filters) -> list[pw.Expression]:
    e = models.Exchange
    out: list[pw.Expression] = []
    if f.model:
        out.append((e.model == f.model) | (e.upstream_model == f.model))
    if f.endpoint:
        out.append(e.endpoint == f.endpoint)
    if f.client:
        out.append(e.client == f.client)
    if f.outcome:
        out.append(e.outcome == f.outcome)
    if f.session:  # indexed with the start time
        out.append(e.session_id == f.session)
    if f.backend:  # no index: a pool has a few backends, so walking the time index finds a page of one quickly
        out.append(e.backend_name == f.backend)
    if f.key:
        out.append(e.key_name == f.key)
    if f.upstream:
        out.append(e.upstream_model == f.upstream)
    if f.session:  # indexed (session_id, started)
        out.append(e.session_id == f.session)
    if f.agent:
        out.append(e.user_agent.contains(f.agent))
    if f.cached:
        out.append(e.cached == (f.cached == "1"))
    if f.ttfc_min is not None:
        out.append(e.ttfc_ms >= f.ttfc_min)
    if f.status:
        match = STATUS_CLASS.match(f.status)
        if match:
            low = int(match.group(1)) * 100
            out.append((e.status >= low) & (e.status < low + 100))
        elif f.status.lower() in ("error", "errors"):
            out.append(e.status >= 400)
        elif f.status.isdigit():
            out.append(e.status == int(f.status))
    if f.since is not None:
        out.append(e.started >= f.since)
    if f.until is not None:
        out.append(e.started < f.until)
    if f.q:
        condition = _search_condition(models, f.q)
        if condition is not None:
            out.append(condition)
    return out


def list_exchanges(models: Models, f: Filters) -> dict[str, Any]:
    """One page, newest first: {"items": [...], "next": cursor or None}.

    Without a search, newest means by start time (an index range per filter). With one, results come in
    id order (the order they were recorded), so SQLite can walk the FTS index backwards and stop after a
    page instead of sorting every match of a common word."""
    e = models.Exchange
    columns = [getattr(e, name) for name in LIST_FIELDS]
    search_first = bool(f.q) and kind_of_database(models.database) == "sqlite" and fts5_query(f.q)
    if search_first:
        fts = pw.Table(FTS_TABLE, alias="fts")
        query = e.select(*columns).join(fts, on=(fts.c.rowid == e.id)) \
            .where(pw.SQL(f'"fts"."{FTS_TABLE}" MATCH ?', [fts5_query(f.q)]))
        conditions = _conditions(models, replace(f, q=""))
        order: tuple[Any, ...] = (fts.c.rowid.desc(),)
    else:
        query = e.select(*columns)
        conditions = _conditions(models, f)
        order = (e.id.desc(),) if f.q else (e.started.desc(), e.id.desc())
    if f.after_id:  # live mode: the few rows written since, by the primary key (a time-index walk would not stop)
        conditions.append(e.id > f.after_id)
        if not search_first:
            order = (e.id.desc(),)
    cursor = _parse_cursor(f.before) if f.before else None
    if cursor is not None:
        started, ident = cursor
        if f.q:
            conditions.append((fts.c.rowid if search_first else e.id) < ident)
        else:
            conditions.append(pw.Tuple(e.started, e.id) < pw.Tuple(started, ident))  # row value: an index range
    if conditions:
        query = query.where(*conditions)
    rows = list(query.order_by(*order).limit(f.limit + 1).dicts())
    more = len(rows) > f.limit
    rows = rows[:f.limit]
    return {"items": rows, "next": cursor_of(rows[-1]) if more and rows else None}


def get_exchange(models: Models, ident: int) -> dict[str, Any] | None:
    """One exchange with its four bodies and assembled answer, or None."""
    e, b = models.Exchange, models.ExchangeBody
    row = e.select().where(e.id == ident).dicts().first()
    if row is None:
        return None
    body = b.select().where(b.exchange_id == ident).dicts().first() or {}
    row["bodies"] = {name: {"text": body.get(name, ""), "size": body.get(f"{name}_size", 0),
                            "truncated": bool(body.get(f"{name}_truncated", False))} for name in BODY_NAMES}
    answer = body.get("answer")
    row["answer"] = jsonio.loads(answer) if answer else None
    row["attempts"] = jsonio.loads(row["attempts"]) if row.get("attempts") else []
    return row


SESSION_FIELDS = ("id", "started", "endpoint", "model", "stream", "status", "outcome", "error", "duration_ms",
                  "ttfb_ms", "ttfc_ms", "prompt_tokens", "completion_tokens", "tokens_estimated", "tool_calls",
                  "preview", "attempts", "backend_name")


def session_exchanges(models: Models, session_id: str, limit: int = MAX_PAGE) -> dict[str, Any]:
    """A session's exchanges in the order they started (the agent's turns), the first ``limit`` of them, and
    its totals: {"items", "more", "totals"}."""
    e = models.Exchange
    query = e.select(*[getattr(e, name) for name in SESSION_FIELDS]).where(e.session_id == session_id)
    rows = list(query.order_by(e.started.asc(), e.id.asc()).limit(limit + 1).dicts())
    more = len(rows) > limit
    rows = rows[:limit]
    for row in rows:
        row["attempts"] = jsonio.loads(row["attempts"]) if row.get("attempts") else []
    totals = e.select(pw.fn.COUNT(e.id), pw.fn.SUM(e.prompt_tokens), pw.fn.SUM(e.completion_tokens),
                      pw.fn.SUM(e.duration_ms), pw.fn.MIN(e.started), pw.fn.MAX(e.ended)) \
        .where(e.session_id == session_id).tuples().first() or (0, 0, 0, 0, None, None)
    names = ("exchanges", "prompt_tokens", "completion_tokens", "duration_ms", "first", "last")
    return {"items": rows, "more": more, "totals": dict(zip(names, totals, strict=True))}


def neighbours(models: Models, row: dict, f: Filters | None = None) -> dict[str, int | None]:
    """Ids of the next newer and next older exchange (for links on the exchange page), among those that
    pass the list's filters ``f`` when given (stepping through a filtered list)."""
    e = models.Exchange
    here = pw.Tuple(row["started"], row["id"])
    conditions = _conditions(models, replace(f, before="", after_id=0)) if f is not None else []
    newer = e.select(e.id).where(pw.Tuple(e.started, e.id) > here, *conditions) \
        .order_by(e.started.asc(), e.id.asc()).limit(1).tuples().first()
    older = e.select(e.id).where(pw.Tuple(e.started, e.id) < here, *conditions) \
        .order_by(e.started.desc(), e.id.desc()).limit(1).tuples().first()
    return {"newer": newer[0] if newer else None, "older": older[0] if older else None}


def find_request(models: Models, request_id: str) -> int | None:
    """The log id of the exchange with this request id (found through the full-text index, like a search)."""
    e = models.Exchange
    conditions = [e.request_id == request_id]
    if kind_of_database(models.database) in ("sqlite", "postgres"):  # elsewhere the bodies are searched, not ids
        condition = _search_condition(models, '"' + request_id.replace('"', "") + '"')
        if condition is None:
            return None
        conditions.append(condition)
    row = e.select(e.id).where(*conditions).order_by(e.id.desc()).limit(1).tuples().first()
    return row[0] if row else None


def replays_of(models: Models, ident: int, most: int = 20) -> list[int]:
    """Ids of the exchanges that replay ``ident`` (a partial index on SQLite and PostgreSQL, see ``schema``)."""
    e = models.Exchange
    query = e.select(e.id).where(e.replay_of.is_null(False), e.replay_of == ident)
    return [r[0] for r in query.order_by(e.id.desc()).limit(most).tuples()]


def suggestions(models: Models, recent: int = 2000) -> dict[str, list[str]]:
    """Values seen in the newest rows, for the filter fields (cheap at any table size)."""
    e = models.Exchange
    names = ("model", "endpoint", "client", "backend_name", "key_name", "upstream_model")
    rows = list(e.select(*(getattr(e, n) for n in names)).order_by(e.id.desc()).limit(recent).tuples())
    found = {name: sorted({r[i] for r in rows if r[i]}) for i, name in enumerate(names)}
    found["backend"], found["key"], found["upstream"] = found.pop("backend_name"), found.pop("key_name"), \
        found.pop("upstream_model")
    return found


def counts(models: Models, now: float) -> dict[str, Any]:
    """Requests, errors, tokens and polls of the last hour and day."""
    e, p = models.Exchange, models.PollCount
    out: dict[str, Any] = {}
    for name, seconds in (("hour", 3600), ("day", 86400)):
        since = now - seconds
        row = e.select(pw.fn.COUNT(e.id), pw.fn.SUM(pw.Case(None, [(e.status >= 400, 1)], 0)),
                       pw.fn.SUM(e.prompt_tokens), pw.fn.SUM(e.completion_tokens)) \
            .where(e.started >= since).tuples().first() or (0, 0, 0, 0)
        polls = p.select(pw.fn.SUM(p.count)).where(p.minute >= int(since // 60)).scalar() or 0
        out[name] = {"requests": row[0] or 0, "errors": int(row[1] or 0), "prompt_tokens": int(row[2] or 0),
                     "completion_tokens": int(row[3] or 0), "polls": int(polls)}
    out["total"] = e.select(pw.fn.MAX(e.id)).scalar() or 0
    return out


def export_batch(models: Models, since: float | None, until: float | None, after_id: int,
                 batch: int = 100) -> list[dict[str, Any]]:
    """Up to ``batch`` exchanges in [since, until) with ids above ``after_id``, oldest first, with bodies.
    The caller pages with the last id (each batch is one short read, so an export never holds a connection)."""
    e = models.Exchange
    query = e.select(e.id).where(e.id > after_id)
    if since is not None:
        query = query.where(e.started >= since)
    if until is not None:
        query = query.where(e.started < until)
    ids = [r[0] for r in query.order_by(e.id).limit(batch).tuples()]
    return [row for row in (get_exchange(models, ident) for ident in ids) if row is not None]
