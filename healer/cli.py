"""``healer`` command line: serve, check-config, journal check / migrate / copy / prune /
stats (the last two in healer/journal_cli.py), --version; pause, resume, circuits,
circuit-close, heals, heal, approve and reject talk to a running daemon
(healer/admin_cli.py)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import healer
from healer.admin_cli import add_parsers as add_admin_parsers
from healer.errors import ConfigError, PluginValidationError

if TYPE_CHECKING:
    from healer.config import RetentionConfig

_EPILOG = """\
environment:
  HEALER_CONFIG           config file when --config is not given
  HEALER_WEBHOOK_TOKEN    webhook bearer token (overrides webhook.token_file)
  HEALER_WEBHOOK_PASSWORD webhook basic-auth password (overrides basic_auth.password_file)
  HEALER_ADMIN_TOKEN      admin token for manual triggers, pause and circuits (overrides
                          admin.token_file; pause/resume/circuits/circuit-close send it)
  HEALER_JOURNAL_DSN_FILE file holding the PostgreSQL journal's DSN for `serve`
                          (as --journal-dsn-file)
  HEALER_JOURNAL_DSN      PostgreSQL DSN for `journal migrate` / `copy` / `prune` /
                          `stats` when no FILE, --to, --to-dsn-file nor --config is given
"""

_JOURNAL_EPILOG = """\
The PostgreSQL DSN: --to URL (without password: a command line is visible to every
user), --to-dsn-file FILE (the DSN, password included, in a file), $HEALER_JOURNAL_DSN,
or --config FILE (its journal: entry, dsn_file / dsn_env / dsn).

exit codes: 0 done; 1 the store refused or is unreachable (message on stderr);
2 usage or configuration error.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healer",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Auto-healing daemon: Alertmanager webhook -> rule -> handler -> "
        "verified recovery through Prometheus.",
    )
    parser.add_argument("--version", action="version", version=f"healer {healer.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the daemon",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("HEALER_CONFIG"),
        help="YAML config file (default: $HEALER_CONFIG)",
    )
    serve.add_argument("--listen", metavar="HOST:PORT", help="override the file's listen")
    serve.add_argument(
        "--journal",
        metavar="PATH|URL",
        help="override the file's journal: a SQLite path or a postgresql:// URL without password",
    )
    serve.add_argument(
        "--journal-dsn-file",
        metavar="FILE",
        default=os.environ.get("HEALER_JOURNAL_DSN_FILE") or None,
        help="override the file's journal with a PostgreSQL store whose DSN"
        " (password included) is read from FILE, e.g. a container"
        " secret (default: $HEALER_JOURNAL_DSN_FILE)",
    )
    serve.add_argument(
        "--replica-id",
        metavar="ID",
        help="this healer's name in a fleet sharing one journal, on every"
        " timeline entry (overrides replica.id; default host:pid)",
    )
    serve.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="log format (auto: JSON unless stderr is a terminal)",
    )
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="override the file's log.level (default info)",
    )

    check = sub.add_parser("check-config", help="validate a config file and exit (0 = valid)")
    check.add_argument("file", type=Path)
    journal = sub.add_parser("journal", help="the journal: check FILE, migrate, copy, prune, stats")
    journal_sub = journal.add_subparsers(
        dest="journal_command", required=True, metavar="SUBCOMMAND"
    )
    journal_check = journal_sub.add_parser(
        "check", help="check a journal file's integrity and schema, read-only (0 = sound)"
    )
    journal_check.add_argument("file", type=Path)
    migrate = _journal_parser(
        journal_sub,
        "migrate",
        "create or migrate the journal's schema, printing its version before/after",
    )
    _target_arguments(migrate)
    copy = _journal_parser(
        journal_sub,
        "copy",
        "copy a SQLite journal's history into an EMPTY PostgreSQL store, in one "
        "transaction, printing the rows copied",
    )
    copy.add_argument(
        "--from",
        dest="source",
        type=Path,
        required=True,
        metavar="FILE",
        help="the SQLite journal (journal.db) to copy",
    )
    _target_arguments(copy)
    prune = _journal_parser(
        journal_sub,
        "prune",
        "remove the history past the config's retention now (what the daemon does in"
        " the background), printing the rows removed per table",
    )
    _file_or_target(prune)
    prune.add_argument(
        "--dry-run", action="store_true", help="print what would be removed, remove nothing"
    )
    stats = _journal_parser(
        journal_sub,
        "stats",
        "rows and oldest entry per table, and the bytes the journal takes",
    )
    _file_or_target(stats)
    add_admin_parsers(sub)
    return parser


