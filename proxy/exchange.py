"""The record of one exchange (client request -> upstream -> client response) and its relay.

An ``Exchange`` is filled in as the request runs: the four bodies (bounded by LOG_MAX_BODY_BYTES),
timings, tokens, outcome. When it finishes it is handed, once, to the sinks (the log writer, the
access line). ``Relay`` is the streamed response body: it forwards chunks as they come, turns a
failure after the first byte into an error chunk, and on any end — including a client that went
away — closes the upstream response and finishes the exchange.
"""
from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import draining
from .backends.base import Upstream
from .errors import ProxyError
from .framing import FrameTooLarge
from .streaming import Answer, error_chunk
from .usage import UsageTap

log = logging.getLogger(__name__)

# What streamed chunks of both dialects repeat, given to zlib as a preset dictionary: a small block then
# compresses as well as a large one would (a stream's copy is packed a block at a time, each on its own).
PACK_DICT = (b'{"model":"","created_at":"2026-01-01T00:00:00.000000000Z","message":{"role":"assistant","content":"",'
             b'"thinking":""},"done":false}\n'
             b'data: {"id":"chatcmpl-","object":"chat.completion.chunk","created":1700000000,"model":"",'
             b'"system_fingerprint":"","choices":[{"index":0,"delta":{"role":"assistant","content":"",'
             b'"reasoning_content":""},"logprobs":null,"finish_reason":null}]}\n\n')
PACK_WBITS = -11  # raw deflate, a small window: the block and the dictionary fit, and zlib's set-up stays cheap
MERGE_WBITS = -13  # a window that holds a whole merged block


def pack_block(data: bytes | bytearray, wbits: int = PACK_WBITS) -> bytes:
    packer = zlib.compressobj(1, zlib.DEFLATED, wbits, 4, zlib.Z_DEFAULT_STRATEGY, PACK_DICT)
    return packer.compress(data) + packer.flush()


def unpack_block(block: bytes, wbits: int = PACK_WBITS) -> bytes:
    unpacker = zlib.decompressobj(wbits, zdict=PACK_DICT)
    return unpacker.decompress(block) + unpacker.flush()


def unpack_merged(block: bytes) -> bytes:
    return unpack_block(block, MERGE_WBITS)


class BodyBuffer:
    """A body kept for the log, up to a byte limit; past it, counted and marked truncated.

    Bytes are copied into one bytearray: each of orjson's small outputs pins its whole working buffer,
    so keeping the chunk objects would cost a buffer per streamed line. A stream's copy is also packed as
    it grows (``pack``): every PACK_AT bytes of chunks are deflated in one call (level 1, a small
    window and the preset dictionary PACK_DICT, which keeps each call cheap), because a long stream's copy
    is most of what a stream costs in memory — streamed JSON chunks repeat themselves. Every MERGE_EVERY
    small blocks are packed again as one, which compresses much better than the small ones did.
    Figures: docs/performance.md."""

    __slots__ = ("data", "size", "limit", "truncated", "packed", "pack", "merged")

    PACK_AT = 1024
    MERGE_EVERY = 8

    def __init__(self, limit: int, pack: bool = False):
        self.data = bytearray()
        self.size = 0
        self.limit = limit
        self.truncated = False
        self.packed: list[bytes] = []  # small blocks (PACK_WBITS), after the merged ones
        self.merged: list[bytes] = []  # big blocks (MERGE_WBITS), each MERGE_EVERY small ones packed again
        self.pack = pack

    def add(self, data: bytes) -> None:
        room = self.limit - self.size
        if room >= len(data):
            self.data += data
        else:
            if room > 0:
                self.data += data[:room]
            self.truncated = True
        self.size += len(data)
        if self.pack and len(self.data) >= self.PACK_AT:
            packed = self.packed
            packed.append(pack_block(self.data))
            self.data = bytearray()
            if len(packed) >= self.MERGE_EVERY:
                self.merged.append(pack_block(b"".join(map(unpack_block, packed)), MERGE_WBITS))
                self.packed = []

    def value(self) -> bytes:
        if not self.packed and not self.merged:
            return bytes(self.data)
        return b"".join([*map(unpack_merged, self.merged), *map(unpack_block, self.packed), self.data])

    add_tail = add  # an error chunk the proxy itself ends a stream with


