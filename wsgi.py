"""Entry point. `python wsgi.py [flags]` serves with gevent's WSGIServer (`--help` lists the flags; `python -m
proxy` and the `llm-proxy` command are the same); `gunicorn -k gevent wsgi:app` imports `app`, built from the
environment and the working directory's `.env`."""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

if __name__ == "__main__":
    from proxy.cli import main

    sys.exit(main(sys.argv[1:]))

from proxy.serving import app_from_environment  # noqa: E402

app = app_from_environment()  # a bad setting is one line and exit status 2, as under `python wsgi.py`
