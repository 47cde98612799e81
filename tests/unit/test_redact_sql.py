"""Passwords in SQL text and DSNs are masked by the one redaction every journaled or
served string passes through, also when the text was cut inside the secret (issue 12,
Medium 4). The integration test with real pg_stat_activity evidence is
tests/integration/test_postgres_redaction.py."""

from __future__ import annotations

import pytest

from healer.redact import redact_data, redact_dsn
from tests.support.inprocess.sql_secrets import SECRET, SQL_FORMS, leaks


@pytest.mark.parametrize("form", SQL_FORMS)
def test_no_sql_form_leaks_the_password_whole_or_cut_anywhere(form: str) -> None:
    """For each form, the whole statement and every prefix of it (the 200-character cut
    of pg_stat_activity can fall anywhere, e.g. ``PASSWORD 'Qx7V`` without its closing
    quote) is redacted so that no 4 characters of the secret remain."""
    sql = form.format(S=SECRET)
    start = sql.index(SECRET)
    for end in range(start + 4, len(sql) + 1):
        out = redact_dsn(sql[:end])
        assert not leaks(out), (end, out)
    # Idempotent, and the same inside nested data (what journal and API apply).
    assert redact_dsn(redact_dsn(sql)) == redact_dsn(sql)
    assert not leaks(repr(redact_data({"evidence": [{"query": sql}], sql: (sql,)})))


@pytest.mark.parametrize(
    "text",
    [
        "password reset requested for bob",
        "http://127.0.0.1:9090",
        "http://h:9090/metrics",
        "password_file=/run/secrets/pw",
        "SELECT 1",
        "the passwords table",
        "a=b c=d",
    ],
)
def test_text_without_a_password_is_left_alone(text: str) -> None:
    """Prose about passwords, ports in URLs, *_file keys and plain pairs are unchanged."""
    assert redact_dsn(text) == text


def test_redaction_stays_linear_on_hostile_text() -> None:
    """Thousands of ``password $$`` / ``password '`` openers or ``x://u:`` URL heads (a
    hostile label echoed into a log) cost one pass, not quadratic time: an unterminated
    literal runs to the end, URL parts have bounded lengths; so 100-200 KB inputs finish
    (no time is asserted: quadratic would take minutes here)."""
    for unit in ("password $$ ", "password ' ", "password='' ", "pwd=''''"):
        assert "***" in redact_dsn(unit * 20000)
    for unit in ("x://u:", "ab://" + "u" * 100 + ":", "x://x://:"):
        assert redact_dsn(unit * 20000) == unit * 20000
