"""The gate in front of `/api/*` and `/v1/*`: who is calling (key or address), may they, is there room.

One ``before_request`` hook decides, in this order: a path the router would read otherwise than it is
written (400), key (401), the key's networks (403), body size (413, from Content-Length, before anything is
read), allowed models (403), limits (429/503). It judges the route Flask matched (its rule and blueprint),
never the raw path. Refusals are rendered in the caller's dialect. `/`, `/health`, `/api/version` and CORS
preflights pass untouched.
The caller, the parsed body, the refusal and the admission's ``Ticket`` go on the request's context
(``proxy.context``). A ticket is settled (tokens charged, concurrency slot
freed) when the request is done: a stream when its exchange finishes (after the last chunk, on client
disconnect, or after an error), a whole answer before it is sent (memory) or as the server closes it
(Redis: the round trip is not on the client's clock), a request no response took at teardown.
Settling happens in ``_settle`` only, called from ``after_request`` or, for a request no response took,
``teardown_request``. Only key *names* leave this module (``exchange.key_name``, from the caller), never keys.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, Request, Response, request

from .. import jsonio, keycase
from ..body import read_body
from ..catalog import model_allowed
from ..config import Settings, parse_rate
from ..context import RequestContext, current
from ..errors import BadRequest, PayloadTooLarge, ProxyError, Unauthorized
from ..recording import dialect_of_path
from ..render import render_error
from ..services import services
from .keys import KeyRing, Networks, presented_keys
from .keysfile import KeyRules, KeysFile, KeysFileWatcher
from .limits import Limiter, Rules, Ticket

log = logging.getLogger(__name__)
GATED_BLUEPRINTS = frozenset({"ollama_api", "openai_api"})
GATED_PREFIXES = ("/api/", "/v1/")
OPEN_RULES = frozenset({"/", "/api/version"})  # rule templates served without a key
# Rule templates (not paths) below: the gate judges the route that will serve the request.
MODEL_LISTS = {"/api/tags": ("models", "name"), "/api/ps": ("models", "name"), "/v1/models": ("data", "id")}
MODEL_ARGS = {"/v1/models/<path:model_id>": "model_id"}  # routes naming a model in the path: its view argument
MODEL_FIELDS = ("model", "name", "source", "destination")
# Requests that occupy the backend or spend tokens. Token windows, the daily quota and concurrency slots govern
# these only; every other gated request (model lists, /api/show, /api/ps) counts against the request rate alone:
# clients poll model lists while a stream runs, and a key at its concurrency limit or out of tokens must still
# see its models (the generation it asks for next gets the 429 that names the limit).
METERED = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/pull", "/api/push",
                     "/api/create", "/api/copy", "/api/delete", "/v1/chat/completions", "/v1/completions",
                     "/v1/embeddings", "/api/blobs/<path:digest>"})


def metered(rule: str) -> bool:
    """Whether the route with this rule template occupies the backend or spends tokens."""
    return rule in METERED


def canonical_path(path: str) -> bool:
    """Whether the router reads ``path`` as it is written: one leading slash, no empty, `.` or `..` segment.
    werkzeug strips leading slashes and merges doubled ones before matching, so another spelling would reach a
    route its text does not show; such a request is refused before anything else judges it."""
    if not path:
        return True
    if path[0] != "/" or "//" in path:
        return False
    return "/." not in path or not any(segment in (".", "..") for segment in path.split("/"))


def _spelled_out(path: str) -> str:
    """``path`` with empty, `.` and `..` segments resolved: what a refusal of it is worded for (its dialect)."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    return "/" + "/".join(kept)


