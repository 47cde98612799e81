"""Built-in handler plugins, one module per domain.

Each is registered through the ``healer.handlers`` entry points in pyproject.toml.
"""
