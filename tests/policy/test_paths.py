"""The gate judges the route that serves a request, however its path is spelled: every `/api` and `/v1`
rule of the url map, asked for with doubled slashes, dot segments, encoded slashes and dots, a trailing slash
and other letter cases, over real sockets under `python wsgi.py` and `gunicorn -k gevent`. A spelling the
router would read otherwise is refused with 400 in the caller's dialect; none reaches a view without a key.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import OLLAMA_MODELS, REPO_ROOT, free_port
from tests.support.policy import ALICE

KEYS = f"alice:{ALICE}"
SAMPLES = {"digest": "sha256-0123abcd", "model_id": "llama3.2", "rest": "responses"}
BODY = json.dumps({"model": "llama3.2", "name": "llama3.2", "prompt": "hi",
                   "messages": [{"role": "user", "content": "hi"}], "input": "hi"}).encode()


def _gated_rules() -> list[tuple[str, str]]:
    """(method, concrete path) for every /api and /v1 rule the proxy serves behind its gate."""
    from proxy import create_app
    from proxy.config import Settings
    from proxy.policy.gate import OPEN_RULES

    app = create_app(Settings.from_env({"BACKEND_TYPE": "stub", "LOG_ENABLED": "false", "LOG_LEVEL": "WARNING"}))
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/api/", "/v1/")) or rule.rule in OPEN_RULES:
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: SAMPLES.get(m.group(1), "x"), rule.rule)
        method = next(m for m in ("POST", "DELETE", "GET", "HEAD") if m in rule.methods)
        found.append((method, path))
    assert len(found) >= 15, found  # the url map was read, not an empty list tested
    return sorted(set(found))


def _second_slash(path: str) -> int:
    return path.index("/", 1)


# (name, respelling of a plain path, expected status). 400: the router would read the path otherwise than
# it is written; 401: the same route as the plain path, so the same gate; 404: no route serves it at all.
VARIANTS: list[tuple[str, Callable[[str], str], int]] = [
    ("leading //", lambda p: "/" + p, 400),
    ("leading ///", lambda p: "//" + p, 400),
    ("inner //", lambda p: p[:_second_slash(p)] + "/" + p[_second_slash(p):], 400),
    ("trailing //", lambda p: p + "//", 400),
    ("/./ first", lambda p: "/." + p, 400),
    ("/./ inside", lambda p: p[:_second_slash(p)] + "/." + p[_second_slash(p):], 400),
    ("/../ back to it", lambda p: p[:_second_slash(p)] + "/x/.." + p[_second_slash(p):], 400),
    ("/.. above the root", lambda p: "/.." + p, 400),
    ("encoded leading slash", lambda p: "/%2F" + p[1:], 400),
    ("encoded dot segment", lambda p: "/%2E" + p, 400),
    ("encoded dot-dot", lambda p: p[:_second_slash(p)] + "/x/%2e%2E" + p[_second_slash(p):], 400),
    ("encoded slashes", lambda p: "/" + p[1:].replace("/", "%2F"), 401),
    ("encoded letters", lambda p: p.replace("a", "%61"), 401),
    ("trailing /", lambda p: p + "/", 401),
    ("upper case", lambda p: p.upper(), 404),
    ("capitalised prefix", lambda p: p[:1] + p[1].upper() + p[2:], 404),
]


def _send(port: int, method: str, target: str, key: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the target exactly as written (http.client does not normalise it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    try:
        conn.request(method, target, body=BODY if method != "GET" else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _dialect_error(routed: str, raw: bytes) -> str | None:
    """Why ``raw`` is not an error body in the dialect of the routed path (None when it is one)."""
    try:
        body = json.loads(raw)
    except ValueError:
        return f"not JSON: {raw[:80]!r}"
    if routed.startswith("/v1"):
        ok = isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str)
    else:
        ok = set(body) == {"error"} and isinstance(body["error"], str)
    return None if ok else f"not the {'openai' if routed.startswith('/v1') else 'ollama'} dialect: {body}"


def _check_every_route(port: int, fake: Any) -> None:
    before = len(fake.requests)
    failures = []
    for method, path in _gated_rules():
        status, _, raw = _send(port, method, path)
        if status != 401:
            failures.append(f"{method} {path} (plain): {status}, expected 401")
        for name, respell, expected in VARIANTS:
            target = respell(path)
            status, headers, raw = _send(port, method, target)
            if status != expected:
                failures.append(f"{method} {target} ({name}): {status} {raw[:100]!r}, expected {expected}")
            elif expected in (400, 401, 404):
                wrong = _dialect_error(path, raw)
                if wrong:
                    failures.append(f"{method} {target} ({name}): {wrong}")
                if expected == 401 and "www-authenticate" not in headers:
                    failures.append(f"{method} {target} ({name}): 401 without WWW-Authenticate")
    assert not failures, f"{len(failures)} request(s) judged wrongly:\n" + "\n".join(failures)
    # the proxy's own model-list refresh may run meanwhile (it is not a client's request); nothing else may
    reached = [r for r in fake.requests[before:] if (r.method, r.path) != ("GET", "/api/tags")]
    assert reached == [], "requests reached the backend without a key"


def test_no_spelling_of_a_gated_route_passes_the_gate_under_wsgi_py(wsgi_proxy, fake_upstream):
    fake_upstream.serve_ollama_models(*OLLAMA_MODELS)
    proxy = wsgi_proxy(BACKEND_TYPE="ollama", API_KEYS=KEYS)
    _check_every_route(int(proxy.url.rsplit(":", 1)[1]), fake_upstream)


@pytest.fixture
def gunicorn_proxy(fake_upstream, tmp_path):
    """Factory: `gunicorn_proxy(**env)` -> port of `gunicorn -k gevent wsgi:app` (one worker), once /health
    answers."""
    from proxy.config import SETTINGS

    procs: list[subprocess.Popen] = []

    def factory(**env: Any) -> int:
        port = free_port()
        full = {s.env: s.default for s in SETTINGS}
        full.update({"BACKEND_TYPE": "openai", "BACKEND_URL": fake_upstream.url, "LOG_LEVEL": "WARNING",
                     "DATABASE_URL": f"sqlite:///{tmp_path}/gunicorn-{len(procs)}.db", "LOG_CLEANUP_MINUTES": "0"})
        full.update({k: str(v) for k, v in env.items()})
        log_path: Path = tmp_path / f"gunicorn-{len(procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--bind",
                                     f"127.0.0.1:{port}", "wsgi:app"], cwd=REPO_ROOT,
                                    env={**os.environ, **full}, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return port
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text(errors="replace")
            time.sleep(0.2)

    yield factory
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_no_spelling_of_a_gated_route_passes_the_gate_under_gunicorn(gunicorn_proxy, fake_upstream):
    fake_upstream.serve_ollama_models(*OLLAMA_MODELS)
    port = gunicorn_proxy(BACKEND_TYPE="ollama", API_KEYS=KEYS)
    _check_every_route(port, fake_upstream)


def test_plain_paths_with_the_key_still_pass_and_open_routes_stay_open(wsgi_proxy, fake_upstream):
    fake_upstream.serve_ollama_models(*OLLAMA_MODELS)
    proxy = wsgi_proxy(BACKEND_TYPE="ollama", API_KEYS=KEYS)
    tags = requests.get(proxy.url + "/api/tags", headers={"Authorization": f"Bearer {ALICE}"}, timeout=10)
    assert tags.status_code == 200 and tags.json()["models"]
    models = requests.get(proxy.url + "/v1/models", headers={"X-API-Key": ALICE}, timeout=10)
    assert models.status_code == 200 and models.json()["data"]
    assert requests.get(proxy.url + "/api/version", timeout=10).status_code == 200
    assert requests.head(proxy.url + "/", timeout=10).status_code == 200
    # encoded letters and slashes name the same route as the plain path: with the key, it is served
    status, _, raw = _send(int(proxy.url.rsplit(":", 1)[1]), "GET", "/v1%2Fmod%65ls", key=ALICE)
    assert status == 200 and json.loads(raw)["data"], raw


@pytest.mark.parametrize("path, plain", [
    ("/api/chat", True), ("/v1/models/org/model:tag", True), ("/api/blobs/sha256-ab.c", True), ("", True),
    ("/", True), ("/api/.well", True), ("/api/..x", True),
    ("//api/chat", False), ("/api//chat", False), ("/api/chat//", False), ("/./api/chat", False),
    ("/api/../v1/models", False), ("/api/chat/.", False), ("/api/chat/..", False), ("api/chat", False),
    ("*", False), ("http://host/api/chat", False),
])
def test_plain_path_names_the_paths_the_router_reads_as_written(path, plain):
    from proxy.hostguard import plain_path

    assert plain_path(path) is plain
