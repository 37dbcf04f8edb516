"""Stdout logging (and LOG_FILE): the format (text or JSON lines), request ids, and one access line per request.

``AccessLog`` is WSGI middleware: it assigns the request id (a well-formed client `X-Request-ID`
is kept), hands the app the request's ``RequestContext`` (``proxy.context``), returns the id on every
response, and writes the access line when the response body is
done — for streams that is when the last chunk left. Secrets never appear: only the path is
logged, never headers or query strings. Text that comes from the client is printed with its control
characters escaped (``printable``), so a path cannot end a line early or drive the terminal.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from logging.handlers import RotatingFileHandler
from typing import Any

from . import draining
from .config import Settings
from .context import ENVIRON_CONTEXT, RequestContext, request_id_from

access_log = logging.getLogger("proxy.access")
body_log = logging.getLogger("proxy.bodies")
SUMMARY_CHARS = 120
# C0 controls, DEL, C1 controls (8-bit CSI among them) and the Unicode line and paragraph separators; in access
# line fields also the backslash and double quote that would make an escape or the quoted request ambiguous.
CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
UNPRINTABLE = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029"\\]')


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """Client text for an access line field: control characters, backslash and double quote as \\xNN escapes."""
    return UNPRINTABLE.sub(_escape, text) if UNPRINTABLE.search(text) else text


def controls_escaped(text: str) -> str:
    """Client text printed whole (bodies): only control characters escaped, so no line can be forged."""
    return CONTROLS.sub(_escape, text) if CONTROLS.search(text) else text


def wire_text(value: str) -> str:
    """A WSGI environ string (bytes read as latin-1) as the UTF-8 text the client most likely meant."""
    if value.isascii():
        return value
    return value.encode("latin-1", "replace").decode("utf-8", "backslashreplace")


def _json_safe(line: str) -> str:
    """What JSON lines leave raw (json.dumps escapes only C0 controls) as \\u escapes: still the same JSON."""
    return CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                                   "level": record.levelname, "logger": record.name}
        fields = getattr(record, "fields", None)
        if fields:
            payload.update(fields)
        else:
            payload["message"] = record.getMessage()
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return _json_safe(json.dumps(payload, ensure_ascii=False, default=str))


class ReopenedFileHandler(logging.FileHandler):
    """LOG_FILE: appended to (O_APPEND, so several processes may share it), and opened again by the next line
    after ``reopen_log_files`` (SIGHUP: logrotate renamed it). The signal only sets a flag: the handler's lock
    is never taken in a signal handler (under gevent that runs in the hub)."""

    reopen_pending = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.reopen_pending:
            self.reopen_pending = False
            if self.stream is not None:
                self.stream.close()
                self.stream = None  # FileHandler.emit opens it again
        super().emit(record)


def _file_handler(settings: Settings) -> logging.Handler:
    if settings.log_file_max_mb:
        return RotatingFileHandler(settings.log_file, maxBytes=settings.log_file_max_mb << 20,
                                   backupCount=settings.log_file_backups, encoding="utf-8")
    return ReopenedFileHandler(settings.log_file, encoding="utf-8")


def reopen_log_files() -> None:
    """Have LOG_FILE opened again before its next line (``python wsgi.py`` calls this on SIGHUP)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenedFileHandler):
            handler.reopen_pending = True


