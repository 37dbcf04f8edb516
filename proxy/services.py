"""The services one app is built with (settings, backend or pool, model catalog, record sinks), kept on
``app.extensions["llm_proxy"]`` and reached with ``services()`` while a request is served."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from .backends.base import Backend
from .config import Settings
from .dedupe import Twins
from .exchange import Exchange


@dataclass
class Services:
    settings: Settings
    backend: Backend
    catalog: Any  # Catalog; with BACKENDS_FILE a catalog.PoolCatalog, which answers the same questions
    pool: Any = None  # routing.Pool with BACKENDS_FILE; None: the one backend of BACKEND_*
    sinks: list[Callable[[Exchange], None]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    twins: Twins = field(default_factory=Twins)  # running streams identical requests can attach to

    def on_shutdown(self, stop: Callable[[], None], *, first: bool = False) -> None:
        """Chain ``stop`` into the app's shutdown (``extras["shutdown"]``, run by ``draining``): after what was
        chained before it (a store that writes what the others recorded), or, ``first``, before it."""
        previous = self.extras.get("shutdown")
        if previous is None:
            self.extras["shutdown"] = stop
            return
        one, two = (stop, previous) if first else (previous, stop)

        def shutdown() -> None:
            try:
                one()
            finally:
                two()

        self.extras["shutdown"] = shutdown


def services() -> Services:
    return current_app.extensions["llm_proxy"]
