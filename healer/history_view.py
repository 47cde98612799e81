"""Heal history as text for a terminal: ``healer heals`` prints :func:`heals_table`,
``healer heal ID`` prints :func:`heal_report`.

Everything shown comes from the API's JSON, so label values, evidence and reasons are
data from outside: :func:`printable` escapes control characters, so a label holding a
terminal escape sequence (``\\x1b]...``) shows as text instead of driving the terminal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

_WIDTH = 160  # a timeline line's details are cut to this many characters
_COLUMNS = ("ID", "CREATED (UTC)", "RULE", "OUTCOME", "TARGETS", "TOOK", "REASON")
_CELL = 40  # at most this many characters of a table cell (the reason: _WIDTH)


def printable(text: object) -> str:
    """``text`` with every control character (C0, DEL, C1: newlines and ESC included)
    written as a Python escape, so nothing from a label reaches the terminal raw."""
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
        for c in str(text)
    )


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds(value: float | None) -> str:
    """A duration as an operator reads it: ``850ms``, ``12.3s``, ``4m05s``, ``2h10m``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _state(heal: Mapping[str, Any]) -> str:
    outcome = heal.get("outcome")
    return str(outcome) if outcome else f"{heal['phase']} (running)"


def _took(heal: Mapping[str, Any]) -> str:
    finished = heal.get("finished_at")
    return seconds(finished - heal["created_at"]) if finished is not None else "-"


def heals_table(heals: Sequence[Mapping[str, Any]]) -> str:
    """One aligned row per heal, newest first as given, under a header line."""
    rows = [
        (
            str(h["id"]),
            when(h["created_at"]),
            _cut(printable(h.get("rule") or f"({h['handler']})"), _CELL),
            _state(h),
            _cut(printable(", ".join(h.get("targets") or []) or "-"), _CELL),
            _took(h),
            _cut(printable(h.get("reason") or ""), _WIDTH),
        )
        for h in heals
    ]
    widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in [_COLUMNS, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _rounded(value: object) -> object:
    """Floats to 3 decimals, in nested data too: ``0.212`` reads better than
    ``0.21199999982491136``."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _value(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(_rounded(value), separators=(",", ":"), ensure_ascii=False, default=str)


def details(data: Mapping[str, Any], width: int = _WIDTH) -> str:
    """A timeline entry's data as ``key=value`` pairs on one line, cut to ``width``."""
    return _cut(printable(" ".join(f"{k}={_value(v)}" for k, v in data.items())), width)


def heal_report(heal: Mapping[str, Any]) -> str:
    """One heal: what it was, how it ended, then its timeline one step per line with the
    time since the heal was created (match, check evidence, gates, action, every verify
    sample, outcome)."""
    rule = heal.get("rule")
    what = f"{rule} ({heal['handler']})" if rule else f"manual {heal['handler']}"
    head = [
        f"heal {heal['id']}: {_state(heal)}"
        + (f": {printable(heal['reason'])}" if heal.get("reason") else ""),
        f"  rule       {printable(what)}" + ("  [dry run]" if heal.get("dry_run") else ""),
        f"  source     {heal['source']}"
        + (f", alert started {heal['alert_starts_at']}" if heal.get("alert_starts_at") else ""),
        f"  targets    {printable(', '.join(heal.get('targets') or []) or '-')}",
        f"  labels     {details(heal.get('labels') or {})}",
        f"  created    {when(heal['created_at'])}"
        + (
            f"   finished {when(heal['finished_at'])} (took {_took(heal)})"
            if heal.get("finished_at") is not None
            else ""
        ),
    ]
    durations = heal.get("durations") or {}
    if durations:
        head.append("  durations  " + ", ".join(f"{k} {seconds(v)}" for k, v in durations.items()))
    if heal.get("owner"):
        head.append(f"  replica    {printable(heal['owner'])}")
    timeline = heal.get("timeline") or []
    if not timeline:
        return "\n".join([*head, "", "no timeline entries"])
    start = heal["created_at"]
    offsets = [f"+{seconds(max(0.0, e['at'] - start))}" for e in timeline]
    kinds = [printable(e["kind"]) for e in timeline]
    phases = [printable(e["phase"]) for e in timeline]
    w_off, w_phase, w_kind = (max(map(len, col)) for col in (offsets, phases, kinds))
    steps = [
        f"  {off.rjust(w_off)}  {phase.ljust(w_phase)}  {kind.ljust(w_kind)}  "
        f"{details(entry.get('data') or {})}".rstrip()
        for off, phase, kind, entry in zip(offsets, phases, kinds, timeline, strict=True)
    ]
    return "\n".join([*head, "", "timeline", *steps])
