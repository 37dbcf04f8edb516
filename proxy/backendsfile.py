"""BACKENDS_FILE: several backends and how requests are routed among them, in TOML, read with ``tomllib``.

    [backends.gpu]
    type = "openai"                  # openai | ollama | stub
    url = "http://10.0.0.5:8080"
    api_key = "${GPU_KEY}"           # ${VAR} is taken from the environment: secrets stay out of the file
    flavor = "llamacpp"              # auto (default) | llamacpp | vllm | openai | generic
    models = ["qwen3-*", "smollm2"]  # exact names and globs it serves (default: whatever its model list says)
    aliases = { fast = "smollm2" }   # client name = this backend's name
    native = ["messages"]            # agent fronts sent to its own /v1/messages, /v1/responses (default: translated)
    weight = 3                       # for the weighted strategy
    max_concurrency = 4              # requests in flight at most (0 = no cap); beyond it they queue
    queue = { max_waiting = 100, max_wait_s = 60 }  # bounds of that queue: beyond them a 503 overloaded
    timeouts = { connect_s = 5, first_byte_s = 300, idle_s = 300, total_s = 0 }  # total_s: 0 = none
    health = { path = "/v1/models", interval_s = 10, timeout_s = 3, unhealthy_after = 3, healthy_after = 2 }

    [routing]
    strategy = "round-robin"         # round-robin | weighted | least-busy | latency
    retries = 2                      # further attempts on other backends before the first byte
    backoff_ms = 100                 # before going back to a backend already tried: doubled each time, jittered
    affinity = false                 # true: one conversation (session header, `user`, first messages) sticks
    [[routing.rules]]                # first match wins; a model no rule matches may go to any backend
    model = "gpt-*"
    backends = ["cloud"]

This module only parses: ``parse`` takes the decoded TOML and returns a ``BackendsConfig`` or raises
``ConfigError`` naming the backend (or table) and the key at fault. Nothing here does I/O but ``load``.
"""
from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .config import ConfigError
from .values import NATIVE_FRONTS

TYPES = ("openai", "ollama", "stub")
FLAVORS = ("auto", "llamacpp", "vllm", "openai", "generic")
STRATEGIES = ("round-robin", "weighted", "least-busy", "latency")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
HEALTH_PATHS = {"openai": "/v1/models", "ollama": "/api/tags", "stub": ""}


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    first_byte_s: float = 300.0  # the answer's head
    idle_s: float = 300.0  # between chunks of the body
    total_s: float = 0.0  # 0 = none: the whole exchange with the backend (head and body)


@dataclass(frozen=True)
class QueueBounds:
    """The wait for a slot of a backend that has ``max_concurrency`` requests in flight."""

    max_waiting: int = 100  # requests waiting at once (0: none wait, a full backend answers 503 at once)
    max_wait_s: float = 60.0  # how long one waits before a 503


@dataclass(frozen=True)
class Health:
    path: str  # "" = the backend is not probed (the stub)
    interval_s: float = 10.0
    timeout_s: float = 3.0
    unhealthy_after: int = 3  # consecutive failures of real requests that mark it down
    healthy_after: int = 2  # consecutive successful probes that bring it back


@dataclass(frozen=True)
class BackendSpec:
    name: str
    type: str
    url: str
    api_key: str = ""
    flavor: str = "auto"
    models: tuple[str, ...] = ()  # empty: what its model list says
    aliases: tuple[tuple[str, str], ...] = ()  # (client name, this backend's name)
    native: tuple[str, ...] = ()  # agent fronts passed through to its own API (values.NATIVE_FRONTS)
    weight: int = 1
    max_concurrency: int = 0  # 0 = no cap
    queue: QueueBounds = QueueBounds()
    timeouts: Timeouts = Timeouts()
    health: Health = Health("")


@dataclass(frozen=True)
class Rule:
    model: str  # a glob on the client's model name
    backends: tuple[str, ...]


@dataclass(frozen=True)
class Routing:
    strategy: str = "round-robin"
    retries: int = 2
    backoff_ms: float = 100.0
    rules: tuple[Rule, ...] = ()
    affinity: bool = False  # one conversation (proxy.affinity: session, `user`, first messages): one backend


@dataclass(frozen=True)
class BackendsConfig:
    backends: tuple[BackendSpec, ...]
    routing: Routing = Routing()

    def backend(self, name: str) -> BackendSpec:
        return next(b for b in self.backends if b.name == name)


