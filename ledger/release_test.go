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
