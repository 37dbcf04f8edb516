"""Chart geometry for the stats page: numbers in, rectangles and labels out; the template draws them
as inline SVG (no script, works offline). Nothing here builds markup or touches the database.
"""
from __future__ import annotations

import math
import time
from typing import Any


def nice_max(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 5 x 10^n)."""
    if value <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def time_bars(series: list[dict[str, Any]], width: int = 900, height: int = 180) -> dict[str, Any]:
    """Requests per bucket as bars, errors as a darker bar inside each one."""
    left, bottom = 40, 20
    plot_w, plot_h = width - left - 10, height - bottom - 10
    top = nice_max(max((p["requests"] for p in series), default=0))
    n = max(1, len(series))
    step = plot_w / n
    bars = []
    for i, point in enumerate(series):
        h = plot_h * point["requests"] / top
        eh = plot_h * point["errors"] / top
        x = left + i * step
        label = time.strftime("%H:%M", time.gmtime(point["t"]))
        bars.append({"x": round(x, 2), "w": round(max(step - 1, 0.5), 2), "y": round(10 + plot_h - h, 2),
                     "h": round(h, 2), "ey": round(10 + plot_h - eh, 2), "eh": round(eh, 2),
                     "title": f"{label} UTC: {point['requests']} requests, {point['errors']} errors"})
    ticks = []
    every = max(1, n // 8)
    for i in range(0, n, every):
        ticks.append({"x": round(left + i * step, 2), "label": time.strftime("%H:%M", time.gmtime(series[i]["t"]))})
    grid = [{"y": round(10 + plot_h - plot_h * f, 2), "label": _short(top * f)} for f in (0, 0.5, 1)]
    return {"width": width, "height": height, "bars": bars, "ticks": ticks, "grid": grid, "left": left,
            "base": 10 + plot_h, "label_y": height - 4}


def hbars(items: list[tuple[str, float]], width: int = 600, row: int = 22) -> dict[str, Any]:
    """Horizontal bars, one per (label, value)."""
    label_w = 220
    plot_w = width - label_w - 80
    top = max((v for _, v in items), default=0) or 1
    rows = []
    for i, (label, value) in enumerate(items):
        rows.append({"y": i * row, "label": label if len(label) <= 32 else label[:31] + "…", "full": label,
                     "w": round(plot_w * value / top, 2), "value": _short(value), "ty": i * row + row * 0.7})
    return {"width": width, "height": max(row, row * len(items)), "rows": rows, "x": label_w,
            "row_h": row - 4}


def _short(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:g}" if value != int(value) else str(int(value))
