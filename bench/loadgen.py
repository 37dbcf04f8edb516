"""A cheap HTTP/1.1 load generator on raw asyncio sockets (uvloop when installed).

It owns the client side of every scenario: keep-alive connections, a response parser that
timestamps each streamed event (an SSE `data:` line or an NDJSON line) as it arrives, and the
four load shapes (sequential latency, closed-loop throughput, concurrent streams, slow streams).
It knows nothing about the proxy's processes; `run.py` hands it targets and callbacks.
"""

import asyncio
import time
from dataclasses import dataclass

perf = time.perf_counter

HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, UNTIL_CLOSE, DONE = range(8)


@dataclass(frozen=True)
class Target:
    """One endpoint and one ready-made request."""

    name: str
    host: str
    port: int
    request: bytes
    events: str = ""  # "" (plain body), "sse" or "ndjson"


def make_request(host, port, path, body, extra_headers=()):
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            "Accept: */*", f"Content-Length: {len(body)}", *extra_headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Response:
    """Incremental parser of one response; records event arrival times, not the body."""

    __slots__ = ("t0", "mode", "keep_body", "state", "buf", "status", "close", "remaining",
                 "body", "line", "events", "first_event", "last_event", "max_gap",
                 "saw_done", "saw_error", "t_end", "error")

    def __init__(self, t0, mode, keep_body=False):
        self.t0, self.mode, self.keep_body = t0, mode, keep_body
        self.state, self.buf, self.status, self.close = HEAD, b"", 0, False
        self.remaining = 0
        self.body = [] if keep_body else None
        self.line = b""
        self.events = 0
        self.first_event = self.last_event = None
        self.max_gap = 0.0
        self.saw_done = self.saw_error = False
        self.t_end = None
        self.error = None

    @property
    def ok(self):
        if self.error or self.status != 200 or self.saw_error:
            return False
        return self.saw_done if self.mode else True

    @property
    def ttfe(self):
        """Seconds from sending the request to the first complete event."""
        return None if self.first_event is None else self.first_event - self.t0

    def feed(self, data, now):
        """Consume bytes; True once the response is complete."""
        if self.state == HEAD:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            self._head(self.buf[:end])
            data, self.buf = self.buf[end + 4:], b""
        if self.state == LENGTH:
            take = data[:self.remaining]
            self.remaining -= len(take)
            self._body(take, now)
            if self.remaining == 0:
                self.state = DONE
        elif self.state == UNTIL_CLOSE:
            self._body(data, now)
        else:
            self._chunked(data, now)
        if self.state == DONE:
            self.t_end = now
            return True
        return False

    def _head(self, raw):
        lines = raw.split(b"\r\n")
        self.status = int(lines[0].split(b" ", 2)[1])
        length, chunked = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                self.close = b"close" in value.lower()
        if chunked:
            self.state = CHUNK_SIZE
        elif length is not None:
            self.remaining = length
            self.state = LENGTH if length else DONE
        else:
            self.state = UNTIL_CLOSE
            self.close = True

    def _chunked(self, data, now):
        buf = self.buf + data if self.buf else data
        pos, n = 0, len(buf)
        while pos < n and self.state != DONE:
            if self.state == CHUNK_DATA:
                take = min(self.remaining, n - pos)
                self._body(buf[pos:pos + take], now)
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = CHUNK_CRLF
            elif self.state == CHUNK_CRLF:
                if n - pos < 2:
                    break
                pos += 2
                self.state = CHUNK_SIZE
            elif self.state == CHUNK_SIZE:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if size:
                    self.remaining, self.state = size, CHUNK_DATA
                else:
                    self.state = TRAILER
            elif self.state == TRAILER:
                if buf.startswith(b"\r\n", pos):
                    pos += 2
                    self.state = DONE
                else:
                    end = buf.find(b"\r\n\r\n", pos)
                    if end < 0:
                        break
                    pos = end + 4
                    self.state = DONE
        self.buf = buf[pos:] if self.state != DONE else b""

    def _body(self, data, now):
        if self.keep_body:
            self.body.append(data)
        if not self.mode or not data:
            return
        text = self.line + data if self.line else data
        lines = text.split(b"\n")
        self.line = lines.pop()
        for line in lines:
            if self.mode == "sse":
                if not line.startswith(b"data:"):
                    continue
                if b"[DONE]" in line:
                    self.saw_done = True
            elif not line.strip():
                continue
            elif b'"done":true' in line or b'"done": true' in line:
                self.saw_done = True
            if b'"error"' in line[:20]:
                self.saw_error = True
            if self.first_event is None:
                self.first_event = now
            else:
                gap = now - self.last_event
                if gap > self.max_gap:
                    self.max_gap = gap
            self.last_event = now
            self.events += 1

    def finish_on_close(self, now):
        if self.state == UNTIL_CLOSE:
            self.state, self.t_end = DONE, now
        else:
            self.error = "connection closed mid-response"

    def describe(self):
        """Why this response does not count as a success ("" when it does)."""
        if self.error:
            return self.error
        if self.status != 200:
            return f"HTTP {self.status}"
        if self.saw_error:
            return "error event in stream"
        if self.mode and not self.saw_done:
            return "stream ended without its final event"
        return ""

    def body_bytes(self):
        return b"".join(self.body or ())


