"""The upstream client's own cost: HTTPBackend.post_json against bench/mock_upstream.py on port 18931, in
process under gevent (see docs/performance.md). Run from the repository root with the mock started."""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, ".")

from proxy.backends.openai import OpenAIBackend  # noqa: E402
from proxy.config import Settings  # noqa: E402

BODY = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
N = 3000


def main() -> None:
    backend = OpenAIBackend(Settings.from_env({"BACKEND_URL": "http://127.0.0.1:18931"}))
    for _ in range(200):  # warm-up: the pool's connection, the mock's caches
        backend.post_json("/v1/chat/completions", BODY)
    start = time.perf_counter()
    for _ in range(N):
        backend.post_json("/v1/chat/completions", BODY)
    print("us/req", (time.perf_counter() - start) / N * 1e6)


if __name__ == "__main__":
    main()
