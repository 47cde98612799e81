"""Loops and scenarios assembled from those servers: the closed loop, the Odoo runbook,
faults, floods, load, replicas."""
