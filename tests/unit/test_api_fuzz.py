"""The whole HTTP API fuzzed from its own OpenAPI document with schemathesis, in-process
(ASGI) against the real app factory: a tmp journal, the ``test.noop`` handler, and a
webhook and an admin token set (each request carries the right one, so the fuzzer gets
past authentication; tests/unit/test_hostile_input.py covers the auth failures).

What must hold for every generated request, valid or not:

* no 5xx: the one exception is ``/health/ready`` answering 503, which is its documented
  answer while a dependency is down (in-process, nothing listens at Prometheus);
* answers conform to the document (status codes, content types, response schemas);
* a refused request (any 4xx) journals nothing;
* nothing acts: the only rule matching fuzzed alerts is a dry-run rule, so check may run
  on fuzzed labels but the handler's ``act`` is never called, and no heal crashes.

Derandomized, with a bounded number of examples per operation, so CI is stable.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from healer.config import Secrets
from healer.plugins import HandlerRegistry
from tests.support.inprocess.inproc import healer_app, web_config

WEBHOOK_TOKEN = "fuzz-webhook-token"
ADMIN_TOKEN = "fuzz-admin-token"
EXAMPLES = 60


def fuzz_config(tmp_path: Path) -> dict[str, Any]:
    """``web_config`` (Prometheus on port 9, nobody there) with the fuzz rules."""
    return {
        **web_config(tmp_path, 9),
        # Every fuzzed firing alert matches a rule, so it reaches templating, the params
        # model and check; both rules are dry-run, so nothing may ever act.
        "rules": [
            {
                "name": "fuzz-templated",
                "match": 'instance=~".+"',
                "handler": "test.noop",
                "params": {"target": "{{ labels.instance }}"},
                "dry_run": True,
            },
            {
                "name": "fuzz-any",
                "match": 'alertname=~".*"',
                "handler": "test.noop",
                "params": {"target": "web-fuzz"},
                "dry_run": True,
            },
        ],
    }


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


# Every operation of the document; test_every_operation_is_fuzzed keeps this complete.
OPERATIONS = [
    ("POST", "/api/v1/alerts"),
    ("POST", "/api/v1/heals"),
    ("GET", "/api/v1/heals"),
    ("GET", "/api/v1/heals/{heal_id}"),
    ("POST", "/api/v1/heals/{heal_id}/approve"),
    ("POST", "/api/v1/heals/{heal_id}/reject"),
    ("GET", "/health"),
    ("GET", "/health/ready"),
    ("POST", "/api/v1/pause"),
    ("GET", "/api/v1/pause"),
    ("DELETE", "/api/v1/pause"),
    ("GET", "/api/v1/circuits"),
    ("DELETE", "/api/v1/circuits/{rule}"),
    ("POST", "/api/v1/integrations/slack"),
    ("POST", "/api/v1/integrations/mattermost"),
]


# Operations whose every request is schema-valid: nothing to generate in negative mode.
NO_INPUT = {
    ("GET", "/health"),
    ("GET", "/health/ready"),
    ("GET", "/api/v1/heals/{heal_id}"),
    ("GET", "/api/v1/pause"),
    ("DELETE", "/api/v1/pause"),
    ("GET", "/api/v1/circuits"),
}


@pytest.fixture
def api_schema(tmp_path: Path, handlers: HandlerRegistry, noop: Any) -> Iterator[Any]:
    """The app's own OpenAPI document, loaded from the app (which starts its lifespan on
    schemathesis' event-loop thread)."""
    app = healer_app(
        fuzz_config(tmp_path),
        handlers=handlers,
        secrets=Secrets(webhook_token=WEBHOOK_TOKEN, admin_token=ADMIN_TOKEN),
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # A schema-violating body may also be too big for its endpoint's size limit: 413 is
    # a rejection as good as 422 (the generated examples depend on the whole schema, so
    # a new route elsewhere can make one of them big).
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    try:
        yield schema
    finally:
        asgi.shutdown_lifespans()  # lets running heals finish, closes the journal
    # Whatever the fuzzed requests started must not have acted or crashed.
    assert noop.acts == []
    with sqlite3.connect(tmp_path / "journal.db") as db:
        crashed = db.execute("SELECT id, reason FROM heals WHERE outcome = 'failed'").fetchall()
    assert crashed == []


def _stored(path: Path) -> tuple[int, int]:
    """(alert receipts, heals) in the journal, read through a connection of our own."""
    if not path.exists():
        return 0, 0
    with sqlite3.connect(path) as db:
        receipts = db.execute("SELECT COALESCE(SUM(times_seen), 0) FROM alerts").fetchone()[0]
        heals = db.execute("SELECT COUNT(*) FROM heals").fetchone()[0]
    return int(receipts), int(heals)


def _no_server_error_but_readiness(ctx: Any, response: Any, case: Case) -> bool | None:
    """not_a_server_error, except /health/ready's documented 503 (Prometheus is down)."""
    if case.operation.path == "/health/ready" and response.status_code == 503:
        return None
    return not_a_server_error(ctx, response, case)


RUNS = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or (method, path) not in NO_INPUT
]


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    RUNS,
    ids=[f"{m} {p} {'valid' if g is GenerationMode.POSITIVE else 'invalid'}" for m, p, g in RUNS],
)
def test_the_api_survives_its_own_schema(
    api_schema: Any, tmp_path: Path, method: str, path: str, mode: GenerationMode
) -> None:
    """Every generated request (schema-valid, then schema-violating) gets a conforming,
    non-5xx answer, and a refused one journals nothing (see the module docstring)."""
    operation = api_schema[path][method]
    token = WEBHOOK_TOKEN if path == "/api/v1/alerts" else ADMIN_TOKEN
    journal = tmp_path / "journal.db"

    excluded = [not_a_server_error]
    if (method, path) in {
        ("POST", "/api/v1/heals"),
        ("POST", "/api/v1/pause"),
        ("POST", "/api/v1/heals/{heal_id}/approve"),
        ("POST", "/api/v1/heals/{heal_id}/reject"),
    }:
        # A schema-valid trigger may still name an unknown handler, labels its rule does
        # not accept or params its handler refuses; a schema-valid pause may be longer
        # than safety.max_pause; a schema-valid decision names a heal that never asked
        # (404): answers no static schema can foresee.
        excluded.append(positive_data_acceptance)

    @settings(
        derandomize=True,
        deadline=None,
        database=None,
        max_examples=EXAMPLES,
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(mode))
    def fuzz(case: Case) -> None:
        before = _stored(journal)
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        case.validate_response(
            response, excluded_checks=excluded, additional_checks=[_no_server_error_but_readiness]
        )
        if 400 <= response.status_code < 500:
            assert _stored(journal) == before, response.text

    fuzz()


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    """A new endpoint joins OPERATIONS, or this fails."""
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)
