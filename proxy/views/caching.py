"""The response cache at the front doors (CACHE on): a cacheable request is looked up before it is served, a
hit is replayed in the client's dialect without the backend, and a finished answer is kept — a stream's once
it has ended, whole, never chunk by chunk. Every answer of a generation or embedding endpoint says what the
cache did in ``X-Cache``: HIT, MISS (looked up, not found) or BYPASS (not looked up).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

from flask import Flask, Response, request

from ..backends.base import Upstream
from ..cache import BYPASS, HIT, MISS, Cache, replay
from ..cache import entry as entries
from ..cache.key import Ask, digest
from ..context import current
from ..dialects import openai as oa
from ..dialects.ollama import canonical
from ..errors import ProxyError
from ..exchange import Exchange
from ..render import raw_json_response
from ..services import services
from ..values import mask_url
from .common import finish_whole, route_model, stream_response

log = logging.getLogger(__name__)
# The routes whose answers may be cached: each answer of these carries X-Cache.
CACHEABLE_RULES = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/v1/chat/completions",
                             "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses"})
CACHE_NAME = "cache"  # the backend a hit's record names


def install_cache(app: Flask, cache: Cache | None) -> None:
    """Put ``cache`` on the app's services and mark the answers of cacheable routes with X-Cache."""
    if cache is None:
        return
    extras = app.extensions["llm_proxy"].extras
    extras["cache"] = cache
    flush = getattr(cache.store, "flush", None)
    if flush is not None:  # Redis: what is queued is written before the process exits
        app.extensions["llm_proxy"].on_shutdown(lambda: flush(2.0), first=True)

    def mark(response: Response) -> Response:
        state = current().cache
        if state is None:
            rule = request.url_rule
            if rule is None or rule.rule not in CACHEABLE_RULES:
                return response
            state = BYPASS
        response.headers["X-Cache"] = state
        return response

    app.after_request(mark)


def directives(header: str) -> set[str]:
    """The Cache-Control directives a client sent, lower case, without arguments."""
    return {part.split("=", 1)[0].strip().lower() for part in header.split(",") if part.strip()}


def cached(exchange: Exchange, ask_of: Callable[[], Ask], answer: Callable[[], Response],
           hit: Callable[[dict], Response] | None = None) -> Response:
    """``answer()``, or the cache's answer for the request ``ask_of()`` describes. ``Cache-Control: no-cache``
    skips the lookup, ``no-store`` the keeping; a request that cannot be cached is answered as it would be.
    ``hit(entry)``: how an agent front answers a hit in its own shape (default: in the dialect of ``ask.reply``)."""
    cache: Cache | None = services().extras.get("cache")
    if cache is None:
        return answer()
    ctx = current()
    ask = ask_of()
    if ask.why_not is not None or not (ask.deterministic or cache.cache_all):
        ctx.cache = BYPASS
        cache.count(BYPASS)
        return answer()
    said = directives(request.headers.get("Cache-Control", ""))
    try:
        key = digest(ask, *_target(exchange))
    except (TypeError, ValueError) as exc:  # a value the key cannot hold: answered, not cached
        log.warning("%s: not looked up in the response cache: %s", exchange.request_id, exc)
        ctx.cache = BYPASS
        cache.count(BYPASS)
        return answer()
    if "no-cache" in said:
        ctx.cache = BYPASS
    else:
        found = cache.get(key)
        if found is not None and found.get("op") == ask.op:
            ctx.cache = HIT
            cache.count(HIT)
            _record_hit(exchange, found)
            return _replay(exchange, ask, found) if hit is None else hit(found)
        ctx.cache = MISS
    cache.count(ctx.cache)
    response = answer()
    if "no-store" not in said:
        _keep_when_done(cache, exchange, ask, key, response)
    return response


def key_flavor(exchange: Exchange) -> str:
    """The backend flavour an agent front's request is translated for to make its key: the one backend's, or
    with BACKENDS_FILE that of the first backend the routing allows for the model (the key names them all)."""
    svc = services()
    members = svc.pool.allowed(exchange.model_requested or "") if svc.pool is not None else ()
    return members[0].backend.flavor if members else svc.backend.flavor


def replayed_stream(exchange: Exchange, data: bytes, dialect: str) -> Response:
    """A hit's stream, its events in one write (nothing is waited for between them, and a write per event
    would cost a system call each)."""
    return stream_response(exchange, cast(Upstream, _NoUpstream()), iter((data,)), dialect)


def _target(exchange: Exchange) -> tuple[str, str]:
    """(the backend's model name, who answers it): the one backend (its type and URL), or with BACKENDS_FILE
    the pool's backends the routing allows for the model, each with its own name for it."""
    svc = services()
    pool = svc.pool
    if pool is None:
        backend = svc.backend
        return route_model(exchange), f"{backend.type} {mask_url(backend.base_url)}"
    asked = exchange.model_requested or ""
    name = exchange.model_upstream = svc.settings.backend_model_for(asked)
    members = sorted(f"{m.name}={canonical(m.upstream_name(name))}" for m in pool.allowed(asked))
    return name, "pool " + ",".join(members)


class _NoUpstream:
    """What a replayed stream's relay closes: nothing."""

    status = 200
    headers: dict[str, str] = {}

    def close(self) -> None:
        pass

    def error_for(self, exc: Exception) -> ProxyError:
        return ProxyError(f"the cached answer could not be sent: {exc}")


def _record_hit(exchange: Exchange, entry: dict) -> None:
    """A hit is recorded as cached: no backend, no backend time, the entry's answer."""
    exchange.cached = exchange.local = True
    exchange.backend_name = exchange.backend_type = CACHE_NAME
    exchange.answer = entries.answer_of(entry)


def _replay(exchange: Exchange, ask: Ask, entry: dict) -> Response:
    """A hit answered in the client's dialect."""
    reply = ask.reply
    model = exchange.model_requested or ""
    now = time.time()
    cid = oa.new_id("chatcmpl-" if reply.kind == "chat" else "cmpl-")
    if reply.stream and ask.op != "embed":  # one event a word
        data = b"".join(replay.stream(entry, reply, model, now, cid, now - exchange.started))
        return replayed_stream(exchange, data, reply.dialect)
    body = replay.whole(entry, reply, model, now, cid, time.time() - exchange.started)
    return finish_whole(exchange, raw_json_response(body), body)


def _keep_when_done(cache: Cache, exchange: Exchange, ask: Ask, key: str, response: Response) -> None:
    """Keep the answer once the exchange has finished well: a whole answer now, a stream when it ends."""
    if ask.op == "embed":
        if _answered(exchange) and not response.is_streamed:
            found = entries.of_embedding(response.get_data(), ask.reply.dialect, ask.reply.kind,
                                         len(ask.fields.get("input") or ()))
            if found is not None:
                cache.keep(key, found)
        return

    def keep(done: Exchange) -> None:
        if not _answered(done):
            return
        if done.stream and done.answer_parser is not None and done.upstream_response.truncated:
            return  # a passthrough stream's answer is read from the log's copy, which was cut
        found = entries.of_answer(ask.op, done.answer)
        if found is not None:
            cache.keep(key, found)

    if exchange.finished:
        keep(exchange)
    else:
        exchange.on_finish.append(keep)


def _answered(exchange: Exchange) -> bool:
    return exchange.outcome == "ok" and exchange.status == 200 and exchange.error is None and not exchange.cached


