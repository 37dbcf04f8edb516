"""LLM Proxy: one process speaking the Ollama and OpenAI APIs in front of LLM servers.

Importing the package loads nothing else: ``proxy.config`` can be read on its own (gunicorn's master reads
the settings before its workers patch the standard library), and the application is built by ``create_app``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .version import __version__

if TYPE_CHECKING:
    from flask import Flask

    from .config import Settings

__all__ = ["__version__", "create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """The application (``proxy.app.create_app``), imported when first built."""
    from .app import create_app as build

    return build(settings)
