"""One finished exchange as the log stores it.

``Record.of`` runs in the request's greenlet and only copies references (microseconds); ``Record.rows``
runs in the writer and does the real work: joining and decoding the bodies, the one-line preview,
the searchable text, the timings and rates. No database access here.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .. import jsonio

PREVIEW_CHARS = 160
REFUSED = "refused"  # the outcome of a request the gate refused (401/403/413/429): kept compact, own budget
REFUSED_BODY_CHARS = 1024  # what is kept of each body of a refused request
SEARCH_SKIP_KEYS = frozenset({"images", "image_url", "input_audio", "embedding", "embeddings", "data"})
LONG_WORD = 4096  # strings longer than this without a space (base64 blobs) are not indexed
_SPACES = re.compile(r"\s+")


class Record:
    __slots__ = ("started", "ended", "request_id", "client", "user_agent", "key_name", "front", "endpoint", "method",
                 "backend_name", "backend_type", "model", "upstream_model", "stream", "status", "outcome", "error",
                 "bodies", "answer", "upstream_first_byte_at", "client_first_chunk_at", "local", "attempts",
                 "queued_ms", "session_id", "cached", "replay_of")
    # the slots' types, for readers and type checkers (``of`` fills them all)
    started: float
    ended: float
    request_id: str
    client: str
    user_agent: str
    key_name: str | None
    front: str
    endpoint: str
    method: str
    backend_name: str
    backend_type: str
    model: str | None
    upstream_model: str | None
    stream: bool
    status: int
    outcome: str
    error: str | None
    bodies: tuple[Any, Any, Any, Any]
    answer: Any
    upstream_first_byte_at: float | None
    client_first_chunk_at: float | None
    local: bool
    attempts: list[dict[str, Any]] | None
    queued_ms: float | None
    session_id: str | None
    cached: bool
    replay_of: int | None

    @classmethod
    def of(cls, exchange: Any) -> Record:
        r = cls.__new__(cls)
        r.started = exchange.started
        r.ended = exchange.ended_at or exchange.started
        r.request_id = exchange.request_id
        r.client = exchange.client
        r.user_agent = exchange.user_agent
        r.key_name = exchange.key_name
        r.front = exchange.front
        r.endpoint = exchange.endpoint
        r.method = exchange.method
        r.backend_name = exchange.backend_name
        r.backend_type = exchange.backend_type
        r.model = exchange.model_requested
        r.upstream_model = exchange.model_upstream
        r.stream = exchange.stream
        r.status = exchange.status
        r.outcome = exchange.outcome
        r.error = exchange.error
        r.bodies = (exchange.client_request, exchange.upstream_request, exchange.upstream_response,
                    exchange.client_response)
        r.answer = exchange.answer
        r.upstream_first_byte_at = exchange.upstream_first_byte_at
        r.client_first_chunk_at = exchange.client_first_chunk_at
        r.local = exchange.local
        r.attempts = exchange.attempts
        r.queued_ms = exchange.queued_ms
        r.session_id = exchange.session_id
        r.cached = exchange.cached
        r.replay_of = exchange.replay_of
        return r

    # --- in the writer ------------------------------------------------------------------------
    def rows(self, nul_free: bool) -> tuple[tuple, tuple, str]:
        """(exchanges row without id, exchange_bodies row without id, searchable text)."""
        texts = [_text(body.value(), nul_free) for body in self.bodies]
        cut = [body.truncated for body in self.bodies]
        if self.outcome == REFUSED:  # anyone can send these: a few lines each, never a stored body
            cut = [was or len(text) > REFUSED_BODY_CHARS for was, text in zip(cut, texts, strict=False)]
            texts = [text[:REFUSED_BODY_CHARS] for text in texts]
        request = _json_or_none(texts[0]) if not cut[0] else None
        answer = self.answer.as_dict() if self.answer is not None else None
        duration = max(0.0, self.ended - self.started) * 1000
        ttfb = _ms(self.upstream_first_byte_at, self.started)
        ttfc = _ms(self.client_first_chunk_at, self.started) if self.stream else None
        overhead = None
        if self.upstream_first_byte_at is not None:
            out_at = self.client_first_chunk_at if self.stream and self.client_first_chunk_at else self.ended
            overhead = max(0.0, out_at - self.upstream_first_byte_at) * 1000
        elif self.local:
            overhead = duration
        prompt = completion = None
        estimated = False
        if self.answer is not None:
            prompt, completion = self.answer.prompt_tokens, self.answer.completion_tokens
            estimated = bool(self.answer.usage_estimated)
        preview = preview_of(request, texts[0])
        if nul_free:
            preview = preview.replace("\x00", "")
        truncated = any(cut)
        entry = (self.started, self.ended, self.request_id[:128], (self.client or "")[:64], self.user_agent[:300],
                 self.key_name, self.front, self.endpoint[:100], self.method[:10], self.backend_name[:255],
                 self.backend_type[:32], _cut(self.model, 255), _cut(self.upstream_model, 255), bool(self.stream),
                 self.status, self.outcome, _clean(self.error, nul_free), round(duration, 3), _r(ttfb), _r(ttfc),
                 _r(overhead), prompt, completion, estimated, self.tokens_per_second(completion),
                 len(answer["tool_calls"]) if answer else 0, truncated, preview,
                 _clean(jsonio.dumps_str(self.attempts), nul_free) if self.attempts else None, _r(self.queued_ms),
                 _cut(self.session_id, 128), bool(self.cached), self.replay_of)
        answer_json = _text(jsonio.dumps(answer), nul_free) if answer is not None else None
        body = (*texts, *(body.size for body in self.bodies), *cut, answer_json)
        search = search_text(self, request, texts[0], answer)
        return entry, body, (search.replace("\x00", " ") if nul_free else search)

    def tokens_per_second(self, completion: int | None) -> float | None:
        if not completion:
            return None
        timings = getattr(self.answer, "timings", None)
        if isinstance(timings, dict) and isinstance(timings.get("predicted_per_second"), (int, float)):
            return round(float(timings["predicted_per_second"]), 2)
        answer = self.answer
        if answer is not None and answer.first_token_at and answer.last_token_at and \
                answer.last_token_at - answer.first_token_at > 0.001 and completion > 1:
            return round((completion - 1) / (answer.last_token_at - answer.first_token_at), 2)
        start = self.upstream_first_byte_at if self.stream and self.upstream_first_byte_at else self.started
        seconds = self.ended - start
        return round(completion / seconds, 2) if seconds > 0.001 else None


def _ms(at: float | None, started: float) -> float | None:
    return None if at is None else max(0.0, at - started) * 1000


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _cut(value: str | None, size: int) -> str | None:
    return None if value is None else str(value)[:size]


def _clean(value: str | None, nul_free: bool) -> str | None:
    if value is None:
        return None
    return value.replace("\x00", "\ufffd") if nul_free else value


def _text(data: bytes, nul_free: bool) -> str:
    text = data.decode("utf-8", "replace")
    return text.replace("\x00", "\ufffd") if nul_free and "\x00" in text else text


def _json_or_none(text: str) -> Any:
    if not text or text[0] not in "{[":
        return None
    try:
        return jsonio.loads(text)
    except ValueError:
        return None


# --- preview and search text ----------------------------------------------------------------------

REMINDER = "<system-reminder>"  # a text block Claude Code adds to user turns: not what the person wrote


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI parts, Anthropic blocks (tool results carry no `text`: skipped)
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
                        and not p["text"].startswith(REMINDER))
    return ""


def preview_of(request: Any, raw: str) -> str:
    """One line: the last user message, else the prompt or input; else the start of the raw body."""
    text = ""
    if isinstance(request, dict):
        messages = request.get("messages")
        if isinstance(messages, list):
            for message in reversed(messages):  # the last user turn with text (an agent's may hold tool results)
                if isinstance(message, dict) and message.get("role") == "user":
                    text = _content_text(message.get("content"))
                    if text.strip():
                        break
            else:
                if messages and isinstance(messages[-1], dict):
                    text = _content_text(messages[-1].get("content"))
        if not text and isinstance(request.get("input"), list):
            text = _last_user_item(request["input"])
        for key in ("prompt", "input"):
            if not text and request.get(key):
                value = request[key]
                text = value if isinstance(value, str) else " ".join(v for v in value if isinstance(v, str)) \
                    if isinstance(value, list) else ""
    elif raw and request is None:
        text = raw if not raw.lstrip().startswith(("{", "[")) else _preview_from_raw(raw)
    line = _SPACES.sub(" ", text).strip()
    return line if len(line) <= PREVIEW_CHARS else line[:PREVIEW_CHARS - 1] + "…"


def _last_user_item(items: list) -> str:
    """A Responses request's input items: the text of the last user message."""
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user" and item.get("type", "message") == "message":
            return _content_text(item.get("content"))
    return ""


