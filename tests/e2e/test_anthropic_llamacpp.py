"""The Anthropic Messages front in front of a real llama.cpp `llama-server` (SmolLM2-135M), driven by the
official `anthropic` SDK: messages.create and messages.stream translated onto llama-server's chat completions,
their token counts compared with what llama-server reports for the same chat, and count_tokens read from its
tokenizer."""
from __future__ import annotations

import anthropic
import pytest

from tests.e2e.test_llamacpp import MAX_NEW, MESSAGES, MODEL, llama_chat_usage, llama_direct

SAMPLING = {"temperature": 0}  # no longer a named argument of the SDK; Claude Code still sends it


@pytest.fixture(scope="module")
def claude(e2e_proxy):
    client = anthropic.Anthropic(base_url=e2e_proxy.url, api_key="e2e", max_retries=0, timeout=120)
    yield client
    client.close()


def test_messages_create_and_stream_give_the_same_text_with_llamas_counts(claude, llama_server):
    whole = claude.messages.create(model=MODEL, max_tokens=MAX_NEW, messages=MESSAGES, extra_body=SAMPLING)
    assert whole.content and whole.content[0].type == "text" and whole.content[0].text.strip()
    assert whole.stop_reason in ("end_turn", "max_tokens")
    usage = llama_chat_usage(llama_server)
    assert whole.usage.input_tokens == usage["prompt_tokens"]
    assert 0 < whole.usage.output_tokens <= MAX_NEW
    with claude.messages.stream(model=MODEL, max_tokens=MAX_NEW, messages=MESSAGES, extra_body=SAMPLING) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == final.content[0].text == whole.content[0].text
    assert final.usage.input_tokens == usage["prompt_tokens"] and final.stop_reason == whole.stop_reason


def test_count_tokens_reads_llamas_tokenizer(claude, llama_server):
    counted = claude.messages.count_tokens(model=MODEL, messages=MESSAGES).input_tokens
    tokens = llama_direct(llama_server, "/tokenize", {"content": MESSAGES[0]["content"]})["tokens"]
    assert counted == len(tokens) + 4 * (len(MESSAGES) + 1)  # the text's tokens, and the template's estimated
