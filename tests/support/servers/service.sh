#!/bin/sh
# Demo "service" for integration tests. Runs with busybox sh inside the
# healer-test-busybox image; PORT must be set (service_command() prepends it).
#
# Serves a Prometheus metric on http://127.0.0.1:$PORT/metrics (and /metrics.txt):
#   demo_service_healthy 1   after every (re)start ...
#   demo_service_healthy 0   ... unless /www/sticky-broken exists ("broken for good").
# Which container it is comes from the scrape target's labels, as in real setups.
# Break it at runtime:   sed -i 's/ 1$/ 0/' /www/metrics.txt
# Break it for good:     ... and touch /www/sticky-broken
# Mute it after restarts: touch /www/sticky-silent (runs, but serves nothing)
#
# httpd runs as a child, not via exec: as PID 1 busybox httpd has no SIGTERM
# handler and the kernel drops the signal, so `docker stop/restart` would wait
# for the full stop timeout (10 s) before SIGKILL. The shell traps TERM/INT,
# stops httpd and exits at once (restart takes ~0.2 s).
set -eu
: "${PORT:?PORT must be set}"

mkdir -p /www
if [ -e /www/sticky-silent ]; then
    # "Comes back mute": the container runs but serves nothing, so every scrape fails.
    trap 'exit 0' TERM INT
    while :; do sleep 1; done
fi
if [ -e /www/sticky-broken ]; then
    healthy=0
else
    healthy=1
fi
echo "demo_service_healthy $healthy" > /www/metrics.txt
# Prometheus scrapes /metrics by default; serve the same file there.
ln -sf metrics.txt /www/metrics

httpd -f -p "127.0.0.1:$PORT" -h /www &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; exit 0' TERM INT
wait "$pid"
