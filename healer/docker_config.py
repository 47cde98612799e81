"""``docker:`` in the config: the Docker engines handlers act on, by name.

Usage (YAML)::

    docker:
      base_url: unix:///var/run/docker.sock      # the engine ``default`` (optional)
      engines:
        db1:
          base_url: tcp://db1.internal:2376
          ca_file: /etc/healer/docker/ca.pem     # verifies the engine's certificate
          cert_file: /etc/healer/docker/cert.pem # healer's client certificate ...
          key_file: /etc/healer/docker/key.pem   # ... and its key
          timeout: 30s
          max_concurrent_actions: 2

``docker.base_url`` alone is today's single engine, named ``default``; without
``docker:`` at all, ``default`` is the environment's engine (``DOCKER_HOST`` or the
local socket), unless ``engines:`` names others (then ``default`` exists only if
``base_url`` is set or ``engines.default`` is). Plain ``tcp://`` to anything but
loopback is refused for an engine unless it says ``allow_plain_tcp: true``: whoever
reaches that port controls the engine (as far as a proxy in front lets them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, model_validator

from healer.hosts import is_loopback
from healer.units import Duration

DEFAULT_ENGINE = "default"
ENGINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SCHEMES = ("unix", "tcp", "ssh")


def _file(value: Any) -> Any:
    if isinstance(value, str) and (not value.strip() or "\x00" in value):
        raise ValueError("expected a file path")
    return value


_TlsFile = Annotated[Path, BeforeValidator(_file)]


class EngineConfig(BaseModel):
    """One Docker engine: where its API is, how healer proves itself to it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    base_url: str = Field(min_length=1, max_length=2048)
    ca_file: _TlsFile | None = None
    cert_file: _TlsFile | None = None
    key_file: _TlsFile | None = None
    # Per API call; the SDK would otherwise wait 60 s on a dead engine.
    timeout: Annotated[Duration, Field(gt=0, le=600)] = 30.0
    # Actions (a handler's ``act``) on this engine at once; unset: no limit beyond
    # ``max_concurrent_heals``.
    max_concurrent_actions: StrictInt | None = Field(default=None, ge=1, le=1024)
    allow_plain_tcp: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> EngineConfig:
        check_engine_url(self.base_url, tls=self.tls, allow_plain_tcp=self.allow_plain_tcp)
        files = (self.ca_file, self.cert_file, self.key_file)
        if any(f is not None for f in files) and None in files:
            raise ValueError(
                "TLS needs all three of ca_file (verifies the engine), cert_file and "
                "key_file (healer's client certificate)"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.cert_file is not None


def check_engine_url(url: str, *, tls: bool, allow_plain_tcp: bool) -> None:
    """ValueError unless ``url`` is ``unix://``, ``tcp://`` or ``ssh://`` and used safely."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"base_url must start with unix://, tcp:// or ssh://, not {url[:64]!r}")
    if tls and parts.scheme != "tcp":
        raise ValueError("ca_file, cert_file and key_file go with a tcp:// base_url")
    if parts.scheme == "tcp" and not tls and not allow_plain_tcp:
        host = parts.hostname or ""
        if not is_loopback(host):
            raise ValueError(
                f"plain tcp:// to {host[:64]!r} gives whoever reaches that port the "
                "engine: give ca_file, cert_file and key_file (TLS), or allow_plain_tcp: "
                "true (e.g. a socket proxy on a private network)"
            )


class DockerConfig(BaseModel):
    """``docker:``: ``base_url`` (the engine ``default``) and/or named ``engines``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    base_url: str | None = Field(default=None, min_length=1, max_length=2048)
    engines: dict[Annotated[str, Field(pattern=ENGINE_NAME.pattern)], EngineConfig] = Field(
        default_factory=dict, max_length=256
    )

    @model_validator(mode="after")
    def _default_once(self) -> DockerConfig:
        if self.base_url is not None and DEFAULT_ENGINE in self.engines:
            raise ValueError(
                "base_url is the engine 'default': give it or engines.default, not both"
            )
        if self.base_url is not None:
            # Kept as before (it worked with any URL the SDK takes); only the scheme is
            # checked, and plain tcp:// beyond loopback is warned about at start-up.
            scheme = urlsplit(self.base_url).scheme
            if scheme not in (*_SCHEMES, "http", "https", "npipe"):
                raise ValueError(f"base_url: unknown scheme in {self.base_url[:64]!r}")
        return self

    def all_engines(self) -> dict[str, EngineConfig | None]:
        """Every engine by name; ``None`` is the environment's (``DOCKER_HOST`` or the
        local socket), the engine ``default`` when nothing else names one."""
        out: dict[str, EngineConfig | None] = {}
        if self.base_url is not None:
            # Not validated as an engine: base_url keeps taking what it always took.
            out[DEFAULT_ENGINE] = EngineConfig.model_construct(base_url=self.base_url)
        elif not self.engines:
            out[DEFAULT_ENGINE] = None
        out.update(self.engines)
        return out

    def plain_tcp_warnings(self) -> list[str]:
        """What start-up warns about: ``base_url`` as plain tcp:// beyond loopback."""
        if self.base_url is None or urlsplit(self.base_url).scheme != "tcp":
            return []
        try:
            check_engine_url(self.base_url, tls=False, allow_plain_tcp=False)
        except ValueError as exc:
            return [f"docker.base_url: {exc}"]
        return []


def check_tls_files(docker: DockerConfig) -> list[tuple[str, str]]:
    """Each engine's TLS files readable and PEM, as (path, message) errors (start-up)."""
    errors = []
    for name, engine in docker.engines.items():
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(engine, key)
            if path is None:
                continue
            where = f"docker.engines.{name}.{key}"
            try:
                head = path.read_bytes()[:65536]
            except OSError as exc:
                errors.append((where, f"cannot read {path}: {exc.strerror}"))
                continue
            if b"-----BEGIN " not in head:
                errors.append((where, f"{path} is not a PEM file"))
    return errors
