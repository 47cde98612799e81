"""healer: auto-healing daemon for services monitored by Prometheus."""

__version__ = "0.1.0"
