"""Model entries in each dialect, built from the catalog's ``ModelInfo`` (pure, no I/O).

Ollama clients are strict about `/api/tags` and `/api/show` (types, `capabilities`, a non-null
`model_info` with `<arch>.context_length`); these builders always fill every field.
"""
from __future__ import annotations

from typing import Any

from ..catalog import ModelInfo
from ..dialects import anthropic as an
from ..dialects import ollama as ol
from ..dialects import openai as oa

EPOCH_2025 = 1735689600
FAR_FUTURE = 4102444800  # 2100-01-01: "loaded" models never expire from a proxy's point of view
KNOWN_CAPABILITIES = ("completion", "tools", "insert", "vision", "embedding", "thinking", "audio")
COPILOT_UA_PREFIX = "GitHubCopilotChat/"


def _details(model: ModelInfo) -> dict[str, Any]:
    family = model.family or "llm"
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
            "parameter_size": model.parameter_size or "unknown", "quantization_level": model.quantization or "unknown"}


def tag_entry(model: ModelInfo) -> dict[str, Any]:
    if model.ollama_entry is not None:
        return model.ollama_entry
    name = ol.with_tag(model.id)
    return {"name": name, "model": name, "modified_at": ol.rfc3339(model.created or EPOCH_2025),
            "size": int(model.size), "digest": ol.digest_of(model.alias_of or model.id), "details": _details(model)}


def ps_entry(model: ModelInfo) -> dict[str, Any]:
    entry = dict(tag_entry(model))
    entry.pop("modified_at", None)
    entry["expires_at"] = ol.rfc3339(FAR_FUTURE)
    entry["size_vram"] = entry.get("size", 0)
    if model.context_length:
        entry["context_length"] = model.context_length
    return entry


def show_body(model: ModelInfo, default_context: int, user_agent: str = "") -> dict[str, Any]:
    context = model.context_length or default_context
    details = _details(model)
    arch = details["family"]
    basename = model.alias_of or model.id
    if user_agent.startswith(COPILOT_UA_PREFIX):
        basename = model.id  # Copilot shows general.basename as the model's name
    model_info: dict[str, Any] = {"general.architecture": arch, "general.basename": basename,
                                  f"{arch}.context_length": context}
    if model.parameter_count:
        model_info["general.parameter_count"] = model.parameter_count
    capabilities = [c for c in model.capabilities if c in KNOWN_CAPABILITIES]
    return {
        "license": "",
        "modelfile": f"# served by llm-proxy\nFROM {basename}\nPARAMETER num_ctx {context}\n",
        "parameters": f"num_ctx                        {context}",
        "template": "{{ .Prompt }}",
        "details": details,
        "model_info": model_info,
        "capabilities": capabilities,
        "modified_at": ol.rfc3339(model.created or EPOCH_2025),
    }


def openai_model(model: ModelInfo) -> dict[str, Any]:
    return oa.model_object(model.id, model.created or EPOCH_2025, model.owned_by, model.context_length)


def anthropic_model(model: ModelInfo) -> dict[str, Any]:
    return an.model_entry(model.id, model.created or EPOCH_2025)


def wants_anthropic_shape(headers: Any) -> bool:
    """Anthropic's clients (Claude Code's model discovery) send these; OpenAI's send neither (one gateway's rule)."""
    return "anthropic-version" in headers or "x-api-key" in headers


CODEX_EFFORTS = ("low", "medium", "high")


def codex_model(model: ModelInfo, priority: int) -> dict[str, Any] | None:
    """The entry Codex's model catalog reads (`model_catalog_url = <proxy>/v1/models`, its `models` array);
    None for a model that cannot chat (embeddings). `base_instructions` is empty: Codex's own prompt is Codex's."""
    if "completion" not in model.capabilities:
        return None
    thinking = "thinking" in model.capabilities
    return {"slug": model.id, "display_name": model.id, "description": f"{model.id}, served by llm-proxy",
            "default_reasoning_level": "medium" if thinking else None,
            "supported_reasoning_levels": [{"effort": e, "description": e} for e in CODEX_EFFORTS] if thinking else [],
            "shell_type": "shell_command", "visibility": "list", "supported_in_api": True, "priority": priority,
            "upgrade": None, "base_instructions": "", "supports_reasoning_summaries": thinking,
            "support_verbosity": False, "default_verbosity": None, "apply_patch_tool_type": "freeform",
            "truncation_policy": {"mode": "bytes", "limit": 10000}, "supports_parallel_tool_calls": True,
            "context_window": model.context_length, "experimental_supported_tools": [],
            "input_modalities": ["text", "image"] if "vision" in model.capabilities else ["text"]}


def codex_models(models: list[ModelInfo]) -> list[dict[str, Any]]:
    return [entry for i, m in enumerate(models) if (entry := codex_model(m, i)) is not None]