def _journal_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse.ArgumentParser:
    """A ``journal`` subcommand that finds its store (its help ends with where and how)."""
    return sub.add_parser(
        name,
        epilog=_JOURNAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help=help,
    )


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--config", type=Path, metavar="FILE", help="use this config file's journal: entry"
    )
    where.add_argument("--to", metavar="URL", help="postgresql://user@host/db (no password)")
    where.add_argument(
        "--to-dsn-file", type=Path, metavar="FILE", help="a file holding the DSN (password allowed)"
    )


def _file_or_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        type=Path,
        help="a SQLite journal (retention: the defaults); or --config FILE, --to, --to-dsn-file",
    )
    _target_arguments(parser)


def _print_config_errors(path: Path, exc: ConfigError) -> None:
    print(f"{path}: {len(exc.errors)} error(s)", file=sys.stderr)
    for where, msg in exc.errors:
        print(f"  {where}: {msg}" if where else f"  {msg}", file=sys.stderr)


def check_config(path: Path) -> int:
    from healer.config import check_exposure, declared_secrets, load_config
    from healer.plugins import HandlerRegistry

    try:
        handlers = HandlerRegistry.from_entry_points()
        config = load_config(path, handlers)
        # Secret files live on the deployment host: check they are declared, not readable here.
        check_exposure(config, declared_secrets(config))
    except PluginValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        _print_config_errors(path, exc)
        return 1
    print(f"{path}: ok ({len(config.rules)} rules, handlers: {', '.join(handlers)})")
    return 0


_SHOWN = 20  # problems printed by `healer journal check`


