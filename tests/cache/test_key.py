"""The cache key: one key for the same backend request whichever dialect asked, in whatever key order; a new
key for anything that changes the answer; nothing of the caller in it."""
from __future__ import annotations

from proxy.cache import key as ck

HELLO = [{"role": "user", "content": "Say hello."}]
TARGET = "openai http://127.0.0.1:8080"


def _key(ask, model="qwen3", target=TARGET):
    return ck.digest(ask, model, target)


def test_an_ollama_and_an_openai_chat_asking_the_same_share_a_key():
    ollama = ck.ollama_chat({"model": "x", "options": {"temperature": 0, "num_predict": 20, "stop": "END"},
                             "format": "json", "think": False, "keep_alive": "5m"}, HELLO)
    openai = ck.openai_chat({"model": "y", "messages": [{"content": [{"type": "text", "text": "Say hello."}],
                                                         "role": "user"}], "temperature": 0.0, "max_tokens": 20,
                             "stop": ["END"], "response_format": {"type": "json_object"}, "reasoning_effort": "none",
                             "stream": True, "stream_options": {"include_usage": True}, "user": "alice"})
    assert _key(ollama) == _key(openai)
    assert ollama.deterministic and openai.deterministic and ollama.why_not is None


def test_the_model_counts_with_or_without_its_latest_tag_and_the_backend_counts():
    ask = ck.ollama_chat({"options": {"seed": 1}}, HELLO)
    assert _key(ask, "llama3.2") == _key(ask, "llama3.2:latest")
    assert _key(ask, "llama3.2") != _key(ask, "llama3.1")
    assert _key(ask) != _key(ask, target="openai http://127.0.0.1:8081")


def test_every_sampling_field_tool_and_message_changes_the_key():
    base = {"messages": HELLO, "temperature": 0}
    keys = {_key(ck.openai_chat(b)) for b in (
        base, {**base, "top_p": 0.5}, {**base, "seed": 2}, {**base, "max_tokens": 3},
        {**base, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {**base, "messages": [*HELLO, {"role": "assistant", "content": "Hi"}]},
        {**base, "some_backend_field": 1})}
    assert len(keys) == 7


def test_tool_call_arguments_as_text_or_object_are_the_same():
    call_text = {"function": {"name": "f", "arguments": '{"a": 1, "b": 2}'}, "id": "c1"}
    call_obj = {"function": {"name": "f", "arguments": {"b": 2, "a": 1}}, "id": "c1"}
    history = [*HELLO, {"role": "assistant", "content": None, "tool_calls": [call_text]}]
    ollama_history = [*HELLO, {"role": "assistant", "content": "", "tool_calls": [call_obj]}]
    assert _key(ck.openai_chat({"messages": history, "seed": 1})) == \
        _key(ck.ollama_chat({"options": {"seed": 1}}, ollama_history))


def test_deterministic_means_temperature_zero_or_a_seed():
    assert not ck.openai_chat({"messages": HELLO}).deterministic
    assert not ck.openai_chat({"messages": HELLO, "temperature": 0.2}).deterministic
    assert ck.openai_chat({"messages": HELLO, "seed": 0}).deterministic
    assert ck.openai_embed({"input": "x"}).deterministic


def test_answers_a_cache_cannot_replay_are_never_cached():
    assert ck.openai_chat({"messages": HELLO, "temperature": 0, "n": 2}).why_not
    assert ck.openai_chat({"messages": HELLO, "temperature": 0, "logprobs": True}).why_not
    assert ck.openai_chat({"messages": HELLO, "temperature": 0, "n": 1}).why_not is None
    assert ck.ollama_generate({"prompt": "x", "context": [1, 2], "options": {"seed": 1}}).why_not


def test_a_raw_generate_is_an_openai_completion_and_the_legacy_embeddings_are_apart():
    assert _key(ck.ollama_generate({"prompt": "Tell", "raw": True, "options": {"temperature": 0}})) == \
        _key(ck.openai_completion({"prompt": ["Tell"], "temperature": 0}))
    assert _key(ck.ollama_generate({"prompt": "Tell", "options": {"temperature": 0}})) != \
        _key(ck.openai_completion({"prompt": "Tell", "temperature": 0}))
    assert _key(ck.ollama_embed({"input": "hi"}, False)) == _key(ck.openai_embed({"input": ["hi"],
                                                                                   "encoding_format": "base64"}))
    assert _key(ck.ollama_embed({"prompt": "hi"}, True)) != _key(ck.ollama_embed({"input": "hi"}, False))
