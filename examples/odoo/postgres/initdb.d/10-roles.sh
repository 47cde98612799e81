#!/bin/sh
# Runs once, when the db volume is first initialised (postgres image,
# /docker-entrypoint-initdb.d). Passwords come from the compose secrets.
#
#   odoo               owns the odoo database; not a superuser, so healer may signal
#                      its sessions (superusers' sessions are protected)
#   healer             pg_monitor (sees every session and its query), pg_signal_backend
#                      (may cancel or terminate non-superuser sessions), odoo_monitor,
#                      odoo_cron_probe; owns the healer_journal database (the store
#                      replicas share: compose.replicas.yml, docs/replicas.md)
#   postgres_exporter  pg_monitor, odoo_monitor (reads; never locks Odoo's rows)
#   odoo_monitor       SELECT on public.ir_cron, ir_cron_trigger, ir_cron_progress
#                      (Odoo 18 and later) and ir_module_module, and on nothing else
#                      of Odoo's data: the exporter's odoo_cron query reads the jobs
#                      and their triggers; healer also reads module states (it refuses
#                      to heal during a module install or upgrade)
#   odoo_cron_probe    UPDATE (write_date) on public.ir_cron, nothing more: healer's
#                      probe `SELECT ... FROM ir_cron ... FOR NO KEY UPDATE SKIP LOCKED`
#                      (in a transaction it rolls back at once) tells which job rows a
#                      worker holds, and PostgreSQL lets a role lock rows only with
#                      UPDATE on at least one of the table's columns. write_date is
#                      Odoo's own audit column; healer never writes it
#
# Odoo creates its tables after this script, so the grants are made by an event
# trigger in the odoo database, as the tables appear. Odoo's ORM creates a table with
# its id alone and adds each column with its own ALTER TABLE, hence the trigger
# fires on CREATE TABLE and ALTER TABLE and grants UPDATE (write_date) once that
# column exists. It only acts on commands touching one of those four tables, grants
# only what is not granted yet, and never fails Odoo's DDL (a failed grant is a
# warning in the server log).
set -eu
secrets=${SECRETS_DIR:-/run/secrets}
secret() { tr -d '\r\n' <"$secrets/$1"; }

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v odoo_pw="$(secret odoo_db_password)" \
    -v healer_pw="$(secret healer_db_password)" \
    -v exporter_pw="$(secret exporter_db_password)" <<'SQL'
CREATE ROLE odoo LOGIN CREATEDB PASSWORD :'odoo_pw';
CREATE ROLE odoo_monitor NOLOGIN;
CREATE ROLE odoo_cron_probe NOLOGIN;
CREATE ROLE healer LOGIN PASSWORD :'healer_pw'
    IN ROLE pg_monitor, pg_signal_backend, odoo_monitor, odoo_cron_probe;
CREATE ROLE postgres_exporter LOGIN PASSWORD :'exporter_pw' IN ROLE pg_monitor, odoo_monitor;
CREATE DATABASE odoo OWNER odoo ENCODING 'UTF8' TEMPLATE template0;
-- healer's own journal when replicas share it (compose.replicas.yml): its tables only.
CREATE DATABASE healer_journal OWNER healer ENCODING 'UTF8' TEMPLATE template0;

\connect odoo
CREATE SCHEMA monitoring;
REVOKE ALL ON SCHEMA monitoring FROM PUBLIC;
CREATE FUNCTION monitoring.grant_odoo_monitoring() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    t record;
BEGIN
    -- Cheap on the thousands of ALTER TABLEs of an Odoo install: one look at the
    -- commands just run, nothing more unless they touched one of these tables.
    FOR t IN
        SELECT DISTINCT c.oid, c.relname
          FROM pg_event_trigger_ddl_commands() AS d
          JOIN pg_class AS c ON c.oid = d.objid
          JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE d.classid = 'pg_class'::regclass AND c.relkind = 'r'
           AND n.nspname = 'public'
           AND c.relname IN ('ir_cron', 'ir_cron_trigger', 'ir_cron_progress',
                             'ir_module_module')
    LOOP
        IF NOT has_table_privilege('odoo_monitor', t.oid, 'SELECT') THEN
            EXECUTE format('GRANT SELECT ON public.%I TO odoo_monitor', t.relname);
        END IF;
        IF t.relname = 'ir_cron'
           AND EXISTS (SELECT FROM pg_attribute
                        WHERE attrelid = t.oid AND attname = 'write_date'
                          AND NOT attisdropped)
           AND NOT has_column_privilege('odoo_cron_probe', t.oid, 'write_date', 'UPDATE')
        THEN
            GRANT UPDATE (write_date) ON public.ir_cron TO odoo_cron_probe;
        END IF;
    END LOOP;
EXCEPTION WHEN others THEN
    -- Never break Odoo's own DDL over a monitoring grant.
    RAISE WARNING 'monitoring.grant_odoo_monitoring: %', SQLERRM;
END
$$;
REVOKE ALL ON FUNCTION monitoring.grant_odoo_monitoring() FROM PUBLIC;
CREATE EVENT TRIGGER grant_odoo_monitoring ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION monitoring.grant_odoo_monitoring();
SQL
