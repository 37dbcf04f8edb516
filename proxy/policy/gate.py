"""The gate in front of `/api/*` and `/v1/*`: who is calling (key or address), may they, is there room.

``Policy.before_request`` decides, in this order, for the route Flask matched (never the raw path): key (401),
the key's networks (403), body size (413, before the body is read), allowed models (403), limits (429/503).
The caller, the parsed body and the admission's ``Ticket`` go on the request's context (``proxy.context``);
``Policy._settle`` settles the ticket, once, when the request is done. Only key *names* leave this module.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, Request, Response, request

from .. import jsonio, keycase
from ..body import read_body
from ..catalog import model_allowed
from ..config import Settings
from ..context import RequestContext, current
from ..errors import ProxyError, Unauthorized
from ..exchange import Exchange
from ..recording import dialect_of_path
from ..render import render_error
from ..values import parse_rate
from .keys import KeyRing, Networks, digest, presented_keys
from .keysfile import KeyRules, KeysFile, KeysFileWatcher
from .limits import Limiter, Rules

log = logging.getLogger(__name__)
GATED_BLUEPRINTS = frozenset({"ollama_api", "openai_api", "anthropic_api", "responses_api"})
GATED_PREFIXES = ("/api/", "/v1/")
OPEN_RULES = frozenset({"/", "/api/version"})  # rule templates served without a key
MODEL_ROUTE = "/v1/models/<path:model_id>"  # the one route naming a model in its path
MODEL_FIELDS = ("model", "name", "source", "destination")
# Rule templates of the requests that occupy the backend or spend tokens: token windows, the daily quota and
# concurrency govern these only. Every other gated request counts against the request rate alone, so a key at
# its concurrency limit or out of tokens still sees its models.
METERED = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/pull", "/api/push",
                     "/api/create", "/api/copy", "/api/delete", "/v1/chat/completions", "/v1/completions",
                     "/v1/embeddings", "/api/blobs/<path:digest>", "/v1/messages", "/v1/responses"})


@dataclass(frozen=True)
class Caller:
    name: str | None                 # key name; None when admitted without a key
    who: str                         # what limits count against: key:<name> or addr:<ip>
    label: str                       # how messages name the caller
    models: tuple[str, ...] | None   # globs of allowed model names; None = all
    networks: Networks | None        # where the key may be used from; None = anywhere
    rules: Rules                     # what a METERED request is held to
    read_rules: Rules                # what any other request is held to: the request rate only


def gated(req: Request) -> bool:
    """Whether the gate guards the route that serves ``req``: every rule of the API blueprints (or under /api/,
    /v1/) but the open ones; a request no rule matched (404, 405) by its path, so that an unknown API path asks
    for a key before it tells what exists."""
    rule = req.url_rule
    if rule is None:
        return req.path.startswith(GATED_PREFIXES)
    return rule.rule not in OPEN_RULES and (rule.endpoint.partition(".")[0] in GATED_BLUEPRINTS
                                            or rule.rule.startswith(GATED_PREFIXES))


def requested_models(req: Request, ctx: RequestContext) -> list[str]:
    """Model names a request names: `/v1/models/<id>`, or the body's model/name (source/destination of a copy).
    A body parsed here stays on the context for the view."""
    if req.url_rule is not None and req.url_rule.rule == MODEL_ROUTE:
        return [(req.view_args or {}).get("model_id", "")]
    if req.method not in ("POST", "DELETE", "PUT", "PATCH"):
        return []
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


def _tokens(exchange: Exchange | None) -> int:
    prompt, completion = exchange.tokens() if exchange is not None else (None, None)
    return (prompt or 0) + (completion or 0)


class Policy:
    """One app's gate: its keys (API_KEYS, and KEYS_FILE followed as it is reloaded), networks and limiter."""

    def __init__(self, settings: Settings):
        self.networks = Networks(settings.allowed_networks)
        for net in settings.allowed_networks:
            if net.endswith("/0"):  # ::/0 holds the IPv4-mapped addresses a dual-stack listener gives IPv4 clients
                log.warning("ALLOWED_NETWORKS %s admits every client%s without a key", net,
                            ", IPv4 ones too on a dual-stack listener (HOST=::)," if ":" in net else "")
        self.env_keys = tuple((name, digest(key)) for name, key in settings.api_keys)
        self.env_rate = settings.rate_limit
        self.max_bytes = settings.max_request_bytes
        self.watcher = KeysFileWatcher(settings.keys_file) if settings.keys_file else None
        self.limiter = Limiter(settings.redis_url, settings.rate_limit_strategy, settings.limits_fail_open,
                               settings.redis_timeout)
        self._file: KeysFile | None = None
        self._ring = KeyRing(self.env_keys)
        self._callers: dict[str | None, Caller] = {}
        self._sync()

    def _sync(self) -> None:
        """Follow KEYS_FILE: when it was reloaded, rebuild the key ring and forget the callers made from it."""
        if self.watcher is not None and (loaded := self.watcher.get()) is not self._file:
            self._file = loaded
            self._ring = KeyRing(self.env_keys + loaded.keys)
            self._callers = {}

    def key_names(self) -> tuple[str, ...]:
        self._sync()
        return self._ring.names()

    def describe(self) -> str:
        names = self.key_names()
        keys = f"{len(names)} API key(s): {', '.join(names)}" if names else "no API keys"
        nets = f"; {len(self.networks.nets)} network(s) admitted without a key" if self.networks.nets else ""
        return f"{keys}{nets}; limit counters in {self.limiter.describe()}"

    def _caller(self, name: str | None) -> Caller:
        """The caller a key name stands for, made once per KEYS_FILE version (None: the rules of a client
        admitted without a key)."""
        caller = self._callers.get(name)
        if caller is None:
            own = self._file.rules_for(name) if self._file is not None else KeyRules()
            rules = Rules(rate=parse_rate(self.env_rate if own.requests is None else own.requests),
                          tokens=parse_rate(own.tokens or ""), daily_tokens=own.daily_tokens or 0,
                          concurrency=own.concurrency or 0)
            networks = Networks(own.networks) if own.networks is not None else None
            caller = Caller(name, f"key:{name}", f"key '{name}'", own.models, networks, rules, Rules(rate=rules.rate))
            self._callers[name] = caller
        return caller

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
            base = self._caller(None)
            return Caller(None, f"addr:{address}", f"client {address}", base.models, None, base.rules, base.read_rules)
        caller = self._caller(name)
        if caller.networks is not None and not caller.networks.contains(address):
            raise ProxyError(f"the API key '{name}' may not be used from {address}", status=403,
                             code="address_not_allowed")
        return caller

    def check_size(self, req: Request) -> None:
        """413 from Content-Length, before a byte is read. A chunked body is read here and refused as soon as it
        passes MAX_REQUEST_BYTES, so nothing larger is held (werkzeug's own cap would silently cut it)."""
        length = req.content_length
        if self.max_bytes and (length > self.max_bytes if length is not None
                               else "chunked" in req.environ.get("HTTP_TRANSFER_ENCODING", "").lower()):
            read_body(req, self.max_bytes)  # a chunked body within the limit is kept as the request's one copy

    def check_models(self, caller: Caller, req: Request, ctx: RequestContext) -> None:
        patterns = caller.models or ()
        who = f"the API key '{caller.name}'" if caller.name else caller.label
        for name in requested_models(req, ctx):
            if not model_allowed(name, patterns):
                raise ProxyError(f"{who} may not use the model '{name}'; it may use: {', '.join(patterns) or 'none'}",
                                 status=403, code="model_not_allowed", param="model")

    # --- Flask hooks --------------------------------------------------------------------------------
    def before_request(self) -> Response | None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        environ = req.environ
        if environ.get("REQUEST_METHOD") == "OPTIONS" or not gated(req):
            return None
        ctx = current()
        try:
            caller = ctx.caller = self.authenticate(environ, environ.get("REMOTE_ADDR"))
            self.check_size(req)
            if caller.models is not None:
                self.check_models(caller, req, ctx)
            metered = req.url_rule is not None and req.url_rule.rule in METERED
            ticket = self.limiter.admit(caller.who, caller.label, caller.rules if metered else caller.read_rules)
        except ProxyError as exc:
            ctx.refused = True
            response = render_error(exc, dialect_of_path(req.path))
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="llm-proxy"'
            return response
        if not ticket.settled:
            ctx.ticket = ticket
        return None

    def after_request(self, response: Response) -> Response:
        self._settle(response)
        return response

    def teardown_request(self, exc: BaseException | None) -> None:
        """A ticket no response took (the after-request hooks never ran) is settled here, at once."""
        self._settle(None)

    def _settle(self, response: Response | None) -> None:
        """The one place an admission is settled, once: a stream when its exchange finishes (however it ends), a
        whole answer with Redis when the server closes it (the round trip is not on the client's clock), in memory
        or with no response at once, before the client can ask again. No wrapper is put around the body."""
        ctx = current()
        ticket, ctx.ticket = ctx.ticket, None
        if ticket is None:
            return
        exchange, settle = ctx.exchange, self.limiter.settle
        if response is not None and response.direct_passthrough and exchange is not None:
            exchange.on_finish.append(lambda done: settle(ticket, _tokens(done)))
        elif response is not None and self.limiter.redis_url:
            response.call_on_close(lambda: settle(ticket, _tokens(exchange)))  # werkzeug's own close: no new layer
        else:
            settle(ticket, _tokens(exchange))


def install_policy(app: Flask, settings: Settings) -> Policy:
    """Create the gate for ``app`` and hook it in; the app's services must exist already."""
    policy = Policy(settings)
    app.extensions["llm_proxy"].extras["policy"] = policy
    app.before_request(policy.before_request)
    app.after_request(policy.after_request)
    app.teardown_request(policy.teardown_request)
    if settings.max_request_bytes:
        app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes  # caps chunked bodies while they are read
    log.info("gate: %s", policy.describe())
    return policy
