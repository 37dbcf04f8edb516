"""Exchanges taken out of the log view: a client request as a curl command against this proxy (no secrets:
the key is ``$LLM_PROXY_KEY``), an exchange as a Markdown transcript, and list rows as CSV. Pure: rows in,
text out; the routes that serve them are in ``ui_tools``.
"""
from __future__ import annotations

import csv
import io
import re
import shlex
from typing import Any

from .ui_convo import call, parse_request

CSV_FIELDS = ("id", "started", "endpoint", "front", "client", "key_name", "user_agent", "model", "upstream_model",
              "backend_name", "status", "outcome", "error", "duration_ms", "ttfc_ms", "queued_ms", "prompt_tokens",
              "completion_tokens", "tool_calls", "session_id", "cached", "replay_of", "preview")
KEY_HEADER = {"anthropic": "x-api-key: $LLM_PROXY_KEY"}  # others: Authorization: Bearer


def curl(row: dict[str, Any], base_url: str) -> str:
    """The client's request as sent to this proxy, replayable from a shell. Credentials are never stored, so
    the command reads the key from ``$LLM_PROXY_KEY``; the body goes in a quoted here-document (no expansion)."""
    body = row["bodies"]["client_request"]["text"]
    url = base_url.rstrip("/") + row["endpoint"]
    auth = KEY_HEADER.get(row.get("front") or "", "Authorization: Bearer $LLM_PROXY_KEY")
    lines = [f"curl -sS {'-N ' if row.get('stream') else ''}-X {shlex.quote(row.get('method') or 'POST')} "
             f"{shlex.quote(url)}", "  -H 'Content-Type: application/json'", f'  -H "{auth}"']
    if not body:
        return " \\\n".join(lines)
    marker = "JSON"
    while re.search(rf"^{marker}$", body, re.M):
        marker += "_END"
    lines.append("  --data-binary @- <<'" + marker + "'")
    return " \\\n".join(lines) + "\n" + body + ("" if body.endswith("\n") else "\n") + marker


def _fence(text: str, info: str = "") -> str:
    """``text`` in a code fence longer than any run of backticks inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text}\n{ticks}"


def _blocks_markdown(blocks: list[dict[str, Any]]) -> list[str]:
    out = []
    for block in blocks:
        kind = block["kind"]
        if kind == "text":
            out.append(block["text"])
        elif kind == "thinking":
            out.append("**Thinking**\n\n" + "\n".join("> " + line for line in block["text"].splitlines()))
        elif kind == "call":
            ident = f" ({block['id']})" if block["id"] else ""
            out.append(f"**Tool call** `{block['name']}`{ident}\n\n" +
                       _fence(block["arguments"], "diff" if block.get("patch") else "json"))
        elif kind == "result":
            ident = f" for {block['id']}" if block["id"] else ""
            out.append(f"**Tool result**{ident}{' (error)' if block['is_error'] else ''}\n\n" + _fence(block["text"]))
        elif kind == "image":
            out.append(f"*[{block.get('note') or 'image'}]*")
        else:
            out.append(_fence(block["text"], "json"))
    return out


def transcript(row: dict[str, Any]) -> str:
    """One exchange as Markdown: a heading with its facts, the tools offered, every turn, the answer."""
    model = row.get("model") or "?"
    if row.get("upstream_model") and row["upstream_model"] != model:
        model += f" → {row['upstream_model']}"
    lines = [f"# Exchange {row['id']}: {row.get('method', 'POST')} {row['endpoint']}", "",
             f"- model: {model}", f"- backend: {row.get('backend_name') or '–'}",
             f"- status: {row.get('status')} ({row.get('outcome')})",
             f"- tokens: {row.get('prompt_tokens')} in / {row.get('completion_tokens')} out",
             f"- duration: {row.get('duration_ms')} ms"]
    if row.get("error"):
        lines.append(f"- error: {row['error']}")
    convo = parse_request(row["bodies"]["client_request"]["text"])
    if convo is None:
        lines += ["", "## Request", "", _fence(row["bodies"]["client_request"]["text"])]
    else:
        if convo["tools"]:
            lines += ["", "## Tools offered", ""] + [f"- `{t['name']}`: {t['description']}".rstrip(": ")
                                                       for t in convo["tools"]]
        for one in convo["turns"]:
            lines += ["", f"## {one['n']}. {one['role']}", ""] + _blocks_markdown(one["blocks"])
    answer = row.get("answer") or {}
    lines += ["", "## Answer", ""]
    if answer.get("thinking"):
        lines += _blocks_markdown([{"kind": "thinking", "text": answer["thinking"]}])
    if answer.get("content"):
        lines.append(answer["content"])
    for tool_call in answer.get("tool_calls") or ():
        function = tool_call.get("function", tool_call) if isinstance(tool_call, dict) else {}
        lines += _blocks_markdown([call(function.get("name"), tool_call.get("id") if isinstance(tool_call, dict)
                                        else "", function.get("arguments"))])
    if answer.get("error"):
        lines.append(f"**Error:** {answer['error']}")
    if not answer:
        lines.append("*(no answer)*")
    return "\n".join(lines).rstrip() + "\n"


def _cell(value: Any) -> Any:
    """A spreadsheet must not run a stored string as a formula: one starting with = + - @ gets a quote first."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def csv_header() -> str:
    out = io.StringIO()
    csv.writer(out).writerow(CSV_FIELDS)
    return out.getvalue()


def csv_rows(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in CSV_FIELDS])
    return out.getvalue()
