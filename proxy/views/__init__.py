"""Blueprints, one per front door: Ollama (`/`, `/api`), OpenAI (`/v1`), Anthropic Messages (`/v1/messages`),
OpenAI Responses (`/v1/responses`), operations, the log view (`/ui`)."""
from __future__ import annotations

from flask import Flask

from . import anthropic_api, ollama_api, openai_api, ops, responses_api, ui
from . import ui_replay as ui_replay  # adds its routes to ui.bp
from . import ui_tools as ui_tools  # adds its routes to ui.bp


def register_blueprints(app: Flask) -> None:
    app.register_blueprint(ops.bp)
    app.register_blueprint(ollama_api.bp)
    app.register_blueprint(openai_api.bp)
    app.register_blueprint(anthropic_api.bp)
    app.register_blueprint(responses_api.bp)
    app.register_blueprint(ui.bp)  # ui_replay and ui_tools add their routes to it
