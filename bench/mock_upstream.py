"""A fast mock LLM upstream speaking both the OpenAI and the Ollama dialect on one port.

Raw asyncio (uvloop when installed): a hand-written HTTP/1.1 parser with keep-alive,
precomputed reply bytes, chunked transfer encoding for streams. It exists to be cheaper than
anything it is compared with, so it never decides a benchmark figure; it is not a test double
for correctness (it ignores nearly everything in a request but `model`, `stream` and
`stream_options.include_usage`).

Stream shape (chunks N, delay D ms): headers and the first content chunk at once, content
chunk i at t0 + i*D, then the finish chunk at t0 + N*D (OpenAI: finish chunk, optional usage
chunk, `data: [DONE]`; Ollama: the final `done: true` line with eval counts).

N and D come from, in order of precedence: request headers `X-Mock-Chunks` / `X-Mock-Delay-Ms`,
a `c<N>-d<D>` part in the model name (e.g. `mock-c20-d50`), the CLI flags `--chunks` /
`--delay-ms`.

Run: python bench/mock_upstream.py --port 8081 [--chunks 20] [--delay-ms 0]
"""

import argparse
import asyncio
import json
import re
import signal
import sys

try:  # orjson is a project dependency; json is the fallback
    import orjson

    _loads = orjson.loads

    def _dumps(obj):
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads

    def _dumps(obj):
        return json.dumps(obj, separators=(",", ":")).encode()


CREATED = 1752169304
CREATED_AT = "2025-07-10T17:41:44.123456789Z"
REPLY_TEXT = "Hello! How can I help you today?"
PROMPT_TOKENS = 12
MAX_HEADER_BYTES = 65536
MODEL_PROFILE = re.compile(r"c(\d+)-d(\d+)")

STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
               413: "Payload Too Large"}


def _words(n):
    """The n content pieces of a streamed reply (the first one carries the role)."""
    return ["Hello" if i == 0 else f" w{i}" for i in range(n)]


def response_head(status, content_type, length=None, close=False):
    """Status line and headers; chunked when no length is given."""
    lines = [f"HTTP/1.1 {status} {STATUS_TEXT.get(status, 'OK')}",
             f"Content-Type: {content_type}"]
    if length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def full_response(status, content_type, body, close=False):
    return response_head(status, content_type, len(body), close) + body


def http_chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


# --- reply bodies (pure; cached by the server) ---------------------------------------------

def openai_completion(model):
    return _dumps({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": CREATED, "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY_TEXT},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 9, "total_tokens": 21},
    })


def openai_stream_events(model, n, include_usage):
    """SSE event bytes: n content chunks, then the tail (finish [+ usage] + [DONE]) as one."""
    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "system_fingerprint": "fp_mock"}
    extra = {"usage": None} if include_usage else {}
    events = []
    for i, word in enumerate(_words(n)):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
        chunk = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": None}], **extra)
        events.append(b"data: " + _dumps(chunk) + b"\n\n")
    finish = dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None,
                                  "finish_reason": "stop"}], **extra)
    tail = b"data: " + _dumps(finish) + b"\n\n"
    if include_usage:
        usage = dict(base, choices=[], usage={"prompt_tokens": PROMPT_TOKENS,
                                              "completion_tokens": n,
                                              "total_tokens": PROMPT_TOKENS + n})
        tail += b"data: " + _dumps(usage) + b"\n\n"
    tail += b"data: [DONE]\n\n"
    return events, tail


def _ollama_metrics(eval_count):
    return {"total_duration": 182242375, "load_duration": 41295167,
            "prompt_eval_count": PROMPT_TOKENS, "prompt_eval_duration": 24573166,
            "eval_count": eval_count, "eval_duration": 115959084}


def ollama_chat(model):
    return _dumps(dict({"model": model, "created_at": CREATED_AT,
                        "message": {"role": "assistant", "content": REPLY_TEXT},
                        "done_reason": "stop", "done": True}, **_ollama_metrics(9)))


def ollama_stream_events(model, n):
    events = []
    for word in _words(n):
        events.append(_dumps({"model": model, "created_at": CREATED_AT,
                              "message": {"role": "assistant", "content": word},
                              "done": False}) + b"\n")
    tail = _dumps(dict({"model": model, "created_at": CREATED_AT,
                        "message": {"role": "assistant", "content": ""},
                        "done_reason": "stop", "done": True}, **_ollama_metrics(n))) + b"\n"
    return events, tail


