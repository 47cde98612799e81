"""``healer pause | resume | circuits | circuit-close | heals | heal | approve | reject``:
talk to the running daemon's HTTP API.

Usage::

    healer pause --for 30m --reason "deploy"
    healer resume
    healer circuits [--all] [--json]
    healer circuit-close RULE [--target docker:web-1]
    healer heals [--rule R] [--outcome O] [--target T] [--since 1h] [--awaiting] [--json]
    healer heal HEAL_ID [--json]
    healer approve HEAL_ID [--by alice] [--comment "go"]
    healer reject HEAL_ID [--by alice] [--comment "not now"]

The daemon is ``--url``, else the ``listen`` of ``--config`` / ``$HEALER_CONFIG``, else
http://127.0.0.1:9095. The admin token is ``$HEALER_ADMIN_TOKEN`` or ``--token-file``;
it is sent as a bearer token and never printed. Exit 0 when done, 1 when the daemon says
no (e.g. no such open circuit, a heal already decided), 2 when it cannot be reached or
the arguments are wrong. ``--by`` defaults to ``$USER`` (who decided is journaled).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from healer.history_view import heal_report, heals_table, printable, when
from healer.outcomes import Outcome
from healer.units import parse_duration

if TYPE_CHECKING:
    from healer.store.types import CircuitRow

DEFAULT_URL = "http://127.0.0.1:9095"
_TIMEOUT = 10.0


def add_parsers(sub: Any) -> None:
    """The admin sub-commands, on the ``healer`` parser's sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help="healer's base URL (default: listen of --config / "
        f"$HEALER_CONFIG, else {DEFAULT_URL})",
    )
    common.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("HEALER_CONFIG"),
        help="config file to read listen from (default: $HEALER_CONFIG)",
    )
    common.add_argument(
        "--token-file", type=Path, help="admin token file (default: $HEALER_ADMIN_TOKEN)"
    )

    pause = sub.add_parser(
        "pause", parents=[common], help="pause healing (maintenance mode) on the running daemon"
    )
    pause.add_argument(
        "--for",
        dest="duration",
        required=True,
        metavar="DURATION",
        help="how long, e.g. 30m (at most safety.max_pause)",
    )
    pause.add_argument("--reason", default="", help="why (shown in suppressed heals)")
    sub.add_parser("resume", parents=[common], help="end the pause now")
    circuits = sub.add_parser("circuits", parents=[common], help="list open circuits")
    circuits.add_argument("--all", action="store_true", help="closed circuits too")
    circuits.add_argument("--json", action="store_true", help="print the API's JSON")
    close = sub.add_parser(
        "circuit-close", parents=[common], help="close a rule's open circuits: healing resumes"
    )
    close.add_argument("rule")
    close.add_argument("--target", help="only this target, e.g. docker:web-1")
    heals = sub.add_parser(
        "heals", parents=[common], help="list heals, newest first, as a table (or --json)"
    )
    heals.add_argument("--rule", help="only this rule's heals")
    heals.add_argument(
        "--outcome",
        choices=[o.value for o in Outcome],
        metavar="OUTCOME",
        help="only heals that ended so: " + ", ".join(o.value for o in Outcome),
    )
    heals.add_argument("--target", help="only heals that acted on this target, e.g. docker:web-1")
    heals.add_argument(
        "--since", metavar="DURATION", help="only heals created in the last DURATION, e.g. 1h, 7d"
    )
    heals.add_argument(
        "--awaiting", action="store_true", help="only heals awaiting approval (mode: approve)"
    )
    heals.add_argument(
        "--limit", type=_limit, default=20, help="at most this many, 1-500 (default 20)"
    )
    heals.add_argument("--json", action="store_true", help="print the API's JSON")
    heal = sub.add_parser(
        "heal", parents=[common], help="show one heal: what it saw and did, step by step"
    )
    heal.add_argument("heal_id")
    heal.add_argument("--json", action="store_true", help="print the API's JSON")
    for name, what in (
        ("approve", "approve a heal awaiting approval: it checks again, then acts"),
        ("reject", "reject a heal awaiting approval: it ends rejected"),
    ):
        decide = sub.add_parser(name, parents=[common], help=what)
        decide.add_argument("heal_id")
        decide.add_argument("--by", help="who decides (default: $USER)")
        decide.add_argument("--comment", help="why (journaled with the decision)")


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 500:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 500")
    return value


class _Usage(Exception):
    """A flag or file the command cannot use: exit 2 with this message."""


def base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    if args.config is not None:
        from healer.config import read_yaml  # the config's own reader: no aliases, UTF-8
        from healer.errors import ConfigError

        try:
            data = read_yaml(Path(args.config)) or {}
        except ConfigError as exc:
            raise _Usage(f"cannot read listen from {args.config}: {exc}") from None
        listen = data.get("listen") if isinstance(data, dict) else None
        if isinstance(listen, str) and ":" in listen:
            host, port = listen.rsplit(":", 1)
            host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)  # noqa: S104
            return f"http://{host}:{port}"
    return DEFAULT_URL


