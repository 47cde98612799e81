"""Passwords as they reach PostgreSQL query text, DSNs and URLs: one table shared by the
redaction unit test and the pg_stat_activity integration test."""

from __future__ import annotations

SECRET = "Qx7Vw9Zk2Lm4Np6R"

# Every way a password reaches query text (or a DSN) that we know of; {S} is the secret.
SQL_FORMS = [
    "CREATE USER hx_u PASSWORD '{S}'",
    "CREATE USER hx_u WITH LOGIN PASSWORD '{S}' VALID UNTIL 'infinity'",
    "create role hx_u with login encrypted password '{S}'",
    "ALTER ROLE hx_nx UNENCRYPTED PASSWORD '{S}'",
    "ALTER USER hx_nx WITH PASSWORD E'{S}\\'x'",
    "ALTER USER hx_nx PASSWORD 'it''s{S}'",
    "ALTER USER hx_nx PASSWORD $${S}$$",
    "ALTER USER hx_nx PASSWORD $pw${S}$pw$",
    "ALTER USER hx_nx\n  PASSWORD\n  '{S}'",
    "ALTER USER hx_nx PASSWORD 'SCRAM-SHA-256$4096:{S}'",
    "SELECT dblink_connect('c', 'host=127.0.0.1 password={S} dbname=x')",
    "SELECT dblink_connect('c', 'host=127.0.0.1 password=''{S} x'' dbname=x')",
    "SELECT dblink('hostaddr=127.0.0.1 PASSWORD = {S}', 'SELECT 1')",
    "CREATE SUBSCRIPTION s CONNECTION 'host=h user=u sslpassword={S}' PUBLICATION p",
    "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'h', password '{S}')",
    "CREATE USER MAPPING FOR public SERVER s OPTIONS (user 'u', password '{S}')",
    "ALTER USER MAPPING FOR public SERVER s OPTIONS (SET password '{S}')",
    "SELECT 'postgresql://bob:{S}@db.internal:5432/x'",
    "SELECT 'postgres://bob:{S}@db.internal/x?sslmode=require'",
    "SET myapp.password = '{S}'",
    "SET myapp.password TO '{S}'",
    "SET myapp.password TO {S}",
    "SELECT set_config('myapp.password', '{S}', false)",
    'SELECT \'{{"password": "{S}"}}\'::jsonb',
    "SELECT 'Driver=pg;Server=h;UID=u;PWD={S};'",
    "SELECT crypt(passwd => '{S}')",
    "INSERT INTO creds VALUES ('passphrase', '{S}')",
]


def leaks(text: str) -> bool:
    """Any 4 consecutive characters of the secret (a cut may leave only its head)."""
    return any(SECRET[i : i + 4] in text for i in range(len(SECRET) - 3))
