"""Codex's Responses requests, rebuilt from its source (openai/codex `codex-rs/codex-api/src/common.rs`,
`requests/responses.rs`, the `ResponseItem` enum) as described in ../shared/docs/agent-fronts.md §2: a first
turn with function tools, the freeform `apply_patch` tool and hosted tools, and a second turn that sends back
reasoning, function and custom tool calls and their outputs. The tool texts are short stand-ins."""
from __future__ import annotations

import copy
from typing import Any

APPLY_PATCH_GRAMMAR = (  # the shape of Codex's lark grammar for apply_patch (shortened)
    'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\nend_patch: "*** End Patch" LF?\n'
    'hunk: add_hunk | delete_hunk | update_hunk\nadd_hunk: "*** Add File: " filename LF add_line+\n'
    'delete_hunk: "*** Delete File: " filename LF\nupdate_hunk: "*** Update File: " filename LF change?\n'
    'filename: /(.+)/\nadd_line: "+" /(.*)/ LF -> line\n%import common.LF\n')

PATCH = "*** Begin Patch\n*** Update File: hello.py\n@@\n-print(\"hi\")\n+print(\"h\u00e9llo \\u00e9 \U0001f600\")\n*** End Patch\n"

SHELL = {"type": "function", "name": "shell_command", "strict": False,
         "description": "Runs a shell command and returns its output.",
         "parameters": {"type": "object", "additionalProperties": False, "required": ["command"],
                        "properties": {"command": {"type": "string", "description": "The shell script to run"},
                                       "workdir": {"type": "string"}, "timeout_ms": {"type": "number"}}}}
UPDATE_PLAN = {"type": "function", "name": "update_plan", "strict": False,
               "description": "Updates the task plan.",
               "parameters": {"type": "object", "required": ["plan"], "additionalProperties": False,
                              "properties": {"explanation": {"type": "string"},
                                             "plan": {"type": "array", "items": {"type": "object"}}}}}
APPLY_PATCH = {"type": "custom", "name": "apply_patch",
               "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool.",
               "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH_GRAMMAR}}
HOSTED = [{"type": "web_search", "external_web_access": False}, {"type": "image_generation", "output_format": "png"},
          {"type": "local_shell"}, {"type": "file_search", "vector_store_ids": ["vs_1"]},
          {"type": "code_interpreter", "container": {"type": "auto"}},
          {"type": "computer_use_preview", "display_width": 1024, "display_height": 768, "environment": "linux"},
          {"type": "namespace", "name": "mcp__docs", "tools": [{"type": "function", "name": "search"}]}]
TOOLS = [SHELL, UPDATE_PLAN, APPLY_PATCH, *HOSTED]

INSTRUCTIONS = "You are Codex, a coding agent. You and the user share the same workspace."
PROMPT = "Greet in hello.py please"


def _text(role: str, text: str) -> dict:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


FIRST_INPUT = [
    _text("developer", "<permissions instructions>\nFilesystem sandboxing: workspace-write.\n</permissions instructions>"),
    _text("user", "# AGENTS.md instructions for /repo\n\n<INSTRUCTIONS>\nRun the tests.\n</INSTRUCTIONS>"),
    _text("user", "<environment_context>\n  <cwd>/repo</cwd>\n  <shell>bash</shell>\n</environment_context>"),
    _text("user", PROMPT),
]

REASONING_ITEM = {"type": "reasoning", "id": "rs_0a1", "summary": [{"type": "summary_text",
                                                                   "text": "I should look at hello.py first."}],
                  "content": None, "encrypted_content": "gAAAAB-opaque"}
SECOND_INPUT = [
    *FIRST_INPUT,
    REASONING_ITEM,
    {"type": "function_call", "id": "fc_0a2", "name": "shell_command", "call_id": "call_shell1",
     "arguments": "{\"command\":\"cat hello.py\",\"workdir\":\"/repo\"}"},
    {"type": "function_call_output", "call_id": "call_shell1",
     "output": [{"type": "input_text", "text": "print(\"hi\")\n"}]},
    {"type": "custom_tool_call", "id": "ctc_0a3", "status": "completed", "call_id": "call_patch1",
     "name": "apply_patch", "input": PATCH},
    {"type": "custom_tool_call_output", "call_id": "call_patch1",
     "output": "Success. Updated the following files:\nM hello.py\n"},
    {"type": "local_shell_call", "id": "lsc_1", "call_id": "call_local1", "status": "completed",
     "action": {"type": "exec", "command": ["ls"]}},
    {"type": "function_call_output", "call_id": "call_local1", "output": "hello.py\n"},
    {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "x"}},
    _text("assistant", "Done: hello.py now greets."),
    _text("user", "Thanks! Now run it."),
]


def codex_request(turn: int = 1, *, model: str = "qwen3-8b", stream: bool = True, **extra: Any) -> dict:
    """A Codex request body: turn 1 (the first prompt) or 2 (history with calls, outputs, reasoning)."""
    body = {"model": model, "instructions": INSTRUCTIONS,
            "input": copy.deepcopy(FIRST_INPUT if turn == 1 else SECOND_INPUT),
            "tools": copy.deepcopy(TOOLS), "tool_choice": "auto", "parallel_tool_calls": False,
            "reasoning": {"effort": "medium", "summary": "auto"}, "store": False, "stream": stream,
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "019a5a3f-7c1e-7000-8000-00000000c0de",
            "text": {"verbosity": "low"}}
    body.update(extra)
    return body
