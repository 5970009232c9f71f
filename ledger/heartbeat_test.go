package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

func TestHeartbeatCheckpoint(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1", LeaseTTL: time.Minute}, ledger.Acquired)
	heartbeat := func(checkpoint []byte) {
		_, err := b.store.Heartbeat(ctx, ledger.HeartbeatRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken, Checkpoint: checkpoint})
		require.NoError(t, err)
	}
	heartbeat([]byte("a"))
	require.Equal(t, []byte("a"), b.lookup(t, "ns", "k").Checkpoint)
	heartbeat(nil) // keeps
	require.Equal(t, []byte("a"), b.lookup(t, "ns", "k").Checkpoint)
	heartbeat([]byte("b")) // replaces
	require.Equal(t, []byte("b"), b.lookup(t, "ns", "k").Checkpoint)
	heartbeat([]byte{}) // clears
	require.Empty(t, b.lookup(t, "ns", "k").Checkpoint)
}
