"""Token limits charge what the stream reported, whatever LOG_MAX_BODY_BYTES kept of the body (issue 10,
item 6): passthrough answers of both dialects, streamed and whole, behind a log copy cut to a few bytes."""
from __future__ import annotations

import time

import pytest

from proxy.usage import UsageTap
from tests.support.policy import ALICE, call, chat_body, write_keys
from tests.support.store import store_of, wait_rows

KEYS = f"alice:{ALICE}"
FRONT = {"openai": "/v1/chat/completions", "ollama": "/api/chat"}  # same dialect as the backend: passthrough


def _script(setup) -> None:
    if setup.kind == "openai":
        setup.script_chat(("Hello", " world") * 20, prompt_tokens=7, completion_tokens=2)
    else:
        setup.script_chat(("Hello", " world") * 20, prompt_eval_count=7, eval_count=2)


def _until(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_tokens_are_charged_when_the_log_copy_is_truncated(backend_setup, tmp_path, kind, stream):
    path = write_keys(tmp_path / "keys.toml", "[keys.alice]\ntpm = 15\n")
    setup = backend_setup(kind, API_KEYS=KEYS, KEYS_FILE=path, LOG_MAX_BODY_BYTES="64")
    _script(setup)
    body = chat_body(setup.model, stream=stream)
    for _ in range(2):  # 0 then 9 tokens used before: both admitted, 18 charged
        resp = call(setup.proxy, "POST", FRONT[kind], ALICE, json=body)
        assert resp.status_code == 200, resp.text
        assert "Hello world" in resp.text or "Hello" in resp.text
    assert _until(lambda: call(setup.proxy, "POST", FRONT[kind], ALICE, json=body).status_code == 429)
    store = store_of(setup.proxy)
    logged = [r for r in wait_rows(store, 2, endpoint=FRONT[kind]) if r["status"] == 200]
    assert len(logged) == 2
    for row in logged:
        assert row["truncated"] and row["outcome"] == "ok", row
        assert (row["prompt_tokens"], row["completion_tokens"], row["tokens_estimated"]) == (7, 2, False)


def test_a_stream_without_reported_usage_is_counted_as_it_passes(backend_setup, tmp_path):
    path = write_keys(tmp_path / "keys.toml", "[keys.alice]\ndaily_tokens = 30\n")
    setup = backend_setup("openai", API_KEYS=KEYS, KEYS_FILE=path, LOG_MAX_BODY_BYTES="64")
    from tests.support import fakes

    setup.fake.default("POST", setup.chat_path, fakes.openai_stream(["tok"] * 40, usage_chunk=False))
    resp = call(setup.proxy, "POST", "/v1/chat/completions", ALICE, json=chat_body(setup.model, stream=True))
    assert resp.status_code == 200 and resp.text.count("tok") == 40
    assert _until(lambda: call(setup.proxy, "POST", "/v1/chat/completions", ALICE,
                               json=chat_body(setup.model, stream=True)).status_code == 429)
    row = [r for r in wait_rows(store_of(setup.proxy), 1) if r["status"] == 200][0]
    assert row["tokens_estimated"] and row["completion_tokens"] >= 40


def test_usage_tap_reads_usage_split_anywhere_and_only_marked_lines():
    events = (b'data: {"choices":[{"delta":{"content":"say \\"_tokens\\""}}],"usage":null}\n\n'
              b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":3}}\n\n'
              b"data: [DONE]\n\n")
    for size in (1, 3, 7, len(events)):
        tap = UsageTap(sse=True)
        for i in range(0, len(events), size):
            tap(events[i:i + size])
        tap.end()
        assert (tap.prompt_tokens, tap.completion_tokens, tap.error) == (11, 3, None)
    tap = UsageTap(sse=False)
    tap(b'{"message":{"content":"x"},"done":false}\n{"done":true,"prompt_eval_count":5,')
    tap(b'"eval_count":9}')
    tap.end()
    assert (tap.prompt_tokens, tap.completion_tokens) == (5, 9)
    tap = UsageTap(sse=False)
    tap(b'{"error":"model crashed"}\n')
    assert tap.error == "model crashed"
