package ledger_test

import (
	"context"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/migrations"
)

// knownVersions are the versions of the embedded migration files, in order.
func knownVersions(t *testing.T) []int64 {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	versions := make([]int64, 0, len(names))
	for _, name := range names {
		version, err := strconv.ParseInt(strings.SplitN(name, "_", 2)[0], 10, 64)
		require.NoError(t, err)
		versions = append(versions, version)
	}
	require.NotEmpty(t, versions)
	return versions
}

func appliedVersions(t *testing.T, pool *pgxpool.Pool) []int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		`SELECT version_id FROM ledgerd_migrations WHERE is_applied AND version_id > 0 ORDER BY id`)
	require.NoError(t, err)
	defer rows.Close()
	var versions []int64
	for rows.Next() {
		var v int64
		require.NoError(t, rows.Scan(&v))
		versions = append(versions, v)
	}
	require.NoError(t, rows.Err())
	return versions
}

func TestMigrateTwiceIsNoOp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)

	applied, err := ledger.Migrate(ctx, pool, nil)
	require.NoError(t, err)
	require.Equal(t, knownVersions(t), applied)
	require.NoError(t, ledger.CheckSchema(ctx, pool))

	applied, err = ledger.Migrate(ctx, pool, nil)
	require.NoError(t, err)
	require.Empty(t, applied)
	require.Equal(t, knownVersions(t), appliedVersions(t, pool))
}

func TestConcurrentMigratorsDoNotCollide(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	const migrators = 4
	var wg sync.WaitGroup
	applied := make([][]int64, migrators)
	errs := make([]error, migrators)
	for i := range migrators {
		// Each migrator has its own pool, as separate replicas would.
		pool, err := pgxpool.New(ctx, url)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		wg.Go(func() { applied[i], errs[i] = ledger.Migrate(ctx, pool, nil) })
	}
	wg.Wait()
	total := 0
	for i := range migrators {
		require.NoError(t, errs[i])
		total += len(applied[i])
	}
	require.Equal(t, len(knownVersions(t)), total, "exactly one migrator applies each migration")

	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.Equal(t, knownVersions(t), appliedVersions(t, pool))
}

// TestSchemaChecks enforces the upgrade and rollback policy of
// docs/operations.md ("Upgrades and rollbacks") in both directions: a
// ledgerd refuses a database behind it until it is migrated, serves one a
// newer ledgerd migrated with additive migrations only (a rolling upgrade's
// older replicas, or a rollback of the binary), and refuses one whose
// newer migrations say that it may not run beside them.
func TestSchemaChecks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	known := knownVersions(t)
	newest := known[len(known)-1]

	// Before migrating: pending.
	require.ErrorIs(t, ledger.CheckSchema(ctx, pool), ledger.ErrSchemaBehind)

	_, err := ledger.Migrate(ctx, pool, nil)
	require.NoError(t, err)
	require.NoError(t, ledger.CheckSchema(ctx, pool))

	// A newer ledgerd added a migration that this one may run beside (it
	// left min_binary_schema alone): served as it is, nothing to apply.
	_, err = pool.Exec(ctx, `INSERT INTO ledgerd_migrations (version_id, is_applied) VALUES ($1, true)`, newest+1)
	require.NoError(t, err)
	require.NoError(t, ledger.CheckSchema(ctx, pool))
	applied, err := ledger.Migrate(ctx, pool, nil)
	require.NoError(t, err)
	require.Empty(t, applied)

	// Then one that this ledgerd may not run beside: refused, by the
	// start-up check and by the migrator, with the versions named.
	_, err = pool.Exec(ctx, `INSERT INTO ledgerd_migrations (version_id, is_applied) VALUES ($1, true)`, newest+2)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE ledgerd_schema_compat SET min_binary_schema = $1`, newest+2)
	require.NoError(t, err)
	err = ledger.CheckSchema(ctx, pool)
	require.ErrorIs(t, err, ledger.ErrSchemaTooNew)
	require.ErrorContains(t, err, fmt.Sprintf("database at version %d needs a ledgerd that knows version %d or later, this one knows up to %d",
		newest+2, newest+2, newest))
	_, err = ledger.Migrate(ctx, pool, nil)
	require.ErrorIs(t, err, ledger.ErrSchemaTooNew)
}

// TestSchemaRequiresThisLedgerd: the migrations this ledgerd ships say that
// an older ledgerd may not serve them (00010: an older one would not read
// the fencing epoch), and are never marked as needing a newer one.
func TestSchemaRequiresThisLedgerd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t)
	_, err := ledger.Migrate(ctx, pool, nil)
	require.NoError(t, err)
	known := knownVersions(t)
	var required int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT min_binary_schema FROM ledgerd_schema_compat`).Scan(&required))
	require.GreaterOrEqual(t, required, int64(10))
	require.LessOrEqual(t, required, known[len(known)-1])
}

func TestEventsAreAppendOnly(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}, ledger.Acquired)
	_, err := b.pool.Exec(ctx, `UPDATE events SET owner = 'forged'`)
	require.ErrorContains(t, err, "events are append-only")
	require.Equal(t, "w", b.events(t, "ns", "k")[0].Owner)
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	b.pool.Close()
	_, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.ErrorIs(t, err, ledger.ErrUnavailable)
	_, err = b.store.Lookup(ctx, "ns", "k")
	require.ErrorIs(t, err, ledger.ErrUnavailable)

	// Nobody listens on the port: connection refused is UNAVAILABLE too.
	pool, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/ledger?connect_timeout=2")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store, err := ledger.New(pool, ledger.Config{})
	require.NoError(t, err)
	_, err = store.Lookup(ctx, "ns", "k")
	require.ErrorIs(t, err, ledger.ErrUnavailable)
	require.ErrorIs(t, store.Ping(ctx), ledger.ErrUnavailable)
}

func TestCallerIsRecorded(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	ctx := ledger.WithCaller(context.Background(), "svc:etl")
	_, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	require.Equal(t, "svc:etl", b.events(t, "ns", "k")[0].Caller)
}
