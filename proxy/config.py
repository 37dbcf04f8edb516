"""Settings: one frozen object built from an environment mapping.

This is the only module that knows environment variable names. ``SETTINGS`` is the
table (variable, default, parser, help) that README and ``.env.example`` mirror; a test
keeps them in step. ``Settings.from_env`` collects every bad value and raises one
``ConfigError`` naming each variable and what it accepts.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import logging
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from limits import RateLimitItem


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the variable."""


# --- parsers: each takes the raw string and returns the typed value or raises ValueError ---

def _str(raw: str) -> str:
    return raw


def _int_min(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"an integer >= {minimum}") from None
        if value < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return value
    return parse


def _port(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError("a port number from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise ValueError("a port number from 1 to 65535")
    return value


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _host(raw: str) -> str:
    """An IPv4 or IPv6 address (brackets allowed) or a syntactically valid host name; whether a name
    resolves is only known when the server binds, which reports it in one line too."""
    value = raw.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if (0 < len(value) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)
            and not all(label.isdigit() for label in labels)):
        return value
    raise ValueError("an IP address to bind (127.0.0.1, 0.0.0.0, ::) or a host name of this machine")


def _float_min0(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("a number of seconds >= 0") from None
    if not value >= 0:
        raise ValueError("a number of seconds >= 0")
    return value


def _float_pos(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("a number of seconds > 0") from None
    if not value > 0:
        raise ValueError("a number of seconds > 0")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("true or false")


def _choice(*choices: str, lower: bool = True) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower() if lower else raw.strip()
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return value
    return parse


def _http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL")
    return value


def _ca_bundle(raw: str) -> str:
    value = raw.strip()
    if value and not os.path.exists(value):
        raise ValueError("the path of an existing PEM file or certificate directory")
    return value


def _database_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("sqlite://", "postgresql://", "postgres://", "mysql://", "sqlite+")):
        raise ValueError("a sqlite:///path, postgresql://… or mysql://… URL")
    return value


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _model_map(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _csv(raw):
        client, sep, backend = item.partition("=")
        if not sep or not client.strip() or not backend.strip():
            raise ValueError("comma-separated client-name=backend-name pairs")
        pairs.append((client.strip(), backend.strip()))
    return tuple(pairs)


# --- access settings: their syntax lives here; proxy/policy holds what uses the values ---

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")  # a key's name (API_KEYS, KEYS_FILE)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_api_keys(raw: str) -> tuple[tuple[str, str], ...]:
    """`name:key` pairs, comma-separated; a bare key is named `key1`, `key2`… by its position."""
    pairs: list[tuple[str, str]] = []
    for position, item in enumerate((x.strip() for x in raw.split(",")), start=1):
        if not item:
            continue
        name, sep, key = item.partition(":")
        if not sep:
            name, key = f"key{position}", item
        name, key = name.strip(), key.strip()
        if not KEY_NAME.match(name) or not key:
            raise ValueError("comma-separated name:key pairs (names: letters, digits, . _ @ + -; keys not empty)")
        pairs.append((name, key))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("comma-separated name:key pairs with distinct names")
    if len({k for _, k in pairs}) != len(pairs):
        raise ValueError("comma-separated name:key pairs with distinct keys")
    return tuple(pairs)


def parse_network(raw: str) -> Network:
    try:
        return ipaddress.ip_network(raw.strip(), strict=False)
    except ValueError:
        raise ValueError(f"CIDR networks such as 10.0.0.0/8 or fd00::/8 (not {raw.strip()!r})") from None


def parse_networks(raw: str) -> tuple[str, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128), normalised to strings."""
    return tuple(str(parse_network(item)) for item in raw.split(",") if item.strip())


ANY_ORIGIN = "*"
ORIGIN_ENTRY = re.compile(r"""
    (?P<scheme>[a-z][a-z0-9+.-]*)://
    (?P<wild>\*\.)?
    (?P<host>[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*|\[[0-9a-f:.]+\])
    (?::(?P<port>[0-9]{1,5}))?
    """, re.VERBOSE)
ORIGINS_EXPECTED = ("comma-separated origins such as https://chat.example.org or http://localhost:3000 (scheme, "
                    "host, optional port; no path), a host may begin with *. for its subdomains, or * for any origin")


def normalise_origin(entry: str) -> str:
    """A CORS_ORIGINS entry (or an Origin header) as it is compared: lower case, no trailing slash."""
    return entry.strip().lower().rstrip("/")


def parse_origins(raw: str) -> tuple[str, ...]:
    """CORS_ORIGINS: the entries, normalised (``policy.origins`` matches them); ValueError naming a malformed one."""
    entries = []
    for item in raw.split(","):
        entry = normalise_origin(item)
        if not entry:
            continue
        if entry != ANY_ORIGIN and ORIGIN_ENTRY.fullmatch(entry) is None:
            raise ValueError(f"{ORIGINS_EXPECTED}; {item.strip()!r} is not one")
        entries.append(entry)
    return tuple(dict.fromkeys(entries))


def parse_rate(raw: str) -> tuple[RateLimitItem, ...]:
    """`60/minute`, `10/second;1000/hour`, `100 per 2 seconds`…, parsed by the limits library."""
    text = raw.strip()
    if not text:
        return ()
    import limits  # imported when a rate is set: gunicorn's master reads this module and needs no limits

    try:
        return tuple(limits.parse_many(text))
    except ValueError:
        raise ValueError("a rate such as 60/minute or 10/second;1000/hour") from None


def _rate_limit(raw: str) -> str:
    parse_rate(raw)
    return raw.strip()


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if value and urlsplit(value).scheme not in ("redis", "rediss", "unix", "redis+unix"):
        raise ValueError("a redis://[:password@]host:port[/db], rediss://… or unix://… URL")
    return value


def _keys_file(raw: str) -> str:
    """KEYS_FILE: empty, or a readable TOML file. Its tables and fields are checked by ``policy.keysfile`` when
    the app is built, which raises a ConfigError in this module's words."""
    path = raw.strip()
    if path:
        try:
            with open(path, "rb") as stream:
                tomllib.load(stream)
        except OSError as exc:
            raise ValueError(f"a readable TOML keys file ({path} cannot be read: {exc.strerror or exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"a readable TOML keys file ({path} is not valid TOML: {exc})") from None
    return path


def _backends_file(raw: str) -> str:
    """BACKENDS_FILE: empty, or a readable TOML file; ``backendsfile.load`` checks its tables when the app is built."""
    path = raw.strip()
    if path:
        try:
            with open(path, "rb") as stream:
                tomllib.load(stream)
        except OSError as exc:
            raise ValueError(f"a readable TOML backends file ({path} cannot be read: {exc.strerror or exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"a readable TOML backends file ({path} is not valid TOML: {exc})") from None
    return path


# The BACKEND_* variables that describe the one backend of a proxy without BACKENDS_FILE.
SINGLE_BACKEND_VARS = ("BACKEND_TYPE", "BACKEND_URL", "BACKEND_FLAVOR", "BACKEND_API_KEY", "BACKEND_TIMEOUT",
                       "BACKEND_CONNECT_TIMEOUT")


def _backends_conflict(environ: Mapping[str, str]) -> str | None:
    """The one start-up message when BACKENDS_FILE and BACKEND_* variables are both set, else None."""
    if not environ.get("BACKENDS_FILE", "").strip():
        return None
    given = [name for name in SINGLE_BACKEND_VARS if name in environ]
    if not given:
        return None
    return (f"BACKENDS_FILE is set and so {'is' if len(given) == 1 else 'are'} {', '.join(given)}: remove "
            f"{', '.join(given)} (the file describes every backend) or remove BACKENDS_FILE")


def _key_names(pairs: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(name for name, _ in pairs) + " (keys hidden)" if pairs else "(not set)"


_SECRET_PARAMS = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "signature")


def mask_url(url: str) -> str:
    """The URL as it may be shown (UI, /healthz, messages, logs): every credential in it replaced by ***:
    the password of the user info (a user name alone, likely a token, too) and the values of query
    parameters whose names say they hold a secret."""
    if not url:
        return "(not set)"
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min([i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = (f"{user}:***" if colon else "***") + "@" + hostport
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        params = []
        for param in query.split("&"):
            name, eq, value = param.partition("=")
            secret = eq and value and any(word in name.lower() for word in _SECRET_PARAMS)
            params.append(f"{name}=***" if secret else param)
        tail = path + "?" + "&".join(params) + hash_ + fragment
    return f"{scheme}://{netloc}{tail}"


def _masked_url(value: str) -> str:
    return mask_url(value)


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return value


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
    Setting("HOST", "127.0.0.1", _host, "address to bind (0.0.0.0 to serve the network)"),
    Setting("PORT", "11434", _port, "port to listen on (Ollama's, so Ollama clients need no change)"),
    Setting("BACKEND_TYPE", "openai", _choice("openai", "ollama", "stub"), "openai, ollama or stub"),
    Setting("BACKEND_URL", "http://127.0.0.1:8080", _http_url, "base URL of the backend; user:password@ in it is "
            "sent as basic auth and shown masked", show=_masked_url),
    Setting("BACKEND_FLAVOR", "auto", _choice("auto", "llamacpp", "vllm", "openai", "generic"),
            "which OpenAI-compatible server: decides the extra sampler and thinking fields sent (auto = detect)"),
    Setting("BACKEND_API_KEY", "", _str, "sent upstream as Authorization: Bearer; never shown or logged", secret=True),
    Setting("BACKEND_TIMEOUT", "300", _float_pos, "seconds to wait for the backend (first byte and between chunks)"),
    Setting("BACKEND_CONNECT_TIMEOUT", "5", _float_pos, "seconds to wait for a connection to the backend"),
    Setting("BACKEND_CA_BUNDLE", "", _ca_bundle, "PEM file (or directory) of extra certificates trusted for an "
            "https backend (else REQUESTS_CA_BUNDLE; SSL_CERT_FILE replaces the system's)"),
    Setting("BACKENDS_FILE", "", _backends_file, "TOML file of several backends, routing rules, balancing, "
            "failover and health checks (then BACKEND_TYPE, _URL, _FLAVOR, _API_KEY, _TIMEOUT, _CONNECT_TIMEOUT "
            "must not be set); empty = the one backend of BACKEND_*"),
    Setting("MAX_RESPONSE_BYTES", "134217728", _int_min(0), "a larger non-streamed backend answer (or compressed "
            "one, once decoded) is refused with 502; streams are relayed, not kept (0 = no limit)"),
    Setting("MODEL_MAP", "", _model_map, "client-name=backend-name pairs, comma-separated; * globs on the left"),
    Setting("MODEL_LIST_TTL", "10", _float_pos, "seconds a backend model list is reused before it is fetched again"),
    Setting("DEFAULT_CONTEXT_LENGTH", "8192", _int_min(1), "context length reported when the backend does not say"),
    Setting("STUB_DELAY_MS", "30", _int_min(0), "stub backend: pause between streamed words, in milliseconds"),
    Setting("INJECT_TEXT", "", _str, "text appended to a user message of chat requests (off when empty)"),
    Setting("INJECT_MODE", "last", _choice("first", "last"), "first or last user message"),
    Setting("DATABASE_URL", "sqlite:///data/proxy.db", _database_url, "log database (postgresql://…, mysql://… also)",
            show=_masked_url),
    Setting("LOG_MAX_REQUESTS", "10000", _int_min(0), "rows kept; oldest deleted by the cleanup (0 = unlimited)"),
    Setting("LOG_MAX_REFUSED", "1000", _int_min(0),
            "requests the gate refused (401/403/413/429), kept compact on a budget of their own (0 = not stored)"),
    Setting("LOG_MAX_AGE_DAYS", "0", _int_min(0), "rows older than this deleted (0 = keep)"),
    Setting("LOG_CLEANUP_MINUTES", "5", _int_min(0), "cleanup interval; first run at start-up (0 = never)"),
    Setting("LOG_MAX_BODY_BYTES", "1048576", _int_min(0), "larger bodies are stored truncated, marked as such"),
    Setting("LOG_ENABLED", "true", _bool,
            "record every exchange in the log database (false: no database, no log view)"),
    Setting("LOG_POLLING", "false", _bool,
            "store polling (/api/tags, /api/ps, /api/version, /v1/models) row by row; by default only counted"),
    Setting("LOG_QUEUE_SIZE", "2000", _int_min(1),
            "records waiting for the log writer; when full, new records are dropped and counted"),
    Setting("LOG_LEVEL", "INFO", _log_level, "stdout log level"),
    Setting("LOG_FORMAT", "text", _choice("text", "json"), "text (one access line per request) or json"),
    Setting("LOG_MESSAGES", "false", _bool, "print a summary of each chat request's messages"),
    Setting("LOG_RAW_REQUESTS", "false", _bool, "print raw request bodies"),
    Setting("LOG_RAW_RESPONSES", "false", _bool, "print raw response bodies"),
    Setting("CORS_ORIGINS", "", parse_origins, "comma-separated allowed origins for /api and /v1, matched whole "
            "(https://*.example.org: its subdomains; * = any; empty = CORS off)"),
    Setting("ADMIN_TOKEN", "", _str, "protects /ui and its JSON; when empty the UI answers loopback clients only",
            secret=True),
    Setting("ALLOWED_HOSTS", "", _csv, "more Host names served, comma-separated (.example.com = it and its subdomains; "
            "* = any): IP addresses, single-label and .localhost/.local/.internal/.home.arpa names and this machine's "
            "name are always served; other names are refused (DNS rebinding)"),
    Setting("TRUSTED_PROXIES", "127.0.0.0/8,::1", parse_networks, "CIDRs of reverse proxies whose X-Forwarded-For, "
            "X-Forwarded-Proto and X-Forwarded-Host are believed (default: this machine; empty = none)"),
    Setting("METRICS_TOKEN", "", _str, "when set (or ADMIN_TOKEN is), /metrics needs Authorization: Bearer "
            "<METRICS_TOKEN or ADMIN_TOKEN>", secret=True),
    Setting("API_KEYS", "", parse_api_keys, "comma-separated name:key pairs (a bare key is named key1, key2…); "
            "when set, "
            "/api/* and /v1/* need Authorization: Bearer <key> or X-API-Key: <key>", secret=True, show=_key_names),
    Setting("ALLOWED_NETWORKS", "", parse_networks, "comma-separated CIDRs whose clients need no API key "
            "(when set without keys, only these networks are served)"),
    Setting("KEYS_FILE", "", _keys_file, "TOML file of per-key settings (models, networks, rpm, tpm, concurrency, "
            "daily_tokens); reloaded when it changes"),
    Setting("RATE_LIMIT", "", _rate_limit, "requests per key (per client address without keys), e.g. 60/minute or "
            "10/second;1000/hour (empty = none)"),
    Setting("RATE_LIMIT_STRATEGY", "moving-window", _choice("moving-window", "fixed-window"),
            "how request windows are counted: moving-window (exact) or fixed-window (cheaper)"),
    Setting("REDIS_URL", "", _redis_url, "keep limit counters in Redis, shared by workers and hosts "
            "(redis://[:password@]host:port/db); empty = in process memory", show=_masked_url),
    Setting("REDIS_TIMEOUT", "1", _float_pos,
            "seconds to wait for Redis before the request is decided by LIMITS_FAIL_OPEN"),
    Setting("LIMITS_FAIL_OPEN", "true", _bool, "when Redis is unreachable: true = admit without limits (with a "
            "warning), false = refuse with 503"),
    Setting("MAX_REQUEST_BYTES", "33554432", _int_min(0), "larger request bodies get 413 without being read "
            "(0 = no limit)"),
    Setting("HEADER_TIMEOUT", "10", _float_pos, "seconds a client has to send a whole request head (a new "
            "connection from its start; later requests from their first byte); then 408 and the connection closes"),
    Setting("KEEPALIVE_TIMEOUT", "60", _float_pos, "seconds an idle keep-alive connection is kept between requests"),
    Setting("MAX_CONNECTIONS", "8192", _int_min(1), "client connections served at once; at the cap the longest-idle "
            "one is closed, and without an idle one a new connection gets 503 (lowered to fit the open-file limit)"),
    Setting("DRAIN_TIMEOUT", "30", _float_min0, "on SIGTERM/SIGINT: seconds running requests get to finish; then "
            "open streams end with an error chunk and are recorded as cancelled (a second signal ends them at once)"),
)


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
    log_messages: bool
    log_raw_requests: bool
    log_raw_responses: bool
    cors_origins: tuple[str, ...]
    admin_token: str
    allowed_hosts: tuple[str, ...]
    trusted_proxies: tuple[str, ...]
    metrics_token: str
    api_keys: tuple[tuple[str, str], ...]
    allowed_networks: tuple[str, ...]
    keys_file: str
    rate_limit: str
    rate_limit_strategy: str
    redis_url: str
    redis_timeout: float
    limits_fail_open: bool
    max_request_bytes: int
    header_timeout: float
    keepalive_timeout: float
    max_connections: int
    drain_timeout: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from a mapping (``os.environ`` when omitted); unknown keys are ignored."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for setting in SETTINGS:
            raw = environ.get(setting.env)
            raw = setting.default if raw is None else raw
            try:
                values[setting.attr] = setting.parse(raw)
            except ValueError as exc:
                shown = "<hidden>" if setting.secret else repr(mask_url(raw) if raw and setting.show is _masked_url
                                                               else raw)
                problems.append(f"{setting.env}={shown} is not valid: expected {exc}")
        if values.get("backend_api_key") and "@" in urlsplit(values.get("backend_url", "")).netloc:
            problems.append("BACKEND_URL carries credentials and BACKEND_API_KEY is set: use one of them (URL "
                            "credentials are sent as basic auth, the key as a bearer token)")
        if (both := _backends_conflict(environ)) is not None:
            problems.append(both)
        if problems:
            raise ConfigError("; ".join(problems))
        for name, why in RETIRED.items():
            if name in environ:
                logging.getLogger("proxy.config").warning("%s is no longer a setting (%s); remove it", name, why)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

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
