"""The Docker engines of one healer, by name, and which one a heal acts on.

Usage::

    engines = DockerEngines.from_config(config.docker)   # the app factory owns it
    adapter = engines.get("db1")                          # DockerAdapter, or None
    name = engine_for(rule_engine, labels, annotations)   # "{{ labels.host }}" -> "db1"
    await engines.aclose()

Every engine has its own :class:`~healer.docker_adapter.DockerAdapter`: its client is
made on first use and kept; one engine being down never blocks another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping

from healer.docker_adapter import DockerAdapter
from healer.docker_config import DEFAULT_ENGINE, ENGINE_NAME, DockerConfig
from healer.errors import InvalidParams
from healer.templating import render_params


class DockerEngines(Mapping[str, DockerAdapter]):
    """A read-only map of engine name -> adapter."""

    def __init__(self, adapters: Mapping[str, DockerAdapter]) -> None:
        self._adapters = dict(adapters)

    @classmethod
    def from_config(cls, config: DockerConfig) -> DockerEngines:
        return cls(
            {
                name: DockerAdapter.for_engine(name, engine)
                for name, engine in config.all_engines().items()
            }
        )

    def __getitem__(self, name: str) -> DockerAdapter:
        return self._adapters[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._adapters)

    def __len__(self) -> int:
        return len(self._adapters)

    @property
    def default(self) -> DockerAdapter | None:
        return self._adapters.get(DEFAULT_ENGINE)

    async def aclose(self) -> None:
        await asyncio.gather(*(a.aclose() for a in self._adapters.values()))


def engine_for(
    template: str | None, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> str:
    """The engine a heal acts on: its rule's ``engine`` with alert data substituted
    (``None``: ``default``). InvalidParams when the alert lacks the data or the result is
    not an engine name (alert data never becomes anything but a name)."""
    if template is None:
        return DEFAULT_ENGINE
    name = render_params(template, labels, annotations)
    if not isinstance(name, str) or not ENGINE_NAME.fullmatch(name):
        shown = name[:64] if isinstance(name, str) else name
        raise InvalidParams(f"engine {shown!r} is not an engine name")
    return name
