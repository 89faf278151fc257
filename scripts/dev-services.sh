#!/usr/bin/env bash
# Starts what a developer needs to run the enterprise server locally and prints the URLs:
# - PostgreSQL: the server on 127.0.0.1:5432 when one answers, else a private cluster
#   (scripts/postgres.sh), plus the application role `dg_app` (password `dg_app`) and a
#   database `decision_gate`.
# S3 (for runpacks) and an OIDC provider come with their issues.
# Idempotent: run it again to get the URLs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/postgres.sh
psql="$(dg_pg_bin psql)"
"$psql" -X -q -v ON_ERROR_STOP=1 -d "$DG_PG_URL" <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dg_app') THEN
    CREATE ROLE dg_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD 'dg_app';
  END IF;
END $$;
SELECT 'CREATE DATABASE decision_gate' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'decision_gate')
\gexec
SQL
hostport="${DG_PG_URL#*@}"
hostport="${hostport%%/*}"
echo "postgres (owner, for migrate/provision/integrity-scan): postgres://postgres@$hostport/decision_gate"
echo "postgres (application role, for serve):                 postgres://dg_app:dg_app@$hostport/decision_gate"
echo "next: decision-gate-enterprise migrate --config examples/enterprise.toml, then provision, then serve"
