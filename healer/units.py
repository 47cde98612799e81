"""Durations and sizes as the config and handler params write them: a leaf module, so
that everything (config, the handler API, the CLI) can import it without a circle.

Usage::

    parse_duration("1h30m")   # 5400.0; also "250ms", "30s", or a number of seconds
    parse_size("512KiB")      # 524288
    class Params(HandlerParams):
        timeout: Duration = 30.0   # accepts "2m" as well as 120
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "KiB": 2**10,
    "MB": 10**6,
    "MiB": 2**20,
    "GB": 10**9,
    "GiB": 2**30,
}


# No duration in the config means more than a year; beyond this a value is a typo (or
# ``1e300``), and past it float seconds stop adding up to anything a timer can wait for.
MAX_DURATION = 366 * 86400.0


def parse_duration(value: Any) -> float:
    """``"1h30m"``, ``"30s"``, ``"250ms"`` (Prometheus style) or a number of seconds:
    finite, not negative, at most :data:`MAX_DURATION`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s' or '10m'")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration: it must be finite")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded_duration(float(value))
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a duration like '30s' or '10m'")
    text = value.strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 10m, 1h30m, 250ms)")
    return _bounded_duration(total)


def _bounded_duration(seconds: float) -> float:
    if not seconds <= MAX_DURATION:  # also catches inf from a huge "999...9d"
        raise ValueError(f"duration too long (at most {MAX_DURATION / 86400:g} days)")
    return seconds


def parse_size(value: Any) -> int:
    """``"1MiB"``, ``"512KiB"``, ``"2MB"`` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a size (use e.g. 1MiB, 512KiB, 1048576)")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written as a number or a Prometheus-style duration (``"2m"``, ``"1h30m"``)."""
ByteSize = Annotated[int, BeforeValidator(parse_size)]
"""Bytes, written as a number or with a unit (``"1MiB"``, ``"2MB"``)."""
