"""An example healer handler plugin (see ``restart_unhealthy``)."""