class DerivedBody:
    """What the client received on a passthrough stream: the upstream copy with the proxy's byte
    edits applied again, computed when the log writer asks — so a live stream keeps one copy."""

    __slots__ = ("source", "derive", "tail", "_value")

    def __init__(self, source: BodyBuffer, derive: Callable[[bytes], bytes]):
        self.source = source
        self.derive = derive
        self.tail = b""
        self._value: bytes | None = None

    def add(self, data: bytes) -> None:  # the relay's copy is not needed
        pass

    def add_tail(self, data: bytes) -> None:
        self.tail += data

    def value(self) -> bytes:
        if self._value is None:
            self._value = self.derive(self.source.value()) + self.tail
        return self._value

    @property
    def size(self) -> int:
        return len(self.value()) if not self.source.truncated else self.source.size

    @property
    def truncated(self) -> bool:
        return self.source.truncated


class Exchange:
    __slots__ = ("clock", "started", "request_id", "front", "endpoint", "method", "client", "user_agent", "key_name",
                 "max_body", "client_request", "upstream_request", "upstream_response", "client_response",
                 "backend_name", "backend_type", "model_requested", "model_upstream", "stream", "status", "outcome",
                 "error", "answer", "answer_parser", "upstream_first_byte_at", "client_first_chunk_at", "ended_at",
                 "local", "usage", "whole", "attempts", "queued_ms", "session_id", "cached",
                 "replay_of", "_sinks", "on_finish",
                 "finished")  # each stream holds one: no dict

    def __init__(self, *, request_id: str, front: str, endpoint: str, method: str, client: str, user_agent: str,
                 client_body: bytes, max_body: int, sinks: Iterable[Callable[[Exchange], None]],
                 clock: Callable[[], float] = time.time):
        self.clock = clock
        self.started = clock()
        self.request_id = request_id
        self.front = front
        self.endpoint = endpoint
        self.method = method
        self.client = client
        self.user_agent = user_agent
        self.key_name: str | None = None
        self.max_body = max_body
        self.client_request = BodyBuffer(max_body)
        self.client_request.add(client_body)
        self.upstream_request = BodyBuffer(max_body)
        self.upstream_response = BodyBuffer(max_body)
        self.client_response: BodyBuffer | DerivedBody = BodyBuffer(max_body)
        self.backend_name = ""
        self.backend_type = ""
        self.model_requested: str | None = None
        self.model_upstream: str | None = None
        self.stream = False
        self.status: int | None = None
        self.outcome = "ok"
        self.error: str | None = None
        self.answer: Answer | None = None
        self.answer_parser: Callable[[bytes], Answer] | None = None  # passthrough: parse upstream copy at the end
        self.usage: UsageTap | None = None  # a passthrough stream's usage, read as it passes
        self.whole: bytes | None = None  # a whole (non-streamed) upstream answer, until the answer is read from it
        self.upstream_first_byte_at: float | None = None
        self.client_first_chunk_at: float | None = None
        self.ended_at: float | None = None
        self.local = False  # answered without the backend (probes, model lists)
        self.attempts: list[dict[str, Any]] | None = None  # failed attempts before the backend that answered
        self.queued_ms: float | None = None  # time spent waiting for a backend's slot (None: never waited)
        self.session_id: str | None = None  # the conversation or agent session it belongs to
        self.cached = False  # answered from the response cache
        self.replay_of: int | None = None  # the log id of the exchange this one replays
        self._sinks = tuple(sinks)
        self.on_finish: list[Callable[[Exchange], None]] = []  # this exchange's own callbacks (e.g. limits)
        self.finished = False
        draining.started(self)  # a stopping server ends it after DRAIN_TIMEOUT

    def sinks_are(self, sinks: Iterable[Any]) -> bool:
        """Whether this exchange reports to ``sinks`` (an app's list): which app it belongs to."""
        return self._sinks == tuple(sinks)

    # --- filled in as the exchange runs ------------------------------------------------------
    def client_copy_derived_from_upstream(self, derive: Callable[[bytes], bytes]) -> None:
        self.client_response = DerivedBody(self.upstream_response, derive)

    def pack_stream_copies(self) -> None:
        """A streamed answer's copies are packed as they grow (see ``BodyBuffer``)."""
        for body in (self.upstream_response, self.client_response):
            if isinstance(body, BodyBuffer):
                body.pack = True

    def count_usage(self, sse: bool, agent: bool = False) -> None:
        """Read this passthrough stream's usage from its chunks as they pass (see ``usage.UsageTap``; ``agent``:
        the Messages and Responses events' own usage)."""
        self.usage = UsageTap(sse, agent)

    def took_whole(self, raw: bytes) -> None:
        """The whole upstream answer, as received: a passthrough's answer and usage are read from it at the
        end, not from the log's copy, which may be truncated."""
        if self.answer_parser is not None and self.answer is None:
            self.whole = raw

    def note_attempt(self, backend: str, status: int | None, error: str, ms: float) -> None:
        """A failed attempt (several backends): kept for the log, in order."""
        if self.attempts is None:
            self.attempts = []
        self.attempts.append({"backend": backend, "status": status, "error": error, "ms": round(ms, 1)})

    def note_queued(self, seconds: float) -> None:
        """Time spent waiting for a slot of a backend at its ``max_concurrency`` (added up over attempts)."""
        self.queued_ms = (self.queued_ms or 0.0) + seconds * 1000

    def retry(self) -> None:
        """Forget what a failed attempt left (what was sent and received upstream) before the next one."""
        max_body = self.max_body
        self.upstream_request = BodyBuffer(max_body)
        self.upstream_response = BodyBuffer(max_body)
        self.client_response = BodyBuffer(max_body)
        self.answer = self.answer_parser = self.usage = self.whole = None
        self.upstream_first_byte_at = self.client_first_chunk_at = None

    def sent_upstream(self, body: bytes) -> None:
        self.upstream_request.add(body)

    def upstream_chunks(self, upstream: Upstream) -> Iterator[bytes]:
        """The upstream body as it arrives, its first-byte time noted and a copy kept for the log.
        A broken connection raises OSError (``upstream.error_for`` names the backend): the ``Relay``
        around a stream and ``views.common.read_whole`` translate it."""
        return upstream.stream(self._took_upstream)

    def _took_upstream(self, chunk: bytes) -> None:
        if self.upstream_first_byte_at is None:
            self.upstream_first_byte_at = self.clock()
        self.upstream_response.add(chunk)
        if self.usage is not None:
            self.usage(chunk)

    def fail(self, exc: ProxyError) -> None:
        self.outcome = exc.outcome
        self.error = exc.message
        body = getattr(exc, "body", None)  # a backend's error answer (UpstreamStatus): kept for the log
        if body and not self.upstream_response.size:
            self.upstream_response.add(body)
        if self.status is None or self.status < 400 and not self.stream:
            self.status = exc.status

    # --- the end -------------------------------------------------------------------------------
    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        draining.finished(self)
        self.ended_at = self.clock()
        if self.answer is None and self.answer_parser is not None:
            self._assemble()
        if self.answer is not None and self.answer.error and self.error is None:
            self.error = self.answer.error
            if self.outcome == "ok":
                self.outcome = "backend_error"
        for sink in (*self.on_finish, *self._sinks):
            try:
                sink(self)
            except Exception:  # one broken sink must not stop the others or the response
                log.exception("log sink %r failed for %s", sink, self.request_id)

    def _assemble(self) -> None:
        """The answer of a passthrough: from the whole body when there is one; a stream's from the log's copy
        (its text, for the log), with the usage and the error the stream itself carried (``self.usage``)."""
        whole, self.whole = self.whole, None
        copy = self.upstream_response
        tap = self.usage
        truncated = whole is None and copy.truncated
        if whole is None and (not copy.size or truncated and tap is None):
            return  # nothing, or a cut whole body: no answer to read
        try:
            answer = self.answer_parser(whole if whole is not None else copy.value())  # type: ignore[misc]
        except Exception as exc:  # the log must not lose the exchange over an unreadable answer
            log.warning("%s: the backend's answer could not be read for the log: %s", self.request_id,
                        " ".join(str(exc).split())[:200] or type(exc).__name__)
            if tap is None:
                return
            answer = Answer()
        if tap is not None:
            tap.end()
            if truncated:  # the copy's end is missing: what it says about the end is not the stream's
                answer.error = tap.error
            if tap.reported:
                answer.prompt_tokens, answer.completion_tokens = tap.prompt_tokens, tap.completion_tokens
                answer.usage_estimated = False
            elif truncated:  # nothing reported: the stream's events, counted as it passed
                answer.prompt_tokens, answer.completion_tokens = None, tap.events
                answer.usage_estimated = True
        self.answer = answer

    # --- derived figures -----------------------------------------------------------------------
    @property
    def duration(self) -> float:
        return (self.ended_at or self.clock()) - self.started

    def tokens(self) -> tuple[int | None, int | None]:
        """(prompt, completion) as the backend reported them or as counted from the stream: what the token
        limits charge and the log shows; never read from the log's copy of the body (see ``_assemble``)."""
        if self.answer is None:
            return None, None
        return self.answer.prompt_tokens, self.answer.completion_tokens

    def summary(self) -> dict[str, Any]:
        """The fields an access line or a metrics sink needs (no bodies)."""
        prompt, completion = self.tokens()
        return {"request_id": self.request_id, "front": self.front, "endpoint": self.endpoint, "key": self.key_name,
                "model": self.model_requested, "upstream_model": self.model_upstream, "stream": self.stream,
                "status": self.status, "outcome": self.outcome, "error": self.error,
                "prompt_tokens": prompt, "completion_tokens": completion,
                "duration_ms": round(self.duration * 1000, 2)}


