package ledger_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
)

// TestSweeper: retention removes exactly the entries past it, in batches,
// and Lookup reports them purged; event retention removes old events; two
// sweepers at once neither double-delete nor deadlock.
func TestSweeper(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := testConfig
	cfg.Limits.MinEventRetention = time.Millisecond // no floor: the test ages events in milliseconds
	b := setupWith(t, cfg)
	replica := ledgertest.Replica(t, ledgertest.Bundle{Store: b.store, Pool: b.pool}, cfg)
	short := 50 * time.Millisecond
	_, err := b.store.CreateNamespace(ctx, "short", ledger.NamespaceUpdate{Retention: &short}, "test")
	require.NoError(t, err)

	// 1,200 finished entries past retention (more than two batches),
	// written directly, plus entries that must stay.
	_, err = b.pool.Exec(ctx, `
		INSERT INTO entries (namespace, key, state, owner, fencing_token, attempts, fingerprint, result,
		                     created_at, updated_at, finished_at, expires_at)
		SELECT 'short', 'old-' || i, 'completed', 'w', 1, 1, '', 'r', now(), now(), now(), now() - interval '1 second'
		FROM generate_series(1, 1200) AS i`)
	require.NoError(t, err)
	done := b.reserve(t, ledger.ReserveRequest{Namespace: "short", Key: "fresh", Owner: "w"}, ledger.Acquired)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "short", Key: "fresh", FencingToken: done.FencingToken})
	require.NoError(t, err)
	b.reserve(t, ledger.ReserveRequest{Namespace: "short", Key: "held", Owner: "w", LeaseTTL: time.Hour}, ledger.Acquired)
	kept := b.reserve(t, ledger.ReserveRequest{Namespace: "long", Key: "done", Owner: "w"}, ledger.Acquired)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "long", Key: "done", FencingToken: kept.FencingToken})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return b.lookup(t, "short", "fresh").ExpiresAt.Before(time.Now().Add(-10 * time.Millisecond))
	},
		10*time.Second, 10*time.Millisecond)
	var expired int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM entries WHERE expires_at < now()`).Scan(&expired))
	require.Equal(t, 1201, expired)

	reports := make([]ledger.SweepReport, 2)
	var wg sync.WaitGroup
	for i, store := range []*ledger.Store{b.store, replica.Store} {
		wg.Go(func() { reports[i] = store.Sweep(ctx) })
	}
	wg.Wait()
	var total int64
	for _, r := range reports {
		require.NoError(t, r.Err)
		total += r.PurgedEntries["short"]
		require.Zero(t, r.PurgedEntries["long"])
	}
	require.Equal(t, int64(1201), total, "every expired entry purged exactly once")

	var left int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM entries`).Scan(&left))
	require.Equal(t, 2, left, "the held entry and the other namespace's stay")
	var purgedEvents int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE kind = 'purged'`).Scan(&purgedEvents))
	require.Equal(t, 1201, purgedEvents)

	e := b.lookup(t, "short", "fresh")
	require.Equal(t, ledger.StatePurged, e.State)
	require.False(t, e.PurgedAt.IsZero())
	require.Equal(t, done.FencingToken, e.FencingToken)
	require.Equal(t, ledger.StatePurged, b.lookup(t, "short", "old-7").State)
	require.Equal(t, ledger.StateLeased, b.lookup(t, "short", "held").State)
	require.Equal(t, ledger.StateCompleted, b.lookup(t, "long", "done").State)
	_, err = b.store.Lookup(ctx, "short", "never-seen")
	require.ErrorIs(t, err, ledger.ErrNotFound)

	// A purged key can be reserved again (a new entry), with a token above
	// the one it had: a worker from before the purge is still refused.
	again := b.reserve(t, ledger.ReserveRequest{Namespace: "short", Key: "fresh", Owner: "w"}, ledger.Acquired)
	require.Equal(t, done.FencingToken+1, again.FencingToken)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "short", Key: "fresh", FencingToken: done.FencingToken})
	require.ErrorIs(t, err, ledger.ErrLeaseLost, "the pre-purge token is stale")

	// Event retention: age the long namespace's events, then sweep.
	tiny := time.Millisecond
	_, err = b.store.UpdateNamespace(ctx, "long", ledger.NamespaceUpdate{Retention: &tiny, EventRetention: &tiny}, "test")
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond)
	var before, shortEvents int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE namespace = 'short'`).Scan(&shortEvents))
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE namespace = 'long'`).Scan(&before))
	require.Positive(t, before)
	report := b.store.Sweep(ctx)
	require.NoError(t, report.Err)
	require.Equal(t, int64(before-2), report.DeletedEvents["long"], "all but the two admin events")
	var after, shortAfter int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE namespace = 'long'`).Scan(&after))
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE namespace = 'short'`).Scan(&shortAfter))
	var keptKinds []string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT array_agg(kind ORDER BY id) FROM events WHERE namespace = 'long'`).Scan(&keptKinds))
	require.Equal(t, []string{"namespace_created", "namespace_changed"}, keptKinds,
		"only the admin events stay: they are kept for the admin event retention")
	require.Equal(t, 2, after)
	require.Equal(t, shortEvents, shortAfter, "the other namespace's events (30 days) stay")
}
