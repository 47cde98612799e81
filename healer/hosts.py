"""Whether a host in the config is loopback: ``is_loopback("127.0.0.1")``.

Both the listener (``listen:`` beyond loopback needs webhook auth) and the Docker
engines (plain ``tcp://`` beyond loopback is refused) ask it.
"""

from __future__ import annotations

from ipaddress import ip_address


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``); a name is not."""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