def _token(args: argparse.Namespace) -> str | None:
    """The admin token from ``--token-file`` or ``$HEALER_ADMIN_TOKEN``, checked as the
    daemon checks it (one visible-ASCII word); errors name the source, never the value."""
    from healer.config import token_from
    from healer.errors import ConfigError

    env = {} if args.token_file is not None else os.environ
    try:
        return token_from(env, "HEALER_ADMIN_TOKEN", args.token_file, "--token-file")
    except ConfigError as exc:
        raise _Usage(str(exc)) from None


def run(args: argparse.Namespace, client: httpx.Client | None = None) -> int:
    """Run one admin command; ``client`` (tests) replaces the one built from ``--url``."""
    try:
        token = _token(args)
        url = base_url(args) if client is None else str(client.base_url)
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    own = client is None
    http = client if client is not None else httpx.Client(base_url=url, timeout=_TIMEOUT)
    try:
        return _run(args, http, headers)
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        # An HTTP client's error may quote the request's headers: the token never shows.
        text = str(exc).replace(token, "***") if token else str(exc)
        print(f"error: cannot reach healer at {url}: {type(exc).__name__}: {text}", file=sys.stderr)
        return 2
    finally:
        if own:
            http.close()


def _answer(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.is_success and isinstance(body, dict):
        return body
    detail = (body.get("error") or body.get("detail")) if isinstance(body, dict) else None
    print(f"error: HTTP {resp.status_code}: {detail or resp.text[:200]}", file=sys.stderr)
    return None


def _heals_query(args: argparse.Namespace) -> dict[str, Any]:
    query: dict[str, Any] = {"limit": args.limit}
    for name in ("rule", "outcome", "target"):
        if getattr(args, name):
            query[name] = getattr(args, name)
    if args.awaiting:
        query["phase"] = "awaiting_approval"
    if args.since:
        try:
            query["since"] = time.time() - parse_duration(args.since)
        except ValueError as exc:
            raise _Usage(f"--since: {exc}") from None
    return query


def _run(args: argparse.Namespace, http: httpx.Client, headers: dict[str, str]) -> int:
    if args.command == "pause":
        body = _answer(
            http.post(
                "/api/v1/pause", headers=headers, json={"for": args.duration, "reason": args.reason}
            )
        )
        if body is None:
            return 1
        print(
            f"paused until {body['until_iso']}" + (f": {body['reason']}" if body["reason"] else "")
        )
        return 0
    if args.command == "resume":
        body = _answer(http.delete("/api/v1/pause", headers=headers))
        if body is None:
            return 1
        was = body.get("was")
        print(
            f"resumed (paused since {was['since_iso']}"
            + (f": {was['reason']})" if was["reason"] else ")")
            if was
            else "was not paused"
        )
        return 0
    if args.command == "circuits":
        resp = http.get(
            "/api/v1/circuits", headers=headers, params={"all": "true"} if args.all else None
        )
        body = _answer(resp)
        if body is None:
            return 1
        if args.json:
            print(json.dumps(body, indent=2))
        else:
            _print_circuits(body["circuits"])
        return 0
    if args.command == "heals":
        body = _answer(http.get("/api/v1/heals", headers=headers, params=_heals_query(args)))
        if body is None:
            return 1
        if args.json:
            print(json.dumps(body, indent=2))
        elif not body["heals"]:
            print("no heal awaiting approval" if args.awaiting else "no heals")
        else:
            print(heals_table(body["heals"]))
        return 0
    if args.command == "heal":
        body = _answer(http.get(f"/api/v1/heals/{quote(args.heal_id, safe='')}", headers=headers))
        if body is None:
            return 1
        print(json.dumps(body, indent=2) if args.json else heal_report(body))
        return 0
    if args.command in ("approve", "reject"):
        by = args.by or os.environ.get("USER") or getpass.getuser()
        decision = {"by": by, "comment": args.comment, "via": "cli"}
        path = f"/api/v1/heals/{args.heal_id}/{args.command}"
        body = _answer(http.post(path, headers=headers, json=decision))
        if body is None:
            return 1
        done = "approved" if args.command == "approve" else "rejected"
        print(
            f"{done} heal {body['heal_id']} as {body['by']} (targets: {', '.join(body['targets'])})"
        )
        return 0
    params = {"target": args.target} if args.target else None
    body = _answer(http.delete(f"/api/v1/circuits/{args.rule}", headers=headers, params=params))
    if body is None:
        return 1
    for circuit in body["closed"]:
        print(f"closed circuit {circuit['rule']} on {circuit['target']}")
    return 0


def _print_circuits(circuits: list[CircuitRow]) -> None:
    if not circuits:
        print("no open circuits")
        return
    for c in circuits:
        closes = (
            f"closes {when(c.get('closes_at'))} if quiet"
            if c["state"] == "open"
            else f"closed {when(c['closed_at'])} by {c['closed_by']}"
        )
        told = "escalated" if c["escalated_by"] else "not escalated"
        print(
            f"{c['state']:6}  {printable(c['rule'])}  {printable(c['target'])}  "
            f"since {when(c['opened_at'])}  {told}, {c['suppressed']} suppressed, {closes}"
            f"\n        {printable(c['reason'])}"
        )
