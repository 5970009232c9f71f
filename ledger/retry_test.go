package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestRetrySafety repeats every call as a client does after a lost
// response, and checks that the repeat gives the same answer and writes
// nothing more.
func TestRetrySafety(t *testing.T) {
	t.Parallel()

	t.Run("Reserve by the holder returns the same token and extends the lease", func(t *testing.T) {
		t.Parallel()
		_, b := setup(t)
		first := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1", LeaseTTL: time.Minute}, ledger.Acquired)
		again := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1", LeaseTTL: 2 * time.Minute}, ledger.Acquired)
		require.Equal(t, first.FencingToken, again.FencingToken)
		require.Equal(t, first.Attempt, again.Attempt)
		require.True(t, again.LeaseExpiresAt.After(first.LeaseExpiresAt))
		require.Len(t, b.events(t, "ns", "k"), 1, "a retry is not a state change")
	})

	t.Run("Heartbeat", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1", LeaseTTL: time.Minute}, ledger.Acquired)
		hb := ledger.HeartbeatRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken, LeaseTTL: time.Minute, Checkpoint: []byte("c1")}
		first, err := b.store.Heartbeat(ctx, hb)
		require.NoError(t, err)
		second, err := b.store.Heartbeat(ctx, hb)
		require.NoError(t, err)
		require.False(t, second.Before(first))
		e := b.lookup(t, "ns", "k")
		require.Equal(t, []byte("c1"), e.Checkpoint)
		require.WithinDuration(t, second, e.LeaseExpiresAt, 0)
	})

	t.Run("Complete with the same result succeeds, with another conflicts", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1"}, ledger.Acquired)
		req := ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken, Result: []byte("42")}
		first, err := b.store.Complete(ctx, req)
		require.NoError(t, err)
		require.False(t, first.AlreadyCompleted)
		again, err := b.store.Complete(ctx, req)
		require.NoError(t, err)
		require.True(t, again.AlreadyCompleted)
		require.Equal(t, first.CompletedAt, again.CompletedAt)

		req.Result = []byte("43")
		_, err = b.store.Complete(ctx, req)
		require.ErrorIs(t, err, ledger.ErrResultConflict)
		require.Equal(t, []byte("42"), b.lookup(t, "ns", "k").Result)
		require.Len(t, b.events(t, "ns", "k"), 2)
	})

	t.Run("Complete with an empty result", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1"}, ledger.Acquired)
		req := ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken}
		_, err := b.store.Complete(ctx, req)
		require.NoError(t, err)
		again, err := b.store.Complete(ctx, req)
		require.NoError(t, err)
		require.True(t, again.AlreadyCompleted)
		replay := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w2"}, ledger.Completed)
		require.Empty(t, replay.Result)
	})

	t.Run("Fail", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		for _, retryable := range []bool{false, true} {
			key := map[bool]string{false: "permanent", true: "retryable"}[retryable]
			r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: key, Owner: "w1"}, ledger.Acquired)
			req := ledger.FailRequest{Namespace: "ns", Key: key, FencingToken: r.FencingToken, Retryable: retryable,
				Error: &ledger.WorkError{Code: "c", Message: "m"}}
			first, err := b.store.Fail(ctx, req)
			require.NoError(t, err)
			require.False(t, first.AlreadyFailed)
			again, err := b.store.Fail(ctx, req)
			require.NoError(t, err)
			require.True(t, again.AlreadyFailed)
			require.Equal(t, first.State, again.State)

			req.Error = &ledger.WorkError{Code: "c", Message: "another"}
			_, err = b.store.Fail(ctx, req)
			require.ErrorIs(t, err, ledger.ErrResultConflict)
			require.Len(t, b.events(t, "ns", key), 2)
		}
	})

	t.Run("Release", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1"}, ledger.Acquired)
		req := ledger.ReleaseRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken}
		already, err := b.store.Release(ctx, req)
		require.NoError(t, err)
		require.False(t, already)
		already, err = b.store.Release(ctx, req)
		require.NoError(t, err)
		require.True(t, already)
		require.Len(t, b.events(t, "ns", "k"), 2)
	})

	t.Run("calls on a finished key with its own token", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1"}, ledger.Acquired)
		_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken, Result: []byte("x")})
		require.NoError(t, err)
		_, err = b.store.Heartbeat(ctx, ledger.HeartbeatRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken})
		require.ErrorIs(t, err, ledger.ErrLeaseLost)
		_, err = b.store.Release(ctx, ledger.ReleaseRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken})
		require.ErrorIs(t, err, ledger.ErrLeaseLost)
		_, err = b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken, Error: &ledger.WorkError{Message: "m"}})
		require.ErrorIs(t, err, ledger.ErrLeaseLost)
		require.Equal(t, ledger.StateCompleted, b.lookup(t, "ns", "k").State)
	})

	t.Run("calls on an unknown key or with a token never granted", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "nobody", FencingToken: 1})
		require.ErrorIs(t, err, ledger.ErrLeaseLost)
		r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w1"}, ledger.Acquired)
		_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken + 1})
		require.ErrorIs(t, err, ledger.ErrLeaseLost)
		_, err = b.store.Lookup(ctx, "ns", "nobody")
		require.ErrorIs(t, err, ledger.ErrNotFound)
		require.Equal(t, 1, b.count(t, "entries"))
	})
}
