"""Built-in handler plugins, one module per domain, registered through the ``healer.handlers`` entry points."""
