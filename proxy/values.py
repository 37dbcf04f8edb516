"""The syntax of setting values: each parser takes a variable's raw string and returns the typed value, or
raises ValueError saying what it accepts (``config`` puts the variable's name in front). Also how a value
that may hold a secret is shown. Imports nothing of the project, so gunicorn's master can read the settings
without the application; ``policy`` reads keys, networks, origins and rates with the same functions.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from limits import RateLimitItem

N = TypeVar("N", int, float)


# --- numbers ------------------------------------------------------------------------------------

def _number(raw: str, convert: Callable[[str], N], ok: Callable[[N], bool], expected: str) -> N:
    try:
        value = convert(raw.strip())
    except ValueError:
        raise ValueError(expected) from None
    if not ok(value):  # NaN fails every comparison: refused too
        raise ValueError(expected)
    return value


def int_min(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        return _number(raw, int, lambda value: value >= minimum, f"an integer >= {minimum}")
    return parse


def port(raw: str) -> int:
    return _number(raw, int, lambda value: 1 <= value <= 65535, "a port number from 1 to 65535")


def seconds(raw: str) -> float:
    return _number(raw, float, lambda value: value > 0, "a number of seconds > 0")


def seconds_or_zero(raw: str) -> float:
    return _number(raw, float, lambda value: value >= 0, "a number of seconds >= 0")


# --- words ----------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("true or false")


def choice(*choices: str) -> Callable[[str], str]:
    """One of ``choices`` (given in lower case), in any letter case."""
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return value
    return parse


def log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return value


def csv(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


NATIVE_FRONTS = ("messages", "responses")  # agent fronts a backend may be sent as they are (BACKEND_NATIVE, `native`)


def native_fronts(raw: str) -> tuple[str, ...]:
    """BACKEND_NATIVE: the agent fronts passed through to the backend's own API, comma-separated."""
    values = tuple(v.lower() for v in csv(raw))
    if any(v not in NATIVE_FRONTS for v in values):
        raise ValueError("comma-separated names among " + ", ".join(NATIVE_FRONTS) + " (or empty)")
    return values


def model_map(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in csv(raw):
        client, sep, backend = item.partition("=")
        if not sep or not client.strip() or not backend.strip():
            raise ValueError("comma-separated client-name=backend-name pairs")
        pairs.append((client.strip(), backend.strip()))
    return tuple(pairs)


# --- addresses, URLs, files -------------------------------------------------------------------------

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def host(raw: str) -> str:
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


def http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL")
    return value


def http_urls(raw: str) -> tuple[str, ...]:
    """Comma-separated http:// or https:// URLs (WEBHOOK_URLS), each kept whole: its path may be its secret."""
    urls = csv(raw)
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("comma-separated http:// or https:// URLs")
    return urls


def url_hosts(urls: tuple[str, ...]) -> str:
    """URLs as they may be shown: scheme and host only (a webhook's path or query often holds its secret)."""
    shown = []
    for url in urls:
        parts = urlsplit(url)
        shown.append(f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/…")
    return ", ".join(shown) if shown else "(not set)"


def log_file(raw: str) -> str:
    """Empty, or a file path in an existing folder (the file is created when missing)."""
    value = raw.strip()
    if value and (os.path.isdir(value) or not os.path.isdir(os.path.dirname(os.path.abspath(value)))):
        raise ValueError("the path of a file in an existing folder")
    return value


def database_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("sqlite://", "postgresql://", "postgres://", "mysql://", "sqlite+")):
        raise ValueError("a sqlite:///path, postgresql://… or mysql://… URL")
    return value


def redis_url(raw: str) -> str:
    value = raw.strip()
    if value and urlsplit(value).scheme not in ("redis", "rediss", "unix", "redis+unix"):
        raise ValueError("a redis://[:password@]host:port[/db], rediss://… or unix://… URL")
    return value


def ca_bundle(raw: str) -> str:
    value = raw.strip()
    if value and not os.path.exists(value):
        raise ValueError("the path of an existing PEM file or certificate directory")
    return value


def toml_file(what: str) -> Callable[[str], str]:
    """A parser of an optional TOML file setting (KEYS_FILE, BACKENDS_FILE): empty, or a file that reads as
    TOML. Its tables are checked when the app is built, which raises a ConfigError naming the table and key."""
    def parse(raw: str) -> str:
        path = raw.strip()
        if path:
            try:
                with open(path, "rb") as stream:
                    tomllib.load(stream)
            except OSError as exc:
                why = exc.strerror or exc
                raise ValueError(f"a readable TOML {what} file ({path} cannot be read: {why})") from None
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"a readable TOML {what} file ({path} is not valid TOML: {exc})") from None
        return path
    return parse


keys_file = toml_file("keys")
backends_file = toml_file("backends")


# --- access: keys, networks, origins, rates (``policy`` holds what uses them) ------------------------

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
    """CORS_ORIGINS: the entries, normalised (``hostguard.Origins`` matches them); ValueError naming a malformed one."""
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


def rate_limit(raw: str) -> str:
    """RATE_LIMIT: kept as written, once ``parse_rate`` can read it."""
    parse_rate(raw)
    return raw.strip()


# --- showing values that may hold secrets ---------------------------------------------------------------

def key_names(pairs: tuple[tuple[str, str], ...]) -> str:
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
