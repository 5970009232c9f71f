// Package ledgertest builds ledgers and in-memory ledgerd servers for tests,
// each over its own freshly migrated schema of the real test PostgreSQL
// (see internal/pgtest). Packages that use it call pgtest.Main from
// TestMain.
package ledgertest

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// Bundle is what a test gets: the store, and the pool over the test's own
// schema, for assertions on the rows.
type Bundle struct {
	Store *ledger.Store
	Pool  *pgxpool.Pool
}

// Store returns a Store over a fresh, migrated schema, configured with cfg
// (zero fields take their defaults), with its Listen running until the test
// ends. Tests use a shorter minimum lease TTL
// through cfg to exercise expiry quickly.
//
// Unless cfg says otherwise, ListEvents lists events up to the database's
// now (EventSettlingDelay -1), so that tests see the events they just made.
func Store(tb testing.TB, cfg ledger.Config) Bundle {
	tb.Helper()
	return StoreAt(tb, pgtest.Schema(tb), cfg)
}

// StoreAt is Store over the database of url, which it migrates: a cluster
// of the test's own, such as one that fails over.
func StoreAt(tb testing.TB, url string, cfg ledger.Config) Bundle {
	tb.Helper()
	if cfg.EventSettlingDelay == 0 {
		cfg.EventSettlingDelay = -1
	}
	pool := Pool(tb, url)
	_, err := ledger.Migrate(context.Background(), pool, nil)
	require.NoError(tb, err)
	return newBundle(tb, pool, cfg)
}

// Replica returns another Store over b's schema, with a pool and a
// listener of its own, as a second ledgerd replica would have.
func Replica(tb testing.TB, b Bundle, cfg ledger.Config) Bundle {
	tb.Helper()
	pool, err := pgxpool.NewWithConfig(context.Background(), b.Pool.Config().Copy())
	require.NoError(tb, err)
	tb.Cleanup(pool.Close)
	return newBundle(tb, pool, cfg)
}

// Pool returns a pool over url configured as ledgerd configures its own
// (ledger.ConfigurePool), closed when the test ends (before the cleanups
// registered earlier, such as pgtest.Schema's DROP SCHEMA).
func Pool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	config, err := pgxpool.ParseConfig(url)
	require.NoError(tb, err)
	ledger.ConfigurePool(config)
	pool, err := pgxpool.NewWithConfig(context.Background(), config)
	require.NoError(tb, err)
	tb.Cleanup(pool.Close)
	require.NoError(tb, pool.Ping(context.Background()))
	return pool
}

// ReadPool returns a pool over url configured as ledgerd configures its
// read pool (ledger.ConfigureReadPool), for Config.ReadPool, closed when
// the test ends. It does not connect: url may lead to a standby that is
// down.
func ReadPool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	config, err := pgxpool.ParseConfig(url)
	require.NoError(tb, err)
	ledger.ConfigureReadPool(config)
	pool, err := pgxpool.NewWithConfig(context.Background(), config)
	require.NoError(tb, err)
	tb.Cleanup(pool.Close)
	return pool
}

// EnvNoCoalesce names the environment variable that runs a suite with
// coalescing off: with LEDGER_TEST_NO_COALESCE=1, every Store built here
// whose configuration leaves coalescing at its defaults runs each call as
// its own statement, as `ledgerd serve --no-coalesce` does. `make test`
// runs the ledger and server suites both ways. A test that configures
// coalescing itself keeps its configuration.
const EnvNoCoalesce = "LEDGER_TEST_NO_COALESCE"

// Config returns cfg as the suite runs it: with coalescing disabled under
// LEDGER_TEST_NO_COALESCE=1, unless cfg configures coalescing.
func Config(cfg ledger.Config) ledger.Config {
	if os.Getenv(EnvNoCoalesce) == "1" && cfg.Coalesce == (ledger.CoalesceConfig{}) {
		cfg.Coalesce.Disabled = true
	}
	return cfg
}

func newBundle(tb testing.TB, pool *pgxpool.Pool, cfg ledger.Config) Bundle {
	tb.Helper()
	store, err := ledger.New(pool, Config(cfg))
	require.NoError(tb, err)
	ctx, stopListening := context.WithCancel(context.Background())
	listened := make(chan error, 1)
	go func() { listened <- store.Listen(ctx) }()
	tb.Cleanup(func() {
		stopListening()
		require.NoError(tb, <-listened)
	})
	return Bundle{Store: store, Pool: pool}
}

// Server starts an in-memory ledgerd (server.New over Store) on a bufconn
// listener, and returns a client connection to it. Both are stopped in
// tb.Cleanup.
func Server(tb testing.TB, cfg ledger.Config) (*grpc.ClientConn, Bundle) {
	tb.Helper()
	bundle := Store(tb, cfg)
	conn := Serve(tb, bundle.Store)
	return conn, bundle
}

// Serve serves store in memory and returns a client connection to it.
func Serve(tb testing.TB, store *ledger.Store) *grpc.ClientConn {
	tb.Helper()
	srv, err := server.New(store, server.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(tb, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn := Dial(tb, lis)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		require.NoError(tb, <-served)
	})
	return conn
}

// Dial returns a client connection to a server on lis, closed in
// tb.Cleanup.
func Dial(tb testing.TB, lis *bufconn.Listener) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// RunAuth loads the store's tokens and role bindings into a server.Auth and
// keeps them fresh (every 100ms) until tb's cleanup.
func RunAuth(tb testing.TB, store *ledger.Store) *server.Auth {
	tb.Helper()
	auth := server.NewAuth(store, server.AuthConfig{RefreshInterval: 100 * time.Millisecond})
	require.NoError(tb, auth.Load(context.Background()))
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- auth.Run(ctx) }()
	tb.Cleanup(func() { stop(); require.NoError(tb, <-ran) })
	return auth
}

// ServeTCP serves store with cfg on a loopback TCP port, as a deployed
// ledgerd would, until tb's cleanup, and returns its address. A nil
// cfg.Logger discards the logs.
func ServeTCP(tb testing.TB, store *ledger.Store, cfg server.Config) string {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv, err := server.New(store, cfg)
	require.NoError(tb, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		require.NoError(tb, <-served)
	})
	return lis.Addr().String()
}

// LogBuffer collects what a server or a command writes (a log, stdout) for
// a test to read while it runs: a bytes.Buffer safe for concurrent use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
