"""Handler plugins: discovered through the ``healer.handlers`` entry points and
validated when they are registered, so a broken plugin stops start-up.

Usage::

    registry = HandlerRegistry.from_entry_points()   # raises PluginValidationError
    handler = registry.get("docker.restart")

A registry is an instance owned by the app factory, never a global.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from healer.api import Handler
from healer.config import HealerConfig, RuleConfig, validation_errors
from healer.docker_config import DEFAULT_ENGINE
from healer.errors import PluginValidationError
from healer.templating import placeholder_params, render_params

GROUP = "healer.handlers"


def validate_handler(name: str, obj: Any) -> Handler:
    """Instantiate (if a class) and check ``obj`` against the handler contract.

    Besides the attributes and the async ``check(ctx, params)`` / ``act(ctx, params,
    check)``, the ``params`` argument of both methods must be annotated with the very
    class the handler declares as ``Params`` (not a base or a sibling of it), or not
    annotated at all (``Any`` counts as not annotated): the engine passes an instance of
    ``Params``, and an annotation naming another class would let the type checker
    vouch for attributes the object does not have."""
    if inspect.isclass(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise PluginValidationError(name, f"cannot instantiate: {exc!r}") from exc
    declared = getattr(obj, "name", None)
    if declared != name:
        raise PluginValidationError(
            name, f"declares name {declared!r}; the entry point must use the same name"
        )
    params = getattr(obj, "Params", None)
    if not (inspect.isclass(params) and issubclass(params, BaseModel)):
        raise PluginValidationError(name, "Params must be a pydantic model (HandlerParams)")
    requires = getattr(obj, "requires", None)
    if not isinstance(requires, frozenset):
        raise PluginValidationError(
            name, "requires must be a frozenset, e.g. frozenset({'docker'})"
        )
    for method, nargs in (("check", 2), ("act", 3)):
        fn = getattr(obj, method, None)
        if fn is None or not inspect.iscoroutinefunction(fn):
            raise PluginValidationError(name, f"{method} must be an async method")
        positional = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(positional) != nargs:
            raise PluginValidationError(
                name, f"{method} must take {nargs} arguments after self, got {len(positional)}"
            )
        annotated = _params_annotation(name, method, fn, positional[1].name)
        if annotated is not None and annotated is not params:
            raise PluginValidationError(
                name,
                f"{method}'s {positional[1].name!r} is annotated {_qualname(annotated)} but the "
                f"handler declares Params = {_qualname(params)}: the engine passes a "
                f"{_qualname(params)}, so annotate that class (or leave it unannotated)",
            )
    return obj  # type: ignore[no-any-return]


def _params_annotation(name: str, method: str, fn: Any, param: str) -> Any:
    """The resolved annotation of ``fn``'s params argument; ``None`` when there is none
    (or it is ``Any``): the rule is "the declared ``Params`` class, or nothing"."""
    func = getattr(fn, "__func__", fn)
    raw = inspect.signature(func).parameters[param].annotation
    if raw is inspect.Parameter.empty:
        return None
    try:
        hints = typing.get_type_hints(func)
        resolved = hints.get(param)
    except Exception:
        # Another annotation (say ``ctx``'s) may name something imported only under
        # TYPE_CHECKING; the params one alone must resolve, in the method's module.
        try:
            resolved = (
                eval(raw, getattr(func, "__globals__", {})) if isinstance(raw, str) else raw  # noqa: S307
            )
        except Exception as exc:
            raise PluginValidationError(
                name, f"{method}'s {param!r} annotation {raw!r} does not resolve: {exc!r}"
            ) from exc
    return None if resolved is Any or resolved is None else resolved


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", "")
    qual = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{module}.{qual}" if module and module != "builtins" else qual


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    @classmethod
    def from_entry_points(cls, *extra: tuple[str, Any]) -> HandlerRegistry:
        """Load every plugin of the group, then ``extra`` ``(name, handler)`` pairs."""
        registry = cls()
        for ep in entry_points(group=GROUP):
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginValidationError(ep.name, f"cannot import {ep.value}: {exc!r}") from exc
            registry.register(ep.name, obj)
        for name, obj in extra:
            registry.register(name, obj)
        return registry

    def register(self, name: str, obj: Any) -> Handler:
        if name in self._handlers:
            raise PluginValidationError(name, "registered twice")
        handler = validate_handler(name, obj)
        self._handlers[name] = handler
        return handler

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._handlers))

    def check_rule(
        self, rule: RuleConfig, where: str, config: HealerConfig | None
    ) -> list[tuple[str, str]]:
        """Config-time check of one rule (:class:`healer.config.RuleCheck`): its handler
        exists, its params validate, a PostgreSQL handler names a configured database, and
        a Docker handler a configured engine."""
        errors = self.validate_rule_params(rule, where)
        if config is not None:
            errors.extend(self._unknown_database(config, rule, where))
            errors.extend(self._engine_mismatch(config, rule, where))
        return errors

    def _engine_mismatch(
        self, config: HealerConfig, rule: RuleConfig, where: str
    ) -> list[tuple[str, str]]:
        """``engine:`` only on a rule whose handler uses Docker; a Docker rule without
        one acts on the engine ``default``, which must then exist."""
        handler = self.get(rule.handler)
        if handler is None:
            return []
        if "docker" not in handler.requires:
            if rule.engine is None:
                return []
            return [(f"{where}.engine", f"handler {rule.handler!r} does not use docker")]
        engines = config.docker.all_engines()
        if rule.engine is not None or DEFAULT_ENGINE in engines:
            return []
        return [
            (
                f"{where}.engine",
                f"no engine given, and there is no engine {DEFAULT_ENGINE!r} "
                f"(docker.engines: {', '.join(sorted(engines))}): name one",
            )
        ]

    def _unknown_database(
        self, config: HealerConfig, rule: RuleConfig, where: str
    ) -> list[tuple[str, str]]:
        """A PostgreSQL rule must name a database from ``databases:`` (unless templated)."""
        handler = self.get(rule.handler)
        db = rule.params.get("database")
        if handler is None or "postgres" not in handler.requires or not isinstance(db, str):
            return []
        if "{{" in db or db in config.databases:
            return []
        known = ", ".join(sorted(config.databases)) or "none configured"
        return [(f"{where}.params.database", f"database {db!r} is not in databases: ({known})")]

    def validate_rule_params(self, rule: RuleConfig, path: str) -> list[tuple[str, str]]:
        """Config-time check of a rule's handler and params (templates filled with placeholders)."""
        handler = self.get(rule.handler)
        if handler is None:
            known = ", ".join(self) or "none"
            return [(f"{path}.handler", f"unknown handler {rule.handler!r} (known: {known})")]
        prefix = (*path_parts(path), "params")
        errors = _param_errors(handler, placeholder_params(rule.params), prefix)
        if errors:
            # A value built from alert data is judged when the alert arrives: the word
            # placeholder cannot pass for a number ("{{ labels.cron_id }}"), so an error
            # counts only if a numeric placeholder fails there too.
            numeric = render_params(rule.params, _Every("1"), _Every("1"))
            also = {where for where, _ in _param_errors(handler, numeric, prefix)}
            errors = [(where, msg) for where, msg in errors if where in also]
        return errors


def _param_errors(
    handler: Handler, params: Any, prefix: tuple[int | str, ...]
) -> list[tuple[str, str]]:
    try:
        handler.Params.model_validate(params)
    except ValidationError as exc:
        return validation_errors(exc, prefix)
    return []


class _Every(dict[str, str]):
    """Labels that have every key, all with one value (to render templates for checks)."""

    def __init__(self, value: str) -> None:
        super().__init__()
        self._value = value

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return self._value


def path_parts(path: str) -> tuple[int | str, ...]:
    """``rules[2]`` -> ``('rules', 2)`` (for re-prefixing nested validation errors)."""
    name, _, index = path.partition("[")
    return (name, int(index.rstrip("]"))) if index else (name,)
