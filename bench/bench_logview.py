"""Benchmark the log view as a debugger: the list's first page (plain and with each filter of issue 15) with
1,000,000 rows in SQLite or PostgreSQL, and the exchange page of a 200-message, 2 MB agent request.

    python bench/bench_logview.py --db sqlite:////tmp/llm-proxy-logview.db --rows 1000000
    python bench/bench_logview.py --db postgresql://postgres@127.0.0.1:5432/test --rows 1000000
    python bench/bench_logview.py --db ... --no-seed          # time an already seeded database again

Seeding drops and refills the log tables (PostgreSQL: in the schema named by --pg-schema, default
llm_proxy_bench). Pages are served through Flask's test client (no network); each figure is the median
of --repeat renders after two warm-up renders. Targets: list under 200 ms, the big exchange under 500 ms.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = ["qwen3-8b", "llama3.2:latest", "smollm2", "gpt-oss-20b", "mistral-small"]
ENDPOINTS = ["/api/chat", "/v1/chat/completions", "/v1/messages", "/v1/responses"]
KEYS = ["ops", "ha", "claude", "codex", None]
AGENTS = ["HomeAssistant/2025.1", "claude-cli/2.1.86 (external, cli)", "codex_cli_rs/0.131.0", "OpenAI/Python 1.99"]
WORDS = ["kitchen", "light", "weather", "invoice", "python", "function", "error", "garden", "budget", "story"]
COLUMNS = ("id", "started", "ended", "request_id", "client", "user_agent", "key_name", "front", "endpoint", "method",
           "backend_name", "backend_type", "model", "upstream_model", "stream", "status", "outcome", "error",
           "duration_ms", "ttfb_ms", "ttfc_ms", "overhead_ms", "prompt_tokens", "completion_tokens",
           "tokens_estimated", "tokens_per_second", "tool_calls", "truncated", "preview", "queued_ms", "session_id",
           "cached", "replay_of")
BODY_COLUMNS = ("exchange_id", "client_request", "upstream_request", "upstream_response", "client_response",
                "client_request_size", "upstream_request_size", "upstream_response_size", "client_response_size",
                "client_request_truncated", "upstream_request_truncated", "upstream_response_truncated",
                "client_response_truncated")


def body_row(row: tuple, request: str) -> tuple:
    return (row[0], request, request, "", "", len(request), len(request), 0, 0, False, False, False, False)


def make_row(rnd: random.Random, ident: int, started: float) -> tuple[tuple, str, str]:
    words = " ".join(rnd.choice(WORDS) for _ in range(8))
    status = 200 if rnd.random() > 0.04 else rnd.choice((400, 404, 500, 502, 504))
    outcome = "ok" if status == 200 else ("client_error" if status < 500 else "backend_error")
    model, endpoint = rnd.choice(MODELS), rnd.choice(ENDPOINTS)
    duration = rnd.uniform(50, 4000)
    stream = rnd.random() < 0.7
    row = (ident, started, started + duration / 1000, f"bench{ident:08x}", "192.168.1.20", rnd.choice(AGENTS),
           rnd.choice(KEYS), "openai", endpoint, "POST", rnd.choice(("gpu-a", "gpu-b", "cpu")), "openai", model,
           model + "-q4", stream, status, outcome, None if status == 200 else "bench error", duration,
           duration * 0.2, duration * 0.21 if stream else None, 0.3, rnd.randint(20, 4000), rnd.randint(1, 800),
           False, 12.5, 0, False, words, None, f"s{ident // 40:07d}" if rnd.random() < 0.3 else None,
           rnd.random() < 0.05, None)
    request = json.dumps({"model": model, "messages": [{"role": "user", "content": words}]})
    return row, request, f"{model}\n{words}"


def seed_sqlite(path: str, rows: int, rnd: random.Random, start: float, step: float) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=off")
    for first in range(0, rows, 50_000):
        batch = [make_row(rnd, i + 1, start + i * step) for i in range(first, min(rows, first + 50_000))]
        conn.executemany(f"INSERT INTO exchanges ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                         [b[0] for b in batch])
        conn.executemany(f"INSERT INTO exchange_bodies ({', '.join(BODY_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(BODY_COLUMNS))})", [body_row(b[0], b[1]) for b in batch])
        conn.executemany("INSERT INTO exchange_fts (rowid, body) VALUES (?, ?)", [(b[0][0], b[2]) for b in batch])
        conn.commit()
        print(f"  seeded {first + len(batch):,}", file=sys.stderr)
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()


def _copy_value(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def seed_postgres(url: str, schema: str, rows: int, rnd: random.Random, start: float, step: float) -> None:
    import psycopg2

    conn = psycopg2.connect(url, options=f"-c search_path={schema}")
    cur = conn.cursor()
    for first in range(0, rows, 100_000):
        batch = [make_row(rnd, i + 1, start + i * step) for i in range(first, min(rows, first + 100_000))]
        for table, columns, values in (
                ("exchanges", COLUMNS, [b[0] for b in batch]),
                ("exchange_bodies", BODY_COLUMNS, [body_row(b[0], b[1]) for b in batch])):
            data = io.StringIO("".join("\t".join(map(_copy_value, v)) + "\n" for v in values))
            cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", data)
        conn.commit()
        print(f"  seeded {first + len(batch):,}", file=sys.stderr)
    cur.execute("INSERT INTO exchange_search SELECT id, to_tsvector('simple', model || ' ' || preview) FROM exchanges")
    cur.execute(f"SELECT setval(pg_get_serial_sequence('exchanges', 'id'), {rows})")
    conn.commit()
    conn.autocommit = True
    cur.execute("VACUUM ANALYZE")
    conn.close()


def big_request(messages: int = 200, size: int = 2_000_000) -> dict:
    """An agent conversation: system prompt, tools, user/assistant/tool turns with tool calls, ~``size`` bytes."""
    per = size * 3 // (2 * messages)  # a third of the turns are short assistant calls
    text = ("Reading the file shows the function is called from three places; " * (per // 66 + 1))[:per]
    turns: list[dict] = [{"role": "system", "content": "You are a coding agent. " + text}]
    for i in range(1, messages):
        kind = i % 3
        if kind == 1:
            turns.append({"role": "user", "content": f"step {i}: {text}"})
        elif kind == 2:
            turns.append({"role": "assistant", "content": text[:200], "tool_calls": [
                {"id": f"call_{i}", "type": "function", "function": {"name": "read", "arguments":
                                                                     json.dumps({"path": f"src/{i}.py"})}}]})
        else:
            turns.append({"role": "tool", "tool_call_id": f"call_{i - 1}", "content": text})
    return {"model": "stub", "stream": True, "messages": turns,
            "tools": [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite:////tmp/llm-proxy-logview.db")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--pg-schema", default="llm_proxy_bench")
    parser.add_argument("--no-seed", action="store_true")
    args = parser.parse_args(argv)

    from proxy import create_app
    from proxy.config import Settings
    from proxy.store import LogStore

    url = args.db
    if url.startswith("postgres"):
        import psycopg2

        conn = psycopg2.connect(url)
        conn.autocommit = True
        if not args.no_seed:
            conn.cursor().execute(f"DROP SCHEMA IF EXISTS {args.pg_schema} CASCADE")
        conn.cursor().execute(f"CREATE SCHEMA IF NOT EXISTS {args.pg_schema}")
        conn.close()
        url += ("&" if "?" in url else "?") + "options=" + quote(f"-c search_path={args.pg_schema}")
    elif not args.no_seed:
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    env = {"DATABASE_URL": url, "LOG_CLEANUP_MINUTES": "0", "BACKEND_TYPE": "stub", "LOG_LEVEL": "WARNING",
           "LOG_MAX_BODY_BYTES": "4000000", "STUB_DELAY_MS": "0"}
    if not args.no_seed:
        store = LogStore(Settings.from_env(env))
        store.open()  # the schema, as the proxy makes it
        store.close()
        rnd, now = random.Random(7), time.time()
        t0 = time.perf_counter()
        start, step = now - 30 * 86400, 30 * 86400 / args.rows
        if url.startswith("postgres"):
            seed_postgres(args.db, args.pg_schema, args.rows, rnd, start, step)
        else:
            seed_sqlite(url.removeprefix("sqlite:///"), args.rows, rnd, start, step)
        print(f"seeded {args.rows:,} rows in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    app = create_app(Settings.from_env(env))
    client = app.test_client()
    big = json.dumps(big_request()).encode()
    r = client.post("/v1/chat/completions", data=big, content_type="application/json")
    assert r.status_code == 200, r.status_code
    r.close()
    store = app.extensions["llm_proxy"].extras["log_store"]
    deadline = time.time() + 30
    while (last := store.read(lambda m: m.Exchange.select(m.Exchange.id).order_by(m.Exchange.id.desc())
                              .first())) is None or last.id <= args.rows:
        assert time.time() < deadline, "the big exchange was not written"
        time.sleep(0.1)
    pages = {"list, first page": "/ui/logs", "list, key": "/ui/logs?key=claude",
             "list, upstream model": "/ui/logs?upstream=smollm2-q4", "list, backend": "/ui/logs?backend=cpu",
             "list, user agent": "/ui/logs?agent=codex", "list, session": "/ui/logs?session=s0012345",
             "list, cached": "/ui/logs?cached=1", "list, first token >= 800 ms": "/ui/logs?ttfc_min=800",
             "list, failed": "/ui/logs?status=error", "list, search": "/ui/logs?q=invoice+garden",
             "live poll (JSON after an id)": f"/ui/api/logs?after_id={args.rows - 5}",
             "running (memory)": "/ui/api/running", "one small exchange": f"/ui/logs/{args.rows // 2}",
             f"200-message exchange ({len(big) / 1e6:.1f} MB)": f"/ui/logs/{last.id}"}
    print(f"| page ({args.rows:,} rows, {url.split(':', 1)[0]}) | median ms | max ms |\n| --- | --- | --- |")
    for name, path in pages.items():
        for _ in range(2):
            assert client.get(path).status_code == 200, path
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            r = client.get(path)
            times.append((time.perf_counter() - t0) * 1000)
        print(f"| {name} | {statistics.median(times):.0f} | {max(times):.0f} |")
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
