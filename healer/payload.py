"""Alertmanager's webhook payload (version "4"), parsed at the edge.

Usage::

    message = parse_webhook(body_bytes)     # raises PayloadError(status, message)
    for model in message.alerts:            # AlertModel: the validated wire form
        alert = model.to_alert()            # healer.api.Alert, what handlers see

Errors name the offending field, e.g. ``alerts[3].labels.team: Input should be a
valid string``, so whoever wired Alertmanager (or a script) sees what to fix.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    ValidationInfo,
)

from healer.api import Alert
from healer.bounded import clip
from healer.config import format_loc
from healer.errors import PayloadError
from healer.strictjson import decode_json

# Go's zero time: Alertmanager sends it as endsAt for alerts that have not resolved.
_ZERO_TIME_YEAR = 1


_NO_SURROGATES = {"no_surrogates": True}


def _may_hold_surrogates(body: bytes) -> bool:
    """False when ``body`` cannot decode to a lone surrogate: no \\uD800-\\uDFFF escape in
    it (strict UTF-8 decoding, healer.strictjson, already refused encoded ones)."""
    at = body.find(b"\\u")
    while at >= 0:  # Go's encoder writes \u0026 for "&": escapes are common, surrogates not
        if body[at + 2 : at + 3] in (b"d", b"D") and body[at + 3 : at + 4] in b"89abcdefABCDEF":
            return True
        at = body.find(b"\\u", at + 2)
    return False


def _unicode(value: str, info: ValidationInfo) -> str:
    # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 store (the journal,
    # a log line) can hold: refuse them here, naming the field, not later as a 500.
    # Skipped (it runs for every string) when the whole body was found free of them.
    if info.context is _NO_SURROGATES:
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (a lone surrogate escape)") from None
    return value


def _utc(value: datetime) -> datetime:
    # A time without an offset is taken as UTC (Alertmanager always sends one), so an
    # alert's identity never depends on the server's time zone. Times whose UTC value
    # falls outside years 1-9999 cannot be stored.
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None


Text = Annotated[StrictStr, AfterValidator(_unicode)]
"""A string from outside: strict (no numbers coerced) and storable as UTF-8."""
LabelName = Annotated[StrictStr, Field(min_length=1), AfterValidator(_unicode)]
"""A label name: any non-empty UTF-8 string, as Prometheus 3 allows (names outside the
classic ``[a-zA-Z_][a-zA-Z0-9_]*`` are quoted where healer writes PromQL,
healer.verify.alerts_query)."""
UtcTime = Annotated[datetime, AfterValidator(_utc)]


class AlertModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[LabelName, Text]
    annotations: dict[Text, Text] = Field(default_factory=dict)
    startsAt: UtcTime
    endsAt: UtcTime | None = None
    generatorURL: Text = ""
    fingerprint: StrictStr = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z]+$")

    # The journal reads a parsed alert through these (healer.store.ReceivedAlert), so a
    # webhook's alerts need no copy; only those that start a heal become an Alert.
    @property
    def starts_at(self) -> datetime:
        return self.startsAt

    @property
    def ends_at(self) -> datetime | None:
        return self.endsAt if self.endsAt and self.endsAt.year > _ZERO_TIME_YEAR else None

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def to_alert(self) -> Alert:
        return Alert(
            fingerprint=self.fingerprint,
            status=self.status,
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            starts_at=self.startsAt,
            ends_at=self.ends_at,
            generator_url=self.generatorURL,
        )


class WebhookMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: Text = ""
    groupKey: Text = ""
    truncatedAlerts: int = 0
    alerts: list[AlertModel]


def pydantic_message(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = format_loc(tuple(err["loc"])) or "body"  # a key in it may be a huge label name
        parts.append(f"{clip(loc)}: {clip(err['msg'])}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def parse_webhook(body: bytes) -> WebhookMessage:
    data = decode_json(body)
    if not isinstance(data, dict):
        raise PayloadError("body must be a JSON object (Alertmanager webhook payload)")
    version = data.get("version")
    if version != "4":
        raise PayloadError(
            f'version: healer speaks Alertmanager webhook version "4", '
            f"got {clip(json.dumps(version))}"
        )
    context = None if _may_hold_surrogates(body) else _NO_SURROGATES
    try:
        return WebhookMessage.model_validate(data, context=context)
    except ValidationError as exc:
        raise PayloadError(pydantic_message(exc)) from None