def check_journal(path: Path) -> int:
    from healer.store import SCHEMA_VERSION, SqliteStore

    problems = SqliteStore.check_file(path)
    if problems:
        print(f"{path}: NOT OK, {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems[:_SHOWN]:
            print(f"  {problem}", file=sys.stderr)
        if len(problems) > _SHOWN:
            print(f"  ... and {len(problems) - _SHOWN} more", file=sys.stderr)
        if path.is_file():
            print(
                "healer serve refuses it: restore the journal from a backup, or move it "
                "aside to start with an empty one",
                file=sys.stderr,
            )
        return 1
    print(f"{path}: ok (integrity check passed, schema version <= {SCHEMA_VERSION})")
    return 0


def _journal_target(args: argparse.Namespace) -> object:
    """The store ``migrate`` / ``copy`` work on: a Path (SQLite, from --config only) or
    PostgresOptions. Raises ConfigError (exit 2)."""
    from healer.config import PostgresJournal, load_config, resolve_journal_dsn
    from healer.plugins import HandlerRegistry
    from healer.store.postgres.store import PostgresOptions

    if getattr(args, "file", None) is not None:
        return args.file
    if args.config is not None:
        config = load_config(args.config, HandlerRegistry.from_entry_points())
        dsn = resolve_journal_dsn(config)
        if dsn is None:
            return config.journal
        journal = config.journal
        assert isinstance(journal, PostgresJournal)
        return PostgresOptions(
            dsn,
            pool_size=1,
            connect_timeout=journal.connect_timeout,
            statement_timeout=journal.statement_timeout,
        )
    if args.to is not None:
        source = PostgresJournal.model_validate({"dsn": args.to})  # refuses a password
    elif args.to_dsn_file is not None:
        source = PostgresJournal(dsn_file=args.to_dsn_file)
    else:
        source = PostgresJournal(dsn_env="HEALER_JOURNAL_DSN")
    return PostgresOptions(source.resolve("journal", os.environ), pool_size=1)


def _retention(args: argparse.Namespace) -> RetentionConfig:
    """The config's retention (``--config``), else the defaults."""
    from healer.config import RetentionConfig, load_config
    from healer.plugins import HandlerRegistry

    if args.config is None:
        return RetentionConfig()
    return load_config(args.config, HandlerRegistry.from_entry_points()).retention


def journal_command(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from healer.config import validation_errors
    from healer.errors import JournalUnavailable
    from healer.store import SCHEMA_VERSION, SqliteStore
    from healer.store.postgres.copy import copy_sqlite
    from healer.store.postgres.store import PostgresOptions, PostgresStore

    if args.journal_command == "check":
        return check_journal(args.file)
    prune_or_stats = args.journal_command in ("prune", "stats")
    if prune_or_stats and args.file is not None and (args.config or args.to or args.to_dsn_file):
        print(
            "error: give a journal FILE or --config/--to/--to-dsn-file, not both",
            file=sys.stderr,
        )
        return 2
    try:
        target = _journal_target(args)
    except ValidationError as exc:
        for where, msg in validation_errors(exc, ("--to",)):
            print(f"error: {where}: {msg}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        _print_config_errors(args.config or Path("--to"), exc)
        return 2
    try:
        if prune_or_stats:
            from healer import journal_cli

            assert isinstance(target, Path | PostgresOptions)
            return journal_cli.run(
                args.journal_command, target, _retention(args), getattr(args, "dry_run", False)
            )
        if args.journal_command == "migrate":
            if isinstance(target, PostgresOptions):
                before, after = asyncio.run(PostgresStore.migrate(target))
                name = target.name
            else:
                assert isinstance(target, Path)
                before = SqliteStore.schema_version(target)
                SqliteStore.check_can_open(target)
                after, name = SCHEMA_VERSION, str(target)
            print(f"journal {name}: schema version {before} -> {after}")
            return 0
        if not isinstance(target, PostgresOptions):
            print(
                "error: journal copy needs a PostgreSQL target (--to, --to-dsn-file,"
                " $HEALER_JOURNAL_DSN, or a config whose journal: is PostgreSQL)",
                file=sys.stderr,
            )
            return 2
        counts = asyncio.run(copy_sqlite(args.source, target))
    except JournalUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"copied {args.source} into journal {target.name}: "
        + ", ".join(f"{table} {n}" for table, n in counts.items())
    )
    return 0


def serve(args: argparse.Namespace) -> int:
    from healer.app import create_app
    from healer.config import check_exposure, load_config, resolve_secrets
    from healer.errors import JournalUnavailable
    from healer.logs import configure_logging
    from healer.plugins import HandlerRegistry
    from healer.server import serve_app
    from healer.store.factory import check_can_open, journal_target

    log_json = {"auto": None, "json": True, "console": False}[args.log_format]
    configure_logging(json=log_json, level=args.log_level or "info")
    if args.config is None:
        print("error: give --config FILE or set HEALER_CONFIG", file=sys.stderr)
        return 2
    try:
        handlers = HandlerRegistry.from_entry_points()
        overrides: dict[str, object] = {}
        if args.listen:
            overrides["listen"] = args.listen
        if args.journal and args.journal_dsn_file:
            print("error: give --journal or --journal-dsn-file, not both", file=sys.stderr)
            return 2
        if args.journal:
            overrides["journal"] = str(args.journal)
        elif args.journal_dsn_file:
            overrides["journal"] = {"dsn_file": args.journal_dsn_file}
        config = load_config(args.config, handlers, overrides)
        secrets = resolve_secrets(config)
        check_exposure(config, secrets)
    except PluginValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return 1
    if args.log_level is None and config.log.level != "info":
        configure_logging(json=log_json, level=config.log.level)
    if args.replica_id is not None:
        try:
            config = config.with_replica_id(args.replica_id)
        except ValueError as exc:
            print(f"error: --replica-id: {exc}", file=sys.stderr)
            return 2
    try:
        check_can_open(journal_target(config, secrets))
    except JournalUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    app = create_app(config, secrets, handlers=handlers)
    return serve_app(
        app, host=config.host, port=config.port, grace=config.shutdown_grace, server=config.server
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "journal":
        return journal_command(args)
    if args.command in (
        "pause",
        "resume",
        "circuits",
        "circuit-close",
        "heals",
        "heal",
        "approve",
        "reject",
    ):
        from healer.admin_cli import run

        return run(args)
    return serve(args)
