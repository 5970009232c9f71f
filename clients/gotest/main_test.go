package gotest_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// TestMain runs the tests against a real PostgreSQL (see pgtest).
//
// pgtest.Main exits the process, so goleak.VerifyTestMain cannot wrap it.
// Instead every top-level test calls noLeaks and runs its cases as parallel
// subtests: Go starts a top-level test only when the one before it has
// finished, subtests included, so the goroutine check that noLeaks runs at
// the end of each top-level test sees exactly what that test left behind.
func TestMain(m *testing.M) { pgtest.Main(m) }

// noLeaks fails t if a goroutine started while t ran (by t or its subtests)
// is still running when t and its subtests have finished. t must not be
// parallel, or it would see its siblings' goroutines.
func noLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// namespace is the namespace of the tests' keys. Every test has its own
// ledger (its own schema), so they can share it.
const namespace = "billing"

// patience bounds every wait of the tests for something that should happen
// (a call to return, a heartbeat to land, a lease to run out): far longer
// than it ever takes, even on a machine busy with other work, so that it
// only ends a test that is broken. The tests wait for conditions, never for
// an interval assumed to be long enough; their leases outlast any stall
// unless a test ends them itself.
const patience = time.Minute

// testConfig lets tests ask for leases of 50ms, so that expiry is quick.
var testConfig = ledger.Config{Limits: ledger.Limits{MinLeaseTTL: 50 * time.Millisecond}}

// testBundle is what a test works with: a client of its own in-memory
// ledgerd, and the pool over that ledgerd's schema for assertions on rows.
type testBundle struct {
	client *ledgerclient.Client
	conn   *grpc.ClientConn
	pool   *pgxpool.Pool
}

func setup(t *testing.T) testBundle {
	t.Helper()
	conn, bundle := ledgertest.Server(t, testConfig)
	return testBundle{client: ledgerclient.NewFromConn(conn), conn: conn, pool: bundle.Pool}
}

// entry is the part of an entries row that the tests check.
type entry struct {
	State        string
	Owner        string
	FencingToken int64
	Attempts     int
	Result       []byte
	ErrorMessage string
	Checkpoint   []byte
}

func readEntry(t *testing.T, pool *pgxpool.Pool, key string) entry {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT state, owner, fencing_token, attempts, result,
		       coalesce(error_message, '') AS error_message, checkpoint
		FROM entries WHERE namespace = $1 AND key = $2`, namespace, key)
	require.NoError(t, err)
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByNameLax[entry])
	require.NoError(t, err)
	return e
}

// eventKinds returns the kinds of the key's audit events, oldest first.
func eventKinds(t *testing.T, pool *pgxpool.Pool, key string) []string {
	t.Helper()
	kinds, err := queryEventKinds(pool, key)
	require.NoError(t, err)
	return kinds
}

// queryEventKinds is eventKinds for a condition of require.Eventually,
// which runs in a goroutine of its own.
func queryEventKinds(pool *pgxpool.Pool, key string) ([]string, error) {
	rows, err := pool.Query(context.Background(),
		`SELECT kind FROM events WHERE namespace = $1 AND key = $2 ORDER BY id`, namespace, key)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// serveTCP serves a ledgerd over store on lis until tb's cleanup.
func serveTCP(tb testing.TB, store *ledger.Store, lis net.Listener) {
	tb.Helper()
	srv, err := server.New(store, server.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(tb, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		require.NoError(tb, <-served)
	})
}

// startLedgerd starts a ledgerd on a loopback TCP port for an example, over
// a fresh schema of the test database, and returns its address and a
// function that stops it and drops the schema. Examples get no
// *testing.T, so a failure to start panics.
func startLedgerd() (addr string, stop func()) {
	tb := &exampleTB{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	serveTCP(tb, ledgertest.Store(tb, ledger.Config{}).Store, lis)
	return lis.Addr().String(), tb.cleanup
}

// exampleTB lets startLedgerd use the test helpers: a failure panics, and
// cleanup runs what they registered. Methods the helpers do not use are
// left to the nil embedded interface.
type exampleTB struct {
	testing.TB
	cleanups []func()
}

func (*exampleTB) Helper()                           {}
func (*exampleTB) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (*exampleTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (*exampleTB) Errorf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (*exampleTB) FailNow()                          { panic("example setup failed") }
func (tb *exampleTB) Cleanup(f func())               { tb.cleanups = append(tb.cleanups, f) }

func (tb *exampleTB) cleanup() {
	for i := len(tb.cleanups) - 1; i >= 0; i-- {
		tb.cleanups[i]()
	}
}

// countingConn counts the Reserve calls made through it.
type countingConn struct {
	grpc.ClientConnInterface
	reserves atomic.Int64
}

func (c *countingConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if method == ledgerv1.LedgerService_Reserve_FullMethodName {
		c.reserves.Add(1)
	}
	return c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
}
