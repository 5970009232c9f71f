// Package pgtest runs a package's tests against a real PostgreSQL server and
// gives every test its own schema.
//
// A package opts in from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// and its tests then call [Schema] (a connection URL confined to a fresh
// schema) or [Pool] (a pgxpool.Pool over such a URL). Schemas are dropped when
// the test that created them finishes, so tests may run in parallel and share
// one server without seeing each other's tables.
//
// The server is the one named by the LEDGER_TEST_DATABASE_URL environment
// variable when it is set (a postgres:// URL; the role must be allowed to
// create schemas). Otherwise [Main] creates a throwaway cluster with
// scripts/pg.sh, through internal/devcluster: initdb and pg_ctl from the local PostgreSQL installation (as
// the postgres system user when the tests run as root), in a temporary
// directory, listening on a free port of 127.0.0.1 only, with fsync off.
// Bringing it up takes about a second; it is stopped and deleted after the
// tests, and also, by a small watchdog process, if the test binary dies
// without returning from Main (a panic, a -timeout, ^C).
//
// goleak checks are left to callers: this package keeps no goroutines or
// connections alive between calls, apart from the pools [Pool] returns.
package pgtest