def configure_logging(settings: Settings) -> None:
    """Stdout, and LOG_FILE when set, in LOG_FORMAT at LOG_LEVEL; replaces what an earlier call installed."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if settings.log_file:
        handlers.append(_file_handler(settings))
    if settings.log_format == "json":
        formatter: logging.Formatter = JSONFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        formatter.converter = time.gmtime
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_llm_proxy", False):
            root.removeHandler(existing)
            existing.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._llm_proxy = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(settings.log_level)


class _Body:
    """Wraps the response body to count bytes and log when it is closed."""

    def __init__(self, body: Iterable[bytes], done: Callable[[int], None]):
        self._body = body
        self._done = done
        self._sent = 0

    def __iter__(self):
        for chunk in self._body:
            self._sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done(self._sent)


class AccessLog:
    def __init__(self, app: Callable, settings: Settings):
        self.app = app
        self.json = settings.log_format == "json"

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = request_id_from(environ)
        ctx = environ[ENVIRON_CONTEXT] = RequestContext(request_id)  # the app's per-request state, handed in once
        status_holder: list[str] = []

        def _start_response(status: str, headers: list, exc_info: Any = None):
            status_holder.append(status)  # a second call (exc_info): a stream's head replaced by an error
            headers.append(("X-Request-ID", request_id))
            if draining.stopping:  # a stopping server serves no further request on this connection
                headers.append(("Connection", "close"))
            return start_response(status, headers, exc_info)

        def done(sent: int) -> None:
            if access_log.isEnabledFor(logging.INFO):
                status = int(status_holder[-1].split(" ", 1)[0]) if status_holder else 0
                self._write(environ, ctx, status, sent, time.perf_counter() - started)

        body = self.app(environ, _start_response)
        add_close_hook = getattr(body, "add_close_hook", None)
        if add_close_hook is not None:  # a stream's Relay counts its bytes and calls back when closed
            add_close_hook(done)
            return body
        return _Body(body, done)

    def _write(self, environ: dict, ctx: RequestContext, status: int, sent: int, seconds: float) -> None:
        request_id = ctx.request_id
        client = printable(environ.get("REMOTE_ADDR") or "-")
        method = printable(environ.get("REQUEST_METHOD") or "-")
        path = printable(wire_text(environ.get("PATH_INFO", "")))
        exchange = ctx.exchange
        extra = exchange.summary() if exchange is not None else {}
        if self.json:
            fields = {"event": "access", "request_id": request_id, "client": client, "method": method, "path": path,
                      "status": status, "bytes": sent, "duration_ms": round(seconds * 1000, 2)}
            fields.update({k: controls_escaped(v) if isinstance(v, str) else v for k, v in extra.items()
                           if v is not None and k not in fields})
            access_log.info("access", extra={"fields": fields})
            return
        tail = ""
        if extra:
            tokens = ""
            if extra.get("prompt_tokens") is not None or extra.get("completion_tokens") is not None:
                tokens = f" tokens={extra.get('prompt_tokens') or 0}/{extra.get('completion_tokens') or 0}"
            tail = f" model={printable(extra.get('model') or '-')} outcome={extra.get('outcome')}{tokens}"
        access_log.info('%s "%s %s" %s %d %.1fms id=%s%s', client, method, path, status, sent, seconds * 1000,
                        request_id, tail)


def _summarise_messages(body: Any) -> list[str]:
    """One short line per chat message: role, size, the start of its text, tool calls and images."""
    messages = body.get("messages") if isinstance(body, dict) else None
    lines = []
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list):
            text = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
            images = sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
        else:
            text = "" if content is None else str(content)
            images = len(message.get("images") or ()) if isinstance(message.get("images"), list) else 0
        flat = " ".join(text.split())
        short = flat if len(flat) <= SUMMARY_CHARS else flat[:SUMMARY_CHARS] + "…"
        extra = ""
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            names = [str((c.get("function") or {}).get("name", "?")) for c in calls if isinstance(c, dict)]
            extra += f" tool_calls={','.join(names)}"
        if images:
            extra += f" images={images}"
        lines.append(controls_escaped(f"{message.get('role', '?')}[{len(text)}]: {short}{extra}"))
    return lines


class BodyLog:
    """Exchange sink for LOG_MESSAGES / LOG_RAW_REQUESTS / LOG_RAW_RESPONSES: printed when an exchange
    is finished, never chunk by chunk. Bodies never carry headers, so keys cannot appear."""

    def __init__(self, settings: Settings):
        self.messages = settings.log_messages
        self.raw_requests = settings.log_raw_requests
        self.raw_responses = settings.log_raw_responses
        self.json = settings.log_format == "json"

    @property
    def enabled(self) -> bool:
        return self.messages or self.raw_requests or self.raw_responses

    def __call__(self, exchange: Any) -> None:
        rid = exchange.request_id
        if self.messages:
            try:
                body = json.loads(exchange.client_request.value() or b"null")
            except ValueError:
                body = None
            lines = _summarise_messages(body)
            if lines:
                self._emit(rid, "messages", "\n  ".join([""] + lines), exchange.model_requested)
        if self.raw_requests:
            self._emit(rid, "client_request", self._text(exchange.client_request))
            if exchange.upstream_request.size:
                self._emit(rid, "upstream_request", self._text(exchange.upstream_request))
        if self.raw_responses:
            if exchange.upstream_response.size:
                self._emit(rid, "upstream_response", self._text(exchange.upstream_response))
            self._emit(rid, "client_response", self._text(exchange.client_response))

    @staticmethod
    def _text(buffer: Any) -> str:
        text = controls_escaped(buffer.value().decode("utf-8", "replace"))
        return text + (f" …[truncated, {buffer.size} bytes in all]" if buffer.truncated else "")

    def _emit(self, rid: str, what: str, text: str, model: str | None = None) -> None:
        if self.json:
            fields = {"event": what, "request_id": rid, "body": text}
            if model:
                fields["model"] = model
            body_log.info(what, extra={"fields": fields})
        else:
            body_log.info("id=%s %s%s: %s", rid, what, f" model={printable(model)}" if model else "", text)
