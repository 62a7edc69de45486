"""Server-rendered SVG charts (pygal): no JavaScript, no CDN, cached briefly."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pygal
from pygal.style import Style

STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#7b8794",
    colors=("#2f6f9f", "#c0392b", "#e6a100", "#3e8e41"),
    font_family="DejaVu Sans, sans-serif",
    title_font_size=14,
    label_font_size=11,
    major_label_font_size=11,
)
CONFIG = {
    "style": STYLE,
    "js": [],  # pygal's default loads tooltips from a CDN: none here, the page works offline
    "width": 560,
    "height": 300,
    "show_legend": False,
    "truncate_label": -1,
    "x_label_rotation": 30,
}


def _int_ticks(values: list[int]) -> list[int]:
    top = max([*values, 1])
    step = max(1, -(-top // 6))
    return list(range(0, top + step, step))


_cache: dict[str, tuple[float, bytes]] = {}
TTL = 60.0


def cached(key: str, build: Callable[[], bytes]) -> bytes:
    hit = _cache.get(key)
    if hit and time.monotonic() - hit[0] < TTL:
        return hit[1]
    svg = build()
    _cache[key] = (time.monotonic(), svg)
    return svg


def clear() -> None:
    _cache.clear()


def bar(title: str, series: str, points: list[tuple[str, int]], y_title: str) -> bytes:
    chart = pygal.Bar(title=title, y_title=y_title, y_labels=_int_ticks([v for _, v in points]), **CONFIG)
    chart.x_labels = [label for label, _ in points]
    chart.add(series, [value for _, value in points])
    return chart.render()


def histogram(title: str, values: list[float], x_title: str) -> bytes:
    edges = [0, 1, 2, 3, 5, 7, 14, 30, 60]
    buckets = []
    for low, high in zip(edges, edges[1:] + [None], strict=False):
        count = sum(1 for v in values if v >= low and (high is None or v < high))
        buckets.append((count, low, high if high is not None else max([low + 30, *values])))
    chart = pygal.Histogram(
        title=title, x_title=x_title, y_title="decisions", y_labels=_int_ticks([b[0] for b in buckets]), **CONFIG
    )
    chart.add("approvals", buckets)
    if values:
        chart.title = f"{title} (median {statistics.median(values):.1f} d, n={len(values)})"
    return chart.render()