class Relay:
    """A streamed response body: forwards ``chunks`` and always cleans up, even if never iterated."""

    def __init__(self, exchange: Exchange, upstream: Upstream, chunks: Iterable[bytes], dialect: str,
                 translate: Any = None):
        self.exchange = exchange
        self.upstream = upstream
        self.dialect = dialect
        self.sent = 0
        self._chunks = chunks
        self._translate = translate  # called per chunk (list of pieces out), then .end(); None: chunks go as they are
        self._closed = False
        self._completed = False
        self._close_hooks: list[Callable[[int], None]] = []
        self.shared: Any = None  # a dedupe.Shared this stream's chunks are copied to (ended with the exchange)

    def add_close_hook(self, hook: Callable[[int], None]) -> None:
        """``hook(bytes sent)`` runs when the relay closes (the access line uses it instead of
        wrapping the body in one more generator, which every chunk would pass through)."""
        self._close_hooks.append(hook)

    def __iter__(self) -> Iterator[bytes]:
        exchange = self.exchange
        translate = self._translate
        try:
            if translate is None:
                for out in self._chunks:
                    yield self._note(out)
            else:  # translated here, a call per chunk: no generator layer between the socket and the client
                for chunk in self._chunks:
                    outs = translate(chunk)
                    chunk = None  # type: ignore[assignment]
                    for out in outs:
                        yield self._note(out)
                    if translate.error is not None:  # after what the same chunk gave before the failure
                        raise translate.error
                    outs = out = None  # not kept while waiting for the next chunk
                for out in translate.end():
                    yield self._note(out)
                if translate.error is not None:
                    raise translate.error
            self._completed = True
        except (ProxyError, OSError) as exc:
            if not isinstance(exc, ProxyError) or isinstance(exc, FrameTooLarge):
                exc = self.upstream.error_for(exc)  # names the backend
            exchange.fail(exc)
            log.warning("%s: stream failed after the first byte: %s", exchange.request_id, exc.message)
            failure = getattr(translate, "failure", None)  # a translator that ends its own dialect's stream
            tail = failure(exc) if failure is not None else error_chunk(self.dialect, exc)
            self._completed = True
            exchange.client_response.add_tail(tail)
            self.sent += len(tail)
            if self.shared is not None:
                self.shared.add(tail)
            yield tail
        finally:
            self.close()

    def _note(self, out: bytes) -> bytes:
        exchange = self.exchange
        if exchange.client_first_chunk_at is None:
            exchange.client_first_chunk_at = exchange.clock()
        exchange.client_response.add(out)
        self.sent += len(out)
        if self.shared is not None:
            self.shared.add(out)
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._chunks, "close", None)
        try:
            if close is not None:
                close()
        finally:
            try:
                self.upstream.close()
            finally:
                if not self._completed and self.exchange.outcome == "ok":
                    self.exchange.outcome = "cancelled"
                    self.exchange.error = "the client closed the connection"
                try:
                    self.exchange.finish()
                finally:
                    for hook in self._close_hooks:
                        hook(self.sent)
