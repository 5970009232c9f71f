#!/usr/bin/env bash
# scripts/test.sh GO_TEST_ARGS...    run `go test` against a real PostgreSQL.
# scripts/test.sh --fuzz FUZZTIME    run every fuzz target (func FuzzX in a
#                                    _test.go file) for FUZZTIME, one after
#                                    the other (go test fuzzes one target of
#                                    one package at a time).
#
# With LEDGER_TEST_DATABASE_URL set, the tests use that server. Otherwise one
# throwaway cluster is created for the whole run (scripts/pg.sh, fsync off,
# in a temporary directory), shared by every package's tests (each test gets
# its own schema), and destroyed afterwards, pass or fail. With
# LEDGER_PG_DURABLE=1 that cluster keeps fsync on, as benchmarks need.
#
# With LEDGER_NO_COALESCE_ARGS set (`make test` sets the ledger and server
# packages), `go test` runs again with those arguments and
# LEDGER_TEST_NO_COALESCE=1: the suites' stores run every call as its own
# statement, as `ledgerd serve --no-coalesce` does, so that both code paths
# are tested.
#
# With LEDGER_FUZZTIME set (`make test` sets 500x: runs, not seconds), `go test` is followed by
# a run of every fuzz target for that long (or that many), on the same cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzz_time=""
if [[ "${1:-}" == --fuzz ]]; then
	[[ $# -eq 2 ]] || {
		echo "usage: $0 --fuzz FUZZTIME" >&2
		exit 2
	}
	fuzz_time="$2"
	set --
fi

# fuzz FUZZTIME: run each fuzz target for FUZZTIME. Inputs that fail are
# written to the package's testdata/fuzz/; minimizing one takes at most 5s.
fuzz() {
	local file dir name
	while IFS= read -r file; do
		dir="$(dirname "$file")"
		for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
			echo "fuzz: $name ($dir) for $1" >&2
			go test -run '^$' -fuzz "^${name}\$" -fuzztime "$1" -fuzzminimizetime 5s "$dir"
		done
	done < <(grep -rl --include='*_test.go' --exclude-dir=node_modules --exclude-dir=.data '^func Fuzz' . | sort)
}

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
if [[ -n "$fuzz_time" ]]; then
	fuzz "$fuzz_time"
	exit
fi
go test "$@"
if [[ -n "${LEDGER_NO_COALESCE_ARGS:-}" ]]; then
	echo "test: again with coalescing off (LEDGER_TEST_NO_COALESCE=1): go test $LEDGER_NO_COALESCE_ARGS" >&2
	# shellcheck disable=SC2086 # the arguments are words
	LEDGER_TEST_NO_COALESCE=1 go test $LEDGER_NO_COALESCE_ARGS
fi
if [[ -n "${LEDGER_FUZZTIME:-}" ]]; then
	fuzz "$LEDGER_FUZZTIME"
fi
