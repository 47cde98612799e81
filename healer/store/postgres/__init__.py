"""The PostgreSQL store (:class:`PostgresStore`), shared by several healer processes."""
