#!/usr/bin/env bash
# scripts/pg.sh - run a private PostgreSQL cluster for ledgerd development and tests.
#
# Usage:
#   scripts/pg.sh start   DATADIR PORT   create (first run) and start a cluster in DATADIR,
#                                        listening on 127.0.0.1:PORT only, create database
#                                        "ledger" if missing, and print its connection URL
#                                        (the only line written to stdout). Idempotent.
#   scripts/pg.sh stop    DATADIR        stop the cluster (fast mode) if it runs. Idempotent.
#   scripts/pg.sh url     DATADIR PORT   print the connection URL without starting anything.
#   scripts/pg.sh destroy DATADIR        stop the cluster and delete its data directory
#                                        (used by internal/pgtest for throwaway clusters).
#   scripts/pg.sh bindir                 print the directory of the server binaries (installing
#                                        them as below when missing): for clusters that another
#                                        program runs, such as the Patroni cluster of
#                                        internal/devcluster.
#
# Everything except the URL goes to stderr; the server log is DATADIR/log/postgresql.log.
#
# Environment:
#   LEDGER_PG_BINDIR     directory holding initdb/pg_ctl/postgres; overrides the lookup below.
#   LEDGER_PG_THROWAWAY  if "1" when the cluster is first created, initdb runs with --no-sync and
#                        the cluster runs with fsync=off. Only for throwaway test clusters: a crash
#                        can corrupt such a cluster, and durability numbers measured on it are fake.
#   LEDGER_PG_TIMEOUT    seconds pg_ctl waits for start/stop (default 60).
#
# Binary lookup: $LEDGER_PG_BINDIR, else `pg_config --bindir`, else the newest
# /usr/lib/postgresql/*/bin, else /usr/local/bin, else initdb on $PATH. If nothing is found and we
# are root on a machine with apt-get, the Debian "postgresql" package is installed and the lookup is
# repeated (the package may create and start its own system cluster on port 5432; this script
# neither uses nor touches it).
#
# Running as root: initdb and the server refuse to run as root, so the cluster belongs to the
# "postgres" system user (created if missing) and every server-side command runs as that user via
# runuser (or su). That user must be able to traverse every parent of DATADIR; when it cannot
# (e.g. a checkout under /root, mode 700), the cluster lives in
# /var/tmp/ledgerd-pg-<hash of the absolute DATADIR> instead, and a note says so on stderr.
# The choice is deterministic, so start/stop/destroy with the same DATADIR find the same cluster.

set -euo pipefail

readonly PROG="${0##*/}"
readonly PG_USER_NAME=postgres # database superuser in the URL, and OS user when we are root
readonly DB_NAME=ledger
readonly TIMEOUT="${LEDGER_PG_TIMEOUT:-60}"

# Filled in by the functions below.
BINDIR=""     # directory with initdb, pg_ctl, psql, ...
PGDATA_DIR="" # effective data directory (DATADIR or the /var/tmp fallback)
SOCK_DIR=""   # unix socket directory (inside PGDATA_DIR when the path is short enough)
PORT=""       # TCP port on 127.0.0.1 (start only)

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

