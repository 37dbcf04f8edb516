"""Two real llama.cpp servers (the same SmolLM2 model) behind one proxy with BACKENDS_FILE: requests spread
over both; one server is stopped mid-run and every request after that is still answered (an attempt that
finds it gone fails over before anything reaches the client); /healthz, /metrics and the log say so.

Short on purpose: each llama-server start costs seconds, so the shared one is reused and one more is
started for this module; every generation is at most 8 tokens.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator

import ollama
import openai
import pytest
import requests

from tests.e2e.conftest import _SERVERS, Server, start_llama_server, start_proxy

MODEL = "smollm2"
MAX_NEW = 8
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def second_llama(llama_server_bin, smollm2_gguf, tmp_path_factory) -> Iterator[Server]:
    server = start_llama_server(llama_server_bin, smollm2_gguf, tmp_path_factory.mktemp("llama-two"),
                                name="llama-server two")
    _SERVERS.append(server)
    yield server
    _SERVERS.remove(server)
    server.stop()


@pytest.fixture(scope="module")
def pool_proxy(llama_server, second_llama, tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("pool-proxy")
    health = "health = { interval_s = 60 }\n"  # no probe in the run: what happens is the requests' doing
    (folder / "backends.toml").write_text(
        f'[backends.one]\ntype = "openai"\nurl = "{llama_server.url}"\n{health}'
        f'[backends.two]\ntype = "openai"\nurl = "{second_llama.url}"\n{health}'
        '[routing]\nstrategy = "round-robin"\nretries = 1\nbackoff_ms = 10\n')
    server = start_proxy(folder, {"BACKENDS_FILE": str(folder / "backends.toml")})
    _SERVERS.append(server)
    yield server
    _SERVERS.remove(server)
    server.stop()


def backend_series(proxy: Server, name: str) -> dict[str, float]:
    """One per-backend series of /metrics: {backend: value}."""
    text = requests.get(proxy.url + "/metrics", timeout=10).text
    pattern = r"^llm_proxy_backend_" + name + r'(?:_total)?\{backend="(\w+)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.M)}


def newest_rows(proxy: Server, count: int, total: int) -> list[dict]:
    """The ``count`` newest log rows, once the writer has written ``total``."""
    deadline = time.monotonic() + 15
    while True:
        rows = requests.get(proxy.url + "/ui/api/logs?limit=50", timeout=10).json()["items"]
        if len(rows) >= total or time.monotonic() > deadline:
            return rows[:count]
        time.sleep(0.1)


def ask(proxy: Server, number: int) -> str:
    """One request, alternating fronts and streaming; the answer's text (never empty)."""
    if number % 2:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="e2e", max_retries=0, timeout=120)
        if number % 4 == 1:
            reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_NEW,
                                                   temperature=0)
            text = reply.choices[0].message.content or ""
        else:
            stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_NEW,
                                                    temperature=0, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        client.close()
    else:
        oll = ollama.Client(host=proxy.url, timeout=120)
        options = {"temperature": 0, "num_predict": MAX_NEW}
        if number % 4 == 0:
            text = oll.chat(model=MODEL, messages=MESSAGES, options=options).message.content or ""
        else:
            text = "".join(p.message.content or "" for p in oll.chat(model=MODEL, messages=MESSAGES,
                                                                      options=options, stream=True))
    assert text.strip(), f"request {number}: empty answer"
    return text


def test_one_llama_server_stopped_mid_run_every_request_is_still_answered(pool_proxy, second_llama):
    for number in range(4):
        ask(pool_proxy, number)
    sent = backend_series(pool_proxy, "requests")
    assert sent["one"] >= 2 and sent["two"] >= 2, sent  # round-robin: both served

    second_llama.stop()
    for number in range(4, 8):
        ask(pool_proxy, number)

    failures = backend_series(pool_proxy, "failures")
    assert failures["two"] >= 1 and failures["one"] == 0, failures
    states = {b["name"]: b for b in requests.get(pool_proxy.url + "/healthz", timeout=10).json()["backends"]}
    assert states["one"]["state"] == "healthy" and "refused" in (states["two"]["last_error"] or "")
    rows = newest_rows(pool_proxy, 4, total=8)
    assert [r["backend_name"] for r in rows] == ["one"] * 4 and all(r["status"] == 200 for r in rows)
    moved = [a for r in rows
             for a in requests.get(pool_proxy.url + f"/ui/api/logs/{r['id']}", timeout=10).json()["attempts"]]
    assert [a["backend"] for a in moved] == ["two"] * int(failures["two"]), moved  # each failed over from two