def gated(req: Request) -> bool:
    """Whether the gate guards the route that serves ``req``: every rule of the API blueprints (or under
    /api/, /v1/) but the open ones; a request no rule matched (404, 405) by its routed path, so that an
    unknown API path asks for a key before it tells what exists."""
    rule = req.url_rule
    if rule is None:
        return req.path.startswith(GATED_PREFIXES)
    key = (rule.endpoint, rule.rule)
    decided = _GATED.get(key)
    if decided is None:
        decided = rule.rule not in OPEN_RULES and (rule.endpoint.partition(".")[0] in GATED_BLUEPRINTS
                                                   or rule.rule.startswith(GATED_PREFIXES))
        _GATED[key] = decided
    return decided


_GATED: dict[tuple[str, str], bool] = {}  # (endpoint, rule template) -> gated; url maps are fixed once serving


def rule_of(req: Request) -> str:
    """The template of the rule that serves ``req`` ('' when none matched)."""
    rule = req.url_rule
    return rule.rule if rule is not None else ""


@dataclass(frozen=True)
class Caller:
    name: str | None                 # key name; None when admitted without a key
    who: str                         # what limits count against: key:<name> or addr:<ip>
    label: str                       # how messages name the caller
    models: tuple[str, ...] | None   # globs of allowed model names; None = all
    rules: Rules
    read_rules: Rules                # what applies to a request that is not METERED: the request rate only


@dataclass(frozen=True)
class _Profile:
    """Everything decided per key name (and per KEYS_FILE version), computed once."""

    models: tuple[str, ...] | None
    networks: Networks | None
    rules: Rules
    read_rules: Rules


