"""Echoing outside input, bounded: an error answer or a log line quotes at most a few
hundred characters of what a client sent, never the whole (possibly megabyte) value.

Usage::

    clip("x" * 500_000)                       # 200 x's, then "...[499800 more chars]"
    map_strings({"a": ["y" * 5000]}, clip)    # fn applied to every string inside
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ECHO_LIMIT = 200
"""Characters of an input value an error message quotes."""


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` cut to ``limit`` characters plus a marker saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more chars]"


def map_strings(value: Any, fn: Callable[[str], str], *, keys: bool = False) -> Any:
    """``value`` with ``fn`` applied to every string in it (dict keys too when ``keys``),
    through dicts, lists and tuples; anything else is returned as it is. Recursive: for
    structures whose depth was bounded where they entered (healer.strictjson)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {
            (fn(k) if keys and isinstance(k, str) else k): map_strings(v, fn, keys=keys)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [map_strings(v, fn, keys=keys) for v in value]
    if isinstance(value, tuple):
        return tuple(map_strings(v, fn, keys=keys) for v in value)
    return value
