"""structlog set-up: JSON lines when stderr is not a terminal, readable text when it is.

Every event passes :func:`redact_secrets` last before rendering, so a DSN password
that reaches a log call (an exception text, a param, a library's message) is masked
whatever logged it. Standard-library logging (uvicorn, asyncio) is routed through the
same processors.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from healer.bounded import clip, map_strings
from healer.redact import redact_data

LOG_VALUE_LIMIT = 1000
"""Characters of any one string in a log event (a traceback: :data:`LOG_EXCEPTION_LIMIT`):
a label, an annotation or an error quoting one cannot make a line megabytes long."""
LOG_EXCEPTION_LIMIT = 16_000


def redact_secrets(logger: Any, method: str, event: MutableMapping[str, Any]
                   ) -> MutableMapping[str, Any]:
    """structlog processor: mask passwords in every value of the event, recursively
    (the message, exception text and nested data included)."""
    for key, value in event.items():
        event[key] = redact_data(value)
    return event


def clip_values(logger: Any, method: str, event: MutableMapping[str, Any]
                ) -> MutableMapping[str, Any]:
    """structlog processor: every string in the event (keys of nested data too) cut to a
    bounded length. Runs after :func:`redact_secrets`, so a cut never exposes a part of a
    password the whole would have masked."""
    for key, value in event.items():
        clipper = _clip_exception if key == "exception" else _clip_value
        event[key] = map_strings(value, clipper, keys=True)
    return event


def _clip_value(text: str) -> str:
    return clip(text, LOG_VALUE_LIMIT)


def _clip_exception(text: str) -> str:
    return clip(text, LOG_EXCEPTION_LIMIT)


def configure_logging(*, json: bool | None = None, level: str = "info") -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            clip_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # uvicorn's and asyncio's own records: same format, same redaction.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, redact_secrets, clip_values,
                    renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])
