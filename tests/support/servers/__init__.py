"""Real processes and servers the tests start and stop: Prometheus, Alertmanager,
exporters, healer itself, containers, private PostgreSQL clusters, stand-ins."""
