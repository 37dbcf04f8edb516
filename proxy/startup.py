"""Start-up chores of `python wsgi.py` and gunicorn's workers: the `.env` file of the working directory (or
the one `--env-file` names), one-line messages for a server that cannot listen, and the backend probe that
warns once when the backend is not there, saying what to do about it.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from typing import Any

from .errors import ProxyError, UpstreamStatus

log = logging.getLogger("proxy")

ENV_FILE = ".env"
PROBE_TIMEOUT = 3.0  # seconds; the probe runs off the start-up path, this only bounds its greenlet
TRY_THE_STUB = "start it (or fix BACKEND_URL), or set BACKEND_TYPE=stub to try the proxy without one"


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the operator."""


def load_env_file(directory: str | None = None, path: str | None = None) -> str | None:
    """Load ``.env`` of the working directory (not of wsgi.py's folder, nor of any parent), or the file
    ``path`` names instead (``--env-file``: then it must exist), into the environment; variables already set
    win. Returns the path loaded, or None when there is none."""
    from dotenv import load_dotenv

    if path is None:
        path = os.path.join(directory if directory is not None else os.getcwd(), ENV_FILE)
        if not os.path.isfile(path):
            return None
    try:
        with open(path, encoding="utf-8") as stream:
            load_dotenv(stream=stream, override=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return path


def listen_error(host: str, port: int, exc: BaseException) -> str:
    """One line saying why the server cannot listen on host:port, naming the setting to change."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        why = str(exc.strerror or exc).split(": (", 1)[0]  # gevent appends the address asked for
        return (f"cannot listen on {where}: HOST={host} is neither an address nor a name that resolves "
                f"({why}); set HOST to an address of this machine, e.g. 127.0.0.1 or 0.0.0.0")
    code = getattr(exc, "errno", None)
    if code == errno.EADDRINUSE:
        return (f"cannot listen on {where}: the port is already in use (another proxy or an Ollama?); "
                f"stop that program or set PORT to a free port")
    if code == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {where}: HOST={host} is not an address of this machine; "
                f"use one it has, e.g. 127.0.0.1 or 0.0.0.0")
    if code in (errno.EACCES, errno.EPERM):
        return (f"cannot listen on {where}: permission denied (ports below 1024 need privileges); "
                f"set PORT to 1024 or above")
    return f"cannot listen on {where}: {getattr(exc, 'strerror', None) or exc}"


def _reason(detail: str, described: str) -> str:
    """The backend's failure without the backend's name, which the warning already gives."""
    head, sep, tail = detail.partition(f"{described}: ")
    if sep and tail:
        return tail
    return detail.replace(described, "it")


def probe_backend(backend: Any, timeout: float = PROBE_TIMEOUT) -> bool:
    """Ask the backend for its model list once; log one warning line naming it, the reason and what to
    do when it does not answer. Never raises (a probe must not stop the proxy from serving)."""
    if getattr(backend, "type", "") == "stub":
        return True
    described = backend.describe()
    try:
        backend.list_models(timeout=timeout)
        return True
    except UpstreamStatus as exc:  # something answers there, but not as the backend configured
        log.warning("%s answered its model list with an error: %s; check BACKEND_URL, BACKEND_TYPE and "
                    "BACKEND_API_KEY, or set BACKEND_TYPE=stub to try the proxy without a backend",
                    described, _reason(exc.message, described))
    except ProxyError as exc:
        log.warning("%s is not reachable: %s; %s", described, _reason(exc.message, described), TRY_THE_STUB)
    except Exception as exc:  # noqa: BLE001 - a failing probe is reported, never fatal
        log.warning("%s is not reachable: %s; %s", described, exc or type(exc).__name__, TRY_THE_STUB)
    return False


def probe_in_background(backend: Any) -> None:
    """Run ``probe_backend`` off the start-up path, in a thread (a greenlet under gevent, which patches
    ``threading``)."""
    if getattr(backend, "type", "") == "stub":
        return
    threading.Thread(target=probe_backend, args=(backend,), name="backend-probe", daemon=True).start()
