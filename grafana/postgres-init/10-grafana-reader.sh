#!/bin/sh
# Create the read-only role Grafana's PostgreSQL data source logs in as (grafana_reader).
# docker-compose.yml mounts this directory at the postgres image's /docker-entrypoint-initdb.d,
# so it runs once, when the data volume is empty. Tables that batch-monitor creates later (its
# migrations run as POSTGRES_USER) are readable too, through the default privileges.
set -eu
: "${GRAFANA_POSTGRES_PASSWORD:?set GRAFANA_POSTGRES_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pw="$GRAFANA_POSTGRES_PASSWORD" -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'pw';
GRANT CONNECT ON DATABASE :"db" TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
