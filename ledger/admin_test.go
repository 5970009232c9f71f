package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

func TestAdminActions(t *testing.T) {
	t.Parallel()

	t.Run("force-release: audited, the next Reserve takes over", func(t *testing.T) {
		t.Parallel()
		_, b := setup(t)
		ctx := ledger.WithCaller(context.Background(), "alice@ops")
		held := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "stuck-worker", LeaseTTL: time.Hour}, ledger.Acquired)

		_, _, err := b.store.ForceRelease(ctx, ledger.ForceReleaseRequest{Namespace: "ns", Key: "k"})
		var validation *ledger.ValidationError
		require.ErrorAs(t, err, &validation)
		require.Equal(t, "reason", validation.Field)
		require.Equal(t, ledger.StateLeased, b.lookup(t, "ns", "k").State, "refused: nothing changed")

		entry, already, err := b.store.ForceRelease(ctx, ledger.ForceReleaseRequest{Namespace: "ns", Key: "k", Reason: "worker host died", FencingToken: held.FencingToken})
		require.NoError(t, err)
		require.False(t, already)
		require.Equal(t, ledger.StateReleased, entry.State)
		_, already, err = b.store.ForceRelease(ctx, ledger.ForceReleaseRequest{Namespace: "ns", Key: "k", Reason: "retry", FencingToken: held.FencingToken})
		require.NoError(t, err)
		require.True(t, already)
		_, _, err = b.store.ForceRelease(ctx, ledger.ForceReleaseRequest{Namespace: "ns", Key: "k", Reason: "again"})
		require.ErrorIs(t, err, ledger.ErrNotLeased)

		// The old holder's calls are refused (and audited), even before
		// anybody takes the key over.
		_, err = b.store.Release(context.Background(), ledger.ReleaseRequest{Namespace: "ns", Key: "k", FencingToken: held.FencingToken})
		require.ErrorIs(t, err, ledger.ErrLeaseLost)
		_, err = b.store.Fail(context.Background(), ledger.FailRequest{Namespace: "ns", Key: "k", FencingToken: held.FencingToken,
			Retryable: true, Error: &ledger.WorkError{Message: "m"}})
		require.ErrorIs(t, err, ledger.ErrLeaseLost)

		next := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "new-worker"}, ledger.Acquired)
		require.Equal(t, held.FencingToken+2, next.FencingToken)
		_, err = b.store.Complete(context.Background(), ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: held.FencingToken})
		require.ErrorIs(t, err, ledger.ErrLeaseLost)
		_, _, err = b.store.ForceRelease(ctx, ledger.ForceReleaseRequest{Namespace: "ns", Key: "k", Reason: "x", FencingToken: held.FencingToken})
		require.ErrorIs(t, err, ledger.ErrLeaseLost)
		_, _, err = b.store.ForceRelease(ctx, ledger.ForceReleaseRequest{Namespace: "ns", Key: "nope", Reason: "x"})
		require.ErrorIs(t, err, ledger.ErrNotFound)

		events := b.events(t, "ns", "k")
		require.Equal(t, "force_released", events[1].Kind)
		require.Equal(t, "alice@ops", events[1].Caller)
		require.Equal(t, map[string]any{"reason": "worker host died", "previous_owner": "stuck-worker", "previous_token": float64(1)}, events[1].Detail)
		require.Equal(t, int64(2), events[1].FencingToken, "the token moved on")
		require.Equal(t, "refused_stale_token", events[2].Kind, "the old holder's refused Release is audited")
	})

	t.Run("reset: the work runs again; refused without a reason", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w", Fingerprint: []byte("fp")}, ledger.Acquired)
		_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken, Result: []byte("wrong")})
		require.NoError(t, err)
		_, err = b.store.ResetKey(ctx, ledger.ResetKeyRequest{Namespace: "ns", Key: "k"})
		require.ErrorIs(t, err, ledger.ErrInvalidArgument)
		require.Equal(t, ledger.StateCompleted, b.lookup(t, "ns", "k").State)

		_, err = b.store.ResetKey(ctx, ledger.ResetKeyRequest{Namespace: "ns", Key: "k", Reason: "x", FencingToken: r.FencingToken + 5})
		require.ErrorIs(t, err, ledger.ErrLeaseLost, "the key is not at that token: nothing is reset")
		require.Equal(t, ledger.StateCompleted, b.lookup(t, "ns", "k").State)
		entry, err := b.store.ResetKey(ctx, ledger.ResetKeyRequest{Namespace: "ns", Key: "k", Reason: "results computed with the broken v2.3 build",
			FencingToken: r.FencingToken})
		require.NoError(t, err)
		require.Equal(t, ledger.StateReleased, entry.State)
		require.Nil(t, entry.Result)
		require.True(t, entry.FinishedAt.IsZero())
		require.True(t, entry.ExpiresAt.IsZero())
		again := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w2", Fingerprint: []byte("fp")}, ledger.Acquired)
		require.Equal(t, r.FencingToken+2, again.FencingToken)
		_, err = b.store.ResetKey(ctx, ledger.ResetKeyRequest{Namespace: "ns", Key: "missing", Reason: "x"})
		require.ErrorIs(t, err, ledger.ErrNotFound)
	})

	t.Run("max attempts turn a retryable failure permanent", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		two := 2
		_, err := b.store.CreateNamespace(ctx, "ns", ledger.NamespaceUpdate{MaxAttempts: &two}, "flaky upstream: give up after 2")
		require.NoError(t, err)
		first := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}, ledger.Acquired)
		f, err := b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "k", FencingToken: first.FencingToken, Retryable: true, Error: &ledger.WorkError{Message: "timeout"}})
		require.NoError(t, err)
		require.Equal(t, ledger.StateReleased, f.State)
		second := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}, ledger.Acquired)
		f, err = b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "k", FencingToken: second.FencingToken, Retryable: true, Error: &ledger.WorkError{Message: "timeout"}})
		require.NoError(t, err)
		require.Equal(t, ledger.StateFailed, f.State, "the second attempt was the last")
		again, err := b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "k", FencingToken: second.FencingToken, Retryable: true, Error: &ledger.WorkError{Message: "timeout"}})
		require.NoError(t, err)
		require.True(t, again.AlreadyFailed, "a retried Fail is still recognised")
		b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}, ledger.Failed)
		events := b.events(t, "ns", "k")
		require.Equal(t, true, events[len(events)-1].Detail["attempts_exhausted"])
	})
}

func TestPurgeExpiredOnDemand(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	ctx := ledger.WithCaller(context.Background(), "bob@ops")
	short := 10 * time.Millisecond
	_, err := b.store.CreateNamespace(ctx, "ns", ledger.NamespaceUpdate{Retention: &short}, "test")
	require.NoError(t, err)
	r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}, ledger.Acquired)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken})
	require.NoError(t, err)
	_, err = b.store.PurgeExpired(ctx, "ns", "")
	require.ErrorContains(t, err, "reason")
	require.Eventually(t, func() bool {
		n, err := b.store.PurgeExpired(ctx, "ns", "disk pressure")
		require.NoError(t, err)
		return n == 1
	}, time.Minute, 10*time.Millisecond)
	n, err := b.store.PurgeExpired(ctx, "ns", "again")
	require.NoError(t, err)
	require.Zero(t, n)
	events := b.events(t, "ns", "k")
	purged := events[len(events)-1]
	require.Equal(t, "purged", purged.Kind)
	require.Equal(t, "bob@ops", purged.Caller)
	require.Equal(t, "disk pressure", purged.Detail["reason"])
}
