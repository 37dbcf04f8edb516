"""Several backends (BACKENDS_FILE): the pool, each member's health, and which backend serves a request.

A ``Member`` is one backend of the file: the ordinary ``Backend`` object built for it, its own model
catalog (cached as with one backend), and its state — healthy or not, consecutive failures, requests in
flight, the last error, a latency average. ``Pool.plan`` answers, for a client's model name, the healthy
members that serve it (rules first, then each member's aliases and models) in the order they are to be
tried: the strategy picks the first (``choose``), the rest follow in turn. Everything here is in memory and
O(members) per request; the only I/O is the model lists (cached) and the probes, which run in a thread
(a greenlet under gevent) per member.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from .backendsfile import BackendsConfig, BackendSpec
from .catalog import Catalog, ModelInfo, model_not_found
from .config import Settings
from .dialects.ollama import canonical
from .errors import BackendError, ProxyError
from .sharedslots import SharedSlots
from .slots import SlotQueue

log = logging.getLogger(__name__)
EWMA_WEIGHT = 0.2  # of the newest latency in a member's average


def _names_of(name: str) -> tuple[str, ...]:
    """A model name as given and with Ollama's `:latest` added or removed: they are the same model."""
    if name.endswith(":latest"):
        return name, name[:-7]
    return (name, name + ":latest") if ":" not in name else (name,)


def glob_match(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(n, p) for n in _names_of(name) for p in patterns)


class NoHealthyBackend(BackendError):
    """503: backends serve the model, but none of them is healthy now."""

    status = 503


class Member:
    """One backend of the pool and what the proxy knows of it."""

    def __init__(self, spec: BackendSpec, backend: Any, catalog: Catalog, clock: Callable[[], float] = time.monotonic):
        self.spec = spec
        self.name = spec.name
        self.backend = backend
        self.catalog = catalog
        self.clock = clock
        self.healthy = True
        self.failures = 0  # consecutive failed requests (or probes)
        self.successes = 0  # consecutive successful probes while down
        self.in_flight = 0  # slots taken (``slots.SlotQueue`` counts them)
        self.queued = 0  # requests waiting for a slot here (or on another member serving their model)
        self.hold_s: float | None = None  # average time a slot is held, for Retry-After
        self.requests = self.failed_requests = self.retries = 0  # attempts sent here, failed, and retries (/metrics)
        self.last_error: str | None = None
        self.latency_ms: float | None = None  # EWMA of the time to an answer's head
        self.current = 0  # smooth weighted round-robin's running weight
        self._list_failed_at: float | None = None
        self._globs = tuple(p for p in spec.models if any(c in p for c in "*?["))
        self._exact = frozenset(canonical(p) for p in spec.models if p not in self._globs)
        self._aliases = {canonical(c): b for c, b in spec.aliases}
        self._listed: tuple[int, frozenset[str]] = (0, frozenset())
        self.retired = threading.Event()  # set when a reload drops it (or the pool stops): its probes end
        self.closing = False  # dropped, and its backend (connections) no other member uses: closed once idle

    def describe(self) -> str:
        return f"{self.name} ({self.backend.describe()})"

    def close_if_idle(self) -> bool:
        """Close a dropped member's backend once no request holds a slot on it (a reload's ``Pool.replace``, and
        each slot released after it); True when closed now."""
        if not self.closing or self.in_flight:
            return False
        self.closing = False
        self.backend.close()
        log.info("backend %s dropped from BACKENDS_FILE: its connections are closed", self.name)
        return True

    # --- names ------------------------------------------------------------------------------
    def upstream_name(self, name: str) -> str:
        """This backend's name for a (MODEL_MAP-resolved) client name: its alias, else the name itself."""
        return self._aliases.get(canonical(name), name)

    def models(self) -> list[ModelInfo]:
        """What it lists (its `models` setting filtering it, and naming models its list lacks); [] while its list
        cannot be had (a failed fetch is tried again after MODEL_LIST_TTL, so a dead backend costs once)."""
        listed: list[ModelInfo] = []
        failed_at = self._list_failed_at
        if failed_at is None or self.clock() - failed_at > self.catalog._ttl:
            try:
                listed = self.catalog.models()
                self._list_failed_at = None
            except ProxyError as exc:
                self._list_failed_at = self.clock()
                self.failed(exc.message)
        if self.spec.models:
            listed = [m for m in listed if canonical(m.id) in self._exact or glob_match(m.id, self._globs)]
            have = {canonical(m.id) for m in listed}
            listed += [ModelInfo(id=p, owned_by=self.spec.type) for p in self.spec.models
                       if p not in self._globs and canonical(p) not in have]
        return listed

    def serves(self, upstream: str) -> bool:
        """Whether a request for ``upstream`` (this backend's name) may go here."""
        if self.spec.models:
            return canonical(upstream) in self._exact or glob_match(upstream, self._globs)
        models = self.models()
        known = self._listed
        if known[0] != id(self.catalog._models):  # the names are read again only when a new list came
            known = self._listed = (id(self.catalog._models), frozenset(canonical(m.id) for m in models))
        return canonical(upstream) in known[1]

    # --- health -----------------------------------------------------------------------------
    def failed(self, error: str) -> None:
        """A real request (or a probe) failed: after ``unhealthy_after`` in a row the member is down."""
        self.last_error = error
        self.failures += 1
        self.successes = 0
        if self.healthy and self.failures >= self.spec.health.unhealthy_after:
            self.healthy = False
            log.warning("backend %s is down after %d failures: %s", self.name, self.failures, error)

    def answered(self, ms: float) -> None:
        self.failures = 0
        self.latency_ms = ms if self.latency_ms is None else self.latency_ms + EWMA_WEIGHT * (ms - self.latency_ms)

    def probed(self, ok: bool, error: str = "") -> None:
        """An active probe's result: a down member comes back after ``healthy_after`` successes in a row."""
        if not ok:
            self.failed(error)
            return
        self.failures = 0
        if not self.healthy:
            self.successes += 1
            if self.successes >= self.spec.health.healthy_after:
                self.healthy, self.successes = True, 0
                log.warning("backend %s is healthy again", self.name)

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.backend.type, "url": self.backend.base_url,
                "state": "healthy" if self.healthy else "down", "in_flight": self.in_flight, "queued": self.queued,
                "failures": self.failures, "last_error": self.last_error,
                "latency_ms": round(self.latency_ms, 2) if self.latency_ms is not None else None}


