"""``healer pause | resume | circuits | circuit-close | heals | approve | reject``: talk to
the running daemon's HTTP API.

Usage::

    healer pause --for 30m --reason "deploy"
    healer resume
    healer circuits [--all] [--json]
    healer circuit-close RULE [--target docker:web-1]
    healer heals [--awaiting] [--limit 20] [--json]
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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from healer.store.types import CircuitRow, HealRow

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
    heals = sub.add_parser("heals", parents=[common], help="list recent heals")
    heals.add_argument(
        "--awaiting", action="store_true", help="only heals awaiting approval (mode: approve)"
    )
    heals.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    heals.add_argument("--json", action="store_true", help="print the API's JSON")
    for name, what in (
        ("approve", "approve a heal awaiting approval: it checks again, then acts"),
        ("reject", "reject a heal awaiting approval: it ends rejected"),
    ):
        decide = sub.add_parser(name, parents=[common], help=what)
        decide.add_argument("heal_id")
        decide.add_argument("--by", help="who decides (default: $USER)")
        decide.add_argument("--comment", help="why (journaled with the decision)")


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


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        query: dict[str, Any] = {"limit": args.limit}
        if args.awaiting:
            query["phase"] = "awaiting_approval"
        body = _answer(http.get("/api/v1/heals", headers=headers, params=query))
        if body is None:
            return 1
        if args.json:
            print(json.dumps(body, indent=2))
        else:
            _print_heals(body["heals"], awaiting=args.awaiting)
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
            f"closes {_when(c.get('closes_at'))} if quiet"
            if c["state"] == "open"
            else f"closed {_when(c['closed_at'])} by {c['closed_by']}"
        )
        told = "escalated" if c["escalated_by"] else "not escalated"
        print(
            f"{c['state']:6}  {c['rule']}  {c['target']}  since {_when(c['opened_at'])}  "
            f"{told}, {c['suppressed']} suppressed, {closes}\n        {c['reason']}"
        )


def _print_heals(heals: list[HealRow], *, awaiting: bool) -> None:
    if not heals:
        print("no heal awaiting approval" if awaiting else "no heals")
        return
    for h in heals:
        state = h["outcome"] or h["phase"]
        targets = ", ".join(h["targets"]) or "-"
        print(
            f"{h['id']}  {_when(h['created_at'])}  {h['rule'] or h['handler']}  {state}  "
            f"{targets}" + (f"\n        {h['reason']}" if h["reason"] else "")
        )
