"""Secrets never reach logs, errors or the API: the one place passwords are masked."""

from __future__ import annotations

import re

_PASSWORD_IN_URL = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", re.I)
_PASSWORD_KV = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact_dsn(text: str) -> str:
    """Hide passwords in URLs (``postgresql://u:secret@h``) and ``password=...`` pairs."""
    text = _PASSWORD_IN_URL.sub(lambda m: f"{m.group('head')}***@", text)
    return _PASSWORD_KV.sub(lambda m: f"{m.group('head')}***", text)
