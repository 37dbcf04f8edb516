"""OpenAI-compatible backends, read from real llama-server recordings (tests/data/llamacpp/)."""
import json

import pytest

from proxy.backends.openai import OpenAIBackend, family_of, human_count, model_from_openai
from proxy.config import Settings
from proxy.errors import code_from_upstream_body, message_from_upstream_body
from proxy.passthrough import passthrough_sse
from proxy.streaming import OpenAIToOllama, openai_sse_to_ollama
from tests.support import TESTS_DIR

LLAMA = TESTS_DIR / "data" / "llamacpp"


def test_llamacpp_model_entry_gives_context_size_params_and_quantisation():
    entry = json.loads((LLAMA / "models.json").read_text())["data"][0]
    model = model_from_openai(entry, "openai")
    assert model.id == "smollm2" and model.owned_by == "llamacpp"
    assert model.context_length == entry["meta"]["n_ctx"] == 2048
    assert model.size == entry["meta"]["size"] and model.parameter_size == human_count(entry["meta"]["n_params"])
    assert model.quantization == entry["meta"]["ftype"]


def test_vllm_max_model_len_is_the_context_length():
    model = model_from_openai({"id": "Qwen/Qwen3-8B", "owned_by": "vllm", "max_model_len": 32768}, "openai")
    assert model.context_length == 32768 and model.family == "qwen3"


@pytest.mark.parametrize("name, family", [("smollm2", "smollm2"), ("Qwen/Qwen3-8B", "qwen3"),
                                          ("llama-3.2-3b", "llama"), ("gpt-4o-mini", "gpt")])
def test_family_is_guessed_from_the_name(name, family):
    assert family_of(name) == family


def test_props_without_tool_support_drop_the_tools_capability():
    backend = OpenAIBackend(Settings.from_env({"BACKEND_FLAVOR": "llamacpp"}))
    backend._props = json.loads((LLAMA / "props.json").read_text())
    entry = json.loads((LLAMA / "models.json").read_text())["data"][0]
    [model] = backend._with_props([model_from_openai(entry, "openai")])
    assert backend._props["chat_template_caps"]["supports_tools"] is False
    assert "tools" not in model.capabilities and "completion" in model.capabilities


def test_context_overflow_maps_to_context_length_exceeded():
    raw = (LLAMA / "error_context_overflow.json").read_bytes()
    assert code_from_upstream_body(raw) == "context_length_exceeded"
    assert "exceeds the available context size" in message_from_upstream_body(raw, "fallback")


@pytest.mark.parametrize("fixture", ["chat_completions_stream.sse", "chat_completions_stream_include_usage.sse",
                                     "completions_stream.sse"])
def test_recorded_llamacpp_streams_translate_at_every_split(fixture):
    data = (LLAMA / fixture).read_bytes()
    kind = "generate" if fixture.startswith("completions") else "chat"

    def run(chunks):
        translator = OpenAIToOllama(kind, "smollm2", 0.0, clock=lambda: 1.0)
        return [json.loads(x) for x in openai_sse_to_ollama(chunks, translator)], translator.answer

    expected, answer = run([data])
    assert expected[-1]["done"] is True and answer.content
    if "include_usage" in fixture or kind == "generate":
        assert not answer.usage_estimated and expected[-1]["prompt_eval_count"] > 0
        assert expected[-1]["eval_duration"] > 0  # from llama.cpp timings
    for i in range(1, len(data)):
        assert run([data[:i], data[i:]])[0] == expected


def test_usage_only_chunk_of_a_recorded_stream_is_removed_when_not_asked():
    data = (LLAMA / "chat_completions_stream_include_usage.sse").read_bytes()
    out = b"".join(passthrough_sse([data], strip_usage_chunk=True))
    assert b'"choices":[]' in data and b'"choices":[]' not in out and out.endswith(b"data: [DONE]\n\n")