def openai_models():
    return _dumps({"object": "list", "data": [
        {"id": "mock", "object": "model", "created": CREATED, "owned_by": "mock"}]})


def ollama_tags():
    return _dumps({"models": [{
        "name": "mock:latest", "model": "mock:latest", "modified_at": CREATED_AT,
        "size": 1000000, "digest": "0" * 64,
        "details": {"parent_model": "", "format": "gguf", "family": "llama",
                    "families": ["llama"], "parameter_size": "1M",
                    "quantization_level": "Q4_0"}}]})


def ollama_show(model):
    return _dumps({"modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
                   "details": {"parent_model": "", "format": "gguf", "family": "llama",
                               "families": ["llama"], "parameter_size": "1M",
                               "quantization_level": "Q4_0"},
                   "model_info": {"general.architecture": "llama",
                                  "llama.context_length": 2048},
                   "capabilities": ["completion", "tools"], "modified_at": CREATED_AT,
                   "model": model})


# --- server ---------------------------------------------------------------------------------

class Replies:
    """Precomputed reply bytes, keyed by what varies (model, chunk count, usage flag)."""

    def __init__(self, chunks, delay_ms):
        self.chunks = chunks
        self.delay_ms = delay_ms
        self.cache = {}
        json_type = "application/json; charset=utf-8"
        self.static = {
            ("GET", "/health"): full_response(200, "text/plain", b"OK"),
            ("GET", "/"): full_response(200, "text/plain", b"Ollama is running"),
            ("GET", "/v1/models"): full_response(200, "application/json", openai_models()),
            ("GET", "/api/tags"): full_response(200, json_type, ollama_tags()),
            ("GET", "/api/version"): full_response(200, json_type, b'{"version":"0.12.0"}'),
            ("GET", "/api/ps"): full_response(200, json_type, b'{"models":[]}'),
        }
        self.not_found = full_response(
            404, "application/json",
            b'{"error":{"message":"not found","type":"invalid_request_error"}}')

    def get(self, key, build):
        value = self.cache.get(key)
        if value is None:
            if len(self.cache) > 10000:
                self.cache.clear()
            value = self.cache[key] = build()
        return value

    def profile(self, model, headers):
        """(chunks, delay seconds) for one request."""
        chunks, delay = self.chunks, self.delay_ms
        m = MODEL_PROFILE.search(model)
        if m:
            chunks, delay = int(m.group(1)), int(m.group(2))
        if b"x-mock-chunks" in headers:
            chunks = int(headers[b"x-mock-chunks"])
        if b"x-mock-delay-ms" in headers:
            delay = int(headers[b"x-mock-delay-ms"])
        return max(chunks, 1), max(delay, 0) / 1000.0


