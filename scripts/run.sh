#!/usr/bin/env bash
# scripts/run.sh DEV_PG_DIR DEV_PG_PORT - `make run`: start ledgerd over
# LEDGER_DATABASE_URL, or over a private PostgreSQL cluster in DEV_PG_DIR
# (created on the first run with scripts/pg.sh, reused afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${LEDGER_DATABASE_URL:-}" ]]; then
	LEDGER_DATABASE_URL="$(scripts/pg.sh start "$1" "$2")"
	export LEDGER_DATABASE_URL
	echo "run: using the private PostgreSQL in $1 (stop it with 'make db-stop')" >&2
fi
go build -o bin/ledgerd ./cmd/ledgerd
exec bin/ledgerd serve --insecure-dev
