"""Token usage of a passthrough stream, read from the stream itself as it passes.

A same-dialect stream goes to the client untouched, and its usage (an OpenAI ``usage`` object, Ollama's
``prompt_eval_count``/``eval_count``) is only in its last events. ``UsageTap`` sees every upstream chunk but
parses only the complete lines that carry those fields or an error, so the limits and the log's figures never
depend on the log's copy of the body, which LOG_MAX_BODY_BYTES may have cut.
"""
from __future__ import annotations

from typing import Any

from . import jsonio

# Only a key in an object can contain these with its quotes unescaped: text inside a JSON string cannot.
MARKERS = (b'_tokens"', b'eval_count"', b'"error"')
LINE_MAX = 8 << 20  # a longer line (an Ollama generate's final `context`, in theory) is skipped, never parsed


def _marked(data: Any, end: int) -> bool:
    for marker in MARKERS:  # noqa: SIM110 - runs for every chunk: a plain loop costs less than any() over a generator
        if data.find(marker, 0, end) >= 0:
            return True
    return False


def take_openai_usage(target: Any, usage: Any) -> None:
    """Set ``target``'s prompt_tokens and completion_tokens from an OpenAI ``usage`` object, each one it holds
    as an integer (an ``Answer`` being assembled, a ``UsageTap``)."""
    if isinstance(usage, dict):
        if isinstance(usage.get("prompt_tokens"), int):
            target.prompt_tokens = usage["prompt_tokens"]
        if isinstance(usage.get("completion_tokens"), int):
            target.completion_tokens = usage["completion_tokens"]


def take_agent_usage(target: Any, event: dict) -> None:
    """Set ``target``'s tokens from an Anthropic Messages event (``message_start``'s ``message.usage``,
    ``message_delta``'s ``usage``) or a Responses one (``response.usage``): the prompt is the input with what
    was read from and written to the cache (Anthropic counts those apart), each figure only where it is given."""
    usage = event.get("usage")
    for holder in ("message", "response"):
        inner = event.get(holder)
        if isinstance(inner, dict) and isinstance(inner.get("usage"), dict):
            usage = inner["usage"]
    if not isinstance(usage, dict):
        return
    if isinstance(usage.get("input_tokens"), int):
        cached = (usage.get(k) for k in ("cache_read_input_tokens", "cache_creation_input_tokens"))
        target.prompt_tokens = usage["input_tokens"] + sum(c for c in cached if isinstance(c, int))
    if isinstance(usage.get("output_tokens"), int):
        target.completion_tokens = usage["output_tokens"]


class UsageTap:
    """Fed each upstream chunk of an SSE (``sse=True``) or NDJSON stream; keeps the last usage reported,
    the last error event, and the number of events seen (a count to fall back on when none is reported)."""

    __slots__ = ("sse", "agent", "pending", "skipping", "prompt_tokens", "completion_tokens", "events", "error")

    def __init__(self, sse: bool, agent: bool = False):
        self.sse = sse
        self.agent = agent  # the agent APIs' events (a native Messages or Responses stream): ``take_agent_usage``
        self.pending = bytearray()  # a line not complete yet
        self.skipping = False  # inside a line longer than LINE_MAX
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.events = 0
        self.error: str | None = None

    @property
    def reported(self) -> bool:
        return self.prompt_tokens is not None or self.completion_tokens is not None

    def __call__(self, chunk: bytes) -> None:
        self.events += chunk.count(b"data:") if self.sse else chunk.count(b"\n")
        if self.skipping:
            start = chunk.find(b"\n")
            if start < 0:
                return
            self.skipping = False
            chunk = chunk[start + 1:]
        pending = self.pending
        if pending:
            pending += chunk
            data: Any = pending
        else:
            data = chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > LINE_MAX:
                self.pending = bytearray()
                self.skipping = True
            elif not pending:
                self.pending = bytearray(chunk)
            return
        if _marked(data, cut):
            self._parse(bytes(data[:cut]))
        rest = data[cut + 1:]
        self.pending = bytearray(rest) if len(rest) <= LINE_MAX else bytearray()
        self.skipping = len(rest) > LINE_MAX

    def end(self) -> None:
        """The body ended: a last line without a line end is read too."""
        if self.pending and _marked(self.pending, len(self.pending)):
            self._parse(bytes(self.pending))
        self.pending = bytearray()

    def _parse(self, block: bytes) -> None:
        for line in block.split(b"\n"):
            if not _marked(line, len(line)):
                continue
            line = line.strip()
            if line.startswith(b"data:"):
                line = line[5:].strip()
            if not line.startswith(b"{"):
                continue
            try:
                obj = jsonio.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                self._take(obj)

    def _take(self, obj: dict) -> None:
        error = obj.get("error")
        if error:
            self.error = str(error.get("message") or error) if isinstance(error, dict) else str(error)
        if self.agent:
            take_agent_usage(self, obj)
            return
        take_openai_usage(self, obj.get("usage"))
        if isinstance(obj.get("prompt_eval_count"), int):
            self.prompt_tokens = obj["prompt_eval_count"]
        if isinstance(obj.get("eval_count"), int):
            self.completion_tokens = obj["eval_count"]
