"""Durations as people read them in reasons, logs and API answers."""

from __future__ import annotations


def format_seconds(seconds: float) -> str:
    """``90`` -> ``1m30s``; ``0.4`` -> ``0.4s``; ``7200`` -> ``2h``."""
    if seconds < 10 and seconds != int(seconds):
        return f"{max(seconds, 0):.1f}s"
    total = round(seconds)
    if total <= 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            out += f"{total // size}{unit}"
            total %= size
    return out
