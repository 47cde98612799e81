"""structlog set-up: JSON lines when stderr is not a terminal, readable text when it is.

Every event passes :func:`redact_secrets` last before rendering, so a DSN password
that reaches a log call (an exception text, a param, a library's message) is masked
whatever logged it. Standard-library logging (uvicorn, asyncio) is routed through the
same processors. :func:`rate_limit_records` keeps a repeated library message (an
accept loop out of file descriptors, a flood of malformed requests) to one line per
interval.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import structlog

from healer.bounded import clip, map_strings
from healer.redact import redact_data

LOG_VALUE_LIMIT = 1000
"""Characters of any one string in a log event (a traceback: :data:`LOG_EXCEPTION_LIMIT`):
a label, an annotation or an error quoting one cannot make a line megabytes long."""
LOG_EXCEPTION_LIMIT = 16_000


def redact_secrets(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask passwords in every value of the event, recursively
    (the message, exception text and nested data included)."""
    for key, value in event.items():
        event[key] = redact_data(value)
    return event


def clip_values(
    logger: Any, method: str, event: MutableMapping[str, Any]
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
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
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
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # uvicorn's and asyncio's own records: same format, same redaction.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_secrets,
                clip_values,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])


class RateLimitFilter(logging.Filter):
    """Passes a message (logger and format string) at most once per ``every`` seconds;
    the next one that passes says how many were left out meanwhile."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self._clock = clock
        self._state: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (passed at, left out)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        passed_at, left_out = self._state.get(key, (-self.every, 0))
        if now - passed_at < self.every:
            self._state[key] = (passed_at, left_out + 1)
            return False
        self._state[key] = (now, 0)
        if left_out:
            record.msg = (
                f"{record.getMessage()} ({left_out} more like this in the last "
                f"{now - passed_at:.0f}s, not logged)"
            )
            record.args = None
        return True


def rate_limit_records(loggers: Iterable[str], *, every: float) -> None:
    """Put one :class:`RateLimitFilter` on each of ``loggers`` (once, however often called)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(RateLimitFilter(every))
