"""A Responses request checked and turned into an OpenAI chat completions request (the pivot every backend kind
is reached from). Stateless: ``previous_response_id`` and ``conversation`` are refused with a 400. Codex's
freeform ``custom`` tools are offered as functions taking one string, ``input``; hosted tools are dropped.

Pure: dict in, dict out; the tables at the top say what maps to what."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ... import jsonio
from ...errors import BadRequest
from .. import openai as oa
from ..checks import an_object, boolean, check_fields, fields, integer, items, number, string

CUSTOM_ARGUMENT = "input"  # the one string parameter a custom (freeform) tool is offered with
STATEFUL = {"previous_response_id": "a previous response", "conversation": "a stored conversation"}
# Sampling fields copied as they are.
PASSED = ("temperature", "top_p")
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text", "refusal"})
SYSTEM_ROLES = frozenset({"system", "developer"})
# Input items that stand for a call, and those that answer one (their call_id links them).
CALLS = frozenset({"function_call", "custom_tool_call"})
OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})
TOOL_CHOICE_WORDS = frozenset({"auto", "none", "required"})

REQUEST = {
    "instructions": string, "max_output_tokens": integer(1), "temperature": number, "top_p": number,
    "parallel_tool_calls": boolean, "stream": boolean, "store": boolean,
    "tools": items(fields({"type": string, "name": string, "description": string, "parameters": an_object})),
    "reasoning": fields({"effort": string, "summary": string}),
    "text": fields({"format": fields({"type": string, "name": string, "schema": an_object, "strict": boolean})}),
}


@dataclass(frozen=True)
class ChatPlan:
    """The chat request to send, and what translating its answer back needs to know."""

    chat: dict
    custom_tools: frozenset[str]  # names offered as functions that answer as custom_tool_call items
    empty: bool  # nothing for a model to answer (a probe with no input): answered without the backend


def check_request(body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    for field, what in STATEFUL.items():
        if body.get(field):
            raise BadRequest(f"'{field}' is not supported: this proxy is stateless (it keeps no responses), so it "
                             f"cannot continue {what}; send the whole conversation in 'input' (with store: false)",
                             param=field)
    data = body.get("input")
    if data is not None and not isinstance(data, (str, list)):
        raise BadRequest("'input' must be a string or an array of items", param="input")
    for i, item in enumerate(data if isinstance(data, list) else ()):
        if not isinstance(item, dict):
            raise BadRequest(f"input[{i}] must be an object", param="input")
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, (str, dict)):
        raise BadRequest("'tool_choice' must be a string or an object", param="tool_choice")
    check_fields(body, REQUEST)
    return model


# --- content ----------------------------------------------------------------------------------

def _str(value: Any) -> str:
    """A field that should be a string, as one: anything else (a client's mistake) counts as empty."""
    return value if isinstance(value, str) else ""


def _text_of(content: Any) -> str:
    """The text of a content value: a string, or parts whose text is joined (images and files left out)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(p["text"] for p in content
                   if isinstance(p, dict) and _str(p.get("type")) in TEXT_PARTS and isinstance(p.get("text"), str))


def _image_part(part: dict) -> dict | None:
    url = part.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str) or not url:
        return None  # a file_id refers to OpenAI's file store: nothing a local backend can read
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in ("low", "high"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _user_content(content: Any) -> str | list:
    """A user message's content: a string, or chat parts when images come with it."""
    if not isinstance(content, list) or not any(isinstance(p, dict) and p.get("type") == "input_image"
                                                for p in content):
        return _text_of(content)
    parts: list[dict] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "input_image":
            image = _image_part(part)
            if image is not None:
                parts.append(image)
        elif _str(part.get("type")) in TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
    return parts


def _output_text(output: Any) -> str:
    """A tool's output: a string, or parts (their text), or anything else as JSON."""
    if isinstance(output, (str, list)):
        return _text_of(output)
    return "" if output is None else jsonio.dumps_str(output)


def _reasoning_text(item: dict) -> str:
    """What a reasoning item said: its full text when it carries it, else its summary."""
    summary = item.get("summary")
    return _text_of(item.get("content")) or "\n".join(
        s["text"] for s in (summary if isinstance(summary, list) else ())
        if isinstance(s, dict) and isinstance(s.get("text"), str))


# --- input items -> messages ------------------------------------------------------------------

class _History:
    """Input items folded into chat messages: system and developer text joined into one leading system message
    (chat templates refuse a system message anywhere else), consecutive calls merged into one assistant
    message, a reasoning item carried onto the assistant message that follows it."""

    def __init__(self, keep_reasoning: bool):
        self.keep_reasoning = keep_reasoning
        self.system: list[str] = []
        self.messages: list[dict] = []
        self.reasoning: list[str] = []
        self.calls: set[str] = set()

    def _assistant(self, merge: bool) -> dict:
        last = self.messages[-1] if self.messages else None
        if merge and last is not None and last["role"] == "assistant" and "tool_calls" in last:
            message = last
        else:
            message = {"role": "assistant", "content": None}
            self.messages.append(message)
        if self.reasoning:
            if self.keep_reasoning:
                message["reasoning_content"] = "\n".join(self.reasoning)
            self.reasoning = []
        return message

    def message(self, item: dict) -> None:
        role = _str(item.get("role"))
        content = item.get("content")
        if role in SYSTEM_ROLES:
            text = _text_of(content)
            if text:
                self.system.append(text)
        elif role == "assistant":
            text = _text_of(content)
            last = self.messages[-1] if self.messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" not in last and not self.reasoning:
                last["content"] = (last["content"] or "") + text
            else:
                self._assistant(False)["content"] = text
        else:
            self.messages.append({"role": "user", "content": _user_content(content)})

    def call(self, item: dict) -> None:
        call_id = _str(item.get("call_id")) or _str(item.get("id")) or oa.new_call_id()
        name = _str(item.get("name"))
        if item.get("type") == "custom_tool_call":
            arguments = jsonio.dumps_str({CUSTOM_ARGUMENT: _str(item.get("input"))})
        else:
            given = item.get("arguments")
            arguments = given if isinstance(given, str) else jsonio.dumps_str(given or {})
        message = self._assistant(True)
        message.setdefault("tool_calls", []).append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        self.calls.add(call_id)

    def output(self, item: dict) -> None:
        call_id = _str(item.get("call_id"))
        text = _output_text(item.get("output"))
        if call_id in self.calls:
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
        else:  # its call was a dropped (hosted) one: what it returned still informs the model
            self.messages.append({"role": "user", "content": f"Tool output ({call_id}):\n{text}"})

    def reason(self, item: dict) -> None:
        text = _reasoning_text(item)
        if text:
            self.reasoning.append(text)

    def result(self) -> list[dict]:
        head = [{"role": "system", "content": "\n\n".join(self.system)}] if self.system else []
        return head + self.messages


ITEM_HANDLERS = {"message": _History.message, "function_call": _History.call, "custom_tool_call": _History.call,
                 "function_call_output": _History.output, "custom_tool_call_output": _History.output,
                 "reasoning": _History.reason}
# Everything else (local_shell_call, web_search_call, image_generation_call, compaction, item_reference...) is the
# record of a hosted tool or of server state: dropped.


def messages_of(body: dict, keep_reasoning: bool) -> list[dict]:
    history = _History(keep_reasoning)
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        history.system.append(body["instructions"])
    data = body.get("input")
    if isinstance(data, str):
        history.messages.append({"role": "user", "content": data})
    for item in data if isinstance(data, list) else ():
        kind = _str(item.get("type")) or ("message" if "role" in item else "")
        handler = ITEM_HANDLERS.get(kind)
        if handler is not None:
            handler(history, item)
    return history.result()


# --- tools ------------------------------------------------------------------------------------

def _custom_description(tool: dict) -> str:
    description = found if isinstance(found := tool.get("description"), str) else ""
    fmt = found if isinstance(found := tool.get("format"), dict) else {}
    note = f"Freeform tool: put the whole raw input (not JSON) in the `{CUSTOM_ARGUMENT}` string."
    if fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        note += f" The input follows this {fmt.get('syntax') or ''} grammar:\n{fmt['definition']}"
    return f"{description}\n\n{note}" if description else note


def _function_tool(tool: dict) -> dict:
    parameters = tool.get("parameters") if isinstance(tool.get("parameters"), dict) else {
        "type": "object", "properties": {}}
    function: dict[str, Any] = {"name": tool["name"], "parameters": parameters}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _custom_tool(tool: dict) -> dict:
    return {"type": "function", "function": {
        "name": tool["name"], "description": _custom_description(tool),
        "parameters": {"type": "object", "properties": {CUSTOM_ARGUMENT: {"type": "string"}},
                       "required": [CUSTOM_ARGUMENT]}}}


TOOL_BUILDERS = {"function": _function_tool, "custom": _custom_tool}  # any other type is hosted: dropped


def tools_of(body: dict) -> tuple[list[dict], list[dict], frozenset[str]]:
    """(chat tools, the request's tools that were kept, the names of custom ones)."""
    chat, kept, custom = [], [], set()
    for tool in body.get("tools") or ():
        build = TOOL_BUILDERS.get(_str(tool.get("type")))
        if build is None or not isinstance(tool.get("name"), str) or not tool["name"]:
            continue
        chat.append(build(tool))
        kept.append(tool)
        if tool["type"] == "custom":
            custom.add(tool["name"])
    return chat, kept, frozenset(custom)


def tool_choice_of(choice: Any, offered: list[dict]) -> Any:
    """The chat tool_choice: words pass; a named function or custom tool becomes a named function when it is
    offered; anything else (hosted tools, allowed_tools) is left to the model ("auto")."""
    if isinstance(choice, str):
        return choice if choice in TOOL_CHOICE_WORDS else "auto"
    name = choice.get("name") if isinstance(choice, dict) and _str(choice.get("type")) in TOOL_BUILDERS else None
    if name and any(t["function"]["name"] == name for t in offered):
        return {"type": "function", "function": {"name": name}}
    return "auto"


def response_format_of(text: Any) -> dict | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        if isinstance(fmt.get("strict"), bool):
            schema["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": schema}
    return None


# --- the whole request ------------------------------------------------------------------------

def to_chat(body: dict, backend_model: str, flavor: str) -> ChatPlan:
    """The chat request for a backend of this flavour (``openai``: OpenAI proper, which takes no reasoning
    text in messages and wants max_completion_tokens)."""
    messages = messages_of(body, keep_reasoning=flavor != "openai")
    chat: dict[str, Any] = {"model": backend_model, "messages": messages}
    tools, _, custom = tools_of(body)
    if tools:
        chat["tools"] = tools
        if body.get("tool_choice") is not None:
            chat["tool_choice"] = tool_choice_of(body["tool_choice"], tools)
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    for key in PASSED:
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens" if flavor == "openai" else "max_tokens"] = body["max_output_tokens"]
    effort = (body.get("reasoning") or {}).get("effort")
    if isinstance(effort, str) and effort:
        chat["reasoning_effort"] = effort
    response_format = response_format_of(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    stream = bool(body.get("stream"))
    chat["stream"] = stream
    if stream:
        chat["stream_options"] = {"include_usage": True}
    empty = not any(m["role"] != "system" for m in messages)
    return ChatPlan(chat, custom, empty)
