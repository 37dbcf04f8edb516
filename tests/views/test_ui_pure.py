"""The log view's pure parts, without an app: the request normaliser over the four fronts' shapes, the
"what the proxy changed" summary, markdown safety, the curl command, the Markdown transcript and the CSV."""
from __future__ import annotations

import csv
import io
import json
import shlex
import subprocess

from proxy.views import ui_changes, ui_convo, ui_export, ui_markdown

PATCH = "*** Begin Patch\n*** Update File: a.py\n@@\n-print(1)\n+print(2)\n*** End Patch"


def kinds(turn):
    return [b["kind"] for b in turn["blocks"]]


def test_anthropic_messages_become_numbered_turns_with_tool_use_results_and_thinking():
    body = {"model": "claude-local", "max_tokens": 32000,
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cch=1"},
                       {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": "read a.py"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "I should read it",
                                                   "signature": "s"},
                                                  {"type": "text", "text": "I'll check."},
                                                  {"type": "tool_use", "id": "toolu_1", "name": "Read",
                                                   "input": {"file_path": "/src/a.py"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                              "content": [{"type": "text", "text": "print(1)"}]},
                                             {"type": "text", "text": "now fix it"}]}],
            "tools": [{"name": "Read", "description": "Reads a file", "input_schema": {"type": "object"}}]}
    convo = ui_convo.normalise(body)
    turns = convo["turns"]
    assert [(t["n"], t["role"]) for t in turns] == [(1, "system"), (2, "user"), (3, "assistant"), (4, "user")]
    assert "You are Claude Code." in turns[0]["blocks"][1]["text"]
    assert kinds(turns[2]) == ["thinking", "text", "call"]
    assert turns[2]["blocks"][2]["name"] == "Read" and '"file_path": "/src/a.py"' in turns[2]["blocks"][2]["arguments"]
    assert kinds(turns[3]) == ["result", "text"] and turns[3]["blocks"][0]["text"] == "print(1)"
    assert convo["tools"][0] == {"name": "Read", "description": "Reads a file", "parameters": '{\n  "type": "object"\n}'}
    assert '"max_tokens": 32000' in convo["params"]


def test_responses_input_items_merge_calls_and_show_apply_patch_as_a_diff():
    body = {"model": "codex-local", "instructions": "You are Codex.", "stream": True,
            "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix a.py"}]},
                      {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "look"}]},
                      {"type": "function_call", "call_id": "call_1", "name": "shell",
                       "arguments": "{\"command\":[\"cat\",\"a.py\"]}"},
                      {"type": "function_call_output", "call_id": "call_1", "output": "{\"ok\": true}"},
                      {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": PATCH},
                      {"type": "custom_tool_call_output", "call_id": "call_2", "output": "Done"}],
            "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}},
                      {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
                      {"type": "web_search"}]}
    turns = ui_convo.normalise(body)["turns"]
    assert [t["role"] for t in turns] == ["system", "developer", "user", "assistant", "tool", "assistant", "tool"]
    assert kinds(turns[3]) == ["thinking", "call"]  # reasoning and the call it led to: one assistant turn
    assert '"command": [\n    "cat",' in turns[3]["blocks"][1]["arguments"]
    assert turns[4]["blocks"][0]["text"] == '{\n  "ok": true\n}'  # a JSON result pretty-printed
    patch = turns[5]["blocks"][0]["patch"]
    assert ("del", "-print(1)") in patch and ("add", "+print(2)") in patch and patch[0][0] == "head"
    assert [t["name"] for t in ui_convo.normalise(body)["tools"]] == ["shell", "apply_patch", "web_search"]


