"""The doctor's checks of the configuration and of each backend: the settings read as the server reads them
(environment, `.env`, flags, BACKENDS_FILE), then for each backend its model list and a one-token chat in the
dialect the proxy speaks to it, through the proxy's own backend clients (same key, certificates, proxies)."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .. import jsonio
from ..backends import make_backend
from ..backendsfile import BackendSpec
from ..backendsfile import load as load_backends_file
from ..catalog import ModelInfo
from ..config import ConfigError, Settings
from ..errors import ProxyError, UpstreamStatus
from ..policy.keysfile import KeysFileError
from ..policy.keysfile import load as load_keys_file
from ..routing import spec_settings
from ..startup import StartupError
from .report import Check, Failed, count, one_line

CONFIG = "configuration"
SHOWN = 6  # model names printed of a backend's list
PROMPT = [{"role": "user", "content": "Say OK."}]
# the dialect a backend is spoken to in -> (path, one-token body, where its answer's text is)
CHATS: dict[str, tuple[str, Callable[[str], dict], Callable[[Any], Any]]] = {
    "openai": ("/v1/chat/completions",
               lambda m: {"model": m, "messages": PROMPT, "max_tokens": 1, "stream": False},
               lambda r: ((r.get("choices") or [{}])[0].get("message") or {}).get("content")),
    "ollama": ("/api/chat",
               lambda m: {"model": m, "messages": PROMPT, "stream": False, "options": {"num_predict": 1}},
               lambda r: (r.get("message") or {}).get("content") if r.get("done") is True else None),
}


class Backends:
    """The configuration once read, BACKENDS_FILE's backends, and what each backend's model list held (for
    the chat that follows it)."""

    def __init__(self, read_settings: Callable[[], Settings], timeout: float):
        self.read_settings, self.timeout = read_settings, timeout
        self.settings: Settings | None = None
        self.models: dict[str, list[ModelInfo]] = {}
        self.specs: tuple[BackendSpec, ...] | None = None  # BACKENDS_FILE's backends, once read

    def configuration(self) -> str:
        try:
            self.settings = self.read_settings()
        except (ConfigError, StartupError) as exc:
            raise Failed(str(exc), "change the variable (or flag) it names; docs/configuration.md says what each "
                         "accepts") from None
        s = self.settings
        where = f"BACKENDS_FILE {s.backends_file}" if s.backends_file else f"{s.backend_type} backend"
        return f"listens on {s.host}:{s.port}; {where}"

    def files(self) -> list[Check]:
        """KEYS_FILE and BACKENDS_FILE, each read as the server reads it at start-up (when set)."""
        s = self.settings
        if s is None:
            return []
        checks = [Check("KEYS_FILE", self.keys_file)] if s.keys_file else []
        return checks + ([Check("BACKENDS_FILE", self.backends_file)] if s.backends_file else [])

    def keys_file(self) -> str:
        assert self.settings is not None
        try:
            keys = load_keys_file(self.settings.keys_file)
        except KeysFileError as exc:
            raise Failed(f"KEYS_FILE {exc}", "fix the file (the README's \"Keys and limits\" shows its format)"
                         ) from None
        return count(keys.rules, "key table")

    def backends_file(self) -> str:
        assert self.settings is not None
        try:
            self.specs = load_backends_file(self.settings.backends_file).backends
        except ConfigError as exc:
            raise Failed(str(exc), "fix the file (docs/backends.md describes it)") from None
        return f"{count(self.specs, 'backend')}: {', '.join(spec.name for spec in self.specs)}"

    def named(self) -> list[tuple[str, Any, str]]:
        """(name, backend client, what to change when it fails) of each backend the server would use."""
        s = self.settings
        if s is None or (s.backends_file and self.specs is None):
            return []
        if not s.backends_file:
            return [(s.backend_type, make_backend(s), "BACKEND_URL, BACKEND_TYPE or BACKEND_API_KEY")]
        return [(spec.name, make_backend(spec_settings(spec, s)), f"[backends.{spec.name}] in {s.backends_file}")
                for spec in self.specs or ()]

    def model_list(self, name: str, backend: Any, change: str) -> str:
        try:
            models = backend.list_models(timeout=self.timeout)
        except UpstreamStatus as exc:
            raise Failed(f"{backend.describe()} answered its model list with HTTP {exc.status}: {exc.message}",
                         f"check {change} (a 401 or 403 is the key)") from None
        except ProxyError as exc:
            raise Failed(exc.message, f"start the backend, or fix {change}") from None
        chat = [m for m in models if "completion" in m.capabilities]
        if not chat:
            raise Failed(f"{backend.describe()} lists no chat model ({count(models, 'model')})",
                         "load a model into it (llama-server -m FILE, ollama pull NAME)")
        self.models[name] = chat
        names = [m.id for m in models[:SHOWN]]
        return f"{count(models, 'model')}: {', '.join(names)}{', …' if len(models) > SHOWN else ''}"

    def chat(self, name: str, backend: Any, change: str) -> str:
        model = self.models[name][0].id
        path, body, text_of = CHATS[backend.dialect]
        try:
            answer = backend.open("POST", path, jsonio.dumps(body(model)), timeout=self.timeout).json()
        except ProxyError as exc:
            raise Failed(f"{path} with {model}: {exc.message}", f"check that the backend can run {model}; "
                         f"fix {change}") from None
        text = text_of(answer) if isinstance(answer, dict) else None
        if not isinstance(text, str):
            raise Failed(f"{path} with {model} answered without a message: {one_line(repr(answer), 160)}",
                         f"check that {change} names a backend of type {backend.type}")
        return f"{model} said {text!r}"

    def checks(self) -> list[Check]:
        """Each backend's checks, once the configuration (and BACKENDS_FILE) has been read."""
        checks = []
        for name, backend, change in self.named():
            if backend.type == "stub":
                continue  # answers in-process: nothing to reach
            label = f"backend {name} at {backend.base_url}"
            checks.append(Check(f"{label}: model list", partial(self.model_list, name, backend, change)))
            checks.append(Check(f"{label}: one-token chat ({CHATS[backend.dialect][0]})",
                                partial(self.chat, name, backend, change), f"{label}: model list"))
        return checks