class Policy:
    def __init__(self, settings: Settings, limiter: Limiter | None = None):
        self.env_keys = settings.api_keys
        self.networks = Networks(settings.allowed_networks)
        for net in settings.allowed_networks:
            if net.endswith("/0"):  # ::/0 holds the IPv4-mapped addresses a dual-stack listener gives IPv4 clients
                log.warning("ALLOWED_NETWORKS %s admits every client%s without a key", net,
                            ", IPv4 ones too on a dual-stack listener (HOST=::)," if ":" in net else "")
        self.env_rate = settings.rate_limit
        self.max_bytes = settings.max_request_bytes
        self.watcher = KeysFileWatcher(settings.keys_file) if settings.keys_file else None
        self.limiter = limiter or Limiter(settings.redis_url, settings.rate_limit_strategy, settings.limits_fail_open,
                                          settings.redis_timeout)
        self._file: KeysFile | None = None
        self._ring = KeyRing.from_pairs(self.env_keys)
        self._profiles: dict[str | None, _Profile] = {}
        self._sync()

    def _sync(self) -> KeysFile | None:
        """Follow KEYS_FILE: when it was reloaded, rebuild the key ring and forget cached profiles."""
        if self.watcher is None:
            return None
        loaded = self.watcher.get()
        if loaded is not self._file:
            self._file = loaded
            self._ring = KeyRing.from_pairs(self.env_keys).plus(loaded.keys)
            self._profiles = {}
        return loaded

    def key_names(self) -> tuple[str, ...]:
        self._sync()
        return self._ring.names()

    def describe(self) -> str:
        names = self.key_names()
        keys = f"{len(names)} API key(s): {', '.join(names)}" if names else "no API keys"
        nets = f"; {len(self.networks)} network(s) admitted without a key" if self.networks else ""
        return f"{keys}{nets}; limit counters in {self.limiter.describe()}"

    def _profile(self, name: str | None) -> _Profile:
        profile = self._profiles.get(name)
        if profile is None:
            own = self._file.rules_for(name) if self._file is not None else KeyRules()
            requests = self.env_rate if own.requests is None else own.requests
            rules = Rules(rate=parse_rate(requests), tokens=parse_rate(own.tokens or ""),
                          daily_tokens=own.daily_tokens or 0, concurrency=own.concurrency or 0)
            networks = Networks(own.networks) if own.networks is not None else None
            profile = _Profile(own.models, networks, rules, Rules(rate=rules.rate))
            self._profiles[name] = profile
        return profile

    # --- the decisions ----------------------------------------------------------------------------
    def authenticate(self, environ: dict, address: str | None) -> Caller:
        self._sync()
        ring = self._ring
        name = None
        offered = presented_keys(environ) if ring else ()
        for key in offered:
            name = ring.identify(key)
            if name is not None:
                break
        address = address or "-"
        if name is None:
            if offered:  # a wrong key is refused wherever it comes from: an allowed network admits no key, not any
                raise Unauthorized("the API key sent is not valid for this proxy")
            if (ring or self.networks) and not self.networks.contains(address):
                raise Unauthorized("this proxy needs an API key: send Authorization: Bearer <key> or X-API-Key: <key>")
            profile = self._profile(None)
            return Caller(None, f"addr:{address}", f"client {address}", profile.models, profile.rules,
                          profile.read_rules)
        profile = self._profile(name)
        if profile.networks is not None and not profile.networks.contains(address):
            raise ProxyError(f"the API key '{name}' may not be used from {address}", status=403,
                             code="address_not_allowed")
        return Caller(name, f"key:{name}", f"key '{name}'", profile.models, profile.rules, profile.read_rules)

    def check_size(self, req: Request) -> None:
        """413 from Content-Length, before a byte is read. A chunked body is read here, and refused as soon
        as it passes MAX_REQUEST_BYTES, so nothing larger is ever held in memory. (werkzeug's own cap
        would silently cut such a body at the limit instead.)"""
        if not self.max_bytes:
            return
        length = req.content_length
        if length is not None:
            if length > self.max_bytes:
                raise PayloadTooLarge(f"the request body is {length} bytes; this proxy accepts at most "
                                      f"{self.max_bytes} bytes (MAX_REQUEST_BYTES)", code="request_too_large")
        elif "chunked" in req.environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            read_body(req, self.max_bytes)  # kept as the request's one copy of its body

    def check_models(self, caller: Caller, req: Request) -> None:
        patterns = caller.models or ()
        who = f"the API key '{caller.name}'" if caller.name else caller.label
        for name in requested_models(req):
            if not model_allowed(name, patterns):
                raise ProxyError(f"{who} may not use the model '{name}'; it may use: {', '.join(patterns) or 'none'}",
                                 status=403, code="model_not_allowed", param="model")

    def admit(self, caller: Caller, rule: str) -> Ticket:
        """Admission for a request served by the route with template ``rule``: a Ticket, or RateLimited /
        StoreUnavailable."""
        rules = caller.rules if metered(rule) else caller.read_rules
        return self.limiter.admit(caller.who, caller.label, rules)

    def settle(self, ticket: Ticket, exchange: Any) -> None:
        tokens = 0
        if exchange is not None:
            prompt, completion = exchange.tokens()
            tokens = (prompt or 0) + (completion or 0)
        self.limiter.settle(ticket, tokens)


def requested_models(req: Request) -> list[str]:
    """Model names a request names: `/v1/models/<id>`, or the body's model/name (source/destination of a copy)."""
    arg = MODEL_ARGS.get(rule_of(req))
    if arg is not None:
        return [(req.view_args or {}).get(arg, "")]
    if req.method not in ("POST", "DELETE", "PUT", "PATCH"):
        return []
    ctx = current()
    body = ctx.body
    if body is None:
        raw = read_body(req, 0)  # its size was checked already
        try:
            body = jsonio.loads(raw) if raw.strip() else None
        except ValueError:
            return []  # the view answers 400 for a body that is not JSON
        keycase.check(body)  # `model` and `Model`: the backend might read the one not checked here
        ctx.body = body
    if not isinstance(body, dict):
        return []
    return [body[f] for f in MODEL_FIELDS if isinstance(body.get(f), str) and body[f]]


# --- Flask hooks ---------------------------------------------------------------------------------------
# Bound to their policy when installed, and reading the WSGI environ's CGI fields rather than werkzeug's
# request proxy where they can: each proxy attribute costs a context lookup, and these run on every request.

def _policy() -> Policy:
    return services().extras["policy"]


