"""Handler plugins: validated at registration, discovered through entry points, and a broken
one stops start-up (healer.plugins, ``healer serve``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog

from handlers.docker import DockerRestart, RestartParams
from healer.api import ActResult, CheckResult, Handler, HandlerParams, HealContext
from healer.cli import main
from healer.errors import PluginValidationError
from healer.plugins import HandlerRegistry, validate_handler


class P(HandlerParams):
    target: str


class Good:
    name: ClassVar[str] = "test.good"
    Params: ClassVar[type[HandlerParams]] = P
    requires: ClassVar[frozenset[str]] = frozenset()

    async def check(self, ctx: HealContext, params: Any) -> CheckResult:
        return CheckResult(targets=[])

    async def act(self, ctx: HealContext, params: Any, check: CheckResult) -> ActResult:
        return ActResult(summary="")


def refused(name: str, obj: Any) -> str:
    with pytest.raises(PluginValidationError) as info:
        validate_handler(name, obj)
    assert info.value.name == name
    assert str(info.value).startswith(f"handler plugin {name!r}: ")
    return info.value.reason


# --- the contract, checked at registration ------------------------------------------------


def test_a_conforming_class_is_instantiated() -> None:
    """A class honouring the contract is instantiated once and satisfies the protocol."""
    handler = validate_handler("test.good", Good)
    assert isinstance(handler, Good)
    assert isinstance(handler, Handler)


def test_an_instance_is_accepted_as_is() -> None:
    """An already-built instance is registered without re-instantiating it."""
    instance = Good()
    assert validate_handler("test.good", instance) is instance


def test_a_sync_check_is_refused() -> None:
    """``check`` must be a coroutine function: a blocking check would stall the loop."""

    class SyncCheck(Good):
        def check(self, ctx: HealContext, params: Any) -> CheckResult:  # type: ignore[override]
            return CheckResult(targets=[])

    assert refused("test.good", SyncCheck) == "check must be an async method"


def test_a_missing_act_is_refused() -> None:
    """A handler without ``act`` is refused, naming the method."""

    class NoAct:
        name = "test.noact"
        Params = P
        requires = frozenset()

        async def check(self, ctx: HealContext, params: Any) -> CheckResult:
            return CheckResult(targets=[])

    assert refused("test.noact", NoAct) == "act must be an async method"


def test_wrong_arity_is_refused() -> None:
    """``check(ctx, params)`` and ``act(ctx, params, check)``: other arities are refused
    with the expected and actual counts."""

    class ShortCheck(Good):
        async def check(self, ctx: HealContext) -> CheckResult:  # type: ignore[override]
            return CheckResult(targets=[])

    class LongAct(Good):
        async def act(
            self,
            ctx: HealContext,
            params: Any,
            check: CheckResult,  # type: ignore[override]
            extra: Any,
        ) -> ActResult:
            return ActResult(summary="")

    assert refused("test.good", ShortCheck) == "check must take 2 arguments after self, got 1"
    assert refused("test.good", LongAct) == "act must take 3 arguments after self, got 4"


def test_a_name_mismatch_is_refused() -> None:
    """The entry-point name and the handler's declared name must agree."""
    reason = refused("test.other", Good)
    assert reason == "declares name 'test.good'; the entry point must use the same name"


def test_params_must_be_a_pydantic_model() -> None:
    """``Params`` as a dict type (or missing) is refused."""

    class DictParams(Good):
        Params = dict  # type: ignore[assignment]

    assert refused("test.good", DictParams) == "Params must be a pydantic model (HandlerParams)"


def test_requires_must_be_a_frozenset() -> None:
    """A mutable set (or list) for ``requires`` is refused with an example."""

    class SetRequires(Good):
        requires: ClassVar[Any] = {"docker"}

    reason = refused("test.good", SetRequires)
    assert reason.startswith("requires must be a frozenset")


def test_a_constructor_that_raises_is_refused() -> None:
    """A plugin whose class cannot be instantiated is a validation error, not a crash."""

    class Explodes(Good):
        def __init__(self) -> None:
            raise RuntimeError("no config")

    assert "cannot instantiate: RuntimeError('no config')" in refused("test.good", Explodes)


def test_registering_a_name_twice_is_refused() -> None:
    """Two plugins claiming one name stop start-up instead of one silently winning."""
    registry = HandlerRegistry()
    registry.register("test.good", Good)
    with pytest.raises(PluginValidationError, match="registered twice"):
        registry.register("test.good", Good)


