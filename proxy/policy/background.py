"""Work the limiter does off the request's clock (the admission of a request admitted ahead of Redis's verdict,
and the settlement that may travel with it)."""
from __future__ import annotations

import threading
from collections.abc import Callable

from ..greenlets import gevent_patched


def defer(job: Callable[[], None]) -> None:
    """Run ``job`` soon, off the request's clock: under gevent (as the proxy is served) in a greenlet started
    from the hub's callbacks, which run once the request waits for I/O (spawning right here costs ~10 µs on
    the request's clock); elsewhere in a thread."""
    if gevent_patched():
        if not _JOBS:
            from gevent import get_hub

            get_hub().loop.run_callback(_start_jobs)
        _JOBS.append(job)
    else:
        threading.Thread(target=job, name="limits-confirm", daemon=True).start()


_JOBS: list[Callable[[], None]] = []


def _start_jobs() -> None:
    import gevent

    jobs = _JOBS[:]
    del _JOBS[:]
    for job in jobs:
        gevent.spawn(job)
