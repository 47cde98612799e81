#!/bin/sh
# Runs once, when the db volume is first initialised (postgres image,
# /docker-entrypoint-initdb.d). Passwords come from the compose secrets.
#
#   odoo               owns the odoo database; not a superuser, so healer may signal
#                      its sessions (superusers' sessions are protected)
#   healer             pg_monitor (sees every session), pg_signal_backend (may cancel or
#                      terminate non-superuser sessions), odoo_monitor
#   postgres_exporter  pg_monitor, odoo_monitor
#   odoo_monitor       SELECT on ir_cron, granted by an event trigger as soon as Odoo
#                      creates the table (and on nothing else of Odoo's data)
set -eu
secrets=${SECRETS_DIR:-/run/secrets}
secret() { tr -d '\r\n' <"$secrets/$1"; }

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v odoo_pw="$(secret odoo_db_password)" \
    -v healer_pw="$(secret healer_db_password)" \
    -v exporter_pw="$(secret exporter_db_password)" <<'SQL'
CREATE ROLE odoo LOGIN CREATEDB PASSWORD :'odoo_pw';
CREATE ROLE odoo_monitor NOLOGIN;
CREATE ROLE healer LOGIN PASSWORD :'healer_pw' IN ROLE pg_monitor, pg_signal_backend, odoo_monitor;
CREATE ROLE postgres_exporter LOGIN PASSWORD :'exporter_pw' IN ROLE pg_monitor, odoo_monitor;
CREATE DATABASE odoo OWNER odoo ENCODING 'UTF8' TEMPLATE template0;

\connect odoo
CREATE SCHEMA monitoring;
REVOKE ALL ON SCHEMA monitoring FROM PUBLIC;
CREATE FUNCTION monitoring.grant_ir_cron() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF to_regclass('public.ir_cron') IS NOT NULL
       AND NOT has_table_privilege('odoo_monitor', 'public.ir_cron', 'SELECT') THEN
        GRANT SELECT ON public.ir_cron TO odoo_monitor;
    END IF;
EXCEPTION WHEN others THEN
    -- Never break Odoo's own DDL over a monitoring grant.
    RAISE WARNING 'monitoring.grant_ir_cron: %', SQLERRM;
END
$$;
REVOKE ALL ON FUNCTION monitoring.grant_ir_cron() FROM PUBLIC;
CREATE EVENT TRIGGER grant_ir_cron ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION monitoring.grant_ir_cron();
SQL
