"""The SQLite store: one module per concern, each owning its tables (alerts, heals,
gates, followups), the writer (one connection, group commit), the versioned schema, and
:class:`SqliteStore` composing them behind the store contract."""
