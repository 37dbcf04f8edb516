"""Settings: one frozen object built from an environment mapping.

This is the only module that knows environment variable names. ``SETTINGS`` is the table (variable,
default, parser, help) that README and ``.env.example`` mirror; a test keeps them in step; the parsers live
in ``values``. ``Settings.from_env`` collects every bad value and raises one ``ConfigError`` naming each
variable and what it accepts.
"""
from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .values import (
    backends_file,
    boolean,
    ca_bundle,
    choice,
    csv,
    database_url,
    host,
    http_url,
    http_urls,
    int_min,
    key_names,
    keys_file,
    log_file,
    log_level,
    mask_url,
    model_map,
    native_fronts,
    parse_api_keys,
    parse_networks,
    parse_origins,
    port,
    rate_limit,
    redis_url,
    seconds,
    seconds_or_zero,
    url_hosts,
)


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False
    show: Callable[[Any], str] | None = None  # how public_items displays it (e.g. a URL, its password masked)

    @property
    def attr(self) -> str:
        return self.env.lower()


# Variables no longer read: a value still set in the environment or .env gets one warning line, not a failure.
RETIRED = {"LIMITS_EXACT": "every gated request now waits for the limits store's verdict"}

SETTINGS: tuple[Setting, ...] = (
    Setting("HOST", "127.0.0.1", host, "address to bind (0.0.0.0 to serve the network)"),
    Setting("PORT", "11434", port, "port to listen on (Ollama's, so Ollama clients need no change)"),
    Setting("BACKEND_TYPE", "openai", choice("openai", "ollama", "stub"), "openai, ollama or stub"),
    Setting("BACKEND_URL", "http://127.0.0.1:8080", http_url, "base URL of the backend; user:password@ in it is "
            "sent as basic auth and shown masked", show=mask_url),
    Setting("BACKEND_FLAVOR", "auto", choice("auto", "llamacpp", "vllm", "openai", "generic"),
            "which OpenAI-compatible server: decides the extra sampler and thinking fields sent (auto = detect)"),
    Setting("BACKEND_API_KEY", "", str, "sent upstream as Authorization: Bearer; never shown or logged", secret=True),
    Setting("BACKEND_TIMEOUT", "300", seconds, "seconds to wait for the backend (first byte and between chunks)"),
    Setting("BACKEND_CONNECT_TIMEOUT", "5", seconds, "seconds to wait for a connection to the backend"),
    Setting("BACKEND_NATIVE", "", native_fronts, "agent fronts sent to the backend's own API instead of translated: "
            "messages (/v1/messages), responses (/v1/responses), comma-separated; empty = both translated"),
    Setting("BACKEND_CA_BUNDLE", "", ca_bundle, "PEM file (or directory) of extra certificates trusted for an "
            "https backend (else REQUESTS_CA_BUNDLE; SSL_CERT_FILE replaces the system's)"),
    Setting("BACKENDS_FILE", "", backends_file, "TOML file of several backends, routing rules, balancing, "
            "failover and health checks, reloaded when it changes (then BACKEND_TYPE, _URL, _FLAVOR, _API_KEY, "
            "_TIMEOUT, _CONNECT_TIMEOUT, _NATIVE must not be set); empty = the one backend of BACKEND_*"),
    Setting("MAX_RESPONSE_BYTES", "134217728", int_min(0), "a larger non-streamed backend answer (or compressed "
            "one, once decoded) is refused with 502; streams are relayed, not kept (0 = no limit)"),
    Setting("MODEL_MAP", "", model_map, "client-name=backend-name pairs, comma-separated; * globs on the left"),
    Setting("MODEL_LIST_TTL", "10", seconds, "seconds a backend model list is reused before it is fetched again"),
    Setting("DEFAULT_CONTEXT_LENGTH", "8192", int_min(1), "context length reported when the backend does not say"),
    Setting("STUB_DELAY_MS", "30", int_min(0), "stub backend: pause between streamed words, in milliseconds"),
    Setting("INJECT_TEXT", "", str, "text appended to a user message of chat requests (off when empty)"),
    Setting("INJECT_MODE", "last", choice("first", "last"), "first or last user message"),
    Setting("DATABASE_URL", "sqlite:///data/proxy.db", database_url, "log database (postgresql://…, mysql://… also)",
            show=mask_url),
    Setting("LOG_MAX_REQUESTS", "10000", int_min(0), "rows kept; oldest deleted by the cleanup (0 = unlimited)"),
    Setting("LOG_MAX_REFUSED", "1000", int_min(0),
            "requests the gate refused (401/403/413/429), kept compact on a budget of their own (0 = not stored)"),
    Setting("LOG_MAX_AGE_DAYS", "0", int_min(0), "rows older than this deleted (0 = keep)"),
    Setting("LOG_CLEANUP_MINUTES", "5", int_min(0), "cleanup interval; first run at start-up (0 = never)"),
    Setting("LOG_MAX_BODY_BYTES", "1048576", int_min(0), "larger bodies are stored truncated, marked as such"),
    Setting("LOG_ENABLED", "true", boolean,
            "record every exchange in the log database (false: no database, no log view)"),
    Setting("LOG_POLLING", "false", boolean,
            "store polling (/api/tags, /api/ps, /api/version, /v1/models) row by row; by default only counted"),
    Setting("LOG_QUEUE_SIZE", "2000", int_min(1),
            "records waiting for the log writer; when full, new records are dropped and counted"),
    Setting("LOG_LEVEL", "INFO", log_level, "stdout log level"),
    Setting("LOG_FORMAT", "text", choice("text", "json"), "text (one access line per request) or json"),
    Setting("LOG_FILE", "", log_file, "a file the stdout log lines also go to, reopened on SIGHUP (logrotate); "
            "empty = stdout only"),
    Setting("LOG_FILE_MAX_MB", "0", int_min(0), "rotate LOG_FILE when it passes this size (0 = never; one process "
            "only: under gunicorn with several workers use SIGHUP, see docs/operations.md)"),
    Setting("LOG_FILE_BACKUPS", "5", int_min(1), "rotated files kept with LOG_FILE_MAX_MB (LOG_FILE.1 …)"),
    Setting("LOG_MESSAGES", "false", boolean, "print a summary of each chat request's messages"),
    Setting("LOG_RAW_REQUESTS", "false", boolean, "print raw request bodies"),
    Setting("LOG_RAW_RESPONSES", "false", boolean, "print raw response bodies"),
    Setting("CORS_ORIGINS", "", parse_origins, "comma-separated allowed origins for /api and /v1, matched whole "
            "(https://*.example.org: its subdomains; * = any; empty = CORS off)"),
    Setting("ADMIN_TOKEN", "", str, "protects /ui and its JSON; when empty the UI answers loopback clients only",
            secret=True),
    Setting("ALLOWED_HOSTS", "", csv, "more Host names served, comma-separated (.example.com = it and its subdomains; "
            "* = any): IP addresses, single-label and .localhost/.local/.internal/.home.arpa names and this machine's "
            "name are always served; other names are refused (DNS rebinding)"),
    Setting("TRUSTED_PROXIES", "127.0.0.0/8,::1", parse_networks, "CIDRs of reverse proxies whose X-Forwarded-For, "
            "X-Forwarded-Proto and X-Forwarded-Host are believed (default: this machine; empty = none)"),
    Setting("METRICS_TOKEN", "", str, "when set (or ADMIN_TOKEN is), /metrics needs Authorization: Bearer "
            "<METRICS_TOKEN or ADMIN_TOKEN>", secret=True),
    Setting("WEBHOOK_URLS", "", http_urls, "comma-separated URLs that get a JSON record of every finished "
            "exchange, in batches (usage metering; see docs/operations.md); empty = off", secret=True,
            show=url_hosts),
    Setting("WEBHOOK_SECRET", "", str, "key of the HMAC-SHA256 signature of each batch (X-LLM-Proxy-Signature)",
            secret=True),
    Setting("WEBHOOK_BATCH", "100", int_min(1), "records per POST at most"),
    Setting("WEBHOOK_FLUSH_S", "5", seconds, "longest wait between a record and its POST (while the receiver "
            "answers)"),
    Setting("WEBHOOK_QUEUE", "10000", int_min(1), "records waiting per receiver; when full, new records are "
            "dropped and counted"),
    Setting("WEBHOOK_BODIES", "false", boolean, "add the client's request and response bodies to each record "
            "(bounded by LOG_MAX_BODY_BYTES)"),
    Setting("API_KEYS", "", parse_api_keys, "comma-separated name:key pairs (a bare key is named key1, key2…); "
            "when set, "
            "/api/* and /v1/* need Authorization: Bearer <key> or X-API-Key: <key>", secret=True, show=key_names),
    Setting("ALLOWED_NETWORKS", "", parse_networks, "comma-separated CIDRs whose clients need no API key "
            "(when set without keys, only these networks are served)"),
    Setting("KEYS_FILE", "", keys_file, "TOML file of per-key settings (models, networks, rpm, tpm, concurrency, "
            "daily_tokens); reloaded when it changes"),
    Setting("RATE_LIMIT", "", rate_limit, "requests per key (per client address without keys), e.g. 60/minute or "
            "10/second;1000/hour (empty = none)"),
    Setting("RATE_LIMIT_STRATEGY", "moving-window", choice("moving-window", "fixed-window"),
            "how request windows are counted: moving-window (exact) or fixed-window (cheaper)"),
    Setting("REDIS_URL", "", redis_url, "keep limit counters, BACKENDS_FILE's max_concurrency slots and the "
            "response cache (CACHE=redis) in Redis, shared by workers and hosts (redis://[:password@]host:port/db); "
            "empty = in process memory", show=mask_url),
    Setting("REDIS_TIMEOUT", "1", seconds,
            "seconds to wait for Redis before the request is decided by LIMITS_FAIL_OPEN"),
    Setting("LIMITS_FAIL_OPEN", "true", boolean, "when Redis is unreachable: true = admit without limits (with a "
            "warning), false = refuse with 503"),
    Setting("CACHE", "off", choice("off", "memory", "redis"), "response cache of identical requests: off, memory "
            "(this process) or redis (REDIS_URL, shared by workers and hosts); see docs/cache.md"),
    Setting("CACHE_TTL", "3600", seconds_or_zero, "seconds a cached answer is kept (0 = until evicted)"),
    Setting("CACHE_MAX_BYTES", "67108864", int_min(0), "CACHE=memory: bytes of entries kept; the least recently "
            "used go first"),
    Setting("CACHE_ALL", "false", boolean, "cache every generation, not only deterministic ones (temperature 0 or "
            "a seed); embeddings are always cached"),
    Setting("MAX_REQUEST_BYTES", "33554432", int_min(0), "larger request bodies get 413 without being read "
            "(0 = no limit)"),
    Setting("HEADER_TIMEOUT", "10", seconds, "seconds a client has to send a whole request head (a new "
            "connection from its start; later requests from their first byte); then 400 and the connection closes"),
    Setting("KEEPALIVE_TIMEOUT", "60", seconds, "seconds an idle keep-alive connection is kept between requests"),
    Setting("MAX_CONNECTIONS", "8192", int_min(1), "client connections served at once; beyond it new connections "
            "wait in the listen backlog (lowered to fit the open-file limit)"),
    Setting("KEEPALIVE_S", "10", seconds_or_zero, "streamed chat completions: seconds between keep-alive beats "
            "while the backend has not sent its first byte (queued, failing over, reading the prompt); the first "
            "beat sends the head, so a later failure is an error event (0 = off)"),
    Setting("AGENT_SANITIZE", "true", boolean, "fix what agents send for local models: Claude Code's per-request "
            "billing block removed from the system prompt (so the backend's prompt cache works); output limits "
            "(max_tokens, max_completion_tokens, num_predict) lowered to what the model's context leaves"),
    Setting("DRAIN_TIMEOUT", "30", seconds_or_zero, "on SIGTERM/SIGINT: seconds running requests get to finish; then "
            "open streams end with an error chunk and are recorded as cancelled (a second signal ends them at once)"),
)


