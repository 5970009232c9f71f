package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/ledgerd/ledgerd/internal/devcluster"
)

const (
	// envURL names an existing server to test against instead of a throwaway cluster.
	envURL = "LEDGER_TEST_DATABASE_URL"

	// opTimeout bounds each administrative statement (CREATE/DROP SCHEMA, connecting).
	opTimeout = 30 * time.Second
)

// baseURL is the URL of the test server's "ledger" database (or LEDGER_TEST_DATABASE_URL).
// It is set by Main before m.Run starts any test and never changed afterwards.
var baseURL string

// Main runs the tests of a package against a real PostgreSQL and exits with
// their exit code. Call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// If LEDGER_TEST_DATABASE_URL is set, that server is used as is (it must be a
// postgres:// or postgresql:// URL). Otherwise Main creates a throwaway
// cluster with [devcluster.StartPostgres] (scripts/pg.sh, found from the
// working directory or this source tree): a [devcluster.Throwaway] one,
// initdb --no-sync and fsync=off, in a new temporary directory, run as the
// postgres user when the tests run as root, listening on a free port of
// 127.0.0.1; it is stopped and removed after m.Run, whether or not the tests
// passed, and by a watchdog if the test binary dies first. If the server
// cannot be created or reached, Main prints the reason (including the script's output) to stderr
// and exits with status 1 without running any test; a failure to remove the
// cluster afterwards is reported the same way and turns a passing run into
// status 1. A passing run that leaves goroutines behind (checked with
// goleak) fails too.
func Main(m *testing.M) {
	os.Exit(run(m))
}

// run is Main without the os.Exit, so that deferred cleanup runs first.
func run(m *testing.M) (code int) {
	if u := os.Getenv(envURL); u != "" {
		if err := checkServer(u); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %s=%s: %v\n", envURL, redact(u), err)
			return 1
		}
		baseURL = u
		return runChecked(m)
	}

	pg, err := devcluster.StartPostgres(context.Background(), devcluster.PostgresConfig{Durability: devcluster.Throwaway})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: cannot start a throwaway PostgreSQL cluster (or set %s to use an existing server): %v\n", envURL, err)
		return 1
	}
	defer func() {
		if err := pg.Destroy(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: cannot remove the throwaway cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}()
	if err := checkServer(pg.URL()); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: throwaway cluster at %s: %v\n", pg.URL(), err)
		return 1
	}
	baseURL = pg.URL()
	return runChecked(m)
}

// runChecked runs the tests, then fails a passing run that left goroutines
// behind (a pool not closed, a server not stopped), as goleak.VerifyTestMain
// would; goleak waits a little for goroutines that are on their way out.
func runChecked(m *testing.M) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: goroutines leaked by the tests: %v\n", err)
		return 1
	}
	return 0
}

// URL returns the base connection URL of the test server: the throwaway
// cluster's "ledger" database, or LEDGER_TEST_DATABASE_URL. Tests that need
// isolation should use [Schema] instead. URL fails the test (tb.Fatal) if the
// package's TestMain does not call [Main].
func URL(tb testing.TB) string {
	tb.Helper()
	if baseURL == "" {
		tb.Fatal("pgtest: no test database: call pgtest.Main from TestMain " +
			"(func TestMain(m *testing.M) { pgtest.Main(m) })")
	}
	return baseURL
}

// Schema creates a fresh schema with a unique random name ("t_" followed by 16
// hex digits) on the test server and returns a connection URL whose
// search_path is that schema only: the base URL with the query parameter
// search_path=<schema>, which pgx sends as a runtime parameter. Unqualified
// names created through that URL land in the schema; pg_catalog stays
// visible as always. The schema and everything in it are dropped (DROP SCHEMA
// ... CASCADE) in tb.Cleanup; a failing drop is reported with tb.Errorf.
// Schema is safe to call from parallel tests. It fails the test (tb.Fatal) if
// Main was not used, the base URL is not a URL, or the schema cannot be
// created, e.g. because the role lacks the CREATE privilege on the database.
func Schema(tb testing.TB) string {
	tb.Helper()
	base := URL(tb)
	name, err := newSchemaName()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	schemaURL, err := withSearchPath(base, name)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if err := execAdmin(base, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("pgtest: create schema %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if err := dropSchema(base, name); err != nil {
			tb.Errorf("pgtest: drop schema %s: %v", name, err)
		}
	})
	return schemaURL
}

// Pool returns a *pgxpool.Pool connected with [Schema](tb)'s URL, with
// pgxpool's default settings (at most max(4, runtime.NumCPU()) connections).
// The pool is closed in tb.Cleanup before the schema is dropped. Pool fails
// the test (tb.Fatal) if Schema does, or if the pool cannot be created or
// cannot reach the server.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	u := Schema(tb)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, u)
	if err != nil {
		tb.Fatalf("pgtest: pgxpool.New: %v", err)
	}
	// Registered after Schema's cleanup, so it runs first: no pooled connection
	// can hold a lock that would make DROP SCHEMA wait.
	tb.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		tb.Fatalf("pgtest: ping %s: %v", redact(u), err)
	}
	return pool
}

// Private starts a PostgreSQL cluster of the test's own, with the given
// durability, for a test that stops, restarts or reconfigures it without
// disturbing the others; it is destroyed in tb.Cleanup.
func Private(tb testing.TB, durability devcluster.Durability) *devcluster.Postgres {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*opTimeout)
	defer cancel()
	pg, err := devcluster.StartPostgres(ctx, devcluster.PostgresConfig{Durability: durability})
	if err != nil {
		tb.Fatalf("pgtest: a private cluster: %v", err)
	}
	tb.Cleanup(func() {
		if err := pg.Destroy(); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	return pg
}

// newSchemaName returns "t_" followed by 16 random hex digits.
func newSchemaName() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random schema name: %w", err)
	}
	return "t_" + hex.EncodeToString(b[:]), nil
}

// withSearchPath returns base with the search_path query parameter set to schema.
func withSearchPath(base, schema string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("test database %q is not a postgres:// URL", redact(base))
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// dropSchema drops schema and everything in it, if it still exists.
func dropSchema(base, schema string) error {
	return execAdmin(base, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
}

// execAdmin runs one statement on a short-lived connection to base. No connection
// outlives the call, so callers' goroutine leak checks see nothing of ours.
func execAdmin(base, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(ctx, sql)
	return err
}

// checkServer makes sure u is a usable URL of a reachable server.
func checkServer(u string) error {
	if _, err := withSearchPath(u, "x"); err != nil {
		return err
	}
	return execAdmin(u, "SELECT 1")
}

// redact hides the password of a URL for error messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}
