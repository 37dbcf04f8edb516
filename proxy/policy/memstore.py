"""The ``limits`` library's in-memory storage, with its expiry sweep moved out of the request path."""
from __future__ import annotations

import threading
import time
import weakref

from limits.storage import MemoryStorage


class SweptMemoryStorage(MemoryStorage):
    """The library's in-memory storage, its expiry sweep run once a second by one long-lived thread instead
    of a new short-lived ``threading.Timer`` started from inside an admission: under gevent each such
    "thread" is a greenlet whose ``start()`` waits on the hub, a context switch in the middle of a request
    (with the sweep itself, a large share of the gate's cost). Counters and windows expire when read
    whatever the sweep does (``get`` and ``get_moving_window`` compare times); the sweep only frees memory."""

    SWEEP_EVERY = 1.0

    def __init__(self) -> None:
        super().__init__()
        ref, every = weakref.ref(self), self.SWEEP_EVERY  # the thread must not keep the storage alive

        def sweep_forever() -> None:
            while True:
                time.sleep(every)
                storage = ref()
                if storage is None:
                    return
                storage._MemoryStorage__expire_events()  # type: ignore[attr-defined]
                del storage

        threading.Thread(target=sweep_forever, name="limits-memory-sweep", daemon=True).start()

    def _MemoryStorage__schedule_expiry(self) -> None:  # the library's per-call timer check: the sweep does it
        pass