# The BACKEND_* variables that describe the one backend of a proxy without BACKENDS_FILE.
SINGLE_BACKEND_VARS = ("BACKEND_TYPE", "BACKEND_URL", "BACKEND_FLAVOR", "BACKEND_API_KEY", "BACKEND_TIMEOUT",
                       "BACKEND_CONNECT_TIMEOUT", "BACKEND_NATIVE")


def _backends_conflict(environ: Mapping[str, str]) -> str | None:
    """The one start-up message when BACKENDS_FILE and BACKEND_* variables are both set, else None."""
    if not environ.get("BACKENDS_FILE", "").strip():
        return None
    given = [name for name in SINGLE_BACKEND_VARS if name in environ]
    if not given:
        return None
    return (f"BACKENDS_FILE is set and so {'is' if len(given) == 1 else 'are'} {', '.join(given)}: remove "
            f"{', '.join(given)} (the file describes every backend) or remove BACKENDS_FILE")


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    backend_type: str
    backend_url: str
    backend_flavor: str
    backend_api_key: str
    backend_timeout: float
    backend_connect_timeout: float
    backend_native: tuple[str, ...]
    backend_ca_bundle: str
    backends_file: str
    max_response_bytes: int
    model_map: tuple[tuple[str, str], ...]
    model_list_ttl: float
    default_context_length: int
    stub_delay_ms: int
    inject_text: str
    inject_mode: str
    database_url: str
    log_max_requests: int
    log_max_refused: int
    log_max_age_days: int
    log_cleanup_minutes: int
    log_max_body_bytes: int
    log_enabled: bool
    log_polling: bool
    log_queue_size: int
    log_level: str
    log_format: str
    log_file: str
    log_file_max_mb: int
    log_file_backups: int
    log_messages: bool
    log_raw_requests: bool
    log_raw_responses: bool
    cors_origins: tuple[str, ...]
    admin_token: str
    allowed_hosts: tuple[str, ...]
    trusted_proxies: tuple[str, ...]
    metrics_token: str
    webhook_urls: tuple[str, ...]
    webhook_secret: str
    webhook_batch: int
    webhook_flush_s: float
    webhook_queue: int
    webhook_bodies: bool
    api_keys: tuple[tuple[str, str], ...]
    allowed_networks: tuple[str, ...]
    keys_file: str
    rate_limit: str
    rate_limit_strategy: str
    redis_url: str
    redis_timeout: float
    limits_fail_open: bool
    cache: str
    cache_ttl: float
    cache_max_bytes: int
    cache_all: bool
    max_request_bytes: int
    header_timeout: float
    keepalive_timeout: float
    max_connections: int
    keepalive_s: float
    agent_sanitize: bool
    drain_timeout: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from a mapping (``os.environ`` when omitted); unknown keys are ignored."""
        environ = os.environ if environ is None else environ
        parsed: dict[str, Any] = {}
        problems: list[str] = []
        for setting in SETTINGS:
            raw = environ.get(setting.env)
            raw = setting.default if raw is None else raw
            try:
                parsed[setting.attr] = setting.parse(raw)
            except ValueError as exc:
                shown = "<hidden>" if setting.secret else repr(mask_url(raw) if raw and setting.show is mask_url
                                                               else raw)
                problems.append(f"{setting.env}={shown} is not valid: expected {exc}")
        if parsed.get("backend_api_key") and "@" in urlsplit(parsed.get("backend_url", "")).netloc:
            problems.append("BACKEND_URL carries credentials and BACKEND_API_KEY is set: use one of them (URL "
                            "credentials are sent as basic auth, the key as a bearer token)")
        if parsed.get("cache") == "redis" and not parsed.get("redis_url"):
            problems.append("CACHE=redis needs REDIS_URL (redis://host:port/db): set it, or use CACHE=memory")
        if (both := _backends_conflict(environ)) is not None:
            problems.append(both)
        if problems:
            raise ConfigError("; ".join(problems))
        for name, why in RETIRED.items():
            if name in environ:
                logging.getLogger("proxy.config").warning("%s is no longer a setting (%s); remove it", name, why)
        return cls(**parsed)

    def public_items(self) -> list[tuple[str, str]]:
        """(variable, value) pairs for display, secrets masked."""
        items = []
        for setting in SETTINGS:
            value = getattr(self, setting.attr)
            if setting.show is not None:
                shown = setting.show(value)
            elif setting.secret:
                shown = "********" if value else "(not set)"
            elif isinstance(value, tuple):
                shown = ", ".join("=".join(v) if isinstance(v, tuple) else v for v in value)
            else:
                shown = str(value)
            items.append((setting.env, shown))
        return items

    def backend_model_for(self, client_model: str) -> str:
        """Apply MODEL_MAP: the first matching pair wins; `*` globs on the left."""
        for pattern, target in self.model_map:
            if pattern == client_model or ("*" in pattern and fnmatch.fnmatchcase(client_model, pattern)):
                return target
        return client_model

    def client_aliases(self) -> tuple[tuple[str, str], ...]:
        """Exact (non-glob) aliases as (client-name, backend-name)."""
        return tuple((c, b) for c, b in self.model_map if not any(ch in c for ch in "*?["))
