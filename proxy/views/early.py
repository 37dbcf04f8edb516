"""Serving a stream the way agents need it: early bytes while the backend is slow to its first byte
(``keepalive``, KEEPALIVE_S) and one backend call for identical requests of one session (``dedupe``). A front
calls ``serve_stream`` where it would call ``serve`` for a streamed request."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any, cast

from flask import Response, request

from .. import sessions
from ..backends.base import Backend, Upstream
from ..body import read_body
from ..context import current
from ..dedupe import LEADER_LEFT, Shared, Twins
from ..errors import BackendUnavailable, ProxyError
from ..exchange import Exchange, Relay
from ..keepalive import SSE_COMMENT_BEAT, Beating, EarlyResponse
from ..render import render_error
from ..services import services
from ..streaming import error_chunk
from .common import NDJSON, SSE, STREAM_HEADERS, serve

ErrorEvent = Callable[[ProxyError], bytes]  # the bytes that end a stream with a failure, in a front's dialect
ATTACHED = "attached"  # the outcome of an exchange answered by its running twin (no backend call of its own)


def serve_stream(exchange: Exchange, dialect: str, attempt: Callable[[Backend, str], Response], *,
                 opening: bytes = b"", beat: bytes | Callable[[], bytes] = SSE_COMMENT_BEAT,
                 first_s: float | None = None, error_event: ErrorEvent | None = None) -> Response:
    """A streamed answer: ``serve(exchange, attempt)``, attached to an identical running request of the same
    session when there is one, with keep-alive beats (``opening``, ``beat``, ``first_s``: ``Beating``) when
    KEEPALIVE_S is on. ``dialect`` picks the error answer before the head (``render_error``), the mimetype
    (NDJSON for "ollama", else SSE) and, unless ``error_event`` gives them, the bytes that end a stream
    that failed after a beat (``streaming.error_chunk``)."""
    exchange.stream = True
    key = twin_key(exchange)
    if key is not None:
        twins = services().twins
        shared, leading = twins.join(key, exchange)
        if not leading:
            return _follow(exchange, dialect, shared, opening, beat, first_s, error_event)
        current().twin = shared
        exchange.on_finish.append(lambda done: _lead_ended(done, twins, key, shared))
    if not services().settings.keepalive_s and not opening:
        return serve(exchange, attempt)  # as a stream always was (an opening still needs the Beating body)
    return early_stream(exchange, dialect, lambda: stream_body(serve(exchange, attempt)), opening=opening,
                        beat=beat, first_s=first_s, error_event=error_event)


def stream_body(response: Response) -> Iterable[bytes]:
    """The body of a stream's response (a ``Relay``; a whole answer's list of bytes otherwise)."""
    return response.response  # type: ignore[return-value]


def early_stream(exchange: Exchange, dialect: str, body: Callable[[], Iterable[bytes]], *, opening: bytes = b"",
                 beat: bytes | Callable[[], bytes] = SSE_COMMENT_BEAT, first_s: float | None = None,
                 error_event: ErrorEvent | None = None) -> Response:
    """A stream that beats until ``body()`` (run in a worker: the backend part) hands over its first bytes
    (``keepalive.Beating`` says how). A failure before anything went out is answered with its status as
    without beats; after the first beat, in the stream (``error_chunk`` of ``dialect``). Recorded either way."""
    def failed(exc: ProxyError, head_sent: bool) -> Response | bytes:
        if not head_sent:
            return render_error(exc, dialect)
        tail = error_event(exc) if error_event is not None else error_chunk(dialect, exc)
        if not exchange.finished:
            exchange.status = 200
            exchange.fail(exc)
            exchange.client_response.add_tail(tail)
            exchange.finish()
        return tail

    def abandoned() -> None:
        if not exchange.finished:
            exchange.outcome = "cancelled"
            exchange.error = "the client closed the connection before the backend's first byte"
            exchange.finish()

    beating = Beating(body, opening=opening, beat=beat, every_s=services().settings.keepalive_s, first_s=first_s,
                      failed=failed, abandoned=abandoned)
    return EarlyResponse(beating, status=200, mimetype=_mimetype(dialect), headers=STREAM_HEADERS,
                         direct_passthrough=True)


def _mimetype(dialect: str) -> str:
    return NDJSON if dialect == "ollama" else SSE


# --- identical requests of one session ----------------------------------------------------------------

def twin_key(exchange: Exchange) -> tuple | None:
    """What makes two requests twins: the front, the path, the body's bytes and the session, given by the
    client's header (a fingerprint is no promise that two clients are one agent). None: never attached."""
    session = sessions.from_headers(request.environ)
    if session is None:
        return None
    body = read_body(request, services().settings.max_request_bytes)
    return exchange.front, request.path, hashlib.sha256(body).digest(), session


def _lead_ended(exchange: Exchange, twins: Twins, key: tuple, shared: Shared) -> None:
    """The leader finished (its answer assembled): its twins get the end of the stream, or, if its client
    left, an error; a failure before any byte is theirs too."""
    error: ProxyError | None = None
    if exchange.outcome == "cancelled":
        error = BackendUnavailable(LEADER_LEFT)
    elif exchange.error is not None:
        status = exchange.status if exchange.status is not None and exchange.status >= 400 else 502
        error = ProxyError(exchange.error, status=status)
    shared.end(exchange.outcome != "cancelled", error)
    twins.leave(key, shared)


class _Attached:
    """The upstream side of an attached request's ``Relay``: nothing to close, failures named as the twin's."""

    def close(self) -> None:
        pass

    def error_for(self, exc: BaseException) -> ProxyError:
        return BackendUnavailable(f"the running identical request failed: {exc}")


def _follow(exchange: Exchange, dialect: str, shared: Shared, opening: bytes, beat: Any,
            first_s: float | None, error_event: ErrorEvent | None) -> Response:
    """Answer with the twin's bytes: those so far, then the rest as they come. Recorded as ``attached``, with
    the twin's request id in ``attempts`` (``{"attached_to": ...}``), its backend and its answer."""
    leader = shared.leader
    exchange.backend_name, exchange.backend_type = leader.backend_name, leader.backend_type
    exchange.attempts = [{"attached_to": leader.request_id}]
    exchange.on_finish.append(lambda done: _follower_ended(done, leader))

    def body() -> Iterable[bytes]:
        reader: Iterator[bytes] = shared.read()
        first = next(reader, None)  # the twin's failure before its first byte is raised here: answered as ours
        exchange.status = 200
        exchange.pack_stream_copies()
        chunks = reader if first is None else chain((first,), reader)
        return Relay(exchange, cast(Upstream, _Attached()), chunks, dialect)

    if services().settings.keepalive_s or opening:
        return early_stream(exchange, dialect, body, opening=opening, beat=beat, first_s=first_s,
                            error_event=error_event)
    return Response(body(), status=200, mimetype=_mimetype(dialect), headers=STREAM_HEADERS, direct_passthrough=True)


def _follower_ended(exchange: Exchange, leader: Exchange) -> None:
    exchange.model_upstream = leader.model_upstream
    if exchange.answer is None:
        exchange.answer = leader.answer
    if exchange.outcome == "ok":
        exchange.outcome = ATTACHED
