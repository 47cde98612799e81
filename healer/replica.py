"""This healer as one replica of a fleet sharing one store: its id and its lease length.

Usage::

    me = Replica(id="healer-a", lease_ttl=15.0)   # token: this process's own, random
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

DEFAULT_LEASE_TTL = 15.0


def default_replica_id() -> str:
    """``<host name>:<pid>``: unique among live healers of one fleet."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_replica_id(value: str) -> str:
    """A replica id is printable, 1 to 100 characters (it is on every timeline entry)."""
    if not value or len(value) > 100 or not value.isprintable() or value != value.strip():
        raise ValueError("a replica id is 1 to 100 printable characters, no surrounding spaces")
    return value


@dataclass(frozen=True, slots=True)
class Replica:
    """Who writes through a store: ``id`` (the ``--replica-id``, on every timeline entry
    and as a heal's ``owner``), ``lease_ttl`` (how long a lease lasts unrenewed) and
    ``token`` (this store object's own: a later process of the same replica id is another
    holder, which takes over what the previous one left only as any replica would)."""

    id: str = field(default_factory=default_replica_id)
    lease_ttl: float = DEFAULT_LEASE_TTL
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
