"""Request bodies as strict JSON: what every endpoint reads, and what the journal stores.

Usage::

    data = decode_json(body_bytes)   # raises PayloadError(message, status)

Python's ``json`` is lenient where it matters here: it guesses UTF-16/32 from the first
bytes, skips a UTF-8 byte order mark, decodes UTF-8-encoded surrogates, reads ``NaN``
and ``Infinity``, lets a repeated key win silently, and nests as deep as the stack
allows. The webhook stores the body as received and the journal's ``alert_log`` view
reads it with SQLite's JSON functions, so a body must be JSON that any parser reads the
same way. Accepted is exactly RFC 8259 JSON in UTF-8:

* not UTF-8 (UTF-16/32 with or without a BOM, invalid bytes), or a UTF-8 BOM: 400;
* not JSON, ``NaN``/``Infinity``, a number over Python's digit limit: 400;
* the same key twice in one object (anywhere: labels too): 422 naming the key, so what
  healer acts on and what the journal shows can never differ;
* nested deeper than :data:`MAX_DEPTH` (an Alertmanager payload is 4 deep): 422, so no
  code walking the data later (templating, redaction) can run out of stack.
"""

from __future__ import annotations

import codecs
import json
from itertools import chain, compress
from typing import Any

from healer.bounded import clip
from healer.config import format_loc
from healer.errors import PayloadError

MAX_DEPTH = 32
"""Levels of nested objects/arrays a body may have (the top-level object is 1)."""

_CONTAINERS = frozenset((dict, list))
_BOMS = (
    codecs.BOM_UTF8,
    codecs.BOM_UTF32_LE,
    codecs.BOM_UTF32_BE,
    codecs.BOM_UTF16_LE,
    codecs.BOM_UTF16_BE,
)


class _Refused(Exception):
    """Raised from inside the parser's hooks (not a ValueError: json would not wrap it)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {json.dumps(clip(key))} in a JSON object", 422)
            seen.add(key)
    return obj


def _no_constants(name: str) -> Any:
    raise _Refused(f"invalid JSON: {name} is not a JSON value", 400)


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether containers in ``data`` nest more than ``limit`` deep: level by level, the
    per-value work in C (this runs on every webhook body)."""
    level, depth = [data], 1
    while level:
        if depth > limit:
            return True
        values = chain.from_iterable(v.values() if type(v) is dict else v for v in level)
        flat = list(values)
        level = list(compress(flat, map(_CONTAINERS.__contains__, map(type, flat))))
        depth += 1
    return False


def _path_deeper_than(data: Any, limit: int) -> tuple[int | str, ...]:
    """The path to a container nested more than ``limit`` deep (one is known to exist)."""
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) >= limit:
            return path
        items = value.items() if type(value) is dict else enumerate(value)
        stack.extend((child, (*path, key)) for key, child in items if type(child) in _CONTAINERS)
    return ()


def _encoding_problem(body: bytes) -> str | None:
    if body.startswith(_BOMS):
        return "body must be UTF-8 JSON without a byte order mark"
    if b"\x00" in body:  # never in UTF-8 JSON (controls are escaped): UTF-16 or UTF-32
        return "body must be UTF-8 JSON (it holds NUL bytes: UTF-16 or UTF-32?)"
    return None


def decode_json(body: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """``body`` parsed as strict UTF-8 JSON (see the module docstring), else PayloadError."""
    problem = _encoding_problem(body)
    if problem is not None:
        raise PayloadError(problem, status=400)
    try:
        text = body.decode("utf-8")  # strict: no encoded surrogates, no invalid bytes
    except UnicodeDecodeError:
        raise PayloadError("body is not UTF-8 JSON", status=400) from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except _Refused as exc:
        raise PayloadError(exc.message, status=exc.status) from None
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", status=400
        ) from None
    except RecursionError:
        raise PayloadError("invalid JSON: nested too deeply", status=400) from None
    except ValueError:  # e.g. an integer literal over Python's 4300-digit limit
        raise PayloadError("invalid JSON: a number is too long", status=400) from None
    if type(data) in _CONTAINERS and _deeper_than(data, max_depth):
        where = clip(format_loc(_path_deeper_than(data, max_depth))) or "body"
        raise PayloadError(f"{where}: nested deeper than {max_depth} levels", status=422)
    return data
