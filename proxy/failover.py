"""Serving one request with several backends: attempts in the pool's order until one answers.

``run`` tries the planned members in turn. A failure before an answer is in hand — connection refused or
reset, a connect or first-byte timeout, a 5xx — counts against that member (passive health) and moves to
the next one, up to ``retries`` more attempts; going back to a member already tried waits an exponential,
jittered backoff. A 4xx, or anything the request itself did wrong, is the answer. A client that has gone
(``gone()``, asked before each further attempt and while waiting for a slot) ends the attempts: the
exchange is recorded cancelled. An attempt returns once the answer's head is in (a stream) or the whole
answer (otherwise): nothing has reached the client before, and after it a failure ends the stream as with
one backend. Each attempt holds a slot of its member (``slots``) until the exchange ends; the time spent
waiting for one is the exchange's ``queued_ms``. Each attempt is recorded on the exchange (backend, status
or error, milliseconds) and counted on its member (requests, failures, retries: /metrics).
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from flask import has_request_context, request

from .context import ENVIRON_REPLAY_BACKEND, current
from .errors import BackendTimeout, BackendUnavailable, ClientGone, ProxyError, UpstreamStatus
from .exchange import Exchange
from .routing import Member, Pool

Attempt = Callable[[Any, str], Any]  # (backend, its model name) -> the response


def retryable(exc: ProxyError) -> bool:
    """Failures another backend may not have: unreachable, too slow, or a server error (not a 4xx)."""
    if isinstance(exc, UpstreamStatus):
        return exc.status >= 500
    return isinstance(exc, (BackendUnavailable, BackendTimeout))


def run(pool: Pool, exchange: Exchange, attempt: Attempt, *, sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random, gone: Callable[[], bool] = lambda: False) -> Any:
    """The answer of the first planned member that gives one. Each attempt first takes a slot on a member
    not tried yet in this round (waiting in the pool's fair queue when they are all at ``max_concurrency``);
    a round over, the next starts after a backoff."""
    assert exchange.model_requested is not None  # begin() noted it
    ctx = current()
    plan = pool.plan(exchange.model_requested, ctx.session)
    wanted = request.environ.get(ENVIRON_REPLAY_BACKEND) if has_request_context() else None
    if wanted:  # a replay from the log view sent to one backend: that one only
        plan = [(member, model) for member, model in plan if member.name == wanted]
        if not plan:
            raise ProxyError(f"the backend '{wanted}' is not healthy or does not serve "
                             f"'{exchange.model_requested}'", status=503, code="backend_not_available")
    models = {member.name: model for member, model in plan}
    key = ("key", ctx.key_name) if ctx.key_name is not None else ("client", exchange.client)
    last: ProxyError | None = None
    tried: set[str] = set()
    for number in range(pool.routing.retries + 1):
        if number >= len(plan):  # back to a backend already tried: wait first
            sleep(pool.backoff(number - len(plan) + 1, jitter()))
        if number and gone():
            raise ClientGone(f"the client closed the connection after {number} failed attempt(s); no more "
                             f"were made (last: {last.message if last else ''})")
        if len(tried) == len(plan):  # a new round
            tried.clear()
        member = pool.slots.acquire([m for m, _ in plan if m.name not in tried], key, gone, exchange.note_queued)
        model = models[member.name]
        if number:
            exchange.retry()
            member.retries += 1
        ctx.backend = member.backend
        exchange.backend_name, exchange.backend_type = member.name, member.backend.type
        exchange.model_upstream = model
        member.requests += 1
        started = time.monotonic()
        try:
            response = attempt(member.backend, model)
        except ProxyError as exc:
            release(pool, member)
            if not retryable(exc):
                raise
            ms = (time.monotonic() - started) * 1000
            member.failed(exc.message)
            member.failed_requests += 1
            exchange.note_attempt(member.name, exc.status if isinstance(exc, UpstreamStatus) else None,
                                  exc.message, ms)
            tried.add(member.name)
            last = exc
            continue
        except BaseException:
            release(pool, member)
            raise
        member.answered((time.monotonic() - started) * 1000)
        _release_when_done(pool, member, exchange, started)
        return response
    assert last is not None
    raise last


def release(pool: Pool, member: Member, held_s: float | None = None) -> None:
    """The slot back; a member a reload dropped closes its connections with its last request."""
    pool.slots.release(member, held_s)
    member.close_if_idle()


def _release_when_done(pool: Pool, member: Member, exchange: Exchange, started: float) -> None:
    """The member's slot is released when the exchange ends, however it ends (at once for an answer
    already whole)."""
    if exchange.ended_at is not None:
        release(pool, member, time.monotonic() - started)
        return

    def done(_: Exchange) -> None:
        release(pool, member, time.monotonic() - started)

    exchange.on_finish.append(done)
