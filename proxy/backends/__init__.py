"""Backend clients; ``make_backend`` picks one by BACKEND_TYPE. The only modules doing upstream I/O."""
from __future__ import annotations

from ..config import Settings
from .ollama import OllamaBackend
from .openai import OpenAIBackend
from .stub import StubBackend

BACKENDS = {"openai": OpenAIBackend, "ollama": OllamaBackend, "stub": StubBackend}


def make_backend(settings: Settings):
    return BACKENDS[settings.backend_type](settings)
