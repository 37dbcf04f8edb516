"""``proxy.sessions``: the session id from the clients' headers (in their order, cleaned, bounded), else a
fingerprint shared by every turn of a conversation in each body shape (OpenAI, Ollama, Anthropic, Responses)
and different for another conversation."""

from __future__ import annotations

import pytest

from proxy import sessions

SYSTEM = {"role": "system", "content": "You are terse."}
FIRST = {"role": "user", "content": "Fix the bug in a.py"}
LATER = [{"role": "assistant", "content": "Done."}, {"role": "user", "content": "Thanks"}]


@pytest.mark.parametrize("environ, expected", [
    ({"HTTP_X_CLAUDE_CODE_SESSION_ID": "cc-1", "HTTP_X_SESSION_ID": "x-1"}, "cc-1"),
    ({sessions.RAW_SESSION_ID: "codex-1", "HTTP_X_SESSION_ID": "x-1"}, "codex-1"),
    ({"HTTP_X_SESSION_ID": " x-1\r\n"}, "x-1"),
    ({"HTTP_X_SESSION_ID": "a b\x00c"}, "abc"),
    ({"HTTP_X_SESSION_ID": "   "}, None),
    ({}, None),
])
def test_session_header_order_and_cleaning(environ, expected):
    assert sessions.from_headers(environ) == expected


def test_a_long_session_header_is_cut_to_the_column():
    assert sessions.from_headers({"HTTP_X_SESSION_ID": "s" * 500}) == "s" * sessions.MAX_ID


def test_every_turn_of_a_chat_shares_the_fingerprint_and_another_chat_does_not():
    first = sessions.fingerprint({"model": "m", "messages": [SYSTEM, FIRST]})
    later = sessions.fingerprint({"model": "m", "messages": [SYSTEM, FIRST, *LATER], "stream": True})
    other = sessions.fingerprint({"model": "m", "messages": [SYSTEM, {"role": "user", "content": "Other"}]})
    other_model = sessions.fingerprint({"model": "n", "messages": [SYSTEM, FIRST]})
    assert first == later and first.startswith("fp-") and len(first) == 19
    assert len({first, other, other_model}) == 3


def test_anthropic_body_fingerprint_ignores_the_per_request_billing_nonce():
    def body(nonce: str) -> dict:
        return {"model": "m", "system": [{"type": "text", "text": f"x-anthropic-billing-header: cc_version=2; cch={nonce}"},
                                         {"type": "text", "text": "You are Claude Code."}],
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Fix the bug"}]}]}
    assert sessions.fingerprint(body("a1")) == sessions.fingerprint(body("b2")) is not None


def test_responses_body_fingerprint_reads_instructions_and_input():
    base = {"model": "m", "instructions": "You are Codex.",
            "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "env"}]},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix it"}]}]}
    later = {**base, "input": [*base["input"], {"type": "function_call", "call_id": "c", "name": "shell",
                                                "arguments": "{}"}]}
    assert sessions.fingerprint(base) == sessions.fingerprint(later) is not None
    assert sessions.fingerprint({**base, "instructions": "Other"}) != sessions.fingerprint(base)
    assert sessions.fingerprint({"model": "m", "instructions": "", "input": "Fix it"}) is not None


@pytest.mark.parametrize("body", [{"model": "m", "input": ["a", "b"]}, {"model": "m", "input": "a"},
                                  {"model": "m", "input": [[1, 2]]}, {"model": "m", "prompt": "hi"}, [], "x"])
def test_bodies_without_a_conversation_have_no_fingerprint(body):
    assert sessions.fingerprint(body) is None
