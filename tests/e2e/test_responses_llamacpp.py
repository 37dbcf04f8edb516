"""`POST /v1/responses` through the proxy to a real llama-server (SmolLM2-135M), driven by the official
`openai` SDK's `client.responses.create`: a streamed and a whole answer with llama-server's own token counts,
and Codex's second turn (custom apply_patch tool, hosted tools, calls, outputs, reasoning items), which
llama-server's own `/v1/responses` rejects. Temperature 0, at most 16 new tokens."""
from __future__ import annotations

from tests.e2e.test_llamacpp import MAX_NEW, MESSAGES, MODEL, llama_chat_usage
from tests.support.codex import codex_request


def test_streamed_response_ends_completed_with_llama_servers_token_counts(oai, llama_server):
    events = list(oai.responses.create(model=MODEL, input=MESSAGES[0]["content"], temperature=0,
                                       max_output_tokens=MAX_NEW, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    final = events[-1].response
    assert final.status in ("completed", "incomplete") and final.output_text
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text
    expected = llama_chat_usage(llama_server)
    assert final.usage.input_tokens == expected["prompt_tokens"]
    assert 0 < final.usage.output_tokens <= MAX_NEW


def test_whole_response_is_a_response_object(oai):
    response = oai.responses.create(model=MODEL, input=MESSAGES[0]["content"], temperature=0,
                                    max_output_tokens=MAX_NEW)
    assert response.object == "response" and response.id.startswith("resp_") and response.output_text
    assert response.status in ("completed", "incomplete")


def test_codex_second_turn_with_its_tools_is_answered(oai):
    body = codex_request(2, model=MODEL, stream=False, max_output_tokens=MAX_NEW, temperature=0)
    response = oai.responses.create(**body)
    assert response.status in ("completed", "incomplete")
    assert {item.type for item in response.output} <= {"message", "reasoning", "function_call", "custom_tool_call"}
    events = list(oai.responses.create(**{**body, "stream": True}))
    assert events[-1].type == "response.completed"