class ClientConn(asyncio.Protocol):
    """A keep-alive connection running one request at a time."""

    def __init__(self):
        self.transport = None
        self.resp = None
        self.waiter = None
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self.resp is not None:
            self.resp.finish_on_close(perf())
            self._resolve()

    def data_received(self, data):
        resp = self.resp
        if resp is not None and resp.feed(data, perf()):
            self._resolve()

    def _resolve(self):
        resp, waiter = self.resp, self.waiter
        self.resp = self.waiter = None
        if resp.close:
            self.closed = True
            self.transport.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)

    def send(self, request, mode, keep_body=False):
        """Write a request; a future resolving to its Response."""
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.resp = Response(perf(), mode, keep_body)
        self.transport.write(request)
        return self.waiter

    def close(self):
        if self.transport is not None:
            self.transport.close()


async def connect(target):
    loop = asyncio.get_running_loop()
    _transport, conn = await loop.create_connection(ClientConn, target.host, target.port)
    return conn


class Client:
    """A connection that reconnects when the server closed it."""

    def __init__(self, target):
        self.target = target
        self.conn = None

    async def request(self, keep_body=False, timeout=None):
        try:
            if self.conn is None or self.conn.closed:
                self.conn = await connect(self.target)
            fut = self.conn.send(self.target.request, self.target.events, keep_body)
            return await (asyncio.wait_for(fut, timeout) if timeout else fut)
        except (TimeoutError, OSError) as exc:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            resp = Response(perf(), self.target.events)
            resp.error = f"{type(exc).__name__}: {exc}"
            return resp

    def close(self):
        if self.conn is not None:
            self.conn.close()


# --- load shapes ----------------------------------------------------------------------------

async def one(target, timeout=30):
    """One request with its body kept (for shape checks)."""
    client = Client(target)
    try:
        return await client.request(keep_body=True, timeout=timeout)
    finally:
        client.close()


async def latency(target, count, warmup):
    """Sequential requests on one keep-alive connection: latencies (s) and error count."""
    client, times, errors = Client(target), [], 0
    try:
        for i in range(warmup + count):
            resp = await client.request(timeout=30)
            if not resp.ok:
                errors += 1
            elif i >= warmup:
                times.append(resp.t_end - resp.t0)
    finally:
        client.close()
    return {"latencies": times, "errors": errors}


async def throughput(target, concurrency, seconds, warmup_seconds):
    """Closed loop: `concurrency` connections, back-to-back requests; completions per second."""
    state = {"measuring": False, "stop": False, "done": 0, "errors": 0, "lat": []}

    async def worker():
        client = Client(target)
        try:
            while not state["stop"]:
                resp = await client.request(timeout=30)
                counted = state["measuring"] and not state["stop"]
                if resp.ok:
                    if counted:
                        state["done"] += 1
                        state["lat"].append(resp.t_end - resp.t0)
                else:
                    state["errors"] += counted
                    await asyncio.sleep(0.01)  # no tight loop against a refusing server
        finally:
            client.close()

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup_seconds)
    state["measuring"], t0 = True, perf()
    await asyncio.sleep(seconds)
    state["stop"], elapsed = True, perf() - t0
    await asyncio.wait(tasks, timeout=35)
    return {"rps": state["done"] / elapsed, "completed": state["done"], "seconds": elapsed,
            "errors": state["errors"], "latencies": state["lat"]}


async def streams(target, concurrency, seconds, stream_seconds):
    """`concurrency` streams kept open back to back, their starts spread over one stream's
    length so new streams open at a steady rate; time to first event of each (s)."""
    state = {"measuring": False, "stop": False, "ttfe": [], "errors": 0, "count": 0}

    async def worker(offset):
        await asyncio.sleep(offset)
        client = Client(target)
        try:
            while not state["stop"]:
                resp = await client.request(timeout=stream_seconds + 30)
                if not state["measuring"]:
                    continue
                state["count"] += 1
                if resp.ok and resp.ttfe is not None:
                    state["ttfe"].append(resp.ttfe)
                else:
                    state["errors"] += 1
        finally:
            client.close()

    spread = stream_seconds / concurrency
    tasks = [asyncio.create_task(worker(i * spread)) for i in range(concurrency)]
    await asyncio.sleep(stream_seconds * 1.5)  # every worker running; first streams done
    state["measuring"] = True
    await asyncio.sleep(seconds)
    state["stop"] = True
    await asyncio.wait(tasks, timeout=stream_seconds + 35)
    return {"ttfe": state["ttfe"], "errors": state["errors"], "streams": state["count"]}


async def slow_streams(target, count, ramp_seconds, stream_seconds, sample=None,
                       sample_every=0.5):
    """`count` concurrent long streams opened over `ramp_seconds`; each stream's time to first
    event, largest gap between events, completeness. `sample()` is called every
    `sample_every` seconds while streams run (e.g. to read the proxy's RSS)."""
    results = []

    async def stream(offset):
        await asyncio.sleep(offset)
        client = Client(target)
        try:
            results.append(await client.request(timeout=stream_seconds + 60))
        finally:
            client.close()

    samples = []
    tasks = [asyncio.create_task(stream(i * ramp_seconds / count)) for i in range(count)]
    t0 = perf()
    pending = set(tasks)
    while pending:
        _done, pending = await asyncio.wait(pending, timeout=sample_every)
        if sample is not None and pending:
            samples.append((perf() - t0, sample()))
    errors = [r.describe() for r in results if not r.ok]
    return {
        "ttfe": [r.ttfe for r in results if r.ttfe is not None],
        "max_gaps": [r.max_gap for r in results if r.ok],
        "events": [r.events for r in results],
        "errors": len(errors) + (count - len(results)),
        "error_kinds": sorted(set(errors))[:5],
        "samples": samples,
    }
