"""What the proxy changed between two bodies (client request -> upstream request, backend answer -> what the
client received): only the changed parts, with word-level highlights inside changed strings and a one-line
summary ("model renamed, `/nothink` appended to message 12, 3 sampler fields added"). Pure: text in, plain
data out; nothing here builds HTML.
"""
from __future__ import annotations

import difflib
import re
from typing import Any

import orjson

from .. import jsonio

SAMPLERS = frozenset({"temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n",
                      "presence_penalty", "frequency_penalty", "seed", "mirostat", "mirostat_eta", "mirostat_tau",
                      "tfs_z", "num_predict", "max_tokens", "max_completion_tokens", "num_ctx", "stop"})
MAX_HUNKS = 200
MAX_LINES = 20000
MAX_SHOWN_LINES = 300  # lines of a text comparison shown on a page
MAX_TOKENS = 5000  # words (and spaces) of a changed stretch diffed word by word
CONTEXT = 60  # characters of unchanged text kept around a change inside a string
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def _load(raw: str) -> Any:
    stripped = raw.strip()
    if stripped[:1] not in ("{", "["):
        return None
    try:
        return jsonio.loads(stripped)
    except ValueError:
        return None


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode() if _dumpable(value) else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def _dumpable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _common(a: str, b: str) -> int:
    """Length of the common prefix (a binary search over slice comparisons, done in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def inline(old: str, new: str, trim: bool = True) -> list[tuple[str, str]]:
    """Word-level segments (eq, del, ins); with ``trim``, long unchanged stretches cut to CONTEXT characters
    each side of a change."""
    # the common start and end are cut first (at a space), so an edit of a long message costs little
    start = _common(old, new)
    while start and not old[start - 1].isspace():
        start -= 1
    end = _common(old[start:][::-1], new[start:][::-1])
    while end and not old[len(old) - end].isspace():
        end -= 1
    out: list[tuple[str, str]] = [("eq", old[:start])] if start else []
    mid_a, mid_b = _TOKEN.findall(old[start:len(old) - end]), _TOKEN.findall(new[start:len(new) - end])
    if len(mid_a) > MAX_TOKENS or len(mid_b) > MAX_TOKENS:  # too different to diff word by word here
        out += [("del", "".join(mid_a))] if mid_a else []
        out += [("ins", "".join(mid_b))] if mid_b else []
    else:
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=False).get_opcodes():
            if tag == "equal":
                out.append(("eq", "".join(mid_a[i1:i2])))
                continue
            if i2 > i1:
                out.append(("del", "".join(mid_a[i1:i2])))
            if j2 > j1:
                out.append(("ins", "".join(mid_b[j1:j2])))
    if end:
        out.append(("eq", old[len(old) - end:]))
    merged: list[tuple[str, str]] = []
    for kind, text in out:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        elif text:
            merged.append((kind, text))
    out = merged
    if not trim:
        return out
    last = len(out) - 1
    for k, (kind, text) in enumerate(out):
        if kind == "eq" and len(text) > 2 * CONTEXT:
            head = text[:CONTEXT] if k > 0 else ""
            tail = text[-CONTEXT:] if k < last else ""
            out[k] = ("eq", head + " … " + tail if head and tail else (head + " …" if head else "… " + tail))
    return out


def _label(path: tuple) -> str:
    """messages[11].content -> "message 12"; other paths as dotted names."""
    if len(path) >= 2 and path[0] in ("messages", "input") and isinstance(path[1], int):
        rest = ".".join(str(p) for p in path[2:])
        return f"message {path[1] + 1}" + (f" ({rest})" if rest and rest != "content" else "")
    return "".join(f"[{p}]" if isinstance(p, int) else ("." if i else "") + str(p) for i, p in enumerate(path))


def _walk(old: Any, new: Any, path: tuple, out: list[dict[str, Any]]) -> None:
    if len(out) >= MAX_HUNKS:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                out.append({"kind": "removed", "path": (*path, key), "old": old[key]})
            else:
                _walk(old[key], new[key], (*path, key), out)
        for key in new:
            if key not in old:
                out.append({"kind": "added", "path": (*path, key), "new": new[key]})
        return
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            if i >= len(new):
                out.append({"kind": "removed", "path": (*path, i), "old": old[i]})
            elif i >= len(old):
                out.append({"kind": "added", "path": (*path, i), "new": new[i]})
            else:
                _walk(old[i], new[i], (*path, i), out)
        return
    if old != new or type(old) is not type(new):
        out.append({"kind": "changed", "path": path, "old": old, "new": new})


def _describe(hunk: dict[str, Any]) -> str:
    path, kind = hunk["path"], hunk["kind"]
    if kind == "changed" and isinstance(hunk["old"], str) and isinstance(hunk["new"], str):
        old, new = hunk["old"], hunk["new"]
        if path[-1:] == ("model",):
            return f"model renamed ({_short(old, 40)} → {_short(new, 40)})"
        if new.startswith(old) and old:
            return f"`{_short(new[len(old):].strip(), 40)}` appended to {_label(path)}"
        if new.endswith(old) and old:
            return f"`{_short(new[:len(new) - len(old)].strip(), 40)}` prepended to {_label(path)}"
        return f"{_label(path)} changed"
    return f"{_label(path)} {kind}"


def summary(hunks: list[dict[str, Any]]) -> str:
    """One line: samplers counted together, every other change named (the first ten)."""
    samplers = {"added": 0, "removed": 0, "changed": 0}
    phrases: list[str] = []
    for hunk in hunks:
        key = hunk["path"][-1] if hunk["path"] else ""
        if key in SAMPLERS:
            samplers[hunk["kind"]] += 1
            continue
        phrase = _describe(hunk)
        if phrase not in phrases:
            phrases.append(phrase)
    more = len(phrases) - 10
    phrases = phrases[:10] + ([f"{more} more changes"] if more > 0 else [])
    for kind, n in samplers.items():
        if n:
            phrases.append(f"{n} sampler field{'s' if n > 1 else ''} {kind}")
    return ", ".join(phrases)


def _view(hunk: dict[str, Any]) -> dict[str, Any]:
    """A hunk as the template shows it: where, and either in-line segments or the old and new values."""
    view = {"where": _label(hunk["path"]) or "(whole body)", "kind": hunk["kind"], "segments": None,
            "old": None, "new": None}
    old, new = hunk.get("old"), hunk.get("new")
    if hunk["kind"] == "changed" and isinstance(old, str) and isinstance(new, str):
        view["segments"] = inline(old, new)
    else:
        view["old"] = None if "old" not in hunk else _short(old, 2000)
        view["new"] = None if "new" not in hunk else _short(new, 2000)
    return view


def text_hunks(old: str, new: str, context: int = 2, most: int = MAX_SHOWN_LINES) -> list[dict[str, Any]]:
    """Bodies that are not both JSON (streams): changed lines with ``context`` lines around, as hunks; at most
    ``most`` lines are kept (the last hunk then says how many more differ)."""
    a, b = old.splitlines(), new.splitlines()
    hunks: list[dict[str, Any]] = []
    shown = 0
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(context):
        lines: list[tuple[str, Any]] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines.extend(("ctx", line) for line in a[i1:i2])
            elif tag == "replace" and i2 - i1 == j2 - j1:
                lines.extend(("change", inline(x, y)) for x, y in zip(a[i1:i2], b[j1:j2], strict=True))
            else:
                lines.extend(("del", line) for line in a[i1:i2])
                lines.extend(("add", line) for line in b[j1:j2])
        if shown + len(lines) > most:
            lines = lines[:max(0, most - shown)] + [("ctx", "… (more lines differ; see the raw bodies)")]
        hunks.append({"where": f"line {group[0][1] + 1}", "lines": lines})
        shown += len(lines)
        if shown >= most or len(hunks) >= MAX_HUNKS:
            break
    return hunks


def _translated(old: dict, new: dict) -> bool:
    """Another dialect rather than an edit: fields dropped and others added, few in common."""
    gone, came = old.keys() - new.keys(), new.keys() - old.keys()
    return len(gone) >= 2 and len(came) >= 2 and len(old.keys() & new.keys()) * 2 < len(old.keys() | new.keys())


def changes(old_raw: str, new_raw: str) -> dict[str, Any]:
    """{"changed", "summary", "hunks" (JSON paths) or "lines" (text hunks), "too_large"} of two bodies."""
    if old_raw == new_raw:
        return {"changed": False, "summary": "", "hunks": [], "lines": [], "too_large": False}
    old, new = _load(old_raw), _load(new_raw)
    if old is not None and new is not None:
        found: list[dict[str, Any]] = []
        _walk(old, new, (), found)
        if found:
            line = summary(found)
            if isinstance(old, dict) and isinstance(new, dict) and _translated(old, new):
                line = "translated into another dialect (few fields in common): " + line
            return {"changed": True, "summary": line, "hunks": [_view(h) for h in found], "lines": [],
                    "too_large": False}
        return {"changed": False, "summary": "only spacing or key order differ", "hunks": [],
                "lines": [], "too_large": False}
    if old_raw.count("\n") > MAX_LINES or new_raw.count("\n") > MAX_LINES:
        return {"changed": True, "summary": "too large to compare here", "hunks": [], "lines": [], "too_large": True}
    lines = text_hunks(old_raw, new_raw)
    a, b = old_raw.splitlines(), new_raw.splitlines()
    same = sum(block.size for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
    n = max(len(a), len(b)) - same
    line = f"{n} line{'s differ' if n != 1 else ' differs'}"
    if same * 10 < max(len(a), len(b)):
        line = f"translated into another dialect or framing: {line}"
    return {"changed": True, "summary": line, "hunks": [], "lines": lines, "too_large": False}
