"""What this process knows of the counters it shares in Redis, so that a request far from every limit is
admitted without waiting for Redis (``Limiter.begin``; ``LIMITS_EXACT=false``, the default).

Every admission reply carries the caller's room: ``spare``, how many more requests fit in its tightest count
limit (request windows, concurrency) beyond a headroom of 5 % of that limit (at least 1), and ``tokens``, the
room left in its token windows and daily quota. The mirror keeps the last reply per caller and rule set and
corrects it by what this process does next (an admission taken ahead: one less spare; a charge: fewer tokens).
Other processes' admissions are what the headroom is for; their token charges are heard on a Redis channel
(``<prefix>:charges:<db>``: processes share it when they share counters), published with each charge once
another process is known to listen (it says hello when it subscribes; a lone process publishes nothing). Room that other processes free, or that a window's end frees, is
only seen at the next reply: the mirror can only be more cautious than Redis, not less, but for admissions of
other processes beyond the headroom between two replies.

A view is used only while the channel is subscribed, was recorded under the same subscription, and is at most
``FRESH`` seconds old; anything else sends the request down the exact path (wait for Redis's verdict).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import hiredis

log = logging.getLogger(__name__)
FRESH = 5.0  # seconds a caller's view stays usable without a new reply
RETRY = 1.0  # seconds before the listener subscribes again after losing Redis


class View:
    __slots__ = ("spare", "tokens", "seen")

    def __init__(self, spare: int, tokens: int, seen: float):
        self.spare = spare
        self.tokens = tokens
        self.seen = seen


class Mirror:
    """Views per caller (``who``) and rule set, and the listener that hears other processes' charges."""

    def __init__(self, client: Any, prefix: str, clock=time.monotonic):
        self.client = client
        self.clock = clock
        self.channel = f"{prefix}:charges:{client.connection_pool.connection_kwargs.get('db', 0)}"
        self.peers = False  # another process listens on the channel: charges are worth publishing
        self.instance = os.urandom(8).hex()  # charges this process published itself are applied already
        self._own = self.instance.encode() + b" "
        self._views: dict[str, dict[Any, View]] = {}
        self._outstanding: dict[str, int] = {}  # admissions taken ahead whose replies are not read yet
        self._live = False
        self._pid = 0
        self._stopping = False

    # --- reading and correcting views -------------------------------------------------------------
    def ahead(self, who: str, rules: Any) -> bool:
        """May a request of ``who`` under ``rules`` be admitted now, before Redis answers? If so, it is counted
        in the caller's views (one spare less) at once, and as outstanding until ``settled_ahead``."""
        if not self.listening():
            return False
        views = self._views.get(who)
        view = views.get(rules) if views is not None else None
        if view is None or view.spare <= 0 or view.tokens <= 0 \
                or self.clock() - view.seen > FRESH:
            return False
        for other in views.values():  # request windows are shared by a caller's rule sets
            other.spare -= 1
        self._outstanding[who] = self._outstanding.get(who, 0) + 1
        return True

    def listening(self) -> bool:
        """Is the channel subscribed in this process? (Starts the listener the first time it is asked.)"""
        if self._pid != os.getpid():
            self._start()
            return False
        return self._live

    def outstanding(self) -> int:
        """Admissions taken ahead whose replies are not read yet."""
        return sum(self._outstanding.values())

    def settled_ahead(self, who: str) -> None:
        """The reply of an admission taken ahead was read (or will never be)."""
        left = self._outstanding.get(who, 0) - 1
        if left > 0:
            self._outstanding[who] = left
        else:
            self._outstanding.pop(who, None)

    def record(self, who: str, rules: Any, spare: int, tokens: int, answered_ahead: bool = False) -> None:
        """A reply's room. Admissions taken ahead whose replies are still out may have reached Redis after it
        computed this one: the view counts them against it (``answered_ahead``: this reply is one of them)."""
        if not self._live:
            return
        views = self._views.get(who)
        if views is None:
            if len(self._views) >= 4096:
                self._views.clear()
            views = self._views[who] = {}
        others = self._outstanding.get(who, 0) - (1 if answered_ahead else 0)
        views[rules] = View(spare - max(0, others), tokens, self.clock())

    def charged(self, who: str, tokens: int) -> None:
        views = self._views.get(who)
        if views is not None:
            for view in views.values():
                view.tokens -= tokens

    def invalidate(self) -> None:
        """Redis failed a call, or the channel was (re)subscribed: views recorded before now are not used again
        (they may have missed charges)."""
        self._views = {}

    def forget(self) -> None:
        """The channel was lost: nothing known is trusted until it is subscribed again."""
        self._live = False
        self.invalidate()

    def charge_message(self, who: str, tokens: int) -> bytes:
        return f"{self.instance} {tokens} {who}".encode()

    def hello(self) -> None:
        """Just subscribed: tell the other processes, and learn from the count of listeners whether there are
        any (they learn of this one from the message)."""
        if int(self.client.publish(self.channel, f"{self.instance} hello".encode())) > 1:
            self.peers = True

    # --- the listener ------------------------------------------------------------------------------
    def _start(self) -> None:
        """Start listening in this process (again after a fork: a forked worker has no listener thread)."""
        self._pid = os.getpid()
        self._live = False
        self._views, self._outstanding = {}, {}  # a forked worker inherits nothing it can trust
        threading.Thread(target=self._listen_forever, name="limits-mirror", daemon=True).start()

    def stop(self) -> None:
        self._stopping = True

    def _listen_forever(self) -> None:
        """Subscribe and hear charges until the process ends; on any failure drop every view, wait, subscribe
        again. The channel is read straight off a redis-py connection (URL, auth, TLS, database) with a hiredis
        reader: every charge of every process arrives here, and redis-py's PubSub is costly per message."""
        pid = os.getpid()
        pool = self.client.connection_pool
        while not self._stopping and self._pid == pid:
            conn = None
            try:
                conn = pool.connection_class(**pool.connection_kwargs)
                conn.connect()
                sock, reader = conn._sock, hiredis.Reader()
                channel = self.channel.encode()
                sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel))
                quiet = 0  # socket timeouts in a row: one sends a PING, three mean the connection is dead
                while not self._stopping and self._pid == pid:
                    try:
                        data = sock.recv(65536)
                    except socket.timeout:
                        quiet += 1
                        if quiet >= 3:
                            raise ConnectionError("no answer to PING") from None
                        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                        continue
                    if not data:
                        raise ConnectionError("Redis closed the connection")
                    quiet = 0
                    reader.feed(data)
                    while (message := reader.gets()) is not False:
                        self._message(message)
            except Exception as exc:  # noqa: BLE001 - any failure: views are dropped, the exact path serves
                if self._live:
                    log.warning("limits: lost the Redis channel %s (%s); every admission waits for Redis until "
                                "it is back", self.channel, exc)
                self.forget()
                time.sleep(RETRY)
            finally:
                if conn is not None:
                    conn.disconnect()
        self._live = False

    def _message(self, message: Any) -> None:
        if not isinstance(message, list) or not message:
            return
        kind = message[0]
        if kind == b"message" and len(message) == 3:
            data = message[2]
            if not data.startswith(self._own):
                self._heard(data)
        elif kind == b"subscribe":
            self.invalidate()
            self.hello()
            self._live = True

    def _heard(self, data: bytes) -> None:
        """Another process charged a caller (``<instance> <tokens> <who>``) or subscribed (``<instance> hello``)."""
        self.peers = True
        try:
            _, tokens, who = data.decode().split(" ", 2)
            amount = int(tokens)
        except ValueError:
            if data.endswith(b" hello"):
                return
            log.warning("limits: ignored a malformed message on %s", self.channel)
            return
        self.charged(who, amount)
