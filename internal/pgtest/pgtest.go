package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"
)

const (
	// envURL names an existing server to test against instead of a throwaway cluster.
	envURL = "LEDGER_TEST_DATABASE_URL"

	// opTimeout bounds each administrative statement (CREATE/DROP SCHEMA, connecting).
	opTimeout = 30 * time.Second

	// scriptTimeout bounds one run of scripts/pg.sh. It is generous because, as root on
	// a machine without PostgreSQL, the script installs the Debian package first.
	scriptTimeout = 10 * time.Minute

	// startAttempts is how often Main tries to start the cluster, each time on a new
	// free port, in case another process grabs the port between probe and bind.
	startAttempts = 3
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
// cluster with scripts/pg.sh (found relative to this source file, or by
// walking up from the working directory): initdb --no-sync and fsync=off in a
// new temporary directory, run as the postgres user when the tests run as
// root, listening on a free port of 127.0.0.1; it is stopped and removed after
// m.Run, whether or not the tests passed. If the server cannot be created or
// reached, Main prints the reason (including the script's output) to stderr
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

	c, err := startCluster()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: cannot start a throwaway PostgreSQL cluster: %v\n", err)
		return 1
	}
	defer func() {
		if err := c.destroy(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: cannot remove the throwaway cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}()
	if err := checkServer(c.url); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: throwaway cluster at %s: %v\n", c.url, err)
		return 1
	}
	baseURL = c.url
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

// cluster is a throwaway PostgreSQL cluster managed with scripts/pg.sh.
type cluster struct {
	script   string    // absolute path of scripts/pg.sh
	tmp      string    // temporary directory holding the data directory
	dataDir  string    // DATADIR argument of pg.sh (it may relocate it, see the script)
	url      string    // connection URL printed by "pg.sh start"
	watchdog *exec.Cmd // destroys the cluster if this process dies without calling destroy
}

// startCluster creates and starts a throwaway cluster on a free loopback port.
func startCluster() (*cluster, error) {
	script, err := findScript()
	if err != nil {
		return nil, err
	}
	// Keep the path short: the unix socket lives in the data directory, and socket
	// paths are limited to about 107 bytes (the script copes with long ones, but
	// "/tmp/lpg123456789/d" needs no special casing).
	tmp, err := os.MkdirTemp("", "lpg")
	if err != nil {
		return nil, err
	}
	// When running as root, the cluster belongs to the postgres user, which must be
	// able to traverse this directory (MkdirTemp creates it with mode 0700).
	if err := os.Chmod(tmp, 0o755); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	c := &cluster{script: script, tmp: tmp, dataDir: filepath.Join(tmp, "d")}
	c.startWatchdog()

	var errs []error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out, err := c.run("start", c.dataDir, strconv.Itoa(port))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !strings.HasPrefix(out, "postgres://") {
			errs = append(errs, fmt.Errorf("pg.sh start printed %q, want a postgres:// URL", out))
			continue
		}
		c.url = out
		return c, nil
	}
	if err := c.destroy(); err != nil {
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// startWatchdog starts a detached shell that waits for this process to exit and
// then destroys the cluster. It matters when the test binary never returns from
// Main: a panicking test, go test -timeout, or an interrupt. The shell ignores
// the terminal's signals so that ^C kills the tests but not their cleanup.
// Failing to start it is not fatal: normal shutdown does not need it.
func (c *cluster) startWatchdog() {
	const prog = `trap '' INT TERM HUP
while kill -0 "$1" 2>/dev/null; do sleep 1; done
bash "$2" destroy "$3" >/dev/null 2>&1
rm -rf "$4"`
	cmd := exec.Command("sh", "-c", prog, "pgtest-watchdog",
		strconv.Itoa(os.Getpid()), c.script, c.dataDir, c.tmp)
	// Stdin, Stdout and Stderr stay nil (/dev/null): the watchdog must not hold
	// the pipes go test reads, or go test would wait for it to exit.
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: warning: no cleanup watchdog (%v); a crashed test run may leave a postgres behind in %s\n", err, c.tmp)
		return
	}
	c.watchdog = cmd
}

// destroy stops the cluster, deletes its files and ends the watchdog.
func (c *cluster) destroy() error {
	if c.watchdog != nil {
		_ = c.watchdog.Process.Kill()
		_ = c.watchdog.Wait()
		c.watchdog = nil
	}
	_, err := c.run("destroy", c.dataDir)
	if rmErr := os.RemoveAll(c.tmp); rmErr != nil {
		err = errors.Join(err, rmErr)
	}
	return err
}

// run runs scripts/pg.sh with args and returns its trimmed stdout. The script's
// stderr is included in the error when it fails.
func (c *cluster) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{c.script}, args...)...)
	// Throwaway cluster: initdb --no-sync and fsync=off (see scripts/pg.sh). Losing
	// it in a crash costs nothing, and it makes cluster creation and tests faster.
	cmd.Env = append(os.Environ(), "LEDGER_PG_THROWAWAY=1")
	cmd.Dir = "/"
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", c.script, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// findScript locates scripts/pg.sh: first relative to this source file, then by
// walking up from the working directory (go test runs in the package directory).
func findScript() (string, error) {
	const rel = "scripts/pg.sh"
	var tried []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		p := filepath.Join(filepath.Dir(file), "..", "..", rel)
		if isFile(p) {
			return filepath.Clean(p), nil
		}
		tried = append(tried, p)
	}
	if dir, err := os.Getwd(); err == nil {
		for {
			p := filepath.Join(dir, rel)
			if isFile(p) {
				return p, nil
			}
			tried = append(tried, p)
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("%s not found (tried %s); set %s to use an existing server",
		rel, strings.Join(tried, ", "), envURL)
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
