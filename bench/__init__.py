"""healer's benchmarks: every figure measured beside its bare limit in the same run.

``./scripts/bench`` runs them all (``python -m bench --help`` for one at a time); each
writes ``bench/results/<name>.json`` and the summary table goes to stdout and into
docs/benchmarks.md. Machines here are shared and noisy, so a benchmark alternates healer and its
bare limit and reports medians and ratios, never one absolute time.

==============  =========================================  ==============================
benchmark       healer                                     bare limit, same run
==============  =========================================  ==============================
ingest          POST /api/v1/alerts, journal on            FastAPI endpoint parsing the
                                                           same payload model, 202
dispatch        request arrival -> handler check starts    (target: p99 5 ms idle, 50 ms
                (no-op handler), idle and under ingest     under load)
storm           10,000 alerts / 1,000 fingerprints from    exactly 1,000 heals; memory
                two replicas, then 1,000,000 alerts        flat (no leak)
verify_delay    ALERTS cleared -> healer says recovered    Prometheus' evaluation interval
action          docker.restart, terminate_blockers         raw SDK restart, bare
                                                           pg_terminate_backend
loop            the Odoo runbook scenarios, phase by       Prometheus + Alertmanager's
                phase                                      own share of the time
==============  =========================================  ==============================
"""
