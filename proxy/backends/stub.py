"""The stub backend: a deterministic echo model that behaves like an OpenAI-compatible server.

It answers in-process, in the OpenAI dialect, so every translation path runs exactly as with a
real server. Chat replies echo the last user message word by word (STUB_DELAY_MS apart) and count
tokens as words; when tools are offered and the user names one (or `tool_choice` demands one) it
answers with a call to it; after a tool result it reports what the tool returned. Embeddings are
unit vectors derived from a hash of the text.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from .. import jsonio
from ..catalog import ModelInfo
from ..config import Settings
from ..dialects import openai as oa
from ..errors import BackendUnavailable, BadRequest, NotFound, ProxyError, UpstreamStatus

MODELS = (("stub", ("completion", "tools", "vision")), ("stub-embed", ("embedding",)))
EMBEDDING_DIMENSIONS = 16
CONTEXT_LENGTH = 4096
CREATED = 1735689600  # 2025-01-01


def _words(text: str) -> list[str]:
    return text.split()


def _prompt_tokens(messages: list[dict]) -> int:
    return sum(len(_words(oa.content_text(m.get("content")))) + 1 for m in messages if isinstance(m, dict))


def _example_value(schema: Any, text: str) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return text


def _pick_tool(body: dict, text: str) -> dict | None:
    tools = [function for t in body.get("tools") or ()
             if isinstance(t, dict) and isinstance(function := t.get("function"), dict)]
    if not tools or body.get("tool_choice") == "none":
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t.get("name") == wanted), None)
    lowered = text.lower()
    named = next((t for t in tools if str(t.get("name", "")).lower() in lowered), None)
    if named is None and choice == "required":
        named = tools[0]
    return named


def reply_for(body: dict) -> tuple[str, dict | None]:
    """(text, tool call or None) the stub answers to a chat request."""
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return f"The tool returned: {oa.content_text(last.get('content'))}", None
    user_text = next((oa.content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    tool = _pick_tool(body, user_text)
    if tool is not None:
        params = found if isinstance(found := tool.get("parameters"), dict) else {}
        props = found if isinstance(found := params.get("properties"), dict) else {}
        arguments = {name: _example_value(schema, user_text) for name, schema in props.items()}
        call = {"id": "call_" + hashlib.sha256(user_text.encode()).hexdigest()[:8], "type": "function",
                "function": {"name": tool.get("name", ""), "arguments": jsonio.dumps_str(arguments)}}
        return "", call
    return (f"You said: {user_text}" if user_text else "Hello from the stub model."), None


def embed(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


class StubUpstream:
    """Looks like ``base.Upstream``: status, headers, stream(), error_for(), read(), json(), close()."""

    def __init__(self, chunks: Iterator[bytes] | list[bytes], content_type: str):
        self.status = 200
        self.headers = {"Content-Type": content_type}
        self._chunks = chunks

    def stream(self, tap: Callable[[bytes], None] | None = None) -> Iterator[bytes]:
        for chunk in self._chunks:
            if tap is not None:
                tap(chunk)
            yield chunk

    def error_for(self, exc: OSError) -> ProxyError:
        return BackendUnavailable(f"the stub backend failed: {exc}")

    def read(self) -> bytes:
        try:
            return b"".join(self.stream())
        finally:
            self.close()

    def json(self) -> Any:
        return jsonio.loads(self.read())

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close:
            close()


class StubBackend:
    type = "stub"
    dialect = "openai"
    flavor = "generic"
    base_url = "stub://"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.delay = settings.stub_delay_ms / 1000

    @property
    def name(self) -> str:
        return "stub backend"

    def describe(self) -> str:
        return "stub backend"

    def reachable(self) -> tuple[bool, str]:
        return True, "ok"

    def close(self) -> None:
        """Nothing to close: it holds no connections."""

    def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        return [ModelInfo(id=name, created=CREATED, owned_by="stub", context_length=CONTEXT_LENGTH, size=1000,
                          parameter_count=1, parameter_size="1", quantization="none", family="stub",
                          capabilities=caps) for name, caps in MODELS]

    def get_json(self, path: str, timeout: float | None = None) -> Any:
        if path == "/v1/models":
            return oa.model_list([oa.model_object(m.id, m.created, m.owned_by) for m in self.list_models()])
        raise NotFound(f"stub backend has no {path}")

    def post_json(self, path: str, body: dict, *, request_id: str | None = None) -> tuple[bytes, Any]:
        upstream = self.open("POST", path, jsonio.dumps(body), request_id=request_id)
        raw = upstream.read()
        return raw, jsonio.loads(raw)

    def open(self, method: str, path: str, body: bytes | None = None, *, request_id: str | None = None,
             timeout: float | None = None, stream: bool = False) -> StubUpstream:
        request = jsonio.loads(body) if body else {}
        model = request.get("model", "stub")
        if model not in dict(MODELS):
            raise UpstreamStatus(f"The model '{model}' does not exist", status=404)
        if path == "/v1/chat/completions":
            text, call = reply_for(request)
            return self._answer(request, "chat", text, call, _prompt_tokens(request.get("messages") or []))
        if path == "/v1/completions":
            prompt = request.get("prompt")
            prompt = prompt if isinstance(prompt, str) else " ".join(str(p) for p in prompt or ())
            return self._answer(request, "completion", f"{prompt} and so on", None, len(_words(prompt)))
        if path == "/v1/embeddings":
            if model != "stub-embed":
                raise UpstreamStatus(f"model '{model}' does not support embeddings", status=400)
            dimensions = request.get("dimensions") or EMBEDDING_DIMENSIONS
            if not isinstance(dimensions, int) or not 0 < dimensions <= EMBEDDING_DIMENSIONS:
                # as OpenAI answers: a model shortens its vectors, never lengthens them
                raise UpstreamStatus(f"'dimensions' must be an integer from 1 to {EMBEDDING_DIMENSIONS} for {model}",
                                     status=400)
            inputs = request.get("input")
            inputs = [inputs] if isinstance(inputs, str) else list(inputs or ())
            vectors = [embed(str(x), dimensions) for x in inputs]
            tokens = sum(len(_words(str(x))) for x in inputs)
            payload = oa.embedding_response(model, vectors, tokens, request.get("encoding_format"))
            return StubUpstream([jsonio.dumps(payload)], "application/json")
        raise BadRequest(f"stub backend cannot serve {path}")

    def _answer(self, request: dict, kind: str, text: str, call: dict | None, prompt_tokens: int) -> StubUpstream:
        model = request.get("model", "stub")
        cid = oa.new_id("chatcmpl-" if kind == "chat" else "cmpl-")
        created = int(time.time())
        max_tokens = request.get("max_tokens") or request.get("max_completion_tokens")
        words = _words(text)
        finish = "tool_calls" if call else "stop"
        if isinstance(max_tokens, int) and 0 < max_tokens < len(words):
            words, finish = words[:max_tokens], "length"
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        completion_tokens = len(pieces) + (1 if call else 0)
        usage = oa.usage(prompt_tokens, completion_tokens)
        if not request.get("stream"):
            if kind == "chat":
                message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces) if not call else None}
                if call:
                    message["tool_calls"] = [call]
                payload = oa.chat_completion(cid, created, model, message, finish, usage)
            else:
                payload = oa.completion(cid, created, model, "".join(pieces), finish, usage)
            return StubUpstream([jsonio.dumps(payload)], "application/json")
        return StubUpstream(self._stream(kind, cid, created, model, pieces, call, finish, usage,
                                         oa.wants_usage(request)), "text/event-stream")

    def _stream(self, kind, cid, created, model, pieces, call, finish, usage, include_usage) -> Iterator[bytes]:
        def event(obj: dict) -> bytes:
            return oa.sse_event(jsonio.dumps(obj))

        if kind == "chat":
            yield event(oa.chat_chunk(cid, created, model, {"role": "assistant", "content": ""}))
        for piece in pieces:
            if self.delay:
                time.sleep(self.delay)
            if kind == "chat":
                yield event(oa.chat_chunk(cid, created, model, {"content": piece}))
            else:
                yield event(oa.completion_chunk(cid, created, model, piece))
        if call:
            yield event(oa.chat_chunk(cid, created, model, {"tool_calls": [{"index": 0, **call}]}))
        if kind == "chat":
            yield event(oa.chat_chunk(cid, created, model, {}, finish))
        else:
            yield event(oa.completion_chunk(cid, created, model, "", finish))
        if include_usage:
            body = oa.usage_chunk(cid, created, model, usage)
            if kind != "chat":
                body["object"] = "text_completion"
            yield event(body)
        yield oa.SSE_DONE