# --- value checks: each takes the TOML value and returns the typed one or raises ValueError (what is expected) ---

def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return value.strip().lower()
    return check


def _number(minimum: float, strict: bool = False) -> Callable[[Any], float]:
    what = f"a number {'>' if strict else '>='} {minimum:g}"

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(what)
        if value < minimum or strict and value == minimum:
            raise ValueError(what)
        return float(value)
    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _integer(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return value
    return check


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("a list of model names or globs, not empty")
    return tuple(v.strip() for v in value)


def _aliases(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(isinstance(v, str) and v.strip() for v in value.values()):
        raise ValueError('a table of client-name = "backend-name" pairs')
    return tuple((k.strip(), v.strip()) for k, v in value.items())


def _native(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip().lower() in NATIVE_FRONTS
                                              for v in value):
        raise ValueError("a list of names among " + ", ".join(f'"{f}"' for f in NATIVE_FRONTS) + " (or [])")
    return tuple(dict.fromkeys(v.strip().lower() for v in value))


def _url(value: Any) -> str:
    parts = urlsplit(value.strip().rstrip("/")) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL")
    return value.strip().rstrip("/")


def _path(value: Any) -> str:
    if not isinstance(value, str) or value and not value.startswith("/"):
        raise ValueError('a path beginning with / (or "" for no probes)')
    return value


def expand(value: str, environ: Mapping[str, str]) -> str:
    """``${VAR}`` replaced by the variable's value; ValueError naming one that is not set."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ValueError(f"a value whose ${{{name}}} is set in the environment (it is not)")
        return environ[name]
    return ENV_REF.sub(one, value)


TIMEOUT_KEYS: dict[str, Callable[[Any], float]] = {
    "connect_s": _number(0, strict=True), "first_byte_s": _number(0, strict=True),
    "idle_s": _number(0, strict=True), "total_s": _number(0)}
HEALTH_KEYS: dict[str, Callable[[Any], Any]] = {
    "path": _path, "interval_s": _number(0, strict=True), "timeout_s": _number(0, strict=True),
    "unhealthy_after": _integer(1), "healthy_after": _integer(1)}
QUEUE_KEYS: dict[str, Callable[[Any], Any]] = {"max_waiting": _integer(0), "max_wait_s": _number(0, strict=True)}
BACKEND_KEYS = ("type", "url", "api_key", "flavor", "models", "aliases", "native", "weight", "max_concurrency", "queue",
                "timeouts", "health")
ROUTING_KEYS = ("strategy", "retries", "backoff_ms", "rules", "affinity")


class _Problem(Exception):
    """Where (``place``) and what is expected; turned into one ConfigError by ``parse``."""

    def __init__(self, place: str, expected: str):
        super().__init__(place, expected)
        self.place, self.expected = place, expected


def _get(table: dict, key: str, check: Callable[[Any], Any], place: str, default: Any) -> Any:
    if key not in table:
        return default
    try:
        return check(table[key])
    except ValueError as exc:
        raise _Problem(f"{place}, key '{key}'", str(exc)) from None


def _unknown(table: dict, known: tuple[str, ...] | dict, place: str) -> None:
    for key in table:
        if key not in known:
            raise _Problem(f"{place}, key '{key}'", "one of the keys " + ", ".join(known) + " (unknown key)")


def _subtable(table: dict, key: str, place: str) -> dict:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise _Problem(f"{place}, key '{key}'", "a table")
    return value


def _backend(name: str, table: Any, environ: Mapping[str, str]) -> BackendSpec:
    place = f"backend '{name}'"
    if not NAME.match(name):
        raise _Problem(place, "a name of letters, digits, . _ - (at most 64)")
    if not isinstance(table, dict):
        raise _Problem(place, "a table")
    _unknown(table, BACKEND_KEYS, place)
    if "type" not in table:
        raise _Problem(f"{place}, key 'type'", "one of " + ", ".join(TYPES) + " (it is missing)")
    kind = _get(table, "type", _choice(*TYPES), place, None)
    if kind != "stub" and "url" not in table:
        raise _Problem(f"{place}, key 'url'", "an http:// or https:// URL (it is missing)")
    url = _get(table, "url", lambda v: _url(expand(_string(v), environ)), place, "")
    api_key = _get(table, "api_key", lambda v: expand(_string(v), environ), place, "")
    if api_key and "@" in urlsplit(url).netloc:
        raise _Problem(f"{place}, key 'api_key'", "no api_key when the url carries credentials (use one of them)")
    timeouts_table = _subtable(table, "timeouts", place)
    _unknown(timeouts_table, TIMEOUT_KEYS, f"{place}, table 'timeouts'")
    timeouts = Timeouts(**{k: _get(timeouts_table, k, check, f"{place}, timeouts", getattr(Timeouts(), k))
                           for k, check in TIMEOUT_KEYS.items()})
    queue_table = _subtable(table, "queue", place)
    _unknown(queue_table, QUEUE_KEYS, f"{place}, table 'queue'")
    queue = QueueBounds(**{k: _get(queue_table, k, check, f"{place}, queue", getattr(QueueBounds(), k))
                           for k, check in QUEUE_KEYS.items()})
    health_table = _subtable(table, "health", place)
    _unknown(health_table, HEALTH_KEYS, f"{place}, table 'health'")
    default_health = Health(HEALTH_PATHS[kind])
    health = Health(**{k: _get(health_table, k, check, f"{place}, health", getattr(default_health, k))
                       for k, check in HEALTH_KEYS.items()})
    return BackendSpec(
        name=name, type=kind, url=url, api_key=api_key,
        flavor=_get(table, "flavor", _choice(*FLAVORS), place, "auto"),
        models=_get(table, "models", _names, place, ()),
        aliases=_get(table, "aliases", _aliases, place, ()),
        native=_get(table, "native", _native, place, ()),
        weight=_get(table, "weight", _integer(1), place, 1),
        max_concurrency=_get(table, "max_concurrency", _integer(0), place, 0),
        queue=queue, timeouts=timeouts, health=health)


def _rule(index: int, table: Any, names: set[str]) -> Rule:
    place = f"routing rule {index + 1}"
    if not isinstance(table, dict):
        raise _Problem(place, "a table with model and backends")
    _unknown(table, ("model", "backends"), place)
    if "model" not in table or "backends" not in table:
        raise _Problem(f"{place}, key '{'model' if 'model' not in table else 'backends'}'", "a value (it is missing)")
    model = _get(table, "model", _string, place, "")
    backends = _get(table, "backends", _names, place, ())
    for backend in backends:
        if backend not in names:
            raise _Problem(f"{place}, key 'backends'", f"names of backends in this file ({backend!r} is not one)")
    return Rule(model.strip(), backends)


def _routing(table: Any, names: set[str]) -> Routing:
    place = "table 'routing'"
    if not isinstance(table, dict):
        raise _Problem(place, "a table")
    _unknown(table, ROUTING_KEYS, place)
    rules = table.get("rules", [])
    if not isinstance(rules, list):
        raise _Problem(f"{place}, key 'rules'", "an array of tables ([[routing.rules]])")
    return Routing(strategy=_get(table, "strategy", _choice(*STRATEGIES), place, "round-robin"),
                   retries=_get(table, "retries", _integer(0), place, 2),
                   backoff_ms=_get(table, "backoff_ms", _number(0), place, 100.0),
                   affinity=_get(table, "affinity", _boolean, place, False),
                   rules=tuple(_rule(i, r, names) for i, r in enumerate(rules)))


def parse(data: Mapping[str, Any], path: str = "BACKENDS_FILE", environ: Mapping[str, str] | None = None
          ) -> BackendsConfig:
    """The configuration in decoded TOML ``data``; ConfigError naming the file, the backend and the key."""
    environ = os.environ if environ is None else environ
    try:
        _unknown(dict(data), ("backends", "routing"), "the file")
        backends = data.get("backends")
        if not isinstance(backends, dict) or not backends:
            raise _Problem("table 'backends'", "at least one [backends.<name>] table")
        specs = tuple(_backend(name, table, environ) for name, table in backends.items())
        routing = _routing(data.get("routing", {}), {s.name for s in specs})
    except _Problem as problem:
        raise ConfigError(f"BACKENDS_FILE={path!r}: {problem.place}: expected {problem.expected}") from None
    return BackendsConfig(specs, routing)


def load(path: str, environ: Mapping[str, str] | None = None) -> BackendsConfig:
    """Read and parse the file; ConfigError when it cannot be read, is not TOML, or is not valid."""
    try:
        with open(path, "rb") as stream:
            data = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"BACKENDS_FILE={path!r} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"BACKENDS_FILE={path!r} is not valid TOML: {exc}") from None
    return parse(data, path, environ)

