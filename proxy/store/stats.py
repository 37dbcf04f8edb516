"""Figures for the stats page over a time window: requests per minute, latency and time-to-first-token
percentiles, tokens by model, error rate. Counting is done by the database; percentiles over at most
``SAMPLE`` newest rows of the window (said so when the window holds more). No rendering here.
"""
from __future__ import annotations

from typing import Any

import peewee as pw

from .db import kind_of_database
from .models import Models

SAMPLE = 50_000
PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[rank]


def window_stats(models: Models, now: float, seconds: int, bucket_s: int) -> dict[str, Any]:
    e = models.Exchange
    since = now - seconds
    in_window = e.started >= since
    first_bucket = int(since // bucket_s)
    if kind_of_database(models.database) == "sqlite":
        bucket: Any = pw.Cast(e.started / bucket_s, "INTEGER")
    else:
        bucket = pw.fn.FLOOR(e.started / bucket_s)
    per_bucket = {int(b): (n, int(err or 0)) for b, n, err in
                  e.select(bucket.alias("b"), pw.fn.COUNT(e.id), pw.fn.SUM(pw.Case(None, [(e.status >= 400, 1)], 0)))
                  .where(in_window).group_by(pw.SQL("1")).tuples()}
    n_buckets = seconds // bucket_s + 1
    series = [(first_bucket + i) * bucket_s for i in range(n_buckets)]
    requests = [per_bucket.get(first_bucket + i, (0, 0)) for i in range(n_buckets)]

    by_model = list(e.select(e.model, pw.fn.COUNT(e.id), pw.fn.SUM(e.prompt_tokens), pw.fn.SUM(e.completion_tokens),
                             pw.fn.SUM(pw.Case(None, [(e.status >= 400, 1)], 0)))
                    .where(in_window).group_by(e.model).order_by(pw.fn.COUNT(e.id).desc()).limit(20).tuples())
    outcomes = dict(e.select(e.outcome, pw.fn.COUNT(e.id)).where(in_window).group_by(e.outcome).tuples())

    sample = list(e.select(e.duration_ms, e.ttfc_ms, e.stream, e.status).where(in_window)
                  .order_by(e.started.desc()).limit(SAMPLE).tuples())
    ok = [r for r in sample if r[3] is not None and r[3] < 400]
    durations = sorted(r[0] for r in ok if r[0] is not None)
    ttft = sorted(r[1] for r in ok if r[2] and r[1] is not None)
    total = sum(n for n, _ in requests)
    errors = sum(err for _, err in requests)
    return {
        "since": since, "seconds": seconds, "bucket_s": bucket_s,
        "series": [{"t": t, "requests": n, "errors": err} for t, (n, err) in zip(series, requests, strict=False)],
        "total": total, "errors": errors, "error_rate": (errors / total) if total else None,
        "outcomes": outcomes,
        "latency_ms": {p: percentile(durations, p) for p in PERCENTILES},
        "ttft_ms": {p: percentile(ttft, p) for p in PERCENTILES},
        "sampled": len(sample), "sample_capped": len(sample) >= SAMPLE,
        "models": [{"model": m or "(none)", "requests": n, "prompt_tokens": int(pt or 0),
                    "completion_tokens": int(ct or 0), "errors": int(err or 0)} for m, n, pt, ct, err in by_model],
    }
