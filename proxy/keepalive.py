"""Early bytes for slow backends: a streamed answer's body that beats while the backend is still on the prompt.

``Beating`` runs the backend work (failover, a slot's queue, the upstream's head and first byte) in a worker
greenlet and sends a keep-alive beat every KEEPALIVE_S until that work hands over its first bytes; the rest of
the stream then goes to the client straight from the request's own greenlet. It knows no dialect, no Flask
and no exchange (Flask only for the response class): the front passes its opening, its beat and what to do on a failure.
"""
from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response
from werkzeug.wrappers import Response as BaseResponse

from .errors import ProxyError
from .greenlets import hub_event, spawn_worker

log = logging.getLogger(__name__)

SSE_COMMENT_BEAT = b": keep-alive\n\n"  # chat completions: a comment line, which every SSE client skips
INTERNAL = "internal proxy error; see the proxy's log"
# Headers of the stream's head that an error answer sent instead does not keep (the server or the access log
# adds its own again); the others (CORS, ...) stay.
DROPPED_ON_RESTART = frozenset(("content-type", "content-length", "cache-control", "x-accel-buffering",
                                "x-request-id", "connection", "transfer-encoding"))

Failed = Callable[[ProxyError, bool], "BaseResponse | bytes"]


class Beating:
    """A streamed response body (WSGI) that sends beats until the backend's first byte.

    Contract, for every front that uses it:

    - ``work()`` does everything between the request and the backend's first byte (route, failover, wait for
      a slot, open the upstream) and returns the iterable of the client's bytes (e.g. a ``Relay``: it turns
      its own later failures into error chunks). It runs in a worker greenlet, in a copy of the request's
      context (so ``flask.request`` and ``current()`` work there). Its first item is pulled in the worker too.
    - ``opening`` goes out first, always: with the first beat, or with the first bytes of the answer,
      whichever comes first. Fronts whose stream starts with an event the backend does not decide
      (``message_start``; ``response.created`` + ``response.in_progress``) pass it here and leave it out of
      their translation; chat completions pass ``b""``.
    - ``beat`` (bytes, or a callable for beats that number themselves, e.g. ``sequence_number``) goes out
      every ``every_s`` seconds (0: never) while the work has not handed over. The first goes ``first_s``
      after the start (default ``every_s``; 0 = the head and the opening at once). Until something has
      gone out, the response's status is still open: a failure then is answered with its own status.
    - ``failed(exc, head_sent)`` is called once when ``work`` raises (anything else than a ProxyError is
      logged and becomes a 500 ProxyError) before handing over, or when this greenlet is ended while waiting
      (``ShuttingDown``). It records the failure and returns, when ``head_sent`` is False, the error
      response to send instead (status, headers, body: the stream's head is replaced, its CORS headers kept),
      else the bytes that end the stream in the caller's dialect (an SSE ``data: {"error": ...}`` event, an
      ``event: error``, a ``response.failed``). It runs in a copy of the request's context.
    - ``abandoned()`` is called when the client left before the work handed over, after the work was
      killed (a slot wait ends, an upstream connection being opened or read is closed, so the backend
      stops): the caller records its exchange as cancelled unless it is finished already (e.g. the failure
      was recorded by ``failed``).
    - Cleanup is in ``close()`` (WSGI calls it however the response ends, iterated or not): the worker is
      stopped, the handed-over stream closed, then the close hooks get the bytes sent (the access line).

    The answer's own chunks are never queued: a ``Relay``'s pass on with ``yield from``. A fast backend (first
    byte before the first beat) costs a worker greenlet and an event more than a plain stream, both gone
    once the answer has been handed over.
    """

    __slots__ = ("opening", "beat", "every_s", "first_s", "failed", "abandoned", "sent", "head_sent", "restart",
                 "_context", "_work", "_ready", "_first", "_rest", "_handed", "_counted", "_error", "_left",
                 "_closed", "_close_hooks", "_stop")  # one per open stream: no dict

    def __init__(self, work: Callable[[], Iterable[bytes]], *, opening: bytes = b"",
                 beat: bytes | Callable[[], bytes] = SSE_COMMENT_BEAT, every_s: float, first_s: float | None = None,
                 failed: Failed, abandoned: Callable[[], None] = lambda: None):
        self.opening = opening
        self.beat = beat if callable(beat) else (lambda: beat)
        self.every_s = every_s if every_s > 0 else None  # None: no beats (the opening still goes first)
        self.first_s = self.every_s if first_s is None else first_s
        self.failed = failed
        self.abandoned = abandoned
        self.sent = 0
        self.head_sent = False
        self.restart: tuple[Callable, list] | None = None  # (start_response, the head's headers): EarlyResponse
        self._context: contextvars.Context | None = contextvars.copy_context()  # the view's (flask's request, ours)
        self._work: Callable[[], Iterable[bytes]] | None = work
        self._ready: Any = hub_event()  # the hand-over: (first bytes, the rest) or an error; None once taken
        self._first = b""
        self._rest: Iterator[bytes] | None = None
        self._handed = b""  # the first bytes the work handed over
        self._counted: Any = None  # the handed-over body when it counts its own bytes (a Relay's ``sent``)
        self._error: ProxyError | None = None
        self._left = False  # the client left (or the body was closed) before the hand-over was taken
        self._closed = False
        self._close_hooks: list[Callable[[int], None]] = []
        self._stop = spawn_worker(self._context.copy().run, self._run)

    # --- the worker --------------------------------------------------------------------------------
    def _run(self) -> None:
        rest: Iterator[bytes] | None = None
        first, error = b"", None
        work, self._work = self._work, None  # its closures hold the parsed request: not for the stream's life
        assert work is not None  # run once
        try:
            rest = iter(work())
            first = next(rest, b"")
        except ProxyError as exc:
            error = exc
        except Exception:  # noqa: BLE001 - a bug: logged here, answered as a 500 in the caller's dialect
            log.exception("the backend work of a stream failed")
            error = ProxyError(INTERNAL)
        if not self._left:
            self._first, self._rest, self._error = first, rest, error
            self._ready.set()
            return
        # nobody takes it any more (the kill came too late): close what was opened, then tell the caller
        self._close_rest(rest)
        self.abandoned()

    # --- the body ----------------------------------------------------------------------------------
    def add_close_hook(self, hook: Callable[[int], None]) -> None:
        """``hook(bytes sent)`` runs when the body closes (as ``Relay.add_close_hook``)."""
        self._close_hooks.append(hook)

    def __iter__(self) -> Iterator[bytes]:
        try:
            wait = self.first_s
            try:
                while not self._ready.wait(wait):
                    out = self.beat() if self.head_sent or not self.opening else self.opening
                    self.head_sent = True
                    self.sent += len(out)
                    yield out
                    wait = self.every_s
            except ProxyError as exc:  # ended while waiting (ShuttingDown): stop the work, answer the end
                self._stop_worker()
                yield from self._answer_failure(exc)
                return
            if self._error is not None:
                yield from self._answer_failure(self._error)
                return
            self._taken()
            first = self._handed = self._first
            self._first = b""
            if not self.head_sent and self.opening:
                first = self.opening + first
            self.head_sent = True
            rest = self._rest
            counted = getattr(rest, "sent", None) is not None  # a Relay counts its own bytes (the first too)
            self.sent += len(first) - (len(self._handed) if counted else 0)
            self._handed = b""
            yield first
            if rest is not None:
                if counted:
                    self._counted = rest
                    yield from rest  # no step of ours per chunk
                else:
                    for out in rest:
                        self.sent += len(out)
                        yield out
        finally:
            self.close()

    def _taken(self) -> None:
        """What only the wait needed goes, not to be kept while the answer streams: the request's context (flask's
        request, with the body it caches), the finished worker, the event, the failure and beat callbacks."""
        self._context = None
        self._ready = None
        del self._stop, self.failed, self.abandoned, self.beat

    def _answer_failure(self, exc: ProxyError) -> Iterator[bytes]:
        assert self._context is not None  # failures are answered here only before the hand-over
        answer = self._context.copy().run(self.failed, exc, self.head_sent)
        if isinstance(answer, BaseResponse):
            answer = self._restarted(answer, exc)
        self.head_sent = True
        if answer:
            self.sent += len(answer)
            yield answer

    def _restarted(self, response: BaseResponse, exc: ProxyError) -> bytes:
        """The error response's status and headers instead of the stream's (nothing has been sent yet)."""
        if self.restart is None:
            raise exc  # not started by EarlyResponse: the server answers 500
        start_response, head = self.restart
        headers = [(k, v) for k, v in head if k.lower() not in DROPPED_ON_RESTART]
        headers += [(k, v) for k, v in response.headers.items() if k.lower() != "x-request-id"]
        start_response(response.status, headers, (type(exc), exc, exc.__traceback__))
        return response.get_data()

    def _stop_worker(self) -> bool:
        """Kill the worker if it has not handed over (its own finally blocks close what it opened)."""
        self._left = self._ready is not None and not self._ready.is_set()
        if self._left:
            self._stop()
        return self._left

    def _close_rest(self, rest: Any) -> None:
        close = getattr(rest, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._stop_worker():  # the client left before the first byte
                self.abandoned()
            else:
                rest, self._rest = self._rest, None
                self._close_rest(rest)
        finally:
            if self._counted is not None:
                self.sent += self._counted.sent
            for hook in self._close_hooks:
                hook(self.sent)


class EarlyResponse(Response):
    """The response around a ``Beating`` body: it hands the body the server's ``start_response`` and the head's
    headers, so that a failure before anything was sent can still be answered with its own status."""

    def __call__(self, environ: Any, start_response: Callable) -> Any:
        app_iter, status, headers = self.get_wsgi_response(environ)
        body = self.response
        if isinstance(body, Beating):
            body.restart = (start_response, headers)
        start_response(status, headers)
        return app_iter
