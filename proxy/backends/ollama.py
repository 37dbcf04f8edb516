"""Ollama backends: model list from /api/tags (entries kept as Ollama wrote them)."""
from __future__ import annotations

import re
from datetime import datetime

from ..catalog import ModelInfo
from ..errors import BackendUnavailable
from .base import HTTPBackend


def _epoch(stamp: str) -> int:
    """Unix seconds of an RFC 3339 time (Ollama writes up to 9 fractional digits); 0 if unreadable."""
    try:
        return int(datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", stamp)).timestamp())
    except ValueError:
        return 0


def model_from_tag(entry: dict) -> ModelInfo:
    details = found if isinstance(found := entry.get("details"), dict) else {}
    name = str(entry.get("model") or entry.get("name"))
    caps = entry.get("capabilities")
    return ModelInfo(
        id=name,
        created=_epoch(str(entry.get("modified_at", ""))),
        owned_by="library",
        size=int(entry.get("size") or 0) if isinstance(entry.get("size"), int) else 0,
        parameter_size=str(details.get("parameter_size") or ""),
        quantization=str(details.get("quantization_level") or ""),
        family=str(details.get("family") or ""),
        capabilities=tuple(caps) if isinstance(caps, list) else ("completion",),
        ollama_entry=entry,
    )


class OllamaBackend(HTTPBackend):
    type = "ollama"
    dialect = "ollama"
    flavor = "ollama"

    def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        body = self.get_json("/api/tags", timeout=timeout)
        models = body.get("models") if isinstance(body, dict) else None
        if models is None and isinstance(body, dict):
            models = []
        if not isinstance(models, list):
            raise BackendUnavailable(f"{self.describe()} sent a model list without 'models'")
        return [model_from_tag(e) for e in models if isinstance(e, dict) and (e.get("model") or e.get("name"))]
