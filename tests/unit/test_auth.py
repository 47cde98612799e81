"""Webhook authentication (healer/http/auth.py) in-process: Alertmanager's bearer token
and basic auth get in, anything else is 401 and counted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from healer.config import Secrets
from tests.support.inprocess.inproc import InProcessHealer, Start
from tests.support.inprocess.inproc import web_alert as alert
from tests.support.inprocess.payloads import payload as group


@pytest.fixture
async def token_healer(start: Start) -> AsyncIterator[InProcessHealer]:
    async with start(Secrets(webhook_token="wh-s3cret")) as h:
        yield h


async def test_the_right_bearer_token_is_accepted(token_healer: InProcessHealer) -> None:
    """Alertmanager's ``authorization`` credentials get in."""
    resp = await token_healer.post(group(alert()), headers={"Authorization": "Bearer wh-s3cret"})
    assert resp.status_code == 200
    assert len(resp.json()["started"]) == 1


async def test_basic_auth_is_accepted(start: Start) -> None:
    """Alertmanager's ``basic_auth`` works; a wrong password is 401."""
    async with start(Secrets(webhook_basic=("am", "pw"))) as h:
        assert (await h.post(group(alert()), auth=("am", "pw"))).status_code == 200
        assert (await h.post(group(alert()), auth=("am", "wrong"))).status_code == 401
        assert (await h.post(group(alert()), auth=("root", "pw"))).status_code == 401


async def test_auth_failures_are_counted(token_healer: InProcessHealer) -> None:
    """healer_webhook_requests_total counts 401s like any other answer."""
    await token_healer.post(group(alert()))
    assert (
        token_healer.registry.get_sample_value("healer_webhook_requests_total", {"code": "401"})
        == 1
    )