def before_request(policy: Policy | None = None) -> Response | None:
    req = request._get_current_object()  # type: ignore[attr-defined]
    environ = req.environ
    if not canonical_path(environ.get("PATH_INFO") or ""):
        return _refuse(BadRequest("the request path is not in its plain form (doubled slashes or . / .. "
                                  "segments); send it as the route is written, e.g. /v1/chat/completions",
                                  code="invalid_path"), _spelled_out(req.path), current())
    if environ.get("REQUEST_METHOD") == "OPTIONS" or not gated(req):
        return None
    policy = policy or _policy()
    ctx = current()
    try:
        caller = ctx.caller = policy.authenticate(environ, environ.get("REMOTE_ADDR"))
        policy.check_size(request)
        if caller.models is not None:
            policy.check_models(caller, request)
        ticket = policy.admit(caller, rule_of(req))
    except ProxyError as exc:
        return _refuse(exc, req.path, ctx)
    if not ticket.settled:
        ctx.ticket = ticket
    return None


def _refuse(exc: ProxyError, path: str, ctx: RequestContext) -> Response:
    ctx.refused = True
    response = render_error(exc, dialect_of_path(path))
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="llm-proxy"'
    return response


def after_request(response: Response, policy: Policy | None = None) -> Response:
    ctx = current()
    if ctx.ticket is not None:
        _settle(ctx, policy or _policy(), response)
    caller = ctx.caller
    if caller is not None and caller.models is not None and request.environ.get("REQUEST_METHOD") == "GET" \
            and response.status_code == 200:
        spec = MODEL_LISTS.get(rule_of(request))
        if spec is not None and not response.is_streamed:
            _filter_list(response, spec, caller.models)
    return response


def teardown_request(exc: BaseException | None, policy: Policy | None = None) -> None:
    """A ticket no response took (the after-request hooks never ran) is settled here, at once."""
    ctx = current()
    if ctx.ticket is not None:
        _settle(ctx, policy or _policy(), None)


def _settle(ctx: RequestContext, policy: Policy, response: Response | None) -> None:
    """The one place a request's admission is settled, once: a stream when its exchange finishes (however
    it ends), a whole answer with Redis as the server closes it (the round trip is not on the client's
    clock), in memory (or with no response) at once, before the client can ask again."""
    ticket, ctx.ticket = ctx.ticket, None
    exchange = ctx.exchange
    if response is not None and response.direct_passthrough and exchange is not None:
        exchange.on_finish.append(lambda done: policy.settle(ticket, done))
    elif response is not None and policy.limiter.redis_url:
        response.call_on_close(lambda: policy.settle(ticket, exchange))
    else:
        policy.settle(ticket, exchange)


def _filter_list(response: Response, spec: tuple[str, str], patterns: tuple[str, ...]) -> None:
    filtered = _filtered(response.get_data(), spec, patterns)
    if filtered is not None:
        response.set_data(filtered)


@functools.lru_cache(maxsize=64)  # model lists repeat
def _filtered(raw: bytes, spec: tuple[str, str], patterns: tuple[str, ...]) -> bytes | None:
    """A model list with only the models ``patterns`` allow (None: not a list to filter)."""
    field, id_field = spec
    try:
        data = jsonio.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get(field), list):
        return None
    data[field] = [m for m in data[field] if isinstance(m, dict) and isinstance(m.get(id_field), str)
                   and model_allowed(m[id_field], patterns)]
    return jsonio.dumps(data)


def install_policy(app: Flask, settings: Settings) -> Policy:
    """Create the policy for ``app`` and hook it in; the app's services must exist already."""
    policy = Policy(settings)
    app.extensions["llm_proxy"].extras["policy"] = policy
    app.before_request(lambda: before_request(policy))
    app.after_request(lambda response: after_request(response, policy))
    app.teardown_request(lambda exc: teardown_request(exc, policy))
    if settings.max_request_bytes:
        app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes  # caps chunked bodies while they are read
    log.info("gate: %s", policy.describe())
    return policy
