package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

func TestReleaseFreesKey(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1", LeaseTTL: time.Hour}, ledger.Acquired)
	already, err := b.store.Release(ctx, ledger.ReleaseRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken})
	require.NoError(t, err)
	require.False(t, already)
	require.Equal(t, ledger.StateReleased, b.lookup(t, "ns", "k").State)

	// The same owner gets a new grant too: its old one was given up.
	next := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1"}, ledger.Acquired)
	require.Equal(t, int64(2), next.FencingToken)
	require.Equal(t, "released", b.events(t, "ns", "k")[1].Kind)
}

// TestReleaseAfterItsOwnFail: a retryable Fail releases the key, so the
// holder's Release after it (a clean-up step) succeeds as already released
// and records nothing; after a permanent Fail it is refused.
func TestReleaseAfterItsOwnFail(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "retry", Owner: "w"}, ledger.Acquired)
	_, err := b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "retry", FencingToken: r.FencingToken, Retryable: true, Error: &ledger.WorkError{Message: "flaky"}})
	require.NoError(t, err)
	already, err := b.store.Release(ctx, ledger.ReleaseRequest{Namespace: "ns", Key: "retry", FencingToken: r.FencingToken})
	require.NoError(t, err)
	require.True(t, already)
	require.Equal(t, []string{"reserved", "failed"}, kinds(b.events(t, "ns", "retry")), "no release is recorded")

	r = b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "final", Owner: "w"}, ledger.Acquired)
	_, err = b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "final", FencingToken: r.FencingToken, Error: &ledger.WorkError{Message: "broken"}})
	require.NoError(t, err)
	_, err = b.store.Release(ctx, ledger.ReleaseRequest{Namespace: "ns", Key: "final", FencingToken: r.FencingToken})
	require.ErrorIs(t, err, ledger.ErrLeaseLost)
	require.Equal(t, ledger.StateFailed, b.lookup(t, "ns", "final").State)
}
