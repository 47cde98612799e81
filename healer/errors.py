"""Every exception healer raises, in one tree.

::

    HealerError
    ├── ConfigError                 the YAML file (or a flag / env var) is wrong
    │   └── MatcherSyntaxError      a rule's matcher does not parse
    ├── PluginValidationError       a handler plugin breaks the contract (start-up stops)
    ├── PayloadError                a webhook / manual-trigger body is malformed (-> 4xx)
    ├── JournalUnavailable          the journal cannot be written (-> 503, Alertmanager retries)
    │   └── JournalBroken           its file was deleted, replaced or is corrupt: refused
    │                               until a restart (readiness down, every write 503)
    └── HealError                   something went wrong inside one heal; carries heal id,
        │                           rule and handler so every log line and record names them
        ├── InvalidParams           params (after label substitution) do not validate -> refused
        ├── TargetRefused           target outside the allowlist or protected -> refused
        └── ActionFailed            a handler's check/act could not do its job -> failed

Handlers raise ``ActionFailed("...")`` (or let their client's error escape: the executor
records any exception from ``check``/``act`` as ``failed``), ``TargetRefused("...")`` or
``InvalidParams("...")``, without naming the heal: the executor fills ``heal_id`` in
when it catches a :class:`HealError` that has none.
"""

from __future__ import annotations

from healer.redact import redact_dsn


class HealerError(Exception):
    """Base of every error healer raises on purpose."""


class ConfigError(HealerError):
    """The configuration is invalid. ``errors`` holds ``(path, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        # Messages may quote a config value (e.g. a DSN typed where a duration belongs).
        self.errors = [(path, redact_dsn(msg)) for path, msg in errors]
        super().__init__("\n".join(f"{path}: {msg}" if path else msg for path, msg in self.errors))


class MatcherSyntaxError(ConfigError):
    """A matcher such as ``severity=~"P0|P1"`` does not parse."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__([("", f"bad matcher {text!r}: {reason}")])


class PluginValidationError(HealerError):
    """A handler registered under ``healer.handlers`` does not honour the contract."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"handler plugin {name!r}: {reason}")


class PayloadError(HealerError):
    """A request body is malformed. ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        self.message = message
        self.status = status
        super().__init__(message)


class JournalUnavailable(HealerError):
    """The journal could not durably store something."""


class JournalBroken(JournalUnavailable):
    """The journal's file is gone, replaced or corrupt: nothing more is accepted until
    healer restarts (what is written now would not be where the next start reads)."""


class LeaseLost(HealerError):
    """This replica no longer holds the heal's lease (another replica took it over after
    it expired): the write that needed it (an act, an outcome) was refused, nothing of it
    stored, and the heal must stop here (its new owner carries it on)."""

    def __init__(self, heal_id: str) -> None:
        super().__init__(f"lease lost: heal {heal_id} is now run by another replica")
        self.heal_id = heal_id


class HealError(HealerError):
    """An error inside one heal, naming the heal, its rule and handler. ``heal_id`` is
    optional: a handler leaves it out and the executor sets it when it catches the error."""

    def __init__(
        self,
        message: str,
        *,
        heal_id: str | None = None,
        rule: str | None = None,
        handler: str | None = None,
    ) -> None:
        self.message = message
        self.heal_id = heal_id
        self.rule = rule
        self.handler = handler
        super().__init__(message)

    def __str__(self) -> str:
        where = ", ".join(
            f"{k}={v}"
            for k, v in (("heal", self.heal_id), ("rule", self.rule), ("handler", self.handler))
            if v
        )
        return f"{self.message} [{where}]" if where else self.message


class InvalidParams(HealError):
    """Handler params do not validate (often: a hostile or missing alert label)."""


class TargetRefused(HealError):
    """The resolved target is outside the allowlist, or protected."""


class ActionFailed(HealError):
    """A handler could not carry out its check or action."""
