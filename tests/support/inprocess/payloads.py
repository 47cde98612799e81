"""Alertmanager webhook bodies (version 4), as Alertmanager sends them: the one builder
that tests, benchmarks and scripts share.

    alert(name, labels, status=, starts_at=, fingerprint=, ...)   one alert of a group
    payload(*alerts, status=, receiver=, group_key=, ...)          the group's POST body
    alert_payload(labels, fingerprint=, status=, starts_at=)       a body with one alert

Tests that deliberately send hostile or odd bodies still build them by hand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

NOT_ENDED = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert
STARTS_AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def iso(epoch: float) -> str:
    """Alertmanager's RFC 3339 form of a Unix time, milliseconds kept."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def fingerprint_of(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit fingerprint derived from the label set (as Alertmanager's is)."""
    return hashlib.sha256(json.dumps(dict(labels), sort_keys=True).encode()).hexdigest()[:16]


def alert(
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    *,
    status: str = "firing",
    starts_at: str | datetime = STARTS_AT,
    ends_at: str = NOT_ENDED,
    fingerprint: str | None = None,
    annotations: Mapping[str, str] | None = None,
    generator_url: str = "",
) -> dict[str, Any]:
    """One alert of a webhook group: ``labels`` (with ``alertname=name`` first when ``name``
    is given); the fingerprint is derived from the labels unless given."""
    all_labels = {**({"alertname": name} if name is not None else {}), **(labels or {})}
    return {
        "status": status,
        "labels": all_labels,
        "annotations": dict(annotations or {}),
        "startsAt": starts_at.isoformat() if isinstance(starts_at, datetime) else starts_at,
        "endsAt": ends_at,
        "generatorURL": generator_url,
        "fingerprint": fingerprint if fingerprint is not None else fingerprint_of(all_labels),
    }


def payload(
    *alerts: dict[str, Any],
    status: str = "firing",
    receiver: str = "healer",
    group_key: str = "{}:{}",
    group_labels: Mapping[str, str] | None = None,
    common_labels: Mapping[str, str] | None = None,
    common_annotations: Mapping[str, str] | None = None,
    external_url: str = "http://127.0.0.1:9093",
) -> dict[str, Any]:
    """The body Alertmanager POSTs for one group of ``alerts``."""
    return {
        "version": "4",
        "status": status,
        "receiver": receiver,
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "groupLabels": dict(group_labels or {}),
        "commonLabels": dict(common_labels or {}),
        "commonAnnotations": dict(common_annotations or {}),
        "externalURL": external_url,
        "alerts": list(alerts),
    }


def alert_payload(
    labels: dict[str, str],
    *,
    fingerprint: str = "0123456789abcdef",
    status: str = "firing",
    starts_at: datetime | None = None,
) -> dict[str, Any]:
    """A body with one alert carrying ``labels`` (also its group's common labels)."""
    one = alert(
        labels=labels, status=status, starts_at=starts_at or STARTS_AT, fingerprint=fingerprint
    )
    return payload(one, status=status, common_labels=labels)
