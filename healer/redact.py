"""Secrets never reach logs, errors or the API: the one place passwords are masked.

Usage::

    redact_dsn("postgresql://u:secret@h/db")      # "postgresql://u:***@h/db"
    redact_data({"reason": "... password=x ..."}) # every string inside, recursively

Applied where text leaves the process or lands on disk: every log event
(``healer.logs``), heal reasons and timeline events (``healer.store``), what the
heal history API serves, config errors, readiness probe errors.
"""

from __future__ import annotations

import re
from typing import Any

# ``scheme://user:secret@host``; also cut short before the ``@`` (query text is kept to
# its first 200 characters): ``scheme://user:secr`` at the very end, unless all digits
# (``http://host:9090`` is a port). Lengths are bounded so that text full of ``x://u:``
# costs linear time, not quadratic.
_PASSWORD_IN_URL = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]{0,31}://[^:/@\s]{0,128}:)"
    r"(?P<secret>\S{0,256}@|(?!\d+\Z)[^@\s/]{1,256}\Z)",
    re.I,
)
# A password key: libpq/DSN (``password``, ``sslpassword``), ODBC (``pwd``), others.
_KEY = r"\b(?:ssl)?pass(?:word|wd|phrase)\b|\bpwd\b"
# A literal, possibly cut short at the end of the text: '' inside a SQL string (a DSN
# inside ``dblink_connect('...')``), SQL '...' with '' and E'\'' escapes, "...", and
# dollar quotes ($$...$$, $tag$...$tag$).
_LITERAL = (
    r"''(?:[^']|'(?!'))*(?:''|\Z)"
    r"|[Ee]?'(?:[^'\\]|\\(?:.|\Z)|'')*(?:'|\Z)"
    r"|\"(?:[^\"\\]|\\(?:.|\Z))*(?:\"|\Z)"
    r"|\$(?P<tag>\w{0,64})\$.*?(?:\$(?P=tag)\$|\Z)"
)
# ``password=x``, ``password => 'x'``, ``"password": "x"``, ``SET x.password TO x``: any
# value; ``PASSWORD 'x'`` (CREATE/ALTER ROLE, ENCRYPTED PASSWORD, FDW OPTIONS
# (password 'x')), ``set_config('x.password', 'x')``, ``PASSWORD('x')``: a literal only,
# so that prose such as "password reset" stays readable.
_PASSWORD_KV = re.compile(
    rf"(?P<head>(?:{_KEY})['\"]?(?:\s*(?:=>|:=|=|:|\bTO\b)\s*(?P<any>)|\s*[,(]\s*|\s+))"
    rf"(?P<value>{_LITERAL}|(?(any)[^\s'\",;)}}\]]+|(?!)))",
    re.I | re.S,
)
_HINTS = ("://", "=", "pass", "pwd")


def redact_dsn(text: str) -> str:
    """Hide passwords: in URLs (``postgresql://u:secret@h``), ``password=...`` pairs (also
    ``sslpassword``, ``pwd``, quoted keys, ``=>``, ``TO``) and SQL password literals
    (``CREATE ROLE ... PASSWORD 'x'``, ``E'x'``, ``$$x$$``), also when the text was cut
    inside the literal or the URL."""
    lowered = text.lower()
    if not any(h in lowered for h in _HINTS):  # the common case, cheaply
        return text
    text = _PASSWORD_IN_URL.sub(
        lambda m: m.group("head") + ("***@" if m.group("secret").endswith("@") else "***"), text
    )
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
