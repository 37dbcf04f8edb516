"""OpenAI-compatible backends (llama.cpp, vLLM, LM Studio, LiteLLM, OpenAI): model list and metadata."""
from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import Any

from ..catalog import ModelInfo
from ..config import Settings
from ..errors import BackendUnavailable, ProxyError
from .base import HTTPBackend

log = logging.getLogger(__name__)
FLAVOR_BY_OWNER = {"llamacpp": "llamacpp", "vllm": "vllm", "openai": "openai", "system": "openai",
                   "openai-internal": "openai"}


def human_count(n: int) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}".rstrip("0").rstrip(".") + unit
    return str(n)


def family_of(model_id: str) -> str:
    base = model_id.rsplit("/", 1)[-1].lower()
    match = re.match(r"[a-z]+(?:\d+(?:\.\d+)?)?", base)
    return match.group(0) if match else "llm"


def model_from_openai(entry: dict, default_owner: str) -> ModelInfo:
    meta = found if isinstance(found := entry.get("meta"), dict) else {}
    context = meta.get("n_ctx") or entry.get("max_model_len") or entry.get("context_length") \
        or entry.get("context_window") or entry.get("max_context_length")
    n_params = found if isinstance(found := meta.get("n_params"), int) else 0
    model_id = str(entry.get("id", ""))
    caps = ["completion", "tools"]
    if "embed" in model_id.lower():
        caps = ["embedding"]
    return ModelInfo(
        id=model_id,
        created=int(entry.get("created") or 0) if isinstance(entry.get("created"), (int, float)) else 0,
        owned_by=str(entry.get("owned_by") or default_owner),
        context_length=int(context) if isinstance(context, (int, float)) and context > 0 else None,
        size=int(meta.get("size") or 0) if isinstance(meta.get("size"), int) else 0,
        parameter_count=n_params,
        parameter_size=human_count(n_params) if n_params else "",
        quantization=str(meta.get("ftype") or ""),
        family=family_of(model_id),
        capabilities=tuple(caps),
    )


class OpenAIBackend(HTTPBackend):
    type = "openai"
    dialect = "openai"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self._flavor = None if settings.backend_flavor == "auto" else settings.backend_flavor
        self._props: dict[str, Any] | None = None
        self._first_seen: dict[str, int] = {}  # llama-server reports `created` as the time of each request

    @property
    def flavor(self) -> str:
        if self._flavor is None:
            if "api.openai.com" in self.base_url:
                self._flavor = "openai"
            else:
                return "generic"  # decided once a model list has been read
        return self._flavor

    def _server_props(self) -> dict[str, Any]:
        """llama.cpp's /props (context size, modalities); {} for servers without it."""
        if self._props is None:
            try:
                props = self.get_json("/props", timeout=3)
                self._props = props if isinstance(props, dict) else {}
            except ProxyError:
                self._props = {}
        return self._props

    def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        body = self.get_json("/v1/models", timeout=timeout)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise BackendUnavailable(f"{self.describe()} sent a model list without 'data'")
        models = [model_from_openai(e, self.type) for e in data if isinstance(e, dict) and e.get("id")]
        models = [replace(m, created=self._first_seen.setdefault(m.id, m.created)) for m in models]
        if self._flavor is None and models:
            self._flavor = FLAVOR_BY_OWNER.get(models[0].owned_by, "generic")
        if self.flavor == "llamacpp":
            models = self._with_props(models)
        return models

    def _with_props(self, models: list[ModelInfo]) -> list[ModelInfo]:
        props = self._server_props()
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        n_ctx = (settings or {}).get("n_ctx") or props.get("n_ctx")
        modalities = found if isinstance(found := props.get("modalities"), dict) else {}
        template_caps = found if isinstance(found := props.get("chat_template_caps"), dict) else {}
        no_tools = template_caps.get("supports_tools") is False  # the chat template would drop `tools`
        out = []
        for model in models:
            caps = tuple(c for c in model.capabilities if not (no_tools and c == "tools"))
            caps += ("vision",) if modalities.get("vision") and "vision" not in caps else ()
            context_length = model.context_length or (n_ctx if isinstance(n_ctx, int) else None)
            out.append(replace(model, context_length=context_length,
                               capabilities=caps))
        return out
