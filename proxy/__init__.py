"""LLM Proxy: one process speaking the Ollama and OpenAI APIs in front of LLM servers."""
from .app import create_app
from .version import __version__

__all__ = ["__version__", "create_app"]
