"""The backends (proxy/backends/) and the model catalog: the HTTP client against a raw TCP
server (tests/backends/fake_raw.py), llama.cpp recordings (tests/data/llamacpp), TLS and
outbound proxies, hostile backends, and the in-process stub backend."""
