"""KEYS_FILE: per-key rules in TOML (the README shows the format), read with ``tomllib`` and reloaded when the
file changes. Loading checks everything and names the table and field at fault. A file that turns bad, or
empty (a truncated file, an editor's half-done save, which would drop every key at once), while the proxy
runs is not taken: the previous version stays in force and the reason is logged.
"""
from __future__ import annotations

import logging
import os
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import ConfigError
from ..values import KEY_NAME, parse_network, parse_rate
from .keys import digest

log = logging.getLogger(__name__)
CHECK_EVERY = 1.0  # seconds between looks at the file
UNREAD = (-1, -1, -1)  # a signature no file has: the next look reads the file again
LIMIT_FIELDS = ("rpm", "tpm", "concurrency", "daily_tokens")
RULE_FIELDS = ("models", "networks", "requests", "tokens") + LIMIT_FIELDS
KEY_FIELDS = ("key", "key_sha256") + RULE_FIELDS


class KeysFileError(ValueError):
    """The file cannot be used; the message names the path, the table and the field."""


@dataclass(frozen=True)
class KeyRules:
    """Per-key settings; None means "not said here" (the defaults or the environment decide)."""

    models: tuple[str, ...] | None = None
    networks: tuple[str, ...] | None = None
    requests: str | None = None   # request windows in limits syntax ("" = none)
    tokens: str | None = None     # token windows in limits syntax ("" = none)
    concurrency: int | None = None
    daily_tokens: int | None = None


@dataclass(frozen=True)
class KeysFile:
    defaults: KeyRules = KeyRules()
    rules: Mapping[str, KeyRules] = field(default_factory=dict)  # each key's own, over the defaults
    keys: tuple[tuple[str, bytes], ...] = ()  # (name, SHA-256 digest of the key)
    empty: bool = False  # the file holds no table at all (not even an empty [defaults])

    def rules_for(self, name: str | None) -> KeyRules:
        return self.rules.get(name, self.defaults) if name is not None else self.defaults


def _strings(where: str, name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise KeysFileError(f"{where}.{name} must be a string or a list of non-empty strings")
    return tuple(v.strip() for v in value)


def _rules(where: str, table: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The fields a table sets, checked, as ``KeyRules`` names them."""
    if not isinstance(table, dict):
        raise KeysFileError(f"{where} must be a table")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise KeysFileError(f"{where} has unknown field(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
    values: dict[str, Any] = {name: table[name] for name in LIMIT_FIELDS if name in table}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise KeysFileError(f"{where}.{name} must be an integer >= 0 (0 = no limit), not {value!r}")
    for count, windows in (("rpm", "requests"), ("tpm", "tokens")):
        if count in values and windows in table:
            raise KeysFileError(f"{where} gives both {count} and {windows}; use one")
        if count in values:
            amount = values.pop(count)
            values[windows] = f"{amount}/minute" if amount else ""
        elif windows in table:
            text = table[windows]
            try:
                if not isinstance(text, str):
                    raise ValueError(windows)
                parse_rate(text)
                values[windows] = text.strip()
            except ValueError:
                raise KeysFileError(f"{where}.{windows} must be windows such as \"60/minute\" or "
                                    "\"10/second;500/hour\" (\"\" = none)") from None
    if "models" in table:
        values["models"] = _strings(where, "models", table["models"])
    if "networks" in table:
        nets = _strings(where, "networks", table["networks"])
        try:
            values["networks"] = tuple(str(parse_network(n)) for n in nets)
        except ValueError as exc:
            raise KeysFileError(f"{where}.networks must hold {exc}") from None
    return values


def _key_digests(where: str, table: Mapping[str, Any]) -> list[bytes]:
    found = [digest(k) for k in _strings(where, "key", table["key"])] if "key" in table else []
    for hexed in _strings(where, "key_sha256", table["key_sha256"]) if "key_sha256" in table else ():
        try:
            raw = bytes.fromhex(hexed)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise KeysFileError(f"{where}.key_sha256 must be 64 hex digits (sha256 of the key)")
        found.append(raw)
    return found


def parse(text: str, path: str = "<keys file>") -> KeysFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KeysFileError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"defaults", "keys"})
    if unknown:
        raise KeysFileError(f"{path}: unknown table(s) {', '.join(unknown)}; known: defaults, keys")
    defaults = KeyRules(**_rules(f"{path}: [defaults]", data.get("defaults", {}), RULE_FIELDS))
    tables = data.get("keys", {})
    if not isinstance(tables, dict):
        raise KeysFileError(f"{path}: keys must be a table of [keys.<name>] tables")
    rules: dict[str, KeyRules] = {}
    keys: list[tuple[str, bytes]] = []
    for name, table in tables.items():
        where = f"{path}: [keys.{name}]"
        if not KEY_NAME.match(name):
            raise KeysFileError(f"{where}: a key name uses letters, digits and . _ @ + - (at most 64)")
        rules[name] = replace(defaults, **_rules(where, table, KEY_FIELDS))
        keys.extend((name, d) for d in _key_digests(where, table))
    digests = [d for _, d in keys]
    if len(set(digests)) != len(digests):
        raise KeysFileError(f"{path}: the same key is given to two names")
    return KeysFile(defaults=defaults, rules=rules, keys=tuple(keys), empty=not data)


def load(path: str) -> KeysFile:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise KeysFileError(f"{path} cannot be read: {exc.strerror or exc}") from None
    return parse(raw.decode("utf-8", "replace"), path)


class KeysFileWatcher:
    """The file's current content; ``get`` re-reads it when its mtime, size or inode changed, looking at it
    at most every ``interval`` seconds (not on every request: a stat is a share of the gate's cost)."""

    def __init__(self, path: str, interval: float = CHECK_EVERY, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.interval = interval
        self.clock = clock
        self._signature = self._stat()
        self._next_check = clock() + interval
        try:
            self.current = load(path)
        except KeysFileError as exc:  # at start-up: a setting that cannot be served, said as config says it
            raise ConfigError(f"KEYS_FILE={path!r} is not valid: expected a readable TOML keys file ({exc})") from None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def get(self) -> KeysFile:
        if self.interval:
            now = self.clock()
            if now < self._next_check:
                return self.current
            self._next_check = now + self.interval
        signature = self._stat()
        if signature != self._signature:
            self._signature = signature
            self._reload(signature)
        return self.current

    def _reload(self, signature: tuple[int, int, int] | None) -> None:
        if signature is None:
            log.error("KEYS_FILE %s is gone; the version read before stays in force", self.path)
            return
        try:
            fresh = load(self.path)
        except KeysFileError as exc:
            log.error("KEYS_FILE not reloaded, the previous version stays in force: %s", exc)
            return
        if self._stat() != signature:  # written to while it was read: what was read may be half of it
            self._signature = UNREAD
            return
        if fresh.empty and not self.current.empty:
            log.warning("KEYS_FILE %s is now empty: taken for an unfinished edit, the previous version stays in "
                        "force (a file meant to hold no rules keeps an empty [defaults] table)", self.path)
            return
        self.current = fresh
        log.info("KEYS_FILE %s reloaded: %d key table(s)", self.path, len(self.current.rules))
