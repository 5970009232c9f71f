package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestLateCompleteWithCurrentToken: fencing beats time. The lease ran out
// but nobody took over, so the holder's Complete succeeds.
func TestLateCompleteWithCurrentToken(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "slow", LeaseTTL: 20 * time.Millisecond}, ledger.Acquired)
	b.waitExpired(t, "ns", "k")

	c, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: r.FencingToken, Result: []byte("late but valid")})
	require.NoError(t, err)
	require.False(t, c.AlreadyCompleted)
	e := b.lookup(t, "ns", "k")
	require.Equal(t, ledger.StateCompleted, e.State)
	require.Equal(t, []byte("late but valid"), e.Result)
	require.True(t, e.LeaseExpiresAt.IsZero())

	// A late Heartbeat with the current token also extends an expired lease.
	r2 := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k2", Owner: "slow", LeaseTTL: 20 * time.Millisecond}, ledger.Acquired)
	b.waitExpired(t, "ns", "k2")
	_, err = b.store.Heartbeat(ctx, ledger.HeartbeatRequest{Namespace: "ns", Key: "k2", FencingToken: r2.FencingToken, LeaseTTL: time.Minute})
	require.NoError(t, err)
	require.False(t, b.lookup(t, "ns", "k2").LeaseExpired)
}

// TestCompleteRefusals: a Complete that may not finish the key changes
// nothing but the audit trail, and says why.
func TestCompleteRefusals(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	_, err := b.store.CreateNamespace(ctx, "small", ledger.NamespaceUpdate{MaxResultBytes: ptr(4)}, "test")
	require.NoError(t, err)

	t.Run("a stale token after a takeover", func(t *testing.T) {
		old := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "taken", Owner: "slow", LeaseTTL: 20 * time.Millisecond}, ledger.Acquired)
		b.waitExpired(t, "ns", "taken")
		current := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "taken", Owner: "fast", LeaseTTL: time.Minute}, ledger.Acquired)

		_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "taken", FencingToken: old.FencingToken, Result: []byte("stale")})
		require.ErrorIs(t, err, ledger.ErrLeaseLost)
		e := b.lookup(t, "ns", "taken")
		require.Equal(t, ledger.StateLeased, e.State)
		require.Equal(t, current.FencingToken, e.FencingToken)
		require.Nil(t, e.Result)
		events := b.events(t, "ns", "taken")
		last := events[len(events)-1]
		require.Equal(t, "refused_stale_token", last.Kind)
		require.Equal(t, old.FencingToken, last.FencingToken, "the event carries the refused token")
		require.Equal(t, map[string]any{"operation": "complete", "current_token": float64(current.FencingToken),
			"current_owner": "fast", "current_state": "leased"}, last.Detail)
	})

	t.Run("a key the ledger does not hold", func(t *testing.T) {
		_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "never", FencingToken: 1})
		require.ErrorIs(t, err, ledger.ErrLeaseLost)
		require.Empty(t, b.events(t, "ns", "never"))
	})

	t.Run("a result over the namespace's limit", func(t *testing.T) {
		r := b.reserve(t, ledger.ReserveRequest{Namespace: "small", Key: "big", Owner: "w"}, ledger.Acquired)
		_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "small", Key: "big", FencingToken: r.FencingToken, Result: []byte("12345")})
		requireField(t, err, "result")
		require.ErrorContains(t, err, "at most 4 bytes")
		require.Equal(t, ledger.StateLeased, b.lookup(t, "small", "big").State, "the holder may still complete it")
		require.Equal(t, []string{"reserved"}, kinds(b.events(t, "small", "big")))
	})
}

// TestCompleteClearsTheLastFailure: a key that failed retryably and then
// completed shows no error; its failed event keeps the failure.
func TestCompleteClearsTheLastFailure(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	first := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}, ledger.Acquired)
	_, err := b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "k", FencingToken: first.FencingToken, Retryable: true,
		Error: &ledger.WorkError{Code: "TIMEOUT", Message: "upstream timed out"}})
	require.NoError(t, err)
	require.Equal(t, &ledger.WorkError{Code: "TIMEOUT", Message: "upstream timed out"}, b.lookup(t, "ns", "k").Error,
		"a released key shows its last retryable failure")

	second := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}, ledger.Acquired)
	require.Equal(t, &ledger.WorkError{Code: "TIMEOUT", Message: "upstream timed out"}, b.lookup(t, "ns", "k").Error,
		"and so does its next lease")
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: second.FencingToken, Result: []byte("ok")})
	require.NoError(t, err)
	require.Nil(t, b.lookup(t, "ns", "k").Error)
	require.Equal(t, []string{"reserved", "failed", "taken_over", "completed"}, kinds(b.events(t, "ns", "k")))
}
