"""The dialects (proxy/dialects/) and the request rewrites: pure functions and tables, tested
without a server. Nothing here needs a fixture beyond tests/conftest.py."""
