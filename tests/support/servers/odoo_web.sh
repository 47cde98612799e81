#!/bin/sh
# Odoo stand-in for the longpoll runbook. Runs with busybox sh inside the
# healer-test-busybox image; PORT must be set (odoo_standins.py prepends it).
#
# Serves on http://127.0.0.1:$PORT:
#   /web/health            200 {"status": "pass"} (a file)
#   /cgi-bin/longpoll      200 {"channels": []} at once ... or, while /www/stalled
#                          exists, only after it is gone (at most 120 s): the stall.
# Stall it:  touch /www/stalled     (odoo_standins.stall_longpoll)
# The flag lives in the container's filesystem, which `docker restart` keeps:
# this script removes it on every start, so a restart is what heals the stall.
#
# httpd runs as a child, not via exec (see service.sh): the shell traps TERM,
# stops httpd and exits, so `docker restart` takes ~0.2 s, not the stop timeout.
set -eu
: "${PORT:?PORT must be set}"

rm -f /www/stalled
mkdir -p /www/web /www/cgi-bin
echo '{"status": "pass"}' > /www/web/health
cat > /www/cgi-bin/longpoll <<'CGI'
#!/bin/sh
i=0
while [ -e /www/stalled ] && [ "$i" -lt 1200 ]; do
    sleep 0.1
    i=$((i + 1))
done
printf 'Content-Type: application/json\r\n\r\n{"channels": []}\n'
CGI
chmod 755 /www/cgi-bin/longpoll

httpd -f -p "127.0.0.1:$PORT" -h /www &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; exit 0' TERM INT
wait "$pid"