# --- choosing: pure functions over the candidates ----------------------------------------------------

def choose(strategy: str, members: Sequence[Member], turn: int) -> int:
    """The index in ``members`` (not empty) the strategy picks. ``turn`` counts the pool's requests."""
    if strategy == "weighted":  # smooth weighted round-robin (nginx): exact shares, evenly spread
        total = 0
        best = 0
        for i, m in enumerate(members):
            m.current += m.spec.weight
            total += m.spec.weight
            if m.current > members[best].current:
                best = i
        members[best].current -= total
        return best
    start = turn % len(members)
    if strategy == "least-busy":
        return min(range(len(members)), key=lambda i: (members[i].in_flight, (i - start) % len(members)))
    if strategy == "latency":  # unmeasured members first, so each gets measured
        return min(range(len(members)), key=lambda i: (members[i].latency_ms or 0.0, (i - start) % len(members)))
    return start


def ordered(strategy: str, members: Sequence[Member], turn: int) -> list[Member]:
    """``members`` in the order they are tried: the strategy's pick, then the others in turn after it."""
    if not members:
        return []
    first = choose(strategy, members, turn)
    return [members[(first + i) % len(members)] for i in range(len(members))]


def sticky(session: str, members: Sequence[Member]) -> Member:
    """The member a session goes to: rendezvous hashing (the highest hash of session and name), so it stays
    while that member is healthy, and when one goes down (or is added) only its own sessions move."""
    key = session.encode("utf-8", "replace")
    return max(members, key=lambda m: hashlib.blake2b(key + b"\0" + m.name.encode(), digest_size=8).digest())


