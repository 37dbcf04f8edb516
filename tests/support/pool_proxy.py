"""A proxy in front of several backends (BACKENDS_FILE), on a real port: in-process (werkzeug, threads;
``PoolProxy.start``) or as ``python wsgi.py`` (gevent's pywsgi, the production server; ``WsgiPoolProxy``), with
the file at hand to rewrite, and fake OpenAI backends to put behind it."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from tests.support import REPO_ROOT, fakes, free_port
from tests.support.fakes import FakeUpstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def openai_fake(*pieces: str, **reply_kw: Any) -> FakeUpstream:
    """A started fake OpenAI backend serving model ``m`` with ``pieces`` (``reply_kw``: hang, delay, gate...)."""
    fake = FakeUpstream().start()
    fake.serve_openai_models("m")
    responder = fakes.openai_chat_responder(list(pieces), **reply_kw)

    def respond(request: Any) -> Any:
        reply = responder(request)
        reply.hang = reply_kw.get("hang")  # the responder's whole (non-streamed) answers do not take it
        return reply

    fake.default("POST", "/v1/chat/completions", respond)
    return fake


def backend(name: str, fake: FakeUpstream | str, extra: str = "") -> str:
    """A ``[backends.<name>]`` table of type openai at the fake's URL (or a URL), ``extra`` lines after it."""
    url = fake if isinstance(fake, str) else fake.url
    return f'[backends.{name}]\ntype = "openai"\nurl = "{url}"\n{extra}'


def wait_until(check: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def _end_hubs_with_threads(server: Any, app: Any) -> None:
    """Each request thread of the in-process server makes a gevent hub of its own (the backends' connection
    pools are per hub): when the thread ends, its pools' connections are closed and its hub destroyed, or each
    leaves its loop's descriptors and sockets behind until the process ends."""
    serve = server.process_request_thread

    def process_request_thread(request: Any, client_address: Any) -> None:
        try:
            serve(request, client_address)
        finally:
            end_thread_hub(app)

    server.process_request_thread = process_request_thread


def end_thread_hub(app: Any) -> None:
    """Close this thread's connections to the app's backends and destroy its hub (if it made one)."""
    from gevent._hub_local import get_hub_if_exists

    hub = get_hub_if_exists()
    if hub is None:
        return
    pool = app.extensions["llm_proxy"].pool
    for member in pool.members if pool is not None else ():
        connection = getattr(member.backend, "connection", None)
        if connection is not None:
            connection.close(hub)
    hub.destroy(destroy_loop=True)


class PoolProxy:
    def __init__(self, url: str, app: Any, server: Any, thread: threading.Thread, path: Path):
        self.url, self.app, self._server, self._thread, self.path = url, app, server, thread, path

    @classmethod
    def start(cls, tmp_path: Path, text: str, name: str = "backends.toml", **env: str) -> PoolProxy:
        from werkzeug.serving import make_server

        from proxy import create_app
        from proxy.config import Settings

        path = tmp_path / name
        path.write_text(text)
        settings = Settings.from_env({"BACKENDS_FILE": str(path), "DATABASE_URL": f"sqlite:///{tmp_path}/p.db",
                                      "LOG_LEVEL": "INFO", "LOG_CLEANUP_MINUTES": "0", **env})
        app = create_app(settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        server.daemon_threads = True
        _end_hubs_with_threads(server, app)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        return cls(f"http://127.0.0.1:{server.server_port}", app, server, thread, path)

    @property
    def pool(self) -> Any:
        return self.app.extensions["llm_proxy"].pool

    @property
    def watcher(self) -> Any:
        return self.app.extensions["llm_proxy"].extras["backends_file"]

    def rows(self, count: int = 1) -> list[dict]:
        """The log's rows, once ``count`` are written."""
        store = self.app.extensions["llm_proxy"].extras["log_store"]
        wait_until(lambda: store.models.Exchange.select().count() >= count)
        return list(store.models.Exchange.select().order_by(store.models.Exchange.id).dicts())

    def rewrite(self, text: str) -> None:
        """New content, with an mtime surely different from the last one (the watcher compares mtime, size, inode)."""
        before = self.path.stat().st_mtime_ns
        self.path.write_text(text)
        if self.path.stat().st_mtime_ns == before:
            os.utime(self.path, ns=(before + 1_000_000, before + 1_000_000))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.app.extensions["llm_proxy"].extras["shutdown"]()


class WsgiPoolProxy:
    """``python wsgi.py`` with BACKENDS_FILE (and no BACKEND_* variable: both at once stop start-up)."""

    def __init__(self, tmp_path: Path, text: str, **env: str):
        from proxy.config import SETTINGS, SINGLE_BACKEND_VARS

        self.path = tmp_path / "backends-wsgi.toml"
        self.path.write_text(text)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        defaults = {s.env: s.default for s in SETTINGS if s.env not in SINGLE_BACKEND_VARS}
        inherited = {k: v for k, v in os.environ.items() if k not in SINGLE_BACKEND_VARS}
        full = {**inherited, **defaults, "HOST": "127.0.0.1", "PORT": str(port), "BACKENDS_FILE": str(self.path),
                "DATABASE_URL": f"sqlite:///{tmp_path}/wsgi.db", "LOG_LEVEL": "INFO", "LOG_CLEANUP_MINUTES": "0",
                "PYTHONUNBUFFERED": "1", **env}
        self.log_path = tmp_path / "wsgi-pool.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "wsgi.py"], cwd=REPO_ROOT, env=full, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, f"wsgi.py exited:\n{self.output()}"
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"wsgi.py did not answer in 30 s:\n{self.output()}"
            time.sleep(0.1)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
