"""The proxy as a running server, over real sockets: its own gevent server and gunicorn, start-up,
connection life and shutdown, memory per request, and both front doors end to end (passthrough,
translation, errors, bad input) with the official client libraries against a fake upstream.
Fixtures for the proxy and the fake upstream are in tests/conftest.py."""