class Pool:
    """The members of BACKENDS_FILE, the routing settings, and the probes."""

    def __init__(self, config: BackendsConfig, members: Sequence[Member], settings: Settings):
        self.config = config
        self.routing = config.routing
        self.members = tuple(members)
        self.by_name = {m.name: m for m in self.members}
        self.settings = settings
        # with REDIS_URL the caps hold across processes (sharedslots); the queue stays in this process
        self.slots = SlotQueue(shared=SharedSlots(settings.redis_url, settings.redis_timeout)
                               if settings.redis_url else None)
        self._turn = 0
        self._stop = threading.Event()
        self._probing = False

    # --- routing ----------------------------------------------------------------------------
    def allowed(self, client_name: str) -> Sequence[Member]:
        """The members the first matching rule names (all when no rule matches)."""
        by_name = self.by_name
        for rule in self.routing.rules:
            if glob_match(client_name, (rule.model,)):  # a name a reload is swapping in may be missing a moment
                return [by_name[n] for n in rule.backends if n in by_name]
        return self.members

    def plan(self, client_name: str, session: str | None = None) -> list[tuple[Member, str]]:
        """(member, its model name) for each healthy member serving ``client_name``, in the order to try them.
        ModelNotFound when none serves it; NoHealthyBackend (503) when those that do are all down. With
        ``affinity`` on, a ``session`` goes first to the member it hashes to (``sticky``)."""
        name = self.settings.backend_model_for(client_name)
        healthy: list[Member] = []
        down: list[Member] = []
        for member in self.allowed(client_name):
            if not member.healthy:
                upstream = member.upstream_name(name)
                if member.spec.models and member.serves(upstream) or not member.spec.models:
                    down.append(member)  # its list is not fetched while it is down: it may serve the model
                continue
            if member.serves(member.upstream_name(name)):
                healthy.append(member)
        if not healthy:
            if down:
                raise self.no_healthy(client_name, down)
            raise model_not_found(client_name, [m.id for m in self.models()])
        self._turn += 1
        order = ordered(self.routing.strategy, healthy, self._turn)
        if session and self.routing.affinity and len(order) > 1:
            first = sticky(session, order)
            order.remove(first)
            order.insert(0, first)
        return [(m, m.upstream_name(name)) for m in order]

    def no_healthy(self, client_name: str, down: Sequence[Member], what: str = "") -> NoHealthyBackend:
        listed = "; ".join(f"{m.name}: {m.last_error or 'down'}" for m in down)
        what = what or f"no healthy backend serves model '{client_name}'"
        retry = max(1, int(min(m.spec.health.interval_s for m in down) * max(1, min(
            m.spec.health.healthy_after for m in down)) + 0.999))
        return NoHealthyBackend(f"{what} ({listed})", retry_after=retry)

    def backoff(self, attempt: int, jitter: float) -> float:
        """Seconds to wait before going back to a backend already tried (``attempt`` >= 1): doubled each time,
        ``jitter`` (0..1) spreading it over half to one and a half of that."""
        return self.routing.backoff_ms / 1000 * 2 ** (attempt - 1) * (0.5 + jitter)

    # --- model lists ------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        """The union of every healthy member's models, one entry per name (the first member's)."""
        seen: dict[str, ModelInfo] = {}
        for member in self.members:
            if not member.healthy:
                continue
            for model in member.models():
                seen.setdefault(canonical(model.id), model)
        return list(seen.values())

    def find(self, client_name: str) -> tuple[Member, ModelInfo]:
        """A healthy member serving ``client_name`` and the model as it describes it (named as the client does)."""
        name = self.settings.backend_model_for(client_name)
        for member in self.allowed(client_name):
            if not member.healthy:
                continue
            upstream = member.upstream_name(name)
            wanted = canonical(upstream)
            for model in member.models():
                if canonical(model.id) == wanted:
                    if canonical(model.id) != canonical(client_name):
                        model = replace(model, id=client_name, alias_of=model.id, ollama_entry=None)
                    return member, model
        raise model_not_found(client_name, [m.id for m in self.models()])

    def management_member(self, action: str, model: str | None = None) -> Member | None:
        """Where model management goes: delete and copy (``model``: the model they name) to a healthy Ollama
        member serving it, the rest (pull, push, create, blobs) to the first healthy Ollama member. None when
        the file has no Ollama backend; NoHealthyBackend (503) when none of them is healthy, ModelNotFound when
        no healthy one serves ``model``."""
        ollama = [m for m in self.members if m.backend.dialect == "ollama"]
        if not ollama:
            return None
        healthy = [m for m in ollama if m.healthy]
        if not healthy:
            raise self.no_healthy(model or "", ollama, f"no healthy Ollama backend for /api/{action}")
        if action not in ("delete", "copy") or not model:
            return healthy[0]
        name = self.settings.backend_model_for(model)
        for member in healthy:
            if member.serves(member.upstream_name(name)):
                return member
        down = [m for m in ollama if not m.healthy]
        if down:  # their lists are not fetched while they are down: one of them may have it
            raise self.no_healthy(model, down)
        raise model_not_found(model, [m.id for member in healthy for m in member.models()])

    # --- reload -----------------------------------------------------------------------------
    def replace(self, config: BackendsConfig, members: Sequence[Member]) -> None:
        """A reloaded file's configuration and members (``rebuild`` kept the unchanged ones): requests from now
        on see them; requests in flight keep the member they hold; dropped members' probes end, new ones start, and
        their connections are closed once the requests they hold have ended (``Member.close_if_idle``)."""
        old = self.members
        self.members = tuple(members)
        self.by_name = {m.name: m for m in self.members}
        self.config, self.routing = config, config.routing
        kept = {id(m.backend) for m in self.members}
        for member in old:
            if member not in self.members:
                member.retired.set()
                member.closing = id(member.backend) not in kept  # else a new member goes on with its connections
                member.close_if_idle()
        if self._probing and not self._stop.is_set():
            for member in self.members:
                if member not in old:
                    self._start_probe(member)

    # --- probes -----------------------------------------------------------------------------
    def start_probes(self) -> None:
        self._probing = True
        for member in self.members:
            self._start_probe(member)

    def _start_probe(self, member: Member) -> None:
        if member.spec.health.path:
            threading.Thread(target=self._probe_loop, args=(member,), name=f"probe-{member.name}",
                             daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self.slots.shared is not None:
            self.slots.shared.stop()
        for member in self.members:
            member.retired.set()
            member.backend.close()

    def _probe_loop(self, member: Member) -> None:
        health = member.spec.health
        while not member.retired.wait(health.interval_s):
            probe(member)


def probe(member: Member) -> bool:
    """One active probe: GET the health path within ``timeout_s``; the result goes to the member's state."""
    health = member.spec.health
    try:
        upstream = member.backend.open("GET", health.path, timeout=health.timeout_s)
        try:
            upstream.read()
        finally:
            upstream.close()
    except ProxyError as exc:
        member.probed(False, exc.message)
        return False
    member.probed(True)
    return True


def build_pool(config: BackendsConfig, settings: Settings, make_backend: Callable[[Settings], Any]) -> Pool:
    """A member per backend of the file: the ordinary backend object, built from settings that describe it."""
    return Pool(config, [_member(spec, settings, make_backend) for spec in config.backends], settings)


def _connection_of(spec: BackendSpec) -> tuple[Any, ...]:
    """What the backend object (and its connection pool) is built from: members alike in this share it."""
    return spec.type, spec.url, spec.api_key, spec.flavor, spec.timeouts.connect_s, spec.timeouts.idle_s


def spec_settings(spec: BackendSpec, settings: Settings) -> Settings:
    """The settings that describe one backend of the file, as ``make_backend`` takes them (the doctor too)."""
    return dataclasses.replace(settings, backend_type=spec.type, backend_url=spec.url or settings.backend_url,
                               backend_api_key=spec.api_key, backend_flavor=spec.flavor,
                               backend_connect_timeout=spec.timeouts.connect_s, backend_timeout=spec.timeouts.idle_s,
                               backend_native=spec.native)


def _member(spec: BackendSpec, settings: Settings, make_backend: Callable[[Settings], Any],
            backend: Any = None, catalog: Catalog | None = None) -> Member:
    if backend is None:
        backend = make_backend(spec_settings(spec, settings))
    backend.first_byte_timeout = spec.timeouts.first_byte_s
    backend.total_timeout = spec.timeouts.total_s or None
    if catalog is None:
        catalog = Catalog(backend.list_models, tuple((c, b) for c, b in spec.aliases),
                          _resolver(spec.aliases), settings.model_list_ttl)
    return Member(spec, backend, catalog)


def rebuild(pool: Pool, config: BackendsConfig, make_backend: Callable[[Settings], Any]) -> list[Member]:
    """The members for a reloaded ``config``: a backend whose spec did not change is the same member (its
    health, in-flight count and connections); one whose connection settings did not change keeps its backend
    object (connections), model list (same aliases) and health; any other is new. Builds, changes nothing."""
    members = []
    for spec in config.backends:
        old = pool.by_name.get(spec.name)
        if old is not None and old.spec == spec:
            members.append(old)
        elif old is not None and _connection_of(old.spec) == _connection_of(spec):
            catalog = old.catalog if old.spec.aliases == spec.aliases else None
            member = _member(spec, pool.settings, make_backend, old.backend, catalog)
            member.healthy, member.failures, member.last_error = old.healthy, old.failures, old.last_error
            member.latency_ms = old.latency_ms
            members.append(member)
        else:
            members.append(_member(spec, pool.settings, make_backend))
    return members


def _resolver(aliases: tuple[tuple[str, str], ...]) -> Callable[[str], str]:
    table = {canonical(c): b for c, b in aliases}
    return lambda name: table.get(canonical(name), name)
