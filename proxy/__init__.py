"""LLM Proxy: one process speaking the Ollama and OpenAI APIs in front of LLM servers."""
from .app import create_app

__all__ = ["create_app"]
__version__ = "0.1.0"
