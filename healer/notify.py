"""Telling a human: escalations (and heal notices, healer/notices.py) to Mattermost, Slack
or any JSON webhook.

Usage::

    notifiers = Notifiers.from_config(config.notify, secrets.notify_urls, http)
    deliveries = await notifiers.send(escalation)      # never raises
    deliveries = await notifiers.send_rendered(lambda n: body_for(n.kind))  # any message
    [d.as_dict() for d in deliveries]                  # -> the heal's timeline

A notifier's URL carries its credential (the hook key in a Mattermost or Slack incoming
webhook URL), so it is never logged, journaled or returned by the API: deliveries name
the notifier (``mattermost[0]`` or its configured ``name``), and error texts are redacted.
While the app runs, a filter on the ``httpx`` logger masks the URLs in httpx's own
request log lines.

Each delivery tries ``1 + retries`` times, ``timeout`` per attempt, waiting ``backoff``,
then twice that, ... between attempts; it retries on network errors, timeouts, 5xx and
429, not on other 4xx (a wrong URL stays wrong). A notifier that fails is recorded as
failed: it never fails the heal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx

import healer
from healer.config import NotifierConfig
from healer.timefmt import format_seconds

_MAX_BACKOFF = 30.0
_LABEL_MAX = 200


@dataclass(frozen=True, slots=True)
class Escalation:
    """What a human needs to decide what to do: a circuit that opened (``circuit_open``),
    or a heal that ended not_recovered while its alert still fires (``not_recovered``,
    healer/followup.py; ``opened_at`` is then when the heal ended), or a heal that asked
    for approval and nobody answered within ``approval.timeout`` (``approval_expired``;
    ``opened_at``: when it expired)."""

    rule: str
    target: str
    heal_id: str
    reason: str
    opened_at: float
    labels: Mapping[str, str] = field(default_factory=dict)
    quiet: float = 0.0
    event: Literal["circuit_open", "not_recovered", "approval_expired"] = "circuit_open"

    @property
    def close_command(self) -> str:
        return f"healer circuit-close {self.rule} --target {self.target}"

    def as_json(self) -> dict[str, Any]:
        out = {
            "event": self.event,
            "rule": self.rule,
            "target": self.target,
            "heal_id": self.heal_id,
            "heal_url": f"/api/v1/heals/{self.heal_id}",
            "reason": self.reason,
            "labels": dict(self.labels),
            "healer_version": healer.__version__,
        }
        if self.event in ("not_recovered", "approval_expired"):
            return out | {"ended_at": self.opened_at}
        return out | {
            "opened_at": self.opened_at,
            "close": {
                "api": f"DELETE /api/v1/circuits/{self.rule}?target={self.target}",
                "cli": self.close_command,
                "quiet_seconds": self.quiet,
            },
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    notifier: str
    kind: str
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(value: str, *, slack: bool) -> str:
    """A label value inside a code span: no backticks, no newlines, no Slack control
    sequences (``<!channel>``), bounded; so an alert cannot format or ping."""
    value = value.replace("`", "'").replace("\r", " ").replace("\n", " ")[:_LABEL_MAX]
    if slack:
        value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"`{value}`" if value else "``"


def chat_text(esc: Escalation, *, slack: bool = False) -> str:
    bold = "*" if slack else "**"
    labels = ", ".join(
        f"{_clean(k, slack=slack)}={_clean(v, slack=slack)}" for k, v in sorted(esc.labels.items())
    )
    expired = [
        f"{bold}healer escalation{bold}: rule {_clean(esc.rule, slack=slack)} asked for approval"
        f" to act on {_clean(esc.target, slack=slack)} and nobody answered",
        _clean(esc.reason, slack=slack),
        "The heal ended expired without acting: a human has to look.",
        f"Heal: `{esc.heal_id}` (GET /api/v1/heals/{esc.heal_id})",
    ]
    lines = (
        expired
        if esc.event == "approval_expired"
        else [
            f"{bold}healer escalation{bold}: rule {_clean(esc.rule, slack=slack)} did not recover"
            f" {_clean(esc.target, slack=slack)}",
            _clean(esc.reason, slack=slack),
            "The alert still fires and healer will not act on it again (on_not_recovered: "
            "escalate): a human has to look.",
            f"Heal: `{esc.heal_id}` (GET /api/v1/heals/{esc.heal_id})",
        ]
        if esc.event == "not_recovered"
        else [
            f"{bold}healer escalation{bold}: circuit open for rule {_clean(esc.rule, slack=slack)}"
            f" on {_clean(esc.target, slack=slack)}",
            esc.reason,
            "healer will not act on this target for this rule until a human closes the circuit "
            f"(`{esc.close_command}`) or no new alert comes for {format_seconds(esc.quiet)}.",
            f"Heal: `{esc.heal_id}` (GET /api/v1/heals/{esc.heal_id})",
        ]
    )
    if labels:
        lines.append(f"Alert labels: {labels}")
    return "\n".join(lines)


def redact(text: str, url: str) -> str:
    """``text`` with the URL, and its path and query on their own, masked."""
    parts = [url]
    with contextlib.suppress(Exception):  # an unparsable URL is masked whole, as above
        parsed = httpx.URL(url)
        parts += [
            p
            for p in (
                parsed.raw_path.decode(errors="replace"),
                parsed.path,
                parsed.query.decode(errors="replace"),
            )
            if len(p) > 1
        ]
    for part in sorted(parts, key=len, reverse=True):
        text = text.replace(part, "***")
    return text


class Notifier:
    """One configured destination."""

    def __init__(self, config: NotifierConfig, url: str, index: int) -> None:
        self.kind = config.kind
        self.name = config.name or f"{config.kind}[{index}]"
        self._url = url
        self._timeout = config.timeout
        self._attempts = 1 + config.retries
        self._backoff = config.backoff

    def __repr__(self) -> str:
        return f"Notifier({self.name!r})"

    @property
    def url(self) -> str:
        return self._url

    def body(self, esc: Escalation) -> dict[str, Any]:
        if self.kind == "mattermost":
            return {"text": chat_text(esc)}
        if self.kind == "slack":
            text = chat_text(esc, slack=True)
            return {
                "text": text,
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
            }
        return esc.as_json()

    async def send(
        self,
        http: httpx.AsyncClient,
        esc: Escalation,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> Delivery:
        return await self.post(http, self.body(esc), sleep)

    async def post(
        self,
        http: httpx.AsyncClient,
        body: Mapping[str, Any],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> Delivery:
        """POST ``body`` (already rendered for this notifier's kind), with the retries."""
        status: int | None = None
        error: str | None = None
        for attempt in range(1, self._attempts + 1):
            if attempt > 1:
                await sleep(min(self._backoff * 2 ** (attempt - 2), _MAX_BACKOFF))
            try:
                resp = await http.post(self._url, json=body, timeout=self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network error, timeout, ...: retry
                status, error = None, redact(f"{type(exc).__name__}: {exc}", self._url)[:300]
                continue
            status = resp.status_code
            if resp.is_success:
                return Delivery(self.name, self.kind, True, attempt, status)
            error = f"HTTP {status}"
            if status != 429 and status < 500:
                return Delivery(self.name, self.kind, False, attempt, status, error)
        return Delivery(self.name, self.kind, False, self._attempts, status, error)


class _MaskUrls(logging.Filter):
    def __init__(self, urls: Sequence[str]) -> None:
        super().__init__()
        self._urls = list(urls)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for url in self._urls:
            masked = redact(masked, url)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class Notifiers:
    """Every configured notifier, sent to at once."""

    def __init__(self, notifiers: Sequence[Notifier], http: httpx.AsyncClient) -> None:
        self._notifiers = list(notifiers)
        self._http = http
        self._filter = _MaskUrls([n.url for n in self._notifiers])
        self._log = logging.getLogger("httpx")

    @classmethod
    def from_config(
        cls, configs: Sequence[NotifierConfig], urls: Sequence[str], http: httpx.AsyncClient
    ) -> Notifiers:
        if len(configs) != len(urls):
            raise ValueError(f"{len(configs)} notifiers configured, {len(urls)} URLs resolved")
        return cls(
            [Notifier(c, u, i) for i, (c, u) in enumerate(zip(configs, urls, strict=True))], http
        )

    def __len__(self) -> int:
        return len(self._notifiers)

    @property
    def names(self) -> list[str]:
        return [n.name for n in self._notifiers]

    def open(self) -> None:
        """Mask the URLs in httpx's request log lines while the app runs."""
        if self._notifiers:
            self._log.addFilter(self._filter)

    def close(self) -> None:
        self._log.removeFilter(self._filter)

    async def send(self, esc: Escalation) -> list[Delivery]:
        return await self.send_rendered(lambda n: n.body(esc))

    async def send_rendered(
        self, render: Callable[[Notifier], Mapping[str, Any]]
    ) -> list[Delivery]:
        """Send what ``render`` makes of a message for each notifier (its kind's format)."""
        results = await asyncio.gather(*(self._safe_send(n, render) for n in self._notifiers))
        return list(results)

    async def _safe_send(
        self, notifier: Notifier, render: Callable[[Notifier], Mapping[str, Any]]
    ) -> Delivery:
        try:
            return await notifier.post(self._http, render(notifier))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in one notifier never fails the heal or the others
            return Delivery(
                notifier.name,
                notifier.kind,
                False,
                0,
                error=redact(f"{type(exc).__name__}: {exc}", notifier.url)[:300],
            )
