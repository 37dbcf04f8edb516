"""The model catalog: the backend's model list, cached, with aliases, and name resolution (with several
backends, ``PoolCatalog``: the union of the pool members' catalogs).

Model lists are fetched at most every MODEL_LIST_TTL seconds; a stale list is served at once
while a background refresh runs, so `/api/tags` never waits on a slow backend (Home Assistant
gives it 5 s). `foo` and `foo:latest` are the same model everywhere.
"""
from __future__ import annotations

import fnmatch
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .dialects.ollama import canonical
from .errors import ModelNotFound, ProxyError

log = logging.getLogger(__name__)
FIRST_FETCH_TIMEOUT = 4.0  # under Home Assistant's 5 s


@dataclass(frozen=True)
class ModelInfo:
    """One model as the backend describes it (fields it does not give stay empty)."""

    id: str
    created: int = 0
    owned_by: str = "llm-proxy"
    context_length: int | None = None
    size: int = 0
    parameter_count: int = 0
    parameter_size: str = ""
    quantization: str = ""
    family: str = ""
    capabilities: tuple[str, ...] = ("completion", "tools")
    ollama_entry: dict[str, Any] | None = field(default=None, compare=False, hash=False)  # /api/tags entry as is
    alias_of: str | None = None  # set on alias entries: the backend name


NAMES_IN_ERRORS = 20


def model_not_found(client_name: str, names: list[str]) -> ModelNotFound:
    """The 404 for an unknown model, listing the models there are: the first NAMES_IN_ERRORS names and how
    many more. The view narrows the list to the caller's allowed models before it is sent."""
    if names:
        more = len(names) - NAMES_IN_ERRORS
        listed = "available: " + ", ".join(names[:NAMES_IN_ERRORS])
        listed += f" and {more} more (GET /v1/models lists them all)" if more > 0 else ""
    else:
        listed = "no models are available"
    exc = ModelNotFound(f"model '{client_name}' not found; {listed}")
    exc.model, exc.available = client_name, tuple(names)
    return exc


class Catalog:
    def __init__(self, fetch: Callable[[float | None], list[ModelInfo]], aliases: tuple[tuple[str, str], ...],
                 resolve_alias: Callable[[str], str], ttl: float, clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._aliases = aliases
        self._resolve_alias = resolve_alias
        self._ttl = ttl
        self._clock = clock
        self._models: list[ModelInfo] | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()
        self._refreshing = False
        self._known: tuple[list[ModelInfo], frozenset[str]] | None = None
        self.last_error: str | None = None

    # --- fetching ---------------------------------------------------------------------------
    def _refresh(self, timeout: float | None) -> None:
        try:
            models = self._fetch(timeout)
        except ProxyError as exc:
            self.last_error = exc.message
            log.warning("model list: %s", exc.message)
            raise
        finally:
            self._refreshing = False
        self._models = models
        self._fetched_at = self._clock()
        self.last_error = None

    def _background_refresh(self) -> None:
        try:
            self._refresh(None)
        except ProxyError:
            pass  # already logged in _refresh; the stale list keeps being served

    def backend_models(self) -> list[ModelInfo]:
        """The backend's list: fresh, or stale while a refresh runs; raises only with no list at all."""
        if self._models is None:
            with self._lock:
                if self._models is None:
                    self._refresh(FIRST_FETCH_TIMEOUT)
        elif self._clock() - self._fetched_at > self._ttl and not self._refreshing:
            self._refreshing = True
            threading.Thread(target=self._background_refresh, name="model-list-refresh", daemon=True).start()
        return self._models or []

    def is_known(self, client_name: str) -> bool:
        """A name of the last fetched list or an exact alias, without fetching: metrics label only these."""
        models = self._models or []
        known = self._known
        if known is None or known[0] is not models:
            names = {canonical(m.id) for m in models} | {canonical(alias) for alias, _ in self._aliases}
            known = self._known = (models, frozenset(names))
        return canonical(client_name) in known[1]

    # --- views of the list -----------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        """What clients see: backend models plus an entry per exact alias whose target exists."""
        backend = self.backend_models()
        by_name = {canonical(m.id): m for m in backend}
        listed = list(backend)
        for alias, target in self._aliases:
            base = by_name.get(canonical(target))
            if base is not None and canonical(alias) not in by_name:
                listed.append(replace(base, id=alias, alias_of=base.id, ollama_entry=None))
        return listed

    def find(self, client_name: str) -> ModelInfo:
        """The model a client name means (alias applied); ModelNotFound when the backend lacks it."""
        wanted = canonical(client_name)
        listed = self.models()
        for model in listed:
            if canonical(model.id) == wanted:
                return model
        target = self._resolve_alias(client_name)
        if target == client_name:
            target = self._resolve_alias(wanted)
        if canonical(target) != wanted:  # a glob alias
            for model in self.backend_models():
                if canonical(model.id) == canonical(target):
                    return replace(model, id=client_name, alias_of=model.id, ollama_entry=None)
        raise model_not_found(client_name, [m.id for m in listed])

    def upstream_name(self, client_name: str) -> str:
        """The backend's name for a client's model name; raises ModelNotFound for unknown models.

        When the backend's list cannot be had at all, the (aliased) name is used as given: the backend
        will say if it does not know it.
        """
        try:
            model = self.find(client_name)
        except ModelNotFound:
            raise
        except ProxyError:  # no model list at all: let the backend judge the name
            return self._resolve_alias(client_name)
        return model.alias_of or model.id


@functools.lru_cache(maxsize=4096)
def model_allowed(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a key whose KEYS_FILE `models` are ``patterns`` may use the model ``name``: globs match the
    name as given, and with Ollama's `:latest` tag added or removed."""
    candidates = [name]
    if name.endswith(":latest"):
        candidates.append(name[:-7])
    elif ":" not in name:
        candidates.append(name + ":latest")
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns)


class PoolCatalog:
    """The catalog the views see with several backends: the union of the members' lists, MODEL_MAP's exact
    aliases on top (as ``Catalog.models`` adds them for one backend)."""

    def __init__(self, pool: Any, aliases: tuple[tuple[str, str], ...]):
        self.pool = pool
        self._aliases = aliases
        self._known: tuple[int, frozenset[str]] = (0, frozenset())
        self.last_error: str | None = None

    def backend_models(self) -> list[ModelInfo]:
        return self.pool.models()

    def models(self) -> list[ModelInfo]:
        listed = self.pool.models()
        by_name = {canonical(m.id): m for m in listed}
        for alias, target in self._aliases:
            base = by_name.get(canonical(target))
            if base is not None and canonical(alias) not in by_name:
                listed.append(replace(base, id=alias, alias_of=base.id, ollama_entry=None))
        return listed

    def find(self, client_name: str) -> ModelInfo:
        return self.pool.find(client_name)[1]

    def upstream_name(self, client_name: str) -> str:
        member, model = self.pool.find(client_name)
        return member.upstream_name(self.pool.settings.backend_model_for(client_name))

    def is_known(self, client_name: str) -> bool:
        """A name some member last listed, or an exact alias: no fetching (metrics label only these)."""
        lists = tuple(m.catalog._models for m in self.pool.members)
        known = self._known
        if known[0] != hash(tuple(map(id, lists))):
            names = {canonical(m.id) for models in lists for m in models or ()}
            names |= {canonical(c) for m in self.pool.members for c, _ in m.spec.aliases}
            names |= {canonical(a) for a, _ in self._aliases}
            known = self._known = (hash(tuple(map(id, lists))), frozenset(names))
        return canonical(client_name) in known[1]
