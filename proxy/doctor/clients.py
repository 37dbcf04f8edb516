"""The handshakes of Home Assistant, VS Code Copilot, JetBrains AI Assistant and Open WebUI, replayed against a
running proxy with the requests those clients send (read from their sources; docs/cli.md lists them): ``CLIENTS``
is the table (client, step, function); each function sends its requests and hands the answers to ``shapes``."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from . import shapes
from .http import Client
from .report import Check, Failed, count, raiser

HA_TAGS_TIMEOUT_S = 5.0  # Home Assistant gives /api/tags five seconds
MAX_SHOWN = 20  # Copilot asks /api/show of every listed model; the doctor of the first ones
TOOL = {"type": "function", "function": {"name": "get_current_time", "description": "The current time of a place",
                                         "parameters": {"type": "object", "properties": {
                                             "place": {"type": "string", "description": "a city"}},
                                             "required": ["place"]}}}
ASK = "What time is it in Paris? Use get_current_time."
REACH = "proxy reachable"
MODEL = "a chat model to talk to"


class Session:
    """The proxy at --url, and the chat model every handshake talks to (found once)."""

    def __init__(self, client: Client, model: str | None):
        self.client, self.wanted, self._model = client, model, model

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.request("GET", path, **kw).json(f"GET {path}")

    def post(self, path: str, body: dict, **kw: Any) -> Any:
        return self.client.request("POST", path, body, **kw).json(f"POST {path}")

    def stream(self, path: str, body: dict, **kw: Any) -> list[bytes]:
        return self.client.request("POST", path, body, stream=True, **kw).lines

    @property
    def model(self) -> str:
        assert self._model is not None, "the model check runs first"
        return self._model

    def find_model(self) -> str:
        """--model, when listed; else the first listed model whose /api/show says it completes text."""
        body = self.get("/api/tags")  # read leniently: the clients' own checks judge its shape
        entries = body.get("models") if isinstance(body, dict) else None
        listed = [str(m.get("model") or m.get("name")) for m in entries or () if isinstance(m, dict)]
        if not listed:
            raise Failed("/api/tags lists no model", "check the backends' model lists (`llm-proxy doctor` without "
                         "--url, on the proxy's machine)")
        if self.wanted is not None:
            if not {self.wanted, f"{self.wanted}:latest"} & set(listed):
                raise Failed(f"--model {self.wanted} is not in /api/tags ({', '.join(listed[:8])})",
                             "give --model a listed name, or leave it out")
            return self.wanted
        for name in listed[:MAX_SHOWN]:
            if self._completes(name):
                self._model = name
                return f"{name} (of {len(listed)} listed)"
        raise Failed("no model listed at /api/tags has the 'completion' capability",
                     "check the backends' model lists (`llm-proxy doctor` without --url), or give --model")

    def _completes(self, name: str) -> bool:
        """/api/show says the model completes text; a show that cannot say (the clients' checks find out why)
        leaves it to the name: not an embedding model."""
        try:
            caps = self.post("/api/show", {"model": name}).get("capabilities")
        except (Failed, AttributeError):
            caps = None
        return "completion" in caps if isinstance(caps, list) else "embed" not in name.lower()


def reach(s: Session) -> str:
    answer = s.client.request("GET", "/api/version")
    return f"GET /api/version answered HTTP {answer.status}"


def _chat_body(s: Session, **extra: Any) -> dict:
    return {"model": s.model, "messages": [{"role": "user", "content": ASK}], "stream": True, **extra}


def _said(text: str, calls: list) -> str:
    names = sorted({str(c.get("name") or (c.get("function") or {}).get("name")) for c in calls})
    return f"tool call {', '.join(names)}" if calls else f"answer {text[:40]!r}"


# --- Home Assistant (Ollama integration, ollama-python's AsyncClient) ----------------------------------------

def ha_tags(s: Session) -> str:
    models = shapes.tags(s.get("/api/tags", timeout=HA_TAGS_TIMEOUT_S), "Home Assistant")
    return f"{count(models, 'model')} within {HA_TAGS_TIMEOUT_S:g} s"


def ps(s: Session) -> str:
    body = s.get("/api/ps")
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        raise Failed("/api/ps has no 'models' array; the clients that poll it report an error", shapes.NOT_THIS_PROXY)
    for i, entry in enumerate(models):
        if isinstance(entry, dict) and "expires_at" in entry and not shapes.rfc3339(entry["expires_at"]):
            raise Failed(f"/api/ps models[{i}].expires_at {entry['expires_at']!r} is not an RFC 3339 time",
                         shapes.NOT_THIS_PROXY)
    return f"{count(models, 'model')} loaded"


def ha_show(s: Session) -> str:
    return shapes.show(s.post("/api/show", {"model": s.model}), s.model, "Home Assistant")


def ha_chat(s: Session) -> str:
    body = _chat_body(s, messages=[{"role": "system", "content": "You are a voice assistant."},
                                   {"role": "user", "content": ASK}],
                      tools=[TOOL], keep_alive=-1, options={"num_ctx": 8192, "num_predict": 32})
    text, calls = shapes.ndjson_chat(s.stream("/api/chat", body), "Home Assistant")
    return _said(text, calls)


# --- VS Code Copilot (the "Ollama" provider) -----------------------------------------------------------------

def version(s: Session, who: str) -> str:
    return shapes.version(s.get("/api/version"), who)


def copilot_show(s: Session) -> str:
    listed = shapes.tags(s.get("/api/tags"), "VS Code Copilot")
    for entry in listed[:MAX_SHOWN]:
        name = entry["model"]
        shapes.show(s.post("/api/show", {"model": name}), name, "VS Code Copilot", tools=name == s.model)
    return f"{min(len(listed), MAX_SHOWN)} models with capabilities and context length; {s.model} offers tools"


def copilot_chat(s: Session) -> str:
    body = _chat_body(s, tools=[TOOL], max_tokens=32, stream_options={"include_usage": True})
    text, calls = shapes.sse_chat(s.stream("/v1/chat/completions", body, headers={
        "User-Agent": "GitHubCopilotChat/0.30.0", "Accept": "text/event-stream"}), "VS Code Copilot")
    return _said(text, calls)


# --- JetBrains AI Assistant (Ollama and OpenAI-compatible providers; JetBrains' Koog DTOs) --------------------

def root(s: Session) -> str:
    answer = s.client.request("GET", "/")
    if b"Ollama is running" not in answer.body:
        raise Failed(f"GET / answered {answer.body[:60]!r}, not 'Ollama is running'; JetBrains' test connection "
                     "fails", shapes.NOT_THIS_PROXY)
    return "Ollama is running"


def koog_tags(s: Session) -> str:
    return count(shapes.tags(s.get("/api/tags"), "JetBrains AI Assistant"), "model")


def koog_show(s: Session) -> str:
    return shapes.show(s.post("/api/show", {"name": s.model}), s.model, "JetBrains AI Assistant", closed=True)


def koog_chat(s: Session) -> str:
    body = _chat_body(s, options={"num_predict": 16})
    text, calls = shapes.ndjson_chat(s.stream("/api/chat", body), "JetBrains AI Assistant", koog=True)
    return _said(text, calls)


def v1_models(s: Session, who: str) -> str:
    body = s.get("/v1/models")
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not data or not all(isinstance(m, dict) and isinstance(m.get("id"), str)
                                                         for m in data):
        raise Failed(f"/v1/models has no 'data' list of models with an 'id'; {who} lists none", shapes.NOT_THIS_PROXY)
    return count(data, "model")


def koog_v1_chat(s: Session) -> str:
    body = _chat_body(s, max_tokens=16)
    text, calls = shapes.sse_chat(s.stream("/v1/chat/completions", body, headers={"Accept": "text/event-stream"}),
                                  "JetBrains AI Assistant", koog=True)
    return _said(text, calls)


# --- Open WebUI (an Ollama connection, or an OpenAI one) -----------------------------------------------------

def webui_tags(s: Session) -> str:
    return count(shapes.tags(s.get("/api/tags"), "Open WebUI"), "model")


def webui_chat(s: Session) -> str:
    body = _chat_body(s, options={"num_predict": 16})
    text, calls = shapes.ndjson_chat(s.stream("/api/chat", body), "Open WebUI")
    return _said(text, calls)


Step = Callable[[Session], str]
# (client, (step, function, whether it talks to the chosen model))
CLIENTS: tuple[tuple[str, tuple[tuple[str, Step, bool], ...]], ...] = (
    ("Home Assistant", (
        ("GET /api/tags", ha_tags, False),
        ("GET /api/ps", ps, False),
        ("POST /api/show", ha_show, True),
        ("POST /api/chat, streamed, with tools", ha_chat, True),
    )),
    ("VS Code Copilot", (
        ("GET /api/version", lambda s: version(s, "VS Code Copilot"), False),
        ("POST /api/show of each listed model", copilot_show, True),
        ("POST /v1/chat/completions, streamed, with tools", copilot_chat, True),
    )),
    ("JetBrains AI Assistant", (
        ("GET /", root, False),
        ("GET /api/tags", koog_tags, False),
        ("GET /api/version", lambda s: version(s, "JetBrains AI Assistant"), False),
        ("POST /api/show with name", koog_show, True),
        ("POST /api/chat, streamed", koog_chat, True),
        ("GET /v1/models", lambda s: v1_models(s, "JetBrains AI Assistant"), False),
        ("POST /v1/chat/completions, streamed", koog_v1_chat, True),
    )),
    ("Open WebUI", (
        ("GET /api/version", lambda s: version(s, "Open WebUI"), False),
        ("GET /api/tags", webui_tags, False),
        ("GET /api/ps", ps, False),
        ("POST /api/chat, streamed", webui_chat, True),
        ("GET /v1/models", lambda s: v1_models(s, "Open WebUI"), False),
    )),
)


def handshake_checks(url: str, api_key: str, model: str | None, timeout: float) -> list[Check]:
    """The checks of every client's handshake against the proxy at ``url``, after two that find the proxy and
    the model to chat with."""
    checks: list[Check] = []
    try:
        client = Client(url, api_key, timeout)
    except Failed as bad:
        return [Check(f"--url {url}", raiser(bad))]
    session = Session(client, model)
    reached = f"{REACH} at {url}"
    checks.append(Check(reached, partial(reach, session)))
    checks.append(Check(MODEL, session.find_model, reached))
    for who, steps in CLIENTS:
        for step, run, chats in steps:
            checks.append(Check(f"{who}: {step}", partial(run, session), MODEL if chats else reached))
    return checks
