"""Markdown in messages and answers as safe HTML: CommonMark with raw HTML off (a stored ``<script>`` comes out
as text), links kept only for http, https and mailto (and in-page anchors), images shown as their link, and
every link opened without a referrer. The strict CSP of the log view still applies on top.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markupsafe import Markup

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})


def safe_link(url: str) -> bool:
    """An absolute link with a safe scheme, or an in-page anchor; nothing relative to the log view itself."""
    url = url.strip()
    if url.startswith("#"):
        return True
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return False
    return scheme in SAFE_SCHEMES


def _renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.disable("image")  # no fetches from stored text: an image is shown as a plain link
    md.validateLink = safe_link  # type: ignore[method-assign]

    def link_open(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
        tokens[idx].attrSet("target", "_blank")
        return str(renderer.renderToken(tokens, idx, options, env))

    md.add_render_rule("link_open", link_open)
    return md


_MD = _renderer()  # a constant: MarkdownIt holds no per-request state


def render(text: str) -> Markup:
    """HTML for ``text``; safe to insert unescaped (markdown-it escapes every piece of text it emits)."""
    return Markup(_MD.render(text))
