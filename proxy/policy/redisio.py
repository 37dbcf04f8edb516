"""The limiter's Redis wire: the admission script, RESP packing, and one round trip per call.

``Link.roundtrip`` sends a batch of commands in one write and reads their replies. redis-py makes the
connections (URL, auth, TLS, database); writing and reading go straight to its socket and a hiredis
reader, because redis-py's pool and response layers were a large share of the gate's budget
(docs/performance.md). Scripts go by SHA1 and are loaded again when Redis has forgotten them (a restart).
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

from limits.storage import RedisStorage
from redis.exceptions import ConnectionError, NoScriptError, ResponseError

try:
    import hiredis
except ImportError:  # pragma: no cover - a requirement; redis-py's own parser serves without it
    hiredis = None

MAX_IDLE = 64  # connections kept open for the next admissions

# All admission checks of one request in one script: one command, one reply, all or nothing. It reads and
# writes the same keys, in the same layout, as the limits library's own scripts (a moving window is a list of
# hit times, newest first, as SCRIPT_ACQUIRE_MOVING_WINDOW keeps it; a fixed window a counter with an expiry,
# as SCRIPT_INCR_EXPIRE keeps it), so the library's get_window_stats reads them back for Retry-After.
# KEYS: token counters..., [daily counter], request windows..., [slot set]
# ARGV: n_tokens, has_daily, n_rate, moving (1/0), has_slot, force (1/0), now,
#       token limits..., [daily quota], (limit, expiry) per window..., [lease, slot limit, slot id]
# Reply: {code, index, spare, tokens}. code 0 admitted; 1 token window `index` full; 2 daily quota used; 3 request
#        window `index` full; 4 no concurrency slot. spare: how many more requests fit in the tightest count limit
#        (request windows, concurrency) after this one, beyond a headroom of 5 % of that limit (at least 1);
#        tokens: the room left in the token windows and daily quota. With force = 1 (a request admitted ahead of
#        this verdict, proxy/policy/mirror.py) everything is counted whatever the code says, so that no admitted
#        request goes uncounted.
ADMIT_LUA = """
local n_tokens, has_daily, n_rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local moving, has_slot, force, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local k, a = 1, 8
local code, index, spare, tokens = 0, 0, 2147483647, 2147483647
local function refuse(c, i) if code == 0 then code, index = c, i end end
local function after(limit, used) return math.min(spare, limit - used - 1 - math.max(1, math.floor(limit / 20))) end
for i = 1, n_tokens do
    local room = tonumber(ARGV[a]) - tonumber(redis.call('get', KEYS[k]) or '0')
    if room <= 0 then refuse(1, i) end
    tokens = math.min(tokens, room)
    k, a = k + 1, a + 1
end
if has_daily == 1 then
    local room = tonumber(ARGV[a]) - tonumber(redis.call('get', KEYS[k]) or '0')
    if room <= 0 then refuse(2, 0) end
    tokens = math.min(tokens, room)
    k, a = k + 1, a + 1
end
local first_rate, first_arg = k, a
for i = 1, n_rate do
    local limit, expiry = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    local used
    if moving == 1 then
        -- hits newest first: how many are inside the window (binary search over at most `limit` entries)
        local lo, hi, cutoff = 0, math.max(limit, 0), now - expiry
        while lo < hi do
            local mid = math.floor((lo + hi) / 2)
            local entry = redis.call('lindex', KEYS[k], mid)
            if entry and tonumber(entry) >= cutoff then lo = mid + 1 else hi = mid end
        end
        used = lo
    else
        used = tonumber(redis.call('get', KEYS[k]) or '0')
    end
    if used + 1 > limit then refuse(3, i) end
    spare = after(limit, used)
    k, a = k + 1, a + 2
end
if has_slot == 1 then
    local lease, slot_limit = tonumber(ARGV[a + 0]), tonumber(ARGV[a + 1])
    redis.call('zremrangebyscore', KEYS[k], '-inf', now)
    local held = redis.call('zcard', KEYS[k])
    if held >= slot_limit then refuse(4, 0) end
    spare = after(slot_limit, held)
    if code == 0 or force == 1 then
        redis.call('zadd', KEYS[k], now + lease, ARGV[a + 2])
        redis.call('expire', KEYS[k], math.ceil(lease) + 1)
    end
end
if code ~= 0 and force ~= 1 then return {code, index, spare, tokens} end
k, a = first_rate, first_arg
for i = 1, n_rate do
    local limit, expiry = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    if moving == 1 then
        redis.call('lpush', KEYS[k], now)
        redis.call('ltrim', KEYS[k], 0, math.max(limit, 1) - 1)
        redis.call('expire', KEYS[k], expiry)
    else
        if redis.call('incrby', KEYS[k], 1) == 1 then redis.call('expire', KEYS[k], expiry) end
    end
    k, a = k + 1, a + 2
