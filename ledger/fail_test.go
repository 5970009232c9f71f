package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestRetryableFailFreesKey: the next Reserve takes over at once with a new
// token; the attempt count and the checkpoint are kept.
func TestRetryableFailFreesKey(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1", LeaseTTL: time.Minute}, ledger.Acquired)
	_, err := b.store.Heartbeat(ctx, ledger.HeartbeatRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken, Checkpoint: []byte("page=3")})
	require.NoError(t, err)
	f, err := b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken, Retryable: true,
		Error: &ledger.WorkError{Code: "timeout", Message: "upstream timed out"}})
	require.NoError(t, err)
	require.Equal(t, ledger.StateReleased, f.State)

	e := b.lookup(t, "ns", "k")
	require.Equal(t, ledger.StateReleased, e.State)
	require.Equal(t, &ledger.WorkError{Code: "timeout", Message: "upstream timed out"}, e.Error)
	require.True(t, e.FinishedAt.IsZero())

	next := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w2"}, ledger.Acquired)
	require.Equal(t, int64(2), next.FencingToken)
	require.Equal(t, 2, next.Attempt)
	require.True(t, next.Takeover)
	require.Equal(t, []byte("page=3"), next.Checkpoint)

	kinds := []string{}
	for _, ev := range b.events(t, "ns", "k") {
		kinds = append(kinds, ev.Kind)
	}
	require.Equal(t, []string{"reserved", "heartbeat", "failed", "taken_over"}, kinds)
}
