"""The proxy in front of a real llama.cpp `llama-server` (SmolLM2-135M, `-c 2048`,
`--alias smollm2`), driven by the official `ollama` and `openai` Python libraries.

Every generation uses temperature 0 and at most 16 new tokens so the tier stays quick.
Token counts are compared with what llama-server itself reports for the same request, so a
count the proxy made up (or dropped) shows.
"""

from __future__ import annotations

import json
from datetime import datetime

import ollama
import openai
import pytest
import requests

MODEL = "smollm2"
MAX_NEW = 16
MESSAGES = [{"role": "user", "content": "Name three colours."}]
PROMPT = "Write one sentence about the sea."
RAW_PROMPT = "The capital of France is"
OLLAMA_OPTIONS = {"temperature": 0, "num_predict": MAX_NEW}
# Ollama's closed capability set that strict clients (JetBrains Koog) deserialise.
CAPABILITIES = {"audio", "completion", "embedding", "insert", "vision", "thinking", "tools"}
DONE_REASONS = {"stop", "length"}
FINISH_REASONS = {"stop", "length"}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def llama_direct(llama_server, path: str, body: dict) -> dict:
    """The same request straight to llama-server (non-streaming), for reference counts."""
    r = requests.post(llama_server.url + path, json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def llama_chat_usage(llama_server, messages=MESSAGES) -> dict:
    return llama_direct(llama_server, "/v1/chat/completions", {
        "model": MODEL, "messages": messages, "temperature": 0, "max_tokens": MAX_NEW,
    })["usage"]


def assert_rfc3339(value) -> None:
    if isinstance(value, datetime):  # ollama-python already parsed it
        return
    assert isinstance(value, str) and value, value
    datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_ollama_final_metrics(final, *, expect_prompt_tokens: int | None = None) -> None:
    """The last Ollama object: done, a known done_reason, token counts from llama.cpp's usage,
    durations (ns) from llama.cpp's timings."""
    assert final.done is True
    assert final.done_reason in DONE_REASONS, final.done_reason
    assert isinstance(final.prompt_eval_count, int) and final.prompt_eval_count > 0, final
    assert isinstance(final.eval_count, int) and 0 < final.eval_count <= MAX_NEW, final
    if final.done_reason == "length":
        assert final.eval_count == MAX_NEW, final
    if expect_prompt_tokens is not None:
        assert final.prompt_eval_count == expect_prompt_tokens
    assert isinstance(final.prompt_eval_duration, int) and final.prompt_eval_duration > 0, final
    assert isinstance(final.eval_duration, int) and final.eval_duration > 0, final
    assert isinstance(final.total_duration, int) and final.total_duration > 0, final
    # total is the proxy's wall clock; llama.cpp's own timings fit inside it
    assert final.total_duration >= final.eval_duration, final


def raw_lines(response: requests.Response) -> list[bytes]:
    body = response.content
    assert body.endswith(b"\n"), body[-200:]
    return body[:-1].split(b"\n")


def sse_events(response: requests.Response) -> list[str]:
    """`data:` payloads of an SSE body, in order (including the final `[DONE]`)."""
    text = response.content.decode("utf-8")
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        data = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            events.append("\n".join(data))
    return events


# --------------------------------------------------------------------------------------------
# Ollama front: /api/chat
# --------------------------------------------------------------------------------------------


def test_ollama_chat_non_stream_returns_text_and_llama_counts(oll, llama_server):
    r = oll.chat(model=MODEL, messages=MESSAGES, options=OLLAMA_OPTIONS, stream=False)
    assert r.model in (MODEL, f"{MODEL}:latest")
    assert_rfc3339(r.created_at)
    assert r.message.role == "assistant"
    assert isinstance(r.message.content, str) and r.message.content.strip()
    assert not r.message.tool_calls
    assert_ollama_final_metrics(r, expect_prompt_tokens=llama_chat_usage(llama_server)["prompt_tokens"])


def test_ollama_chat_stream_every_line_has_message_and_last_has_metrics(oll, llama_server):
    chunks = list(oll.chat(model=MODEL, messages=MESSAGES, options=OLLAMA_OPTIONS, stream=True))
    assert len(chunks) >= 2, chunks
    for c in chunks:
        assert c.model in (MODEL, f"{MODEL}:latest")
        assert_rfc3339(c.created_at)
        assert c.message.role == "assistant"
        assert isinstance(c.message.content, str)
    *body, final = chunks
    assert all(c.done is False for c in body)
    assert final.message.content == ""
    text = "".join(c.message.content for c in body)
    assert text.strip(), chunks
    assert_ollama_final_metrics(final,
                                expect_prompt_tokens=llama_chat_usage(llama_server)["prompt_tokens"])


def test_ollama_chat_stream_and_non_stream_give_the_same_text(oll):
    whole = oll.chat(model=MODEL, messages=MESSAGES, options=OLLAMA_OPTIONS, stream=False)
    pieces = oll.chat(model=MODEL, messages=MESSAGES, options=OLLAMA_OPTIONS, stream=True)
    assert "".join(c.message.content for c in pieces) == whole.message.content


def test_ollama_chat_num_predict_caps_generation_with_done_reason_length(oll):
    r = oll.chat(model=MODEL, options={"temperature": 0, "num_predict": 3}, stream=False,
                 messages=[{"role": "user", "content": "Count from one to fifty in words."}])
    assert r.done_reason == "length"
    assert r.eval_count == 3


def test_ollama_chat_accepts_latest_tag(oll):
    r = oll.chat(model=f"{MODEL}:latest", messages=MESSAGES, options=OLLAMA_OPTIONS,
                 stream=False)
    assert r.message.content.strip()
    assert r.model in (MODEL, f"{MODEL}:latest")


def test_ollama_chat_stream_is_strict_ndjson(proxy_url):
    r = requests.post(proxy_url + "/api/chat", timeout=120, json={
        "model": MODEL, "messages": MESSAGES, "options": OLLAMA_OPTIONS})  # stream omitted => on
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/x-ndjson"
    objs = [json.loads(line) for line in raw_lines(r)]  # no blank lines, no `data:` prefix
    for o in objs:
        assert {"model", "created_at", "message", "done"} <= o.keys(), o
        assert o["message"]["role"] == "assistant" and isinstance(o["message"]["content"], str)
        assert "error" not in o, o
    assert objs[-1]["done"] is True
    assert all(o["done"] is False for o in objs[:-1])


@pytest.mark.parametrize("stream", [False, True], ids=["non_stream", "stream"])
def test_ollama_chat_context_overflow_is_a_client_error(oll, stream):
    """llama-server answers 400 exceed_context_size_error before streaming; the Ollama client
    must see a 4xx with an error message, not a 200 stream or a 5xx."""
    too_long = [{"role": "user", "content": "hello " * 3000}]  # > 2048 tokens
    with pytest.raises(ollama.ResponseError) as info:
        result = oll.chat(model=MODEL, messages=too_long, options=OLLAMA_OPTIONS, stream=stream)
        if stream:
            list(result)
    assert 400 <= info.value.status_code < 500, (info.value.status_code, info.value.error)
    assert info.value.error


# --------------------------------------------------------------------------------------------
# Ollama front: /api/generate
# --------------------------------------------------------------------------------------------


def test_ollama_generate_non_stream_returns_response_and_counts(oll):
    r = oll.generate(model=MODEL, prompt=PROMPT, options=OLLAMA_OPTIONS, stream=False)
    assert r.model in (MODEL, f"{MODEL}:latest")
    assert_rfc3339(r.created_at)
    assert isinstance(r.response, str) and r.response.strip()
    assert_ollama_final_metrics(r)


def test_ollama_generate_stream_concatenates_to_text_and_ends_with_metrics(oll):
    chunks = list(oll.generate(model=MODEL, prompt=PROMPT, options=OLLAMA_OPTIONS, stream=True))
    assert len(chunks) >= 2
    *body, final = chunks
    assert all(c.done is False for c in body)
    assert all(isinstance(c.response, str) for c in chunks)
    assert final.response == ""
    assert "".join(c.response for c in body).strip()
    assert_ollama_final_metrics(final)


def test_ollama_generate_uses_the_chat_template_like_chat(oll, llama_server):
    """Non-raw generate = one user message through the model's chat template, so its prompt
    token count is llama-server's count for that chat."""
    r = oll.generate(model=MODEL, prompt=PROMPT, options=OLLAMA_OPTIONS, stream=False)
    usage = llama_chat_usage(llama_server, [{"role": "user", "content": PROMPT}])
    assert r.prompt_eval_count == usage["prompt_tokens"]


def test_ollama_generate_raw_sends_prompt_verbatim_to_completions(oll, llama_server):
    r = oll.generate(model=MODEL, prompt=RAW_PROMPT, raw=True, options=OLLAMA_OPTIONS,
                     stream=False)
    direct = llama_direct(llama_server, "/v1/completions", {
        "model": MODEL, "prompt": RAW_PROMPT, "temperature": 0, "max_tokens": MAX_NEW})
    assert r.prompt_eval_count == direct["usage"]["prompt_tokens"]
    assert r.response == direct["choices"][0]["text"]
    assert not r.context  # raw mode returns no context


# --------------------------------------------------------------------------------------------
# Ollama front: models
# --------------------------------------------------------------------------------------------


def test_ollama_tags_lists_smollm2_with_integer_size(proxy_url, oll):
    r = requests.get(proxy_url + "/api/tags", timeout=30)
    assert r.status_code == 200
    models = r.json()["models"]
    entry = next((m for m in models if m.get("model") in (MODEL, f"{MODEL}:latest")), None)
    assert entry is not None, models
    assert entry["name"] in (MODEL, f"{MODEL}:latest")
    assert type(entry["size"]) is int and entry["size"] > 0, entry  # llama-server says "" here
    assert isinstance(entry["digest"], str) and entry["digest"], entry
    assert_rfc3339(entry["modified_at"])
    details = entry["details"]
    for key in ("parent_model", "format", "family", "parameter_size", "quantization_level"):
        assert isinstance(details[key], str), (key, details)
    assert isinstance(details["families"], list), details
    # and the official client parses it
    listed = oll.list()
    assert any(m.model in (MODEL, f"{MODEL}:latest") for m in listed.models)


def test_ollama_show_reports_capabilities_and_served_context_length(oll):
    r = oll.show(MODEL)
    assert r.capabilities, r
    assert "completion" in r.capabilities
    assert set(r.capabilities) <= CAPABILITIES, r.capabilities
    info = r.modelinfo
    assert info is not None
    arch = info.get("general.architecture")
    assert isinstance(arch, str) and arch, info
    assert info[f"{arch}.context_length"] == 2048, info  # llama-server -c 2048, not n_ctx_train


def test_ollama_show_parameters_carry_num_ctx(oll):
    """Continue reads the context length from the `num_ctx` line of `parameters`."""
    r = oll.show(MODEL)
    lines = [line.split() for line in (r.parameters or "").splitlines()]
    assert ["num_ctx", "2048"] in [line[:2] for line in lines], r.parameters


def test_ollama_show_accepts_legacy_name_field_and_latest_tag(proxy_url):
    r = requests.post(proxy_url + "/api/show", json={"name": f"{MODEL}:latest"}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body.get("capabilities"), list)
    assert isinstance(body.get("model_info"), dict)


# --------------------------------------------------------------------------------------------
# OpenAI front: /v1/chat/completions
# --------------------------------------------------------------------------------------------


def test_openai_chat_non_stream_returns_message_and_usage(oai, llama_server):
    r = oai.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0,
                                    max_tokens=MAX_NEW)
    assert r.object == "chat.completion"
    assert r.model == MODEL
    assert r.id and isinstance(r.created, int)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in FINISH_REASONS
    u = r.usage
    assert u is not None
    assert u.prompt_tokens == llama_chat_usage(llama_server)["prompt_tokens"]
    assert 0 < u.completion_tokens <= MAX_NEW
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_openai_chat_stream_without_include_usage_has_no_usage(oai):
    chunks = list(oai.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0,
                                              max_tokens=MAX_NEW, stream=True))
    assert chunks
    assert [c for c in chunks if c.usage is not None] == []
    assert all(c.choices for c in chunks), "no usage-only chunk was asked for"
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert len(finishes) == 1 and finishes[0] in FINISH_REASONS, finishes
    assert chunks[-1].choices[0].finish_reason is not None


