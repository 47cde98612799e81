#!/bin/sh
# Create the secrets compose.yml mounts, with random passwords and tokens:
#
#   examples/odoo/secrets/generate.sh [DIR]      (default: this script's directory)
#
# Existing files are kept, so running it again never changes a password the
# database already uses. The *.example files show each file's format.
set -eu
dir=${1:-$(dirname "$0")}
umask 077
mkdir -p "$dir"
chmod 700 "$dir"

random() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
put() {  # put NAME VALUE: write once
    if [ ! -e "$dir/$1" ]; then
        printf '%s\n' "$2" >"$dir/$1"
        echo "created $dir/$1"
    fi
    # Compose bind-mounts each file into containers whose processes are not root
    # (healer, alertmanager, odoo, grafana): they must be able to read it. The directory (700)
    # keeps other users of the host out.
    chmod 644 "$dir/$1"
}

put postgres_password "$(random)"
put odoo_db_password "$(random)"
put exporter_db_password "$(random)"
put healer_db_password "$(random)"
put healer_webhook_token "$(random)"
put healer_admin_token "$(random)"
put grafana_admin_password "$(random)"
# healer's DSN carries the healer role's password: build it from that file.
put odoo_dsn "postgresql://healer:$(tr -d '\r\n' <"$dir/healer_db_password")@db:5432/odoo"
# The PostgreSQL journal replicas share (compose.replicas.yml): the same role, its own
# database.
put healer_journal_dsn "postgresql://healer:$(tr -d '\r\n' <"$dir/healer_db_password")@db:5432/healer_journal"
# Where healer tells people a circuit opened: replace with your incoming-webhook URL.
put mattermost_hook_url "https://mattermost.example.com/hooks/REPLACE_ME"