_USER = re.compile(r'"role"\s*:\s*"user"')
_FIELD = re.compile(r'"(?:content|text|prompt|input)"\s*:\s*"((?:[^"\\]|\\.){1,2000})')


def _preview_from_raw(raw: str) -> str:
    """Best effort for a truncated JSON body: the first text after the last user role."""
    last = None
    for last in _USER.finditer(raw):  # noqa: B007 - the loop only finds the last match
        pass
    match = _FIELD.search(raw, last.end() if last else 0)
    if not match:
        return ""
    try:
        return jsonio.loads('"' + match.group(1).rstrip("\\") + '"')
    except ValueError:
        return match.group(1)


def _strings(value: Any) -> Iterator[str]:
    """Every string value in a JSON document (not the keys), skipping images and vectors."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        item = pop()
        if isinstance(item, str):
            if len(item) < LONG_WORD or " " in item[:LONG_WORD] and not item.startswith("data:"):
                yield item
        elif isinstance(item, dict):
            push(v for k, v in item.items() if k not in SEARCH_SKIP_KEYS and not isinstance(v, (int, float)))
        elif isinstance(item, list):
            push(v for v in item if not isinstance(v, (int, float)))


def search_text(record: Record, request: Any, raw_request: str, answer: dict | None) -> str:
    """What full-text search sees: every string the client sent, the answer, tool calls, the error."""
    parts = [record.request_id, record.model or "", record.upstream_model or ""]
    if request is not None:
        parts.extend(_strings(request))
    else:
        parts.append(raw_request)
    if answer:
        parts.append(answer.get("content") or "")
        parts.append(answer.get("thinking") or "")
        parts.extend(_strings(answer.get("tool_calls") or []))
    if record.error:
        parts.append(record.error)
    return "\n".join(p for p in parts if p)
