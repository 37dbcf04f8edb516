"""Blueprints, one per front door: Ollama (`/`, `/api`), OpenAI (`/v1`), Anthropic Messages (`/v1/messages`),
operations, the log view (`/ui`)."""
from __future__ import annotations

from flask import Flask

from . import anthropic_api, ollama_api, openai_api, ops, ui


def register_blueprints(app: Flask) -> None:
    app.register_blueprint(ops.bp)
    app.register_blueprint(ollama_api.bp)
    app.register_blueprint(openai_api.bp)
    app.register_blueprint(anthropic_api.bp)
    app.register_blueprint(ui.bp)