usage() {
	cat >&2 <<EOF
usage: $PROG start   DATADIR PORT
       $PROG stop    DATADIR
       $PROG url     DATADIR PORT
       $PROG destroy DATADIR
       $PROG bindir
EOF
	exit 2
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# check_port PORT: the port must be a number in 1..65535.
check_port() {
	if ! [[ "$1" =~ ^[0-9]{1,5}$ ]] || ((10#$1 < 1 || 10#$1 > 65535)); then
		die "invalid port: '$1'"
	fi
}

# url PORT: the connection URL clients use (TCP on loopback; the cluster trusts local users).
url() { printf 'postgres://%s@127.0.0.1:%s/%s?sslmode=disable\n' "$PG_USER_NAME" "$1" "$DB_NAME"; }

# abspath PATH: absolute, normalized path (the path need not exist).
abspath() {
	if command -v realpath >/dev/null 2>&1 && realpath -m / >/dev/null 2>&1; then
		realpath -m -- "$1"
	else
		case "$1" in
		/*) printf '%s\n' "$1" ;;
		*) printf '%s/%s\n' "$PWD" "$1" ;;
		esac
	fi
}

# short_hash STRING: 12 hex digits identifying STRING (for fallback dir and lock names).
short_hash() {
	if command -v sha256sum >/dev/null 2>&1; then
		printf '%s' "$1" | sha256sum | cut -c1-12
	elif command -v shasum >/dev/null 2>&1; then
		printf '%s' "$1" | shasum -a 256 | cut -c1-12
	else
		printf '%s' "$1" | cksum | cut -d' ' -f1
	fi
}

# as_pg CMD...: run CMD as the cluster owner: the postgres user when we are root, else ourselves.
as_pg() {
	if ! is_root; then
		"$@"
	elif command -v runuser >/dev/null 2>&1; then
		runuser -u "$PG_USER_NAME" -- "$@"
	else
		local cmd
		cmd="$(printf '%q ' "$@")"
		su "$PG_USER_NAME" -s /bin/sh -c "$cmd"
	fi
}

# has_server_binaries DIR: DIR holds the server-side programs we need.
has_server_binaries() {
	local d="$1" b
	[[ -n "$d" && -d "$d" ]] || return 1
	for b in initdb pg_ctl postgres psql createdb pg_isready; do
		[[ -x "$d/$b" ]] || return 1
	done
}

# lookup_bindir: print the first directory with server binaries, or fail.
lookup_bindir() {
	local d
	if [[ -n "${LEDGER_PG_BINDIR:-}" ]]; then
		has_server_binaries "$LEDGER_PG_BINDIR" || die "LEDGER_PG_BINDIR=$LEDGER_PG_BINDIR lacks initdb/pg_ctl/postgres/psql"
		printf '%s\n' "$LEDGER_PG_BINDIR"
		return 0
	fi
	# pg_config may come from libpq-dev without the server, so check what it points at.
	if command -v pg_config >/dev/null 2>&1; then
		d="$(pg_config --bindir 2>/dev/null || true)"
		if has_server_binaries "$d"; then
			printf '%s\n' "$d"
			return 0
		fi
	fi
	# Debian/Ubuntu layout: newest major version first.
	if [[ -d /usr/lib/postgresql ]]; then
		while IFS= read -r d; do
			if has_server_binaries "$d"; then
				printf '%s\n' "$d"
				return 0
			fi
		done < <(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -rV)
	fi
	if has_server_binaries /usr/local/bin; then
		printf '%s\n' /usr/local/bin
		return 0
	fi
	if command -v initdb >/dev/null 2>&1; then
		d="$(dirname -- "$(command -v initdb)")"
		if has_server_binaries "$d"; then
			printf '%s\n' "$d"
			return 0
		fi
	fi
	return 1
}

# find_binaries: set BINDIR, installing the Debian package as a last resort when root.
find_binaries() {
	if BINDIR="$(lookup_bindir)"; then
		check_version
		return 0
	fi
	if is_root && command -v apt-get >/dev/null 2>&1; then
		log "no PostgreSQL server binaries found; installing the Debian 'postgresql' package"
		# Output goes to stderr: stdout is reserved for the URL.
		apt-get update >&2 || die "apt-get update failed"
		DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2 ||
			die "apt-get install postgresql failed"
		if BINDIR="$(lookup_bindir)"; then
			check_version
			return 0
		fi
	fi
	die "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; install PostgreSQL 13+" \
		"server binaries: apt-get install postgresql (Debian/Ubuntu), brew install postgresql" \
		"(macOS), or set LEDGER_DATABASE_URL to an existing server"
}

# check_version: warn when the server is older than the oldest version we support (13).
check_version() {
	local v major
	v="$("$BINDIR/postgres" --version 2>/dev/null || true)" # "postgres (PostgreSQL) 15.8 (...)"
	major="$(printf '%s\n' "$v" | sed -n 's/^[^0-9]*\([0-9][0-9]*\).*/\1/p')"
	if [[ -n "$major" ]] && ((major < 13)); then
		log "warning: $BINDIR is PostgreSQL $major; ledgerd needs 13 or newer"
	fi
}

# ensure_pg_user: as root, make sure the postgres system user exists.
ensure_pg_user() {
	is_root || return 0
	id -u "$PG_USER_NAME" >/dev/null 2>&1 && return 0
	log "creating system user '$PG_USER_NAME'"
	if command -v useradd >/dev/null 2>&1; then
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /bin/sh "$PG_USER_NAME" >&2 || die "useradd $PG_USER_NAME failed"
	elif command -v adduser >/dev/null 2>&1; then
		# BusyBox/Alpine.
		adduser -S -D -H -s /bin/sh "$PG_USER_NAME" >&2 || die "adduser $PG_USER_NAME failed"
	else
		die "cannot create user '$PG_USER_NAME': neither useradd nor adduser is available"
	fi
}

# pg_can_traverse DIR: the cluster owner can reach DIR (search permission on DIR and its parents).
pg_can_traverse() {
	as_pg test -d "$1" -a -x "$1" 2>/dev/null
}

# resolve_datadir DATADIR CREATE: set PGDATA_DIR and SOCK_DIR. With CREATE=1 the directories are
# created and handed to the cluster owner; with CREATE=0 nothing on disk changes.
resolve_datadir() {
	local abs parent create="$2" fallback hash
	abs="$(abspath "$1")"
	[[ "$abs" != "/" ]] || die "refusing to use / as DATADIR"
	hash="$(short_hash "$abs")"
	PGDATA_DIR="$abs"
	if is_root; then
		parent="$(dirname -- "$abs")"
		if [[ "$create" == 1 ]]; then
			mkdir -p -- "$parent"
		fi
		fallback="/var/tmp/ledgerd-pg-$hash"
		if [[ "$create" == 1 ]]; then
			if ! pg_can_traverse "$parent"; then
				log "note: user '$PG_USER_NAME' cannot traverse to $abs; using $fallback instead"
				PGDATA_DIR="$fallback"
			fi
		elif [[ -d "$fallback" ]] && ! pg_can_traverse "$parent"; then
			# stop/destroy: the cluster is wherever "start" put it.
			PGDATA_DIR="$fallback"
		fi
		if [[ "$create" == 1 ]]; then
			mkdir -p -- "$PGDATA_DIR"
			# Hand the directory (and any earlier cluster in it) to the postgres user.
			if [[ "$(stat -c %U -- "$PGDATA_DIR" 2>/dev/null || true)" != "$PG_USER_NAME" ]]; then
				chown -R "$PG_USER_NAME:" -- "$PGDATA_DIR"
			fi
			chmod 700 -- "$PGDATA_DIR"
		fi
	elif [[ "$create" == 1 ]]; then
		mkdir -p -- "$PGDATA_DIR"
		chmod 700 -- "$PGDATA_DIR"
	fi

	# Unix socket paths are limited to ~107 bytes; "/.s.PGSQL.65535" adds 15.
	if ((${#PGDATA_DIR} <= 85)); then
		SOCK_DIR="$PGDATA_DIR"
	else
		SOCK_DIR="/tmp/ledgerd-pg-sock-$hash"
		if [[ "$create" == 1 ]]; then
			mkdir -p -- "$SOCK_DIR"
			chmod 700 -- "$SOCK_DIR"
			if is_root; then chown "$PG_USER_NAME:" -- "$SOCK_DIR"; fi
		fi
	fi
}

# take_lock: serialize concurrent invocations for the same cluster (best effort; needs flock).
take_lock() {
	command -v flock >/dev/null 2>&1 || return 0
	local lock
	lock="/tmp/ledgerd-pg-$(short_hash "$PGDATA_DIR").lock"
	exec 9>>"$lock"
	flock -w "$TIMEOUT" 9 || die "timed out waiting for lock $lock (another $PROG running?)"
}

# pid_field N: line N of postmaster.pid (1 pid, 4 port, 5 socket dir, 8 status), or empty.
pid_field() {
	sed -n "${1}p" "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true
}

# server_running: pg_ctl believes a postmaster for PGDATA_DIR is alive.
server_running() {
	[[ -f "$PGDATA_DIR/PG_VERSION" ]] || return 1
	as_pg "$BINDIR/pg_ctl" status -D "$PGDATA_DIR" >/dev/null 2>&1
}

# pid_is_postgres: the PID in postmaster.pid is a postgres process. pg_ctl only checks that the PID
# is alive, so after a crash or reboot a reused PID makes it report "running" and "stop" would
# signal an unrelated process. Without /proc (macOS) we trust pg_ctl.
pid_is_postgres() {
	local pid comm
	pid="$(pid_field 1)"
	[[ -d /proc/self ]] || return 0
	[[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
	comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
	[[ "$comm" == postgres || "$comm" == postmaster ]]
}

# die_stale_pid: explain how to recover from a postmaster.pid whose PID now belongs to another process.
die_stale_pid() {
	die "stale $PGDATA_DIR/postmaster.pid: its PID $(pid_field 1) is alive but is not a PostgreSQL" \
		"server for this directory (reused PID after a crash/reboot?). Make sure no postgres runs" \
		"for $PGDATA_DIR, then remove $PGDATA_DIR/postmaster.pid and retry"
}

# psql_admin SQL: run SQL in the "postgres" database over TCP, printing unaligned tuples.
psql_admin() {
	"$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$PG_USER_NAME" \
		-d postgres -tAc "$1"
}

# ensure_database: create database "ledger" if missing (tolerating a concurrent creator).
ensure_database() {
	local exists
	exists="$(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ||
		die "cannot query the server on 127.0.0.1:$PORT"
	[[ "$exists" == 1 ]] && return 0
	log "creating database '$DB_NAME'"
	if ! "$BINDIR/createdb" -h 127.0.0.1 -p "$PORT" -U "$PG_USER_NAME" "$DB_NAME" >&2; then
		exists="$(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" || true)"
		[[ "$exists" == 1 ]] || die "could not create database '$DB_NAME'"
	fi
}

# init_cluster: run initdb in PGDATA_DIR (which must be empty) and append our settings.
init_cluster() {
	local nosync=() durability kind="a durable cluster (fsync on)"
	if [[ "${LEDGER_PG_THROWAWAY:-}" == 1 ]]; then
		kind="a throwaway cluster (fsync off)"
		# Throwaway test cluster: skipping fsync makes initdb and tests much faster; a crash can
		# lose or corrupt data, which is acceptable only because the cluster is deleted afterwards.
		nosync=(--no-sync)
		durability="fsync = off
synchronous_commit = off
full_page_writes = off"
	else
		# Development cluster: keep fsync on so latency/durability measurements are honest.
		durability="fsync = on"
	fi
	log "creating $kind in $PGDATA_DIR with $BINDIR/initdb"
	# --auth=trust: any local user may connect as any role without a password. Acceptable only
	# because the server listens on 127.0.0.1 and on a socket in a private (0700) directory.
	# initdb's report is shown only when it fails: on success it ends with advice to start the
	# server with pg_ctl by hand, which is this script's job.
	local out
	if ! out="$(as_pg "$BINDIR/initdb" -D "$PGDATA_DIR" --auth=trust --username="$PG_USER_NAME" \
		--encoding=UTF8 --locale=C ${nosync[@]+"${nosync[@]}"} 2>&1)"; then
		printf '%s\n' "$out" >&2
		die "initdb failed for $PGDATA_DIR (it must be empty or not exist)"
	fi
	# shellcheck disable=SC2016 # $1 is expanded by the inner sh, running as the cluster owner.
	as_pg sh -c 'cat >>"$1"' sh "$PGDATA_DIR/postgresql.conf" <<EOF

# --- added by scripts/pg.sh ---
max_connections = 200
shared_buffers = 128MB
$durability
# Per-start settings (port, listen address, socket dir), rewritten by every "pg.sh start".
include_if_exists = 'ledgerd.conf'
EOF
}

# write_start_conf: per-start settings; a file instead of pg_ctl -o avoids shell quoting issues.
write_start_conf() {
	local sock="${SOCK_DIR//\'/\'\'}"
	# shellcheck disable=SC2016 # $1 is expanded by the inner sh, running as the cluster owner.
	as_pg sh -c 'cat >"$1"' sh "$PGDATA_DIR/ledgerd.conf" <<EOF
# Written by scripts/pg.sh start; do not edit.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$sock'
EOF
}

cmd_start() {
	local datadir="$1" running_port
	PORT="$2"
	check_port "$PORT"
	find_binaries
	ensure_pg_user
	resolve_datadir "$datadir" 1
	take_lock
	# Server-side commands run as postgres; stay in a directory that user can read.
	cd /

	if server_running; then
		pid_is_postgres || die_stale_pid
		running_port="$(pid_field 4)"
		if [[ "$running_port" != "$PORT" ]]; then
			die "the cluster in $PGDATA_DIR already runs on port $running_port, not $PORT;" \
				"stop it first ($PROG stop $datadir)"
		fi
		if ! "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 10; then
			die "the server for $PGDATA_DIR (PID $(pid_field 1)) does not answer on 127.0.0.1:$PORT;" \
				"see $PGDATA_DIR/log/postgresql.log"
		fi
		log "already running on 127.0.0.1:$PORT (data: $PGDATA_DIR)"
		ensure_database
		url "$PORT"
		return 0
	fi

	if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
		init_cluster
	fi
	if [[ -f "$PGDATA_DIR/postmaster.pid" ]]; then
		log "note: leftover $PGDATA_DIR/postmaster.pid (PID $(pid_field 1), no server running); the server will replace it"
	fi
	write_start_conf
	as_pg mkdir -p "$PGDATA_DIR/log"
	local logfile="$PGDATA_DIR/log/postgresql.log" log_size new_log
	# Only the lines this start appends are examined on failure, not older runs' messages.
	log_size="$(wc -c 2>/dev/null <"$logfile" || echo 0)"
	log "starting server on 127.0.0.1:$PORT (data: $PGDATA_DIR, log: $logfile)"
	# 9>&-: the postmaster must not inherit (and hold forever) the lock taken in take_lock.
	if ! as_pg "$BINDIR/pg_ctl" start -D "$PGDATA_DIR" -l "$logfile" -w -t "$TIMEOUT" >&2 9>&-; then
		new_log="$(tail -c +"$((log_size + 1))" "$logfile" 2>/dev/null || true)"
		log "server failed to start; its log ($logfile) says:"
		printf '%s\n' "$new_log" | tail -n 20 >&2
		if grep -q 'lock file "postmaster.pid" already exists' <<<"$new_log"; then
			log "a stale $PGDATA_DIR/postmaster.pid blocks start: its PID belongs to another live" \
				"process. Make sure no postgres runs for this directory, then remove the file and retry."
		elif grep -q 'could not bind\|Address already in use' <<<"$new_log"; then
			log "port $PORT on 127.0.0.1 is taken by another process; choose another port"
		fi
		exit 1
	fi
	ensure_database
	url "$PORT"
}

cmd_stop() {
	resolve_datadir "$1" 0
	if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
		log "no cluster in $PGDATA_DIR; nothing to stop"
		return 0
	fi
	# A cluster exists, so its binaries must too: look them up, but never install anything here.
	BINDIR="$(lookup_bindir)" || die "no PostgreSQL binaries found to stop the cluster in $PGDATA_DIR"
	take_lock
	cd /
	if ! server_running; then
		log "not running (data: $PGDATA_DIR)"
		return 0
	fi
	pid_is_postgres || die_stale_pid
	log "stopping server (data: $PGDATA_DIR)"
	as_pg "$BINDIR/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t "$TIMEOUT" >&2 ||
		die "pg_ctl stop failed for $PGDATA_DIR; see $PGDATA_DIR/log/postgresql.log"
}

cmd_destroy() {
	cmd_stop "$1"
	resolve_datadir "$1" 0
	if [[ -d "$PGDATA_DIR" ]]; then
		# Only delete what looks like a cluster (or an empty dir): DATADIR comes from the caller.
		if [[ -f "$PGDATA_DIR/PG_VERSION" || -z "$(ls -A -- "$PGDATA_DIR")" ]]; then
			log "removing $PGDATA_DIR"
			rm -rf -- "$PGDATA_DIR"
		else
			die "$PGDATA_DIR is not a PostgreSQL data directory; not removing it"
		fi
	fi
	if [[ "$SOCK_DIR" != "$PGDATA_DIR" && -d "$SOCK_DIR" ]]; then
		rm -rf -- "$SOCK_DIR"
	fi
	rm -f -- "/tmp/ledgerd-pg-$(short_hash "$PGDATA_DIR").lock"
}

main() {
	[[ $# -ge 1 ]] || usage
	local sub="$1"
	shift
	case "$sub" in
	start)
		[[ $# -eq 2 ]] || usage
		cmd_start "$1" "$2"
		;;
	stop)
		[[ $# -eq 1 ]] || usage
		cmd_stop "$1"
		;;
	url)
		[[ $# -eq 2 ]] || usage
		check_port "$2"
		url "$2"
		;;
	destroy)
		[[ $# -eq 1 ]] || usage
		cmd_destroy "$1"
		;;
	bindir)
		[[ $# -eq 0 ]] || usage
		find_binaries
		printf '%s\n' "$BINDIR"
		;;
	-h | --help | help) usage ;;
	*) usage ;;
	esac
}

main "$@"
