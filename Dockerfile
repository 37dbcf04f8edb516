# LLM Proxy in a container: gunicorn with gevent workers (gunicorn.conf.py maps HOST, PORT and the drain),
# configured from the environment; the SQLite log (the default DATABASE_URL) is in the volume /app/data.
# No container engine runs in CI: tests/app/test_deploy_files.py checks this file against the project, and the
# image itself is untested there. docs/deploy.md has the commands.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=11434

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY wsgi.py gunicorn.conf.py ./
COPY proxy ./proxy
RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin llm-proxy \
    && mkdir -p /app/data \
    && chown llm-proxy /app/data

USER llm-proxy
VOLUME ["/app/data"]
EXPOSE 11434
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '11434'), timeout=4)"]
CMD ["gunicorn", "-k", "gevent", "-w", "2", "wsgi:app"]