class MockProtocol(asyncio.Protocol):
    """One client connection: parse pipelined/keep-alive requests, answer from the cache."""

    __slots__ = ("replies", "transport", "buf", "busy", "closing", "loop")

    def __init__(self, replies):
        self.replies = replies
        self.transport = None
        self.buf = b""
        self.busy = False       # a delayed stream is being written
        self.closing = False
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closing = True

    def data_received(self, data):
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self.process()

    def process(self):
        while self.buf and not self.busy and not self.closing:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEADER_BYTES:
                    self.fail(413)
                return
            head = self.buf[:end].split(b"\r\n")
            try:
                method, target, _version = head[0].split(b" ", 2)
            except ValueError:
                self.fail(400)
                return
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            start = end + 4
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                parsed = self.read_chunked(start)
                if parsed is None:
                    return
                body, rest = parsed
            else:
                length = int(headers.get(b"content-length", b"0"))
                if len(self.buf) - start < length:
                    return
                body, rest = self.buf[start:start + length], start + length
            self.buf = self.buf[rest:]
            close = headers.get(b"connection", b"").lower() == b"close"
            self.handle(method.decode(), target.decode().split("?", 1)[0], headers, body, close)
            if close:
                self.closing = True

    def read_chunked(self, pos):
        """Body of a chunked request starting at pos, or None when incomplete."""
        buf, parts = self.buf, []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", pos - 2)
                if trailer_end < 0:
                    return None
                return b"".join(parts), trailer_end + 4
            if len(buf) < pos + size + 2:
                return None
            parts.append(buf[pos:pos + size])
            pos += size + 2

    def fail(self, status):
        body = _dumps({"error": STATUS_TEXT.get(status, "error")})
        self.transport.write(full_response(status, "application/json", body, close=True))
        self.transport.close()
        self.closing = True

    def handle(self, method, path, headers, body, close):
        r = self.replies
        static = r.static.get((method, path))
        if static is not None:
            self.transport.write(static)
        elif method == "POST" and path in ("/v1/chat/completions", "/api/chat"):
            self.chat(path == "/api/chat", headers, body, close)
            return
        elif method == "POST" and path == "/api/show":
            model = _loads(body or b"{}").get("model", "mock")
            self.transport.write(r.get(("show", model), lambda: full_response(
                200, "application/json; charset=utf-8", ollama_show(model))))
        elif method == "GET" and path.startswith("/v1/models/"):
            model = path[len("/v1/models/"):]
            self.transport.write(full_response(200, "application/json", _dumps(
                {"id": model, "object": "model", "created": CREATED, "owned_by": "mock"})))
        else:
            self.transport.write(r.not_found)
        if close:
            self.transport.close()

    def chat(self, ollama, headers, body, close):
        try:
            req = _loads(body)
        except ValueError:
            self.fail(400)
            return
        model = str(req.get("model") or "mock")
        stream = req.get("stream")
        stream = stream is not False if ollama else stream is True
        r = self.replies
        if not stream:
            key = ("ollama" if ollama else "openai", model)
            self.transport.write(r.get(key, lambda: full_response(
                200, "application/json; charset=utf-8" if ollama else "application/json",
                ollama_chat(model) if ollama else openai_completion(model))))
            if close:
                self.transport.close()
            return
        chunks, delay = r.profile(model, headers)
        if ollama:
            key = ("ollama-stream", model, chunks)
            events, tail = r.get(key, lambda: self._framed(
                "application/x-ndjson", *ollama_stream_events(model, chunks)))
        else:
            usage = bool((req.get("stream_options") or {}).get("include_usage"))
            key = ("openai-stream", model, chunks, usage)
            events, tail = r.get(key, lambda: self._framed(
                "text/event-stream", *openai_stream_events(model, chunks, usage)))
        if delay <= 0:
            self.transport.write(b"".join(events) + tail)
            if close:
                self.transport.close()
            return
        self.busy = True
        self.transport.write(events[0])
        self.loop.create_task(self.drip(events, tail, delay, close))

    @staticmethod
    def _framed(content_type, events, tail):
        """HTTP-framed pieces: head + first event, each later event, tail + last chunk."""
        framed = [http_chunk(e) for e in events]
        framed[0] = response_head(200, content_type) + framed[0]
        return framed, http_chunk(tail) + LAST_CHUNK

    async def drip(self, events, tail, delay, close):
        """Write event i at t0 + i*delay (absolute schedule: no drift), then the tail."""
        loop, t0 = self.loop, self.loop.time()
        for i in range(1, len(events) + 1):
            wait = t0 + i * delay - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.closing:
                return
            self.transport.write(events[i] if i < len(events) else tail)
        self.busy = False
        if close:
            self.transport.close()
            self.closing = True
        elif self.buf:
            self.process()


def install_loop():
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def serve(host, port, replies, ready_message):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(replies), host, port,
                                      backlog=4096, reuse_address=True)
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    bound = server.sockets[0].getsockname()[1]
    print(ready_message.format(port=bound), flush=True)
    await stop
    server.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    parser.add_argument("--chunks", type=int, default=20,
                        help="content chunks per streamed reply (default 20)")
    parser.add_argument("--delay-ms", type=int, default=0,
                        help="delay between streamed chunks in ms (default 0: all at once)")
    args = parser.parse_args(argv)
    loop_name = install_loop()
    replies = Replies(args.chunks, args.delay_ms)
    message = (f"mock upstream listening on http://{args.host}:{{port}} ({loop_name}, "
               f"chunks={args.chunks}, delay_ms={args.delay_ms})")
    try:
        asyncio.run(serve(args.host, args.port, replies, message))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