def test_openai_chat_and_ollama_shapes_keep_images_tool_calls_and_results():
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    chat = ui_convo.normalise({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "what is this"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "look", "arguments": "{\"x\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "a cat"}]})["turns"]
    assert kinds(chat[0]) == ["text", "image"] and chat[0]["blocks"][1]["src"].startswith("data:image/png")
    assert chat[1]["blocks"][0]["name"] == "look" and kinds(chat[2]) == ["result"]
    ollama = ui_convo.normalise({"model": "m", "system": "be brief", "prompt": "hi", "images": [png]})["turns"]
    assert [(t["role"], kinds(t)) for t in ollama] == [("system", ["text"]), ("prompt", ["text", "image"])]
    assert ui_convo.normalise(["not", "an object"]) is None
    assert ui_convo.parse_request("data: not json") is None


def test_change_summary_names_the_rename_the_appended_word_and_counts_samplers():
    messages = [{"role": "user", "content": f"question {i}"} for i in range(12)]
    client = {"model": "qwen3", "messages": messages}
    upstream = {"model": "qwen3-8b-q4", "messages": [*messages[:11], {"role": "user", "content": "question 11 /nothink"}],
                "temperature": 0.7, "top_p": 0.8, "top_k": 20}
    found = ui_changes.changes(json.dumps(client), json.dumps(upstream))
    assert found["summary"] == ("model renamed (qwen3 → qwen3-8b-q4), `/nothink` appended to message 12, "
                                "3 sampler fields added")
    appended = next(h for h in found["hunks"] if h["where"] == "message 12")
    assert appended["segments"] == [("eq", "question 11"), ("ins", " /nothink")]
    assert ui_changes.changes('{"a": 1, "b": 2}', '{"b":2,"a":1}')["changed"] is False


def test_long_unchanged_text_around_a_change_is_cut_to_its_context():
    old = "word " * 2000 + "end"
    segments = ui_changes.inline(old, old + " more")
    assert sum(len(t) for _, t in segments) < 400 and segments[-1] == ("ins", " more")


def test_stream_bodies_are_compared_by_line_with_context():
    old = "\n".join(f"data: {i}" for i in range(30))
    new = old.replace("data: 15", "data: fifteen")
    found = ui_changes.changes(old, new)
    assert found["summary"] == "1 line differs"
    assert len(found["lines"]) == 1 and len(found["lines"][0]["lines"]) == 5  # two lines of context each side


def test_markdown_is_rendered_without_raw_html_or_unsafe_links():
    html = str(ui_markdown.render("# Title\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) "
                                  "[ok](https://example.org) ![img](https://evil.example/p.png) **bold**"))
    assert "<h1>Title</h1>" in html and "<strong>bold</strong>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html and "<img" not in html
    assert 'href="https://example.org" rel="noopener noreferrer nofollow"' in html


def test_curl_has_no_secret_and_replays_the_body_byte_for_byte(tmp_path):
    body = '{"model": "m", "messages": [{"role": "user", "content": "it\'s $HOME\\nJSON"}]}'
    row = {"endpoint": "/v1/chat/completions", "method": "POST", "front": "openai", "stream": False,
           "bodies": {"client_request": {"text": body}}}
    command = ui_export.curl(row, "http://proxy.example:8080/")
    assert '-H "Authorization: Bearer $LLM_PROXY_KEY"' in command and "http://proxy.example:8080/v1/chat" in command
    script = tmp_path / "c.sh"  # run the here-document part through a shell: the body comes out unchanged
    script.write_text("cat <<" + command.split("<<", 1)[1])
    assert subprocess.run(["sh", str(script)], capture_output=True, text=True).stdout == body + "\n"
    anthropic = ui_export.curl({**row, "front": "anthropic", "endpoint": "/v1/messages"}, "http://p")
    assert '-H "x-api-key: $LLM_PROXY_KEY"' in anthropic and "Authorization" not in anthropic
    assert shlex.split(command.split("\n", 1)[0].rstrip(" \\"))[:2] == ["curl", "-sS"]


def test_markdown_transcript_holds_system_turns_tool_calls_thinking_and_answer():
    request = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "run ```ls```"},
                                          {"role": "assistant", "tool_calls": [{"id": "c1", "function": {
                                              "name": "shell", "arguments": "{\"cmd\": \"ls\"}"}}]},
                                          {"role": "tool", "tool_call_id": "c1", "content": "a.py"}]}
    row = {"id": 7, "endpoint": "/v1/chat/completions", "method": "POST", "model": "m", "upstream_model": "m-q4",
           "status": 200, "outcome": "ok", "prompt_tokens": 10, "completion_tokens": 3, "duration_ms": 12.5,
           "backend_name": "local", "bodies": {"client_request": {"text": json.dumps(request)}},
           "answer": {"content": "There is **a.py**.", "thinking": "one file", "tool_calls": []}}
    text = ui_export.transcript(row)
    assert text.startswith("# Exchange 7: POST /v1/chat/completions") and "- model: m → m-q4" in text
    assert "## 1. system\n\nbe brief" in text and "**Tool call** `shell` (c1)" in text
    assert "**Tool result** for c1" in text and "> one file" in text and text.rstrip().endswith("There is **a.py**.")


def test_csv_has_the_list_columns_and_defuses_formulas():
    text = ui_export.csv_header() + ui_export.csv_rows([{"id": 1, "model": "m", "preview": "=HYPERLINK(1)",
                                                         "error": None, "cached": True}])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["id"] == "1" and rows[0]["preview"] == "'=HYPERLINK(1)" and rows[0]["error"] == ""
    assert list(rows[0]) == list(ui_export.CSV_FIELDS)


def test_a_running_passthrough_streams_words_are_read_from_its_chunks():
    from proxy.views.ui_tools import stream_text

    openai = (b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\ndata: {"choices":[{"delta":{"content":"Hel"}}]}'
              b'\n\ndata: {"choices":[{"delta":{"content":"lo"}}]}\n\ndata: [DONE]\n\n')
    ollama = b'{"message":{"role":"assistant","content":"Hi"}}\n{"message":{"content":" there"}}\n{"done":true}\n'
    anthropic = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                 b'"delta":{"type":"text_delta","text":"Yo"}}\n\nevent: ping\ndata: {"type":"ping"}\n\n')
    responses = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hey"}\n\n'
    assert [stream_text(b) for b in (openai, ollama, anthropic, responses)] == ["Hello", "Hi there", "Yo", "Hey"]
    assert stream_text(b'data: {"choices":[{"delta":{"content":"cut') == ""  # a chunk not complete yet


def test_an_edit_at_the_end_of_a_megabyte_message_keeps_the_rest_as_one_stretch():
    big = "the cat sat on the mat. " * 40000
    assert ui_changes.inline(big, big + "/nothink", trim=False) == [("eq", big), ("ins", "/nothink")]
    assert ui_changes.inline(big, big.replace("cat", "dog", 1), trim=False)[:3] == [
        ("eq", "the "), ("del", "cat"), ("ins", "dog")]


def test_a_stream_in_another_dialect_is_summed_up_and_shown_in_part():
    upstream = "\n\n".join(f'data: {{"choices": [{{"delta": {{"content": "w{i}"}}}}]}}' for i in range(2000))
    client = "\n".join(f'{{"message": {{"content": "w{i}"}}, "done": false}}' for i in range(2000))
    found = ui_changes.changes(upstream, client)
    assert found["summary"].startswith("translated into another dialect or framing")
    assert sum(len(h["lines"]) for h in found["lines"]) <= ui_changes.MAX_SHOWN_LINES + 1
