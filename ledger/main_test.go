package ledger_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testConfig allows short leases, so that tests can let a lease run out by
// the database's clock in a fraction of a second, and long waits, so that a
// waiter woken by a change is told from one woken by its timer even on a
// busy machine.
var testConfig = ledger.Config{Limits: ledger.Limits{MinLeaseTTL: 10 * time.Millisecond, MaxWait: time.Hour}, EventSettlingDelay: -1}

type testBundle struct {
	store *ledger.Store
	pool  *pgxpool.Pool
}

func setup(t *testing.T) (context.Context, testBundle) {
	t.Helper()
	b := ledgertest.Store(t, testConfig)
	return context.Background(), testBundle{store: b.Store, pool: b.Pool}
}

// event is an events row as the tests assert on it.
type event struct {
	Kind         string         `db:"kind"`
	FencingToken int64          `db:"fencing_token"`
	Owner        string         `db:"owner"`
	Attempt      int32          `db:"attempt"`
	Caller       string         `db:"caller"`
	Detail       map[string]any `db:"detail"`
}

func (b testBundle) events(t *testing.T, ns, key string) []event {
	t.Helper()
	rows, err := b.pool.Query(context.Background(),
		`SELECT kind, fencing_token, owner, attempt, caller, detail FROM events
		 WHERE namespace = $1 AND key = $2 ORDER BY id`, ns, key)
	require.NoError(t, err)
	events, err := pgx.CollectRows(rows, pgx.RowToStructByName[event])
	require.NoError(t, err)
	return events
}

func (b testBundle) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n))
	return n
}

// reserve reserves and requires the given outcome.
func (b testBundle) reserve(t *testing.T, req ledger.ReserveRequest, want ledger.Outcome) ledger.Reservation {
	t.Helper()
	r, err := b.store.Reserve(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, want, r.Outcome, "reservation: %+v", r)
	return r
}

// waitExpired waits until the key's lease has run out by the database's
// clock.
func (b testBundle) waitExpired(t *testing.T, ns, key string) {
	t.Helper()
	require.Eventually(t, func() bool {
		e, err := b.store.Lookup(context.Background(), ns, key)
		require.NoError(t, err)
		return e.LeaseExpired
	}, time.Minute, 10*time.Millisecond)
}

func (b testBundle) lookup(t *testing.T, ns, key string) ledger.Entry {
	t.Helper()
	e, err := b.store.Lookup(context.Background(), ns, key)
	require.NoError(t, err)
	return e
}

func setupWith(t *testing.T, cfg ledger.Config) testBundle {
	t.Helper()
	b := ledgertest.Store(t, cfg)
	return testBundle{store: b.Store, pool: b.Pool}
}

// purgedKey creates namespace ns with a retention of 1ms, and in it a key
// that was completed and then purged; it returns the key's reservation.
func (b testBundle) purgedKey(t *testing.T, ns, key string) ledger.Reservation {
	t.Helper()
	ctx := context.Background()
	_, err := b.store.CreateNamespace(ctx, ns, ledger.NamespaceUpdate{Retention: ptr(time.Millisecond)}, "test")
	require.NoError(t, err)
	r := b.reserve(t, ledger.ReserveRequest{Namespace: ns, Key: key, Owner: "w"}, ledger.Acquired)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: ns, Key: key, FencingToken: r.FencingToken})
	require.NoError(t, err)
	// The retention ends 1ms after the Complete by the database's clock.
	require.Eventually(t, func() bool {
		purged, err := b.store.PurgeExpired(ctx, ns, "test")
		require.NoError(t, err)
		return purged == 1
	}, time.Minute, time.Millisecond)
	return r
}

// planText runs an EXPLAIN statement with q and returns its plan, a line
// of text per row.
func planText(t *testing.T, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, sql string, args ...any) string {
	t.Helper()
	rows, err := q.Query(context.Background(), sql, args...)
	require.NoError(t, err, sql)
	var plan strings.Builder
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan.WriteString(line + "\n")
	}
	require.NoError(t, rows.Err())
	return plan.String()
}
