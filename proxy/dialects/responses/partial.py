"""The string value of a JSON object's one field, decoded while its text still arrives in pieces: a custom
tool's raw input streams out of the function arguments it was asked for as (``{"input": "..."}``).

Pure and incremental: each piece is scanned once; only an escape cut in two waits for its end."""
from __future__ import annotations

ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
SEEK, VALUE, DONE = 0, 1, 2


class PartialString:
    """Feed the pieces of ``{"<key>": "<value>"...}``; ``feed`` returns what of the value each piece completes.
    Anything else (another shape, a second field) stops it: the whole arguments decide the value at the end."""

    __slots__ = ("state", "head", "escape", "high")

    def __init__(self) -> None:
        self.state = SEEK
        self.head = ""  # the text before the value's opening quote (a key and a colon: short)
        self.escape = ""  # an escape sequence cut by the end of a piece
        self.high = ""  # a high surrogate waiting for its low half

    def feed(self, piece: str) -> str:
        if self.state == SEEK:
            self.head += piece
            colon = self.head.find(":")
            quote = self.head.find('"', colon + 1) if colon >= 0 else -1
            if quote < 0:
                if len(self.head) > 4096:
                    self.state = DONE
                return ""
            if self.head[colon + 1:quote].strip():
                self.state = DONE  # the value is not a string
                return ""
            piece, self.head, self.state = self.head[quote + 1:], "", VALUE
        if self.state != VALUE:
            return ""
        return self._value(piece)

    def _value(self, piece: str) -> str:
        if self.escape:
            piece, self.escape = self.escape + piece, ""
        out: list[str] = []
        i, n = 0, len(piece)
        while i < n:
            quote = piece.find('"', i)
            slash = piece.find("\\", i)
            stop = min(x for x in (quote, slash, n) if x >= 0)
            if stop > i:
                self._plain(out, piece[i:stop])
            if stop == n:
                break
            if stop == quote:
                self.state = DONE
                break
            if stop + 1 >= n or piece[stop + 1] == "u" and stop + 6 > n:
                self.escape = piece[stop:]  # the escape ends in the next piece
                break
            code = piece[stop + 1]
            if code == "u":
                self._unit(out, piece[stop + 2:stop + 6])
                i = stop + 6
            else:
                self._plain(out, ESCAPES.get(code, code))
                i = stop + 2
        return "".join(out)

    def _plain(self, out: list[str], text: str) -> None:
        if self.high:  # a lone half: JSON allows it, a str encoder does not
            out.append("\ufffd")
            self.high = ""
        out.append(text)

    def _unit(self, out: list[str], digits: str) -> None:
        try:
            unit = int(digits, 16)
        except ValueError:
            self.state = DONE
            return
        if 0xD800 <= unit < 0xDC00:
            if self.high:
                out.append("\ufffd")
            self.high = chr(unit)
        elif 0xDC00 <= unit < 0xE000 and self.high:
            pair = 0x10000 + ((ord(self.high) - 0xD800) << 10) + (unit - 0xDC00)
            self.high = ""
            out.append(chr(pair))
        else:
            self._plain(out, "\ufffd" if 0xDC00 <= unit < 0xE000 else chr(unit))