def test_registries_are_independent_instances() -> None:
    """There is no global registry: registering in one leaves another untouched."""
    first, second = HandlerRegistry(), HandlerRegistry()
    first.register("test.good", Good)
    assert "test.good" in first and "test.good" not in second


# --- entry points ---------------------------------------------------------------------


def test_docker_restart_loads_from_the_real_entry_points() -> None:
    """The built-in docker.restart is discovered through ``healer.handlers``."""
    registry = HandlerRegistry.from_entry_points()
    handler = registry.get("docker.restart")
    assert isinstance(handler, DockerRestart)
    assert handler.Params is RestartParams
    assert handler.requires == frozenset({"docker"})


def test_extra_handlers_join_the_entry_points() -> None:
    """Extra ``(name, handler)`` pairs are validated and added after the entry points."""
    registry = HandlerRegistry.from_entry_points(("test.good", Good))
    built_in = {ep.name for ep in entry_points(group="healer.handlers")}
    assert "docker.restart" in built_in
    assert list(registry) == sorted([*built_in, "test.good"])


def test_an_invalid_extra_handler_stops_the_registry() -> None:
    """Extras are validated like discovered plugins."""

    class Bad(Good):
        requires: ClassVar[Any] = ["docker"]

    with pytest.raises(PluginValidationError, match="requires must be a frozenset"):
        HandlerRegistry.from_entry_points(("test.good", Bad))


BROKEN_MODULE = """
class Thing:
    name = "broken.thing"
    Params = dict
    requires = frozenset()

    async def check(self, ctx, params):
        return None

    async def act(self, ctx, params, check):
        return None
"""


def install_plugin(root: Path, module: str, source: str, target: str) -> None:
    """A minimal installed distribution: a module plus its dist-info with the entry point."""
    (root / f"{module}.py").write_text(source, encoding="utf-8")
    info = root / f"{module}-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.0.0\n",
        encoding="utf-8",
    )
    (info / "entry_points.txt").write_text(
        f"[healer.handlers]\nbroken.thing = {target}\n", encoding="utf-8"
    )


@pytest.fixture
def broken_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    install_plugin(tmp_path, "broken_plugin", BROKEN_MODULE, "broken_plugin:Thing")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("broken_plugin", None)


