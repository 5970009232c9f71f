#!/usr/bin/env bash
# scripts/test.sh GO_TEST_ARGS... - run `go test` against a real PostgreSQL.
#
# With LEDGER_TEST_DATABASE_URL set, the tests use that server. Otherwise one
# throwaway cluster is created for the whole run (scripts/pg.sh, fsync off,
# in a temporary directory), shared by every package's tests (each test gets
# its own schema), and destroyed afterwards, pass or fail. With
# LEDGER_PG_DURABLE=1 that cluster keeps fsync on, as benchmarks need.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${LEDGER_TEST_DATABASE_URL:-}" ]]; then
	datadir="$(mktemp -d "${TMPDIR:-/tmp}/ledgerd-test.XXXXXX")/pg"
	port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 20000)))"
	trap 'scripts/pg.sh destroy "$datadir" || true; rm -rf "$(dirname "$datadir")"' EXIT
	throwaway=1
	[[ "${LEDGER_PG_DURABLE:-}" == 1 ]] && throwaway=0
	LEDGER_TEST_DATABASE_URL="$(LEDGER_PG_THROWAWAY=$throwaway scripts/pg.sh start "$datadir" "$port")"
	export LEDGER_TEST_DATABASE_URL
fi
go test "$@"
