"""Numbers to words: percentiles, the result table, the JSON file, the py-spy summary."""

import json
import math
import os
import platform
from collections import Counter
from pathlib import Path


def pct(values, q):
    """Nearest-rank percentile (q in 0..100) of a list; None when empty."""
    if not values:
        return None
    data = sorted(values)
    k = max(0, min(len(data) - 1, math.ceil(q / 100.0 * len(data)) - 1))
    return data[k]


def summary(values, scale=1000.0):
    """p50/p90/p99/max/mean of seconds as milliseconds (scale 1000)."""
    if not values:
        return {"n": 0}
    return {"n": len(values),
            "p50": pct(values, 50) * scale, "p90": pct(values, 90) * scale,
            "p99": pct(values, 99) * scale, "max": max(values) * scale,
            "mean": sum(values) / len(values) * scale}


class Row:
    """One line of the table: a figure for one path, direct vs proxy, and its verdict."""

    def __init__(self, scenario, path, metric, unit, direct=None, proxy=None, compare="added",
                 target=None, check=None, note=""):
        self.scenario, self.path, self.metric, self.unit = scenario, path, metric, unit
        self.direct, self.proxy, self.compare = direct, proxy, compare
        self.target, self.note = target, note
        if proxy is None:
            self.delta = None
        elif compare == "added" and direct is not None:
            self.delta = proxy - direct
        elif compare == "ratio" and direct:
            self.delta = proxy / direct
        else:
            self.delta = None
        self.passed = None if check is None or proxy is None else bool(check(self))

    def as_dict(self):
        return {k: getattr(self, k) for k in ("scenario", "path", "metric", "unit", "direct",
                                               "proxy", "compare", "delta", "target",
                                               "passed", "note")}


def _fmt(value, unit):
    if value is None:
        return "-"
    if unit in ("req/s", "KiB", "MiB"):
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"
    if unit == "":
        return f"{value:g}"
    return f"{value:.2f} {unit}"


def _fmt_delta(row):
    if row.delta is None:
        return "-"
    if row.compare == "ratio":
        return f"x{row.delta:.3f}"
    return ("+" if row.delta >= 0 else "") + _fmt(row.delta, row.unit)


def table(rows):
    head = ("scenario", "path", "direct", "proxy", "added/ratio", "target", "result")
    lines = [head]
    for r in rows:
        verdict = {True: "PASS", False: "FAIL", None: "-"}[r.passed]
        lines.append((f"{r.scenario}: {r.metric}", r.path, _fmt(r.direct, r.unit),
                      _fmt(r.proxy, r.unit), _fmt_delta(r), r.target or "-",
                      verdict + (f" ({r.note})" if r.note else "")))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=False)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine():
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0))}


def write_json(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def _split_frame(frame):
    """(function, file) from py-spy's raw frame `func (path/file.py:line)`."""
    name, _, where = frame.partition(" (")
    return name, where.rstrip(")").rsplit(":", 1)[0]


def _is_ours(path):
    return path == "wsgi.py" or path.endswith("/wsgi.py") and not path.endswith("pywsgi.py") \
        or path.startswith("proxy/") or "/proxy/" in path


def py_spy_top(raw_path, top=15):
    """Self and inclusive sample shares per function (line numbers merged) from py-spy's raw
    (collapsed) output; `ours_inclusive` keeps only functions in proxy/ and wsgi.py."""
    self_counts, incl, ours_incl, total = Counter(), Counter(), Counter(), 0
    for line in Path(raw_path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        total += count
        frames = [_split_frame(f) for f in stack.split(";")]
        name, path = frames[-1]
        self_counts[f"{name} ({path})"] += count
        seen = set()
        for name, path in frames:
            key = f"{name} ({path})"
            if key in seen:
                continue
            seen.add(key)
            incl[key] += count
            if _is_ours(path):
                ours_incl[key] += count

    def share(counter):
        return [(name, n, 100.0 * n / total) for name, n in counter.most_common(top)]

    return {"samples": total, "self": share(self_counts), "inclusive": share(incl),
            "ours_inclusive": share(ours_incl)}


def format_profile(path_name, prof):
    out = [f"py-spy {path_name}: {prof['samples']} samples (busy stacks only)"]
    for title, key in (("self time (any code)", "self"),
                       ("inclusive time in our code", "ours_inclusive")):
        out.append(f"  {title}:")
        for name, _n, share in prof[key]:
            out.append(f"    {share:5.1f}%  {name}")
    return "\n".join(out)
