"""The backends (proxy/backends/) and the model catalog: the HTTP client against a raw TCP
server (tests/backends/fake_raw.py), llama.cpp recordings (tests/data/llamacpp), TLS and
outbound proxies, hostile backends, and the in-process stub backend. Fixtures for several backends:
``fakes_pool`` (fake upstreams on real ports) and ``pool_proxy`` (the proxy in front of them, BACKENDS_FILE)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakes import FakeUpstream


class Proxy:
    def __init__(self, url: str, app: Any, server: Any, thread: threading.Thread):
        self.url, self.app, self._server, self._thread = url, app, server, thread

    @property
    def pool(self):
        return self.app.extensions["llm_proxy"].pool

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.app.extensions["llm_proxy"].extras["shutdown"]()


@pytest.fixture
def fakes_pool():
    started: list[FakeUpstream] = []

    def start() -> FakeUpstream:
        fake = FakeUpstream().start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def pool_proxy(tmp_path: Path):
    """Factory: ``pool_proxy(toml_text, **env)`` -> a proxy (werkzeug, threads) with BACKENDS_FILE = that text."""
    from werkzeug.serving import make_server

    started: list[Proxy] = []

    def factory(text: str, **env: str) -> Proxy:
        from proxy import create_app
        from proxy.config import Settings

        path = tmp_path / f"backends-{len(started)}.toml"
        path.write_text(text)
        settings = Settings.from_env({"BACKENDS_FILE": str(path), "DATABASE_URL": f"sqlite:///{tmp_path}/p.db",
                                      "LOG_LEVEL": "WARNING", "LOG_CLEANUP_MINUTES": "0", **env})
        app = create_app(settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        proxy = Proxy(f"http://127.0.0.1:{server.server_port}", app, server, thread)
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        proxy.stop()
