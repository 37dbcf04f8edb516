"""The upstream client's own cost: HTTPBackend.post_json against bench/mock_upstream.py on port 18931, in process
under gevent (see docs/performance.md)."""
from gevent import monkey; monkey.patch_all()
import sys
import time
sys.path.insert(0, ".")
from proxy.config import Settings
from proxy.backends.openai import OpenAIBackend
b = OpenAIBackend(Settings.from_env({"BACKEND_URL": "http://127.0.0.1:18931"}))
for _ in range(200): b.post_json("/v1/chat/completions", {"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
t = time.perf_counter(); N = 3000
for _ in range(N): b.post_json("/v1/chat/completions", {"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
print("us/req", (time.perf_counter() - t) / N * 1e6)


