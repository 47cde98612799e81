"""Secrets never reach logs, errors or the API: the one place passwords are masked.

Usage::

    redact_dsn("postgresql://u:secret@h/db")      # "postgresql://u:***@h/db"
    redact_data({"reason": "... password=x ..."}) # every string inside, recursively

Applied where text leaves the process or lands on disk: every log event
(``healer.logs``), heal reasons and timeline events (``healer.journal``), what the
heal history API serves, config errors, readiness probe errors.
"""

from __future__ import annotations

import re
from typing import Any

_PASSWORD_IN_URL = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", re.I)
_PASSWORD_KV = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact_dsn(text: str) -> str:
    """Hide passwords in URLs (``postgresql://u:secret@h``) and ``password=...`` pairs."""
    if "@" not in text and "=" not in text:  # the common case, cheaply
        return text
    text = _PASSWORD_IN_URL.sub(lambda m: f"{m.group('head')}***@", text)
    return _PASSWORD_KV.sub(lambda m: f"{m.group('head')}***", text)


def redact_data(value: Any) -> Any:
    """``value`` with :func:`redact_dsn` applied to every string in it (dict keys too),
    through dicts, lists and tuples; anything else is returned as it is."""
    if isinstance(value, str):
        return redact_dsn(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_data(v) for v in value)
    return value