def test_openai_chat_stream_with_include_usage_ends_with_usage_chunk(oai, llama_server):
    chunks = list(oai.chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0, max_tokens=MAX_NEW, stream=True,
        stream_options={"include_usage": True}))
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert all(c.usage is None for c in body)
    assert all(c.choices for c in body)
    assert body[-1].choices[0].finish_reason in FINISH_REASONS
    u = last.usage
    assert u.prompt_tokens == llama_chat_usage(llama_server)["prompt_tokens"]
    assert 0 < u.completion_tokens <= MAX_NEW
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_openai_chat_stream_chunks_carry_base_fields_and_end_with_done(proxy_url):
    """Koog-style strict clients need id/object/created/model/choices on every chunk, and
    nothing llama.cpp-specific (`timings`) is a chunk of its own."""
    r = requests.post(proxy_url + "/v1/chat/completions", timeout=120, json={
        "model": MODEL, "messages": MESSAGES, "temperature": 0, "max_tokens": MAX_NEW,
        "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0].strip() == "text/event-stream"
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    for data in events[:-1]:
        chunk = json.loads(data)
        assert {"id", "object", "created", "model", "choices"} <= chunk.keys(), chunk
        assert chunk["object"] == "chat.completion.chunk"


@pytest.mark.parametrize("stream", [False, True], ids=["non_stream", "stream"])
def test_openai_chat_context_overflow_is_400_not_retryable(oai, stream):
    with pytest.raises(openai.BadRequestError) as info:
        result = oai.chat.completions.create(
            model=MODEL, temperature=0, max_tokens=MAX_NEW, stream=stream,
            messages=[{"role": "user", "content": "hello " * 3000}])
        if stream:
            list(result)
    assert info.value.status_code == 400


# --------------------------------------------------------------------------------------------
# OpenAI front: /v1/completions
# --------------------------------------------------------------------------------------------


def test_openai_completions_non_stream_returns_text_and_usage(oai, llama_server):
    r = oai.completions.create(model=MODEL, prompt=RAW_PROMPT, temperature=0, max_tokens=MAX_NEW)
    assert r.object == "text_completion"
    assert r.model == MODEL
    assert isinstance(r.choices[0].text, str) and r.choices[0].text.strip()
    assert r.choices[0].finish_reason in FINISH_REASONS
    direct = llama_direct(llama_server, "/v1/completions", {
        "model": MODEL, "prompt": RAW_PROMPT, "temperature": 0, "max_tokens": MAX_NEW})
    assert r.usage.prompt_tokens == direct["usage"]["prompt_tokens"]
    assert 0 < r.usage.completion_tokens <= MAX_NEW
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_openai_completions_stream_without_include_usage_has_no_usage_only_chunk(oai):
    # OpenAI to OpenAI is a passthrough: llama-server's own extras (usage and timings on the finish
    # chunk of /v1/completions, asked for or not) reach the client as they are; what the proxy owes
    # the client is that no extra `choices: []` chunk appears when it did not ask for usage.
    chunks = list(oai.completions.create(model=MODEL, prompt=RAW_PROMPT, temperature=0,
                                         max_tokens=MAX_NEW, stream=True))
    assert chunks
    assert all(c.choices for c in chunks), "no usage-only chunk was asked for"
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices).strip()
    assert chunks[-1].choices[0].finish_reason in FINISH_REASONS


def test_openai_completions_stream_with_include_usage_reports_usage(oai):
    chunks = list(oai.completions.create(model=MODEL, prompt=RAW_PROMPT, temperature=0,
                                         max_tokens=MAX_NEW, stream=True,
                                         stream_options={"include_usage": True}))
    with_usage = [c for c in chunks if c.usage is not None]
    assert with_usage, "usage was asked for"
    usage = with_usage[-1].usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= MAX_NEW
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason in FINISH_REASONS


# --------------------------------------------------------------------------------------------
# OpenAI front: models
# --------------------------------------------------------------------------------------------


def test_openai_models_lists_smollm2(oai):
    models = oai.models.list().data
    entry = next((m for m in models if m.id == MODEL), None)
    assert entry is not None, [m.id for m in models]
    assert entry.object == "model"
    assert isinstance(entry.created, int)
    assert isinstance(entry.owned_by, str)


def test_openai_model_retrieve_and_unknown_model_404(oai):
    assert oai.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model")


# --------------------------------------------------------------------------------------------
# operations
# --------------------------------------------------------------------------------------------


def test_healthz_reports_backend_reachable(proxy_url):
    r = requests.get(proxy_url + "/healthz", timeout=30)
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), dict)
