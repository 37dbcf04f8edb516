"""The limit settings' values as the limiter's modules name them: rates and URLs are parsed and shown by
``config``, their one home."""
from __future__ import annotations

from ..config import mask_url, parse_rate

__all__ = ["mask_url", "parse_rate"]
