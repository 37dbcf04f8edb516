"""Text injection: one space, first or last user message, never twice, off when empty."""
from proxy.rewrite import inject_text

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one"},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": "two"}]


def test_inject_last_appends_with_one_space_to_last_user_message():
    out, changed = inject_text(MESSAGES, "/nothink", "last")
    assert changed and out[3]["content"] == "two /nothink" and out[1]["content"] == "one"
    assert MESSAGES[3]["content"] == "two"  # the caller's list is not modified


def test_inject_first_targets_first_user_message():
    out, _ = inject_text(MESSAGES, "/nothink", "first")
    assert out[1]["content"] == "one /nothink" and out[3]["content"] == "two"


def test_inject_skips_message_that_already_has_the_text():
    msgs = [{"role": "user", "content": "hi /nothink"}]
    out, changed = inject_text(msgs, "/nothink", "last")
    assert not changed and out[0]["content"] == "hi /nothink"


def test_inject_off_when_text_empty():
    out, changed = inject_text(MESSAGES, "", "last")
    assert out is MESSAGES and not changed


def test_inject_into_openai_content_parts_appends_to_last_text_part():
    msgs = [{"role": "user", "content": [{"type": "text", "text": "look"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]
    out, changed = inject_text(msgs, "/nothink", "last")
    assert changed and out[0]["content"][0]["text"] == "look /nothink"
