package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

func TestLeaseCounts(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)

	counts, err := b.store.LeaseCounts(ctx)
	require.NoError(t, err)
	require.Empty(t, counts)

	b.reserve(t, ledger.ReserveRequest{Namespace: "a", Key: "held-1", Owner: "w", LeaseTTL: time.Hour}, ledger.Acquired)
	b.reserve(t, ledger.ReserveRequest{Namespace: "a", Key: "held-2", Owner: "w", LeaseTTL: time.Hour}, ledger.Acquired)
	b.reserve(t, ledger.ReserveRequest{Namespace: "a", Key: "expired", Owner: "w", LeaseTTL: 10 * time.Millisecond}, ledger.Acquired)
	done := b.reserve(t, ledger.ReserveRequest{Namespace: "b", Key: "done", Owner: "w"}, ledger.Acquired)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "b", Key: "done", FencingToken: done.FencingToken})
	require.NoError(t, err)
	b.waitExpired(t, "a", "expired")

	counts, err = b.store.LeaseCounts(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]ledger.LeaseCount{
		"a": {Held: 2, Expired: 1},
		"b": {}, // listed, so that its gauges fall to zero
	}, counts)

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = b.store.LeaseCounts(canceled)
	require.ErrorIs(t, err, context.Canceled)
}

func TestPoolStat(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	require.Equal(t, b.pool.Stat().MaxConns(), b.store.PoolStat().MaxConns())
}
