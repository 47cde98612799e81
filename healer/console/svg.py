"""The verify samples of a heal as a small inline SVG chart (no script, no external file).

Usage::

    chart = verify_chart([{"at": 1.0, "data": {"healthy": False, "series": 1}}, ...])
    # Markup: <svg ...><circle class="sample unhealthy" .../>...</svg>

One point per sample: x is its time, y its value, the largest finite number among the
sample's ``values``, else its ``series`` count (for the alert's own ALERTS query, 1 while
the alert fires, 0 once it is gone). A sample with neither (Prometheus did not answer,
or values and series that are not numbers) is drawn as a mark on the axis. The colour says what the
sample meant: healthy, unhealthy, or unknown. Every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 600, 160, 24
_COLOURS = {True: "#2e7d32", False: "#c62828", None: "#757575"}
_STATE = {True: "healthy", False: "unhealthy", None: "unknown"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def sample_value(data: Mapping[str, Any]) -> float | None:
    """What a sample plots: its largest finite value, else its series count, else None
    (also when Prometheus did not answer: its zero series mean nothing)."""
    if data.get("healthy") not in (True, False):
        return None
    values = data.get("values")
    numbers = [n for n in map(_number, values if isinstance(values, list) else []) if n is not None]
    if numbers:
        return max(numbers)
    return _number(data.get("series"))


def _scale(value: float, low: float, high: float, out_low: float, out_high: float) -> float:
    if high == low:
        return (out_low + out_high) / 2
    return out_low + (value - low) * (out_high - out_low) / (high - low)


def verify_chart(samples: Sequence[Mapping[str, Any]]) -> Markup:
    """``samples``: timeline entries (``at``, ``data``) of kind ``verify_sample``."""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="verify samples">'
    )
    axis = (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'stroke="#9e9e9e" stroke-width="1"/>'
    )
    if not samples:
        return Markup(  # noqa: S704 - constant text and numbers only
            f"{head}<title>no verify samples</title>{axis}"
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#757575">'
            "no verify samples</text></svg>"
        )
    times = [float(s.get("at") or 0.0) for s in samples]
    values = [sample_value(s.get("data") or {}) for s in samples]
    known = [v for v in values if v is not None]
    low, high = min([0.0, *known]), max([0.0, *known])
    t0, t1 = min(times), max(times)
    points: list[tuple[float, float]] = []
    marks: list[str] = []
    for at, value, sample in zip(times, values, samples, strict=True):
        data = sample.get("data") or {}
        healthy = data.get("healthy") if data.get("healthy") in (True, False) else None
        x = _scale(at, t0, t1, PAD, WIDTH - PAD)
        y = HEIGHT - PAD if value is None else _scale(value, low, high, HEIGHT - PAD, PAD)
        if value is not None:
            points.append((x, y))
        shown = "no value" if value is None else f"{value:g}"
        error = f" ({data['error']})" if data.get("error") else ""
        tip = escape(f"+{at - t0:.1f}s: {_STATE[healthy]}, {shown}{error}")
        marks.append(
            f'<circle class="sample {_STATE[healthy]}" cx="{x:.1f}" cy="{y:.1f}" r="4" '
            f'fill="{_COLOURS[healthy]}"><title>{tip}</title></circle>'
        )
    line = ""
    if len(points) > 1:
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        line = f'<polyline points="{coords}" fill="none" stroke="#1565c0" stroke-width="1.5"/>'
    labels = (
        f'<text x="2" y="{PAD - 8}" font-size="10" fill="#616161">{high:g}</text>'
        f'<text x="2" y="{HEIGHT - PAD + 14}" font-size="10" fill="#616161">{low:g}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 4}" font-size="10" fill="#616161" '
        f'text-anchor="end">+{t1 - t0:.1f}s</text>'
    )
    title = escape(f"{len(samples)} verify samples")
    # Numbers, constants and escape()d text only: the one place this module makes markup.
    return Markup(f"{head}<title>{title}</title>{axis}{line}{''.join(marks)}{labels}</svg>")  # noqa: S704
