"""gevent helpers in one place: is the standard library patched, a real OS thread, a call in a native pool.

The proxy is served under gevent (`python wsgi.py`, `gunicorn -k gevent`) and tested without it; these
answer both ways, so callers need not import gevent to ask.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


def start_native_thread(target: Callable[[], None], name: str) -> None:
    """Run ``target`` in a real OS thread, also when gevent has patched ``threading``."""
    if gevent_patched():
        from gevent import monkey
        start_new_thread = monkey.get_original("_thread", "start_new_thread")
        start_new_thread(target, ())
        return
    import threading
    threading.Thread(target=target, name=name, daemon=True).start()


def captured(fn: Callable[..., T], args: tuple) -> tuple[bool, Any]:
    """``fn(*args)`` as (True, result) or (False, exception), for a native pool thread: an exception raised
    there is printed by gevent with its traceback before the caller gets it (a flood while a database is down)."""
    try:
        return True, fn(*args)
    except Exception as exc:  # noqa: BLE001 - handed back to the caller, which raises it
        return False, exc


def in_pool(pool: Any, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a gevent ThreadPool, its exception raised here, in the calling greenlet."""
    ok, value = pool.apply(captured, (fn, args))
    if not ok:
        raise value
    return value




def spawn_worker(run: Callable[..., Any], *args: Any) -> Callable[[], None]:
    """Start ``run(*args)`` in a greenlet beside the current one, also without monkey-patching (the backend
    client's sockets are gevent's either way and work only in the thread that opened them: under a threaded
    test server, each thread's own hub runs its workers). The function returned kills the greenlet and
    waits for its cleanup (its ``finally`` blocks), at most KILL_WAIT_S."""
    import gevent

    glet = gevent.spawn(run, *args)
    return lambda: glet.kill(block=True, timeout=KILL_WAIT_S)


def hub_event() -> Any:
    """An event a greenlet of ``spawn_worker`` sets and the current greenlet waits on (gevent's, whether or
    not ``threading`` is patched)."""
    from gevent.event import Event
    return Event()


KILL_WAIT_S = 5.0  # how long stopping a worker waits for its cleanup (closing its upstream connection)