end
return {code, index, spare, tokens}
"""
# Lua sent by SHA1: the limits library's own scripts (so its get_window_stats reads what they write) and ours
SCRIPTS = {name: text if isinstance(text, bytes) else text.encode()
           for name, text in (("incr", RedisStorage.SCRIPT_INCR_EXPIRE), ("admit", ADMIT_LUA))}
SHA_INCR, SHA_ADMIT = (hashlib.sha1(SCRIPTS[k]).hexdigest() for k in ("incr", "admit"))


def pack_args(args: Any) -> bytes:
    """Arguments as RESP bulk strings, as redis-py encodes them (str as UTF-8, float by repr)."""
    out = []
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def pack_commands(commands: list[tuple]) -> bytes:
    """Commands in RESP, byte for byte as redis-py packs them, in a quarter of the time."""
    return b"".join(b"*%d\r\n%s" % (len(command), pack_args(command)) for command in commands)


class Link:
    """Our own idle connections to one Redis (see the module docstring)."""

    def __init__(self, client: Any):
        self.client = client
        self._idle: list[Any] = []
        self._pid = os.getpid()

    def roundtrip(self, commands: list[tuple]) -> list:
        """Send ``commands`` in one write and read their replies: one round trip. (A redis-py pipeline does the
        same with more bookkeeping per call, which matters inside the gate's budget.) Scripts go by
        their SHA1; when Redis lost its script cache (a restart) they are loaded and the batch sent again —
        safe, since then every script in it failed and the other commands (GET, ZREM) are idempotent."""
        return self.roundtrip_packed(pack_commands(commands), len(commands))

    def roundtrip_packed(self, data: bytes, count: int) -> list:
        """``roundtrip`` for commands packed already (the admission command is mostly packed once)."""
        return self.finish(self.start(data, count))

    def start(self, data: bytes, count: int) -> "Call":
        """Send packed commands now; read their replies later with ``finish`` (the gate sends a request's
        admission when it arrives and reads the verdict only before the request does anything that costs)."""
        if self._pid != os.getpid():
            self._pid, self._idle = os.getpid(), []
        try:
            conn, reader = self._idle.pop()
        except IndexError:
            pool = self.client.connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            conn.connect()
            reader = hiredis.Reader() if hiredis is not None else None
        try:
            if reader is None:  # no hiredis: redis-py's own parser
                conn.send_packed_command([data], check_health=False)
            else:
                sock = conn._sock
                if sock is None:
                    raise ConnectionError("the Redis connection is closed")
                sock.sendall(data)
        except BaseException:
            conn.disconnect()
            self._drop_idle()
            raise
        return Call(conn, reader, data, count)

    def finish(self, call: "Call") -> list:
        """The replies of a started call. Scripts go by their SHA1; when Redis lost its script cache (a restart)
        they are loaded and the batch sent again — safe, since then every script in it failed and the other
        commands (GET, ZREM) are idempotent."""
        try:
            return self._read(call)
        except NoScriptError:
            self._read(self.start(pack_commands([("SCRIPT", "LOAD", text) for text in SCRIPTS.values()]),
                                  len(SCRIPTS)))
            return self._read(self.start(call.data, call.count))

    def _drop_idle(self) -> None:
        """A connection failed: the idle ones most likely went the same way (Redis restarted, the network
        broke); dropped, so that the next call after the pause does not fail on one of them again."""
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.disconnect()

    def abandon(self, call: "Call") -> None:
        """A started call whose replies nobody will read: its connection cannot be reused."""
        if call.conn is not None:
            call.conn.disconnect()
            call.conn = None

    def _read(self, call: "Call") -> list:
        """Read a call's replies; its connection goes back to the idle list, or is closed when anything failed."""
        conn, reader, count = call.conn, call.reader, call.count
        if conn is None:
            raise ConnectionError("this Redis call was abandoned")
        call.conn = None
        try:
            if reader is None:
                replies = [conn.read_response() for _ in range(count)]
            else:
                sock = conn._sock
                if sock is None:
                    raise ConnectionError("the Redis connection is closed")
                replies = []
                while len(replies) < count:
                    reply = reader.gets()
                    if reply is False:
                        data = sock.recv(65536)
                        if not data:
                            raise ConnectionError("Redis closed the connection")
                        reader.feed(data)
                        continue
                    replies.append(reply)
                for reply in replies:
                    if isinstance(reply, hiredis.ReplyError):
                        message = str(reply)
                        raise NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)
        except BaseException as exc:
            conn.disconnect()  # replies may be left unread: this connection cannot be reused
            if not isinstance(exc, ResponseError):
                self._drop_idle()
            raise
        if len(self._idle) < MAX_IDLE:
            self._idle.append((conn, reader))
        else:
            conn.disconnect()
        return replies


class Call:
    """Commands sent on a connection of their own, replies not read yet (``Link.finish``)."""

    __slots__ = ("conn", "reader", "data", "count")

    def __init__(self, conn: Any, reader: Any, data: bytes, count: int):
        self.conn = conn
        self.reader = reader
        self.data = data
        self.count = count