@pytest.fixture
def unimportable_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    install_plugin(
        tmp_path,
        "unimportable_plugin",
        "import no_such_module_anywhere\n",
        "unimportable_plugin:Thing",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("unimportable_plugin", None)


@pytest.mark.usefixtures("broken_plugin")
def test_a_broken_discovered_plugin_stops_the_registry() -> None:
    """A plugin installed by another distribution that breaks the contract raises
    PluginValidationError naming it; it is never skipped."""
    with pytest.raises(PluginValidationError) as info:
        HandlerRegistry.from_entry_points()
    assert info.value.name == "broken.thing"
    assert "Params must be a pydantic model" in str(info.value)


@pytest.mark.usefixtures("unimportable_plugin")
def test_a_plugin_that_cannot_be_imported_stops_the_registry() -> None:
    """An import error in a plugin module is a validation error naming the entry point."""
    with pytest.raises(PluginValidationError) as info:
        HandlerRegistry.from_entry_points()
    assert info.value.name == "broken.thing"
    assert "cannot import unimportable_plugin:Thing" in str(info.value)
    assert "no_such_module_anywhere" in str(info.value)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    # `healer serve` configures structlog for the process (bound to this test's captured
    # stderr); put the defaults back so later tests do not write to a closed stream.
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("broken_plugin", "restore_logging")
def test_serve_refuses_to_start_with_a_broken_plugin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``healer serve`` exits non-zero with the plugin's name and the reason, before
    binding any port."""
    config = tmp_path / "healer.yml"
    config.write_text("rules: []\n", encoding="utf-8")
    code = main(["serve", "--config", str(config), "--journal", str(tmp_path / "j.db")])
    assert code != 0
    err = capsys.readouterr().err
    assert "handler plugin 'broken.thing'" in err
    assert "Params must be a pydantic model" in err
    assert not (tmp_path / "j.db").exists()


@pytest.mark.usefixtures("broken_plugin")
def test_check_config_reports_a_broken_plugin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``healer check-config`` fails on a broken plugin too, naming it."""
    config = tmp_path / "healer.yml"
    config.write_text("rules: []\n", encoding="utf-8")
    assert main(["check-config", str(config)]) != 0
    assert "handler plugin 'broken.thing'" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_serve_takes_the_journal_dsn_from_a_file_and_refuses_two_journals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--journal-dsn-file`` names a PostgreSQL store whose DSN (password included) is
    read from a file, as a container secret gives it: an unreachable one is one line
    naming the store with the password hidden, exit 1; giving it with ``--journal`` is
    a usage error."""
    config = tmp_path / "healer.yml"
    config.write_text("rules: []\n", encoding="utf-8")
    dsn_file = tmp_path / "journal-dsn"
    dsn_file.write_text("postgresql://healer:s3cret-pw@127.0.0.1:9/healer\n")
    dsn_file.chmod(0o600)
    code = main(["serve", "--config", str(config), "--journal-dsn-file", str(dsn_file)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "127.0.0.1:9" in err and "s3cret-pw" not in err
    assert len(err.strip().splitlines()) == 1
    code = main(
        [
            "serve",
            "--config",
            str(config),
            "--journal",
            str(tmp_path / "j.db"),
            "--journal-dsn-file",
            str(dsn_file),
        ]
    )
    assert code == 2
    assert "not both" in capsys.readouterr().err


# --- params annotated with the declared Params ---------------------------------------------


class Other(HandlerParams):
    target: str


class Typed:
    name: ClassVar[str] = "test.typed"
    Params: ClassVar[type[HandlerParams]] = P
    requires: ClassVar[frozenset[str]] = frozenset()

    async def check(self, ctx: HealContext, params: P) -> CheckResult:
        return CheckResult(targets=[])

    async def act(self, ctx: HealContext, params: P, check: CheckResult) -> ActResult:
        return ActResult(summary="")


def test_params_annotated_with_the_declared_class_is_accepted() -> None:
    """``check(ctx, params: P)`` / ``act(ctx, params: P, check)`` with ``Params = P``
    (string annotations, as under ``from __future__ import annotations``, resolved in the
    handler's module) pass; so do ``Any`` and no annotation at all."""
    assert isinstance(validate_handler("test.typed", Typed), Typed)
    assert isinstance(validate_handler("test.good", Good), Good)  # params: Any

    class Bare(Typed):
        async def check(self, ctx, params):  # type: ignore[no-untyped-def]
            return CheckResult(targets=[])

    assert isinstance(validate_handler("test.typed", Bare), Bare)


def test_params_annotated_with_another_class_is_refused_naming_both() -> None:
    """A ``check`` or ``act`` whose params annotation is not the declared ``Params`` (a
    sibling, or a base class of it) is refused; the message names both classes."""

    class WrongCheck(Typed):
        async def check(self, ctx: HealContext, params: Other) -> CheckResult:  # type: ignore[override]
            return CheckResult(targets=[])

    reason = refused("test.typed", WrongCheck)
    assert reason.startswith("check's 'params' is annotated ")
    assert f"{__name__}.Other" in reason and f"Params = {__name__}.P" in reason

    class BaseAct(Typed):
        async def act(  # type: ignore[override]
            self, ctx: HealContext, params: HandlerParams, check: CheckResult
        ) -> ActResult:
            return ActResult(summary="")

    reason = refused("test.typed", BaseAct)
    assert "act's 'params' is annotated healer.api.HandlerParams" in reason


def test_an_annotation_that_does_not_resolve_is_refused() -> None:
    """A params annotation naming nothing importable in the handler's module is refused
    (it could not be compared with ``Params``)."""

    class Dangling(Typed):
        async def check(self, ctx: HealContext, params: NoSuchParams) -> CheckResult:  # type: ignore[name-defined]  # noqa: F821
            return CheckResult(targets=[])

    reason = refused("test.typed", Dangling)
    assert reason.startswith("check's 'params' annotation 'NoSuchParams' does not resolve")


def test_every_built_in_handler_annotates_its_own_params() -> None:
    """The built-in handlers pass the rule (odoo.restart_workers/_longpoll included,
    which once annotated their shared base class)."""
    registry = HandlerRegistry.from_entry_points()
    builtin = [n for n in registry if type(registry.get(n)).__module__.startswith("handlers.")]
    assert {"odoo.restart_workers", "odoo.restart_longpoll", "docker.restart"} <= set(builtin)
