#!/usr/bin/env bash
# scripts/run.sh DEV_PG_DIR DEV_PG_PORT - `make run`: start ledgerd over
# LEDGER_DATABASE_URL, or over a private PostgreSQL cluster in DEV_PG_DIR
# (created on the first run with scripts/pg.sh, reused afterwards).
#
# It says what it is doing on stderr: the cluster, the build (on a fresh
# machine the first one takes minutes, so it reports its progress), and
# where ledgerd listens; then ledgerd's own log follows.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'run: %s\n' "$*" >&2; }

if [[ -z "${LEDGER_DATABASE_URL:-}" ]]; then
	say "starting the private PostgreSQL in $1 (created on the first run, reused afterwards)"
	LEDGER_DATABASE_URL="$(scripts/pg.sh start "$1" "$2")"
	export LEDGER_DATABASE_URL
	say "PostgreSQL is up: $LEDGER_DATABASE_URL (it keeps running after ledgerd; 'make db-stop' stops it)"
else
	say "using LEDGER_DATABASE_URL"
fi

# build_progress reads `go build -v`, which prints the import path of each
# package it compiles: it counts those lines, says every 15 seconds how far
# the build is, and passes every other line (downloads, compile errors)
# through.
build_progress() {
	local line compiled=0 said=$SECONDS
	while IFS= read -r line; do
		if [[ "$line" =~ ^[^[:space:]:#]+$ ]]; then
			compiled=$((compiled + 1))
			if ((SECONDS - said >= 15)); then
				say "... still building: $compiled packages compiled so far ($((SECONDS - build_start))s)"
				said=$SECONDS
			fi
		else
			printf '%s\n' "$line" >&2
		fi
	done
}

say "building bin/ledgerd (the first build on a machine downloads and compiles the dependencies: a few minutes; later ones take seconds)"
build_start=$SECONDS
# GO_LDFLAGS: what `make run` passes, the version stamp of `make build`.
if ! go build -v -ldflags "${GO_LDFLAGS:-}" -o bin/ledgerd ./cmd/ledgerd 2>&1 | build_progress; then
	say "the build failed (see above)"
	exit 1
fi
say "built bin/ledgerd in $((SECONDS - build_start))s"

say "starting ledgerd: gRPC on ${LEDGER_LISTEN_ADDR:-127.0.0.1:7070}, HTTP/JSON, /metrics and probes on ${LEDGER_HTTP_ADDR:-127.0.0.1:7071}," \
	"without authentication (--insecure-dev); it logs \"ledgerd serving\" when it is ready, and ^C stops it;" \
	"the console is http://${LEDGER_HTTP_ADDR:-127.0.0.1:7071}/ui/"
exec bin/ledgerd serve --insecure-dev
