"""Twins: an identical streamed request of the same session, arriving while the first is still running, is
attached to the running answer instead of being sent to the backend again.

``Twins.join(key)`` makes the first request of a key its leader (a ``Shared`` answer it feeds, chunk by
chunk, as its own client gets them) and every later one a follower, which reads what was produced so far
and then the rest as it comes. Bounded: a shared answer keeps at most ``MAX_SHARED_BYTES``; past that no one
else attaches and the followers end with an error (they send again). Ended in ``finally`` either way: a
leader that fails before its first byte hands its error to the followers (answered with its status); a
leader whose client leaves stops the backend as any stream does, and the followers get an error event.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from .errors import BackendUnavailable, ProxyError

MAX_SHARED_BYTES = 8 * 1024 * 1024  # one running answer's copy for its followers
WAIT_S = 1.0  # how often a waiting follower looks again (its own stream's end closes it meanwhile)
LEADER_LEFT = ("the identical request this one was attached to ended before its answer did (its client "
               "left); send the request again")
TOO_LARGE = "the answer shared with an identical running request grew past {} bytes; send the request again"


class Shared:
    """One running answer, as its leader's client received it, for the followers attached to it."""

    def __init__(self, leader: Any):
        self.leader = leader  # the leader's Exchange (its request id, backend and answer are noted by followers)
        self.data = bytearray()  # one buffer: keeping each chunk object would pin its producer's working buffer
        self.done = False
        self.complete = False  # ended as a whole answer (not cut by its client leaving)
        self.error: ProxyError | None = None  # the leader failed before its first byte
        self.overflowed = False
        self.followers = 0
        self._cond = threading.Condition()

    def add(self, chunk: bytes) -> None:
        """A chunk the leader's client got (its ``Relay`` calls this)."""
        with self._cond:
            if self.overflowed:
                return
            if len(self.data) + len(chunk) > MAX_SHARED_BYTES:
                self.overflowed = True
            else:
                self.data += chunk
            self._cond.notify_all()

    def end(self, complete: bool, error: ProxyError | None = None) -> None:
        """The leader's answer ended (the first call counts): whole, or cut; ``error`` is its failure."""
        with self._cond:
            if self.done:
                return
            self.done, self.complete = True, complete
            if not self.data and error is not None:
                self.error = error
            self._cond.notify_all()

    def read(self) -> Iterator[bytes]:
        """Everything so far, then the rest as it comes. Before the first chunk, a leader's failure is raised
        here (the follower answers it as its own); after it, a cut answer ends with ProxyError for the
        follower's stream to end in its dialect."""
        offset = 0
        while True:
            with self._cond:
                while offset >= len(self.data) and not self.done and not self.overflowed:
                    self._cond.wait(WAIT_S)
                new = bytes(self.data[offset:])
                offset += len(new)
                finished = (self.done or self.overflowed) and offset >= len(self.data)
                error, complete, overflowed = self.error, self.complete, self.overflowed
            if new:
                yield new
            if finished:
                if error is not None:
                    raise error
                if overflowed:
                    raise BackendUnavailable(TOO_LARGE.format(MAX_SHARED_BYTES))
                if not complete:
                    raise BackendUnavailable(LEADER_LEFT)
                return


class Twins:
    """The running shared answers of one app, by key (front, path, body digest, session)."""

    def __init__(self) -> None:
        self._running: dict[tuple, Shared] = {}
        self._lock = threading.Lock()

    def join(self, key: tuple, exchange: Any) -> tuple[Shared, bool]:
        """(the shared answer, True) for the leader, which must ``leave`` in a finally; (its twin's, False)
        for a follower."""
        with self._lock:
            shared = self._running.get(key)
            if shared is not None and not shared.done and not shared.overflowed:
                shared.followers += 1
                return shared, False
            shared = self._running[key] = Shared(exchange)
            return shared, True

    def leave(self, key: tuple, shared: Shared) -> None:
        with self._lock:
            if self._running.get(key) is shared:
                del self._running[key]

    def running(self) -> int:
        return len(self._running)
