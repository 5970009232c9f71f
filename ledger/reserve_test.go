package ledger_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

func TestReserveFreshKey(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)

	r, err := b.store.Reserve(ctx, ledger.ReserveRequest{
		Namespace: "payments", Key: "order-1", Owner: "w1",
		LeaseTTL: time.Minute, Fingerprint: []byte("fp"), Metadata: map[string]string{"run": "42"},
	})
	require.NoError(t, err)
	require.Equal(t, ledger.Acquired, r.Outcome)
	require.Equal(t, int64(1), r.FencingToken)
	require.Equal(t, 1, r.Attempt)
	require.False(t, r.Takeover)
	require.Equal(t, time.Minute, r.LeaseTTL)

	e := b.lookup(t, "payments", "order-1")
	require.Equal(t, ledger.StateLeased, e.State)
	require.Equal(t, "w1", e.Owner)
	require.Equal(t, int64(1), e.FencingToken)
	require.Equal(t, []byte("fp"), e.Fingerprint)
	require.Equal(t, map[string]string{"run": "42"}, e.Metadata)
	require.False(t, e.LeaseExpired)
	require.WithinDuration(t, r.LeaseExpiresAt, e.LeaseExpiresAt, 0)
	// The lease runs for the TTL from the database's now, which is also when
	// the entry was created.
	require.WithinDuration(t, e.CreatedAt.Add(time.Minute), e.LeaseExpiresAt, time.Millisecond)

	require.Equal(t, []event{{Kind: "reserved", FencingToken: 1, Owner: "w1", Attempt: 1, Caller: "anonymous", Detail: map[string]any{}}},
		b.events(t, "payments", "order-1"))
}

func TestReserveUsesNamespaceDefaultTTLAndCreatesNamespace(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)

	r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}, ledger.Acquired)
	require.Equal(t, 30*time.Second, r.LeaseTTL)

	var defaultTTL, maxTTL int64
	var maxResult int
	require.NoError(t, b.pool.QueryRow(ctx,
		`SELECT default_lease_ttl_ms, max_lease_ttl_ms, max_result_bytes FROM namespaces WHERE name = 'ns'`).
		Scan(&defaultTTL, &maxTTL, &maxResult))
	require.Equal(t, int64(30_000), defaultTTL)
	require.Equal(t, int64(3_600_000), maxTTL)
	require.Equal(t, 1<<20, maxResult)
}

// TestConcurrentReservesOfOneKey races 64 owners on each of many fresh keys:
// exactly one is granted the lease, the others are told IN_PROGRESS with
// that owner, and the ledger holds one entry and one event per key.
func TestConcurrentReservesOfOneKey(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	const keys, racers = 20, 64

	for k := range keys {
		key := fmt.Sprintf("key-%d", k)
		var wg sync.WaitGroup
		results := make([]ledger.Reservation, racers)
		errs := make([]error, racers)
		start := make(chan struct{})
		for i := range racers {
			wg.Go(func() {
				<-start
				results[i], errs[i] = b.store.Reserve(ctx, ledger.ReserveRequest{
					Namespace: "race", Key: key, Owner: fmt.Sprintf("owner-%d", i), LeaseTTL: time.Minute,
				})
			})
		}
		close(start)
		wg.Wait()

		var winner string
		acquired, inProgress := 0, 0
		for i, r := range results {
			require.NoError(t, errs[i])
			switch r.Outcome {
			case ledger.Acquired:
				acquired++
				winner = fmt.Sprintf("owner-%d", i)
				require.Equal(t, int64(1), r.FencingToken)
			case ledger.InProgress:
				inProgress++
			default:
				t.Fatalf("unexpected outcome %s", r.Outcome)
			}
		}
		require.Equal(t, 1, acquired, key)
		require.Equal(t, racers-1, inProgress, key)
		for _, r := range results {
			if r.Outcome == ledger.InProgress {
				require.Equal(t, winner, r.Owner)
				require.GreaterOrEqual(t, r.RetryAfter, 50*time.Millisecond)
				require.LessOrEqual(t, r.RetryAfter, 5*time.Second)
			}
		}
		e := b.lookup(t, "race", key)
		require.Equal(t, winner, e.Owner)
		require.Equal(t, int64(1), e.FencingToken)
		require.Len(t, b.events(t, "race", key), 1)
	}
	require.Equal(t, keys, b.count(t, "entries"))
	require.Equal(t, keys+1, b.count(t, "events"), "one reserved event per key, and the namespace's creation")
}

// TestConcurrentTakeoverOfExpiredLease races owners on a key whose lease
// ran out: exactly one takes over, with token 2.
func TestConcurrentTakeoverOfExpiredLease(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "first", LeaseTTL: 50 * time.Millisecond}, ledger.Acquired)
	b.waitExpired(t, "ns", "k")

	const racers = 32
	var wg sync.WaitGroup
	outcomes := make([]ledger.Reservation, racers)
	for i := range racers {
		wg.Go(func() {
			r, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: fmt.Sprintf("o%d", i), LeaseTTL: time.Minute})
			require.NoError(t, err)
			outcomes[i] = r
		})
	}
	wg.Wait()
	acquired := 0
	for _, r := range outcomes {
		if r.Outcome == ledger.Acquired {
			acquired++
			require.Equal(t, int64(2), r.FencingToken)
			require.True(t, r.Takeover)
			require.Equal(t, "first", r.PreviousOwner)
		} else {
			require.Equal(t, ledger.InProgress, r.Outcome)
		}
	}
	require.Equal(t, 1, acquired)
	require.Equal(t, int64(2), b.lookup(t, "ns", "k").FencingToken)
	require.Len(t, b.events(t, "ns", "k"), 2)
}

// TestTakeoverAfterExpiry: the new holder gets token n+1, and every call of
// the old holder is refused with ErrLeaseLost and changes nothing.
func TestTakeoverAfterExpiry(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	old := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "zombie", LeaseTTL: 50 * time.Millisecond}, ledger.Acquired)
	_, err := b.store.Heartbeat(ctx, ledger.HeartbeatRequest{Namespace: "ns", Key: "k", FencingToken: old.FencingToken,
		LeaseTTL: 50 * time.Millisecond, Checkpoint: []byte("offset=7")})
	require.NoError(t, err)
	b.waitExpired(t, "ns", "k")

	// An expired lease is still the zombie's until someone else reserves.
	require.Equal(t, "zombie", b.lookup(t, "ns", "k").Owner)

	taken := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "rescuer", LeaseTTL: time.Minute}, ledger.Acquired)
	require.Equal(t, old.FencingToken+1, taken.FencingToken)
	require.True(t, taken.Takeover)
	require.Equal(t, 2, taken.Attempt)
	require.Equal(t, "zombie", taken.PreviousOwner)
	require.Equal(t, []byte("offset=7"), taken.Checkpoint, "the takeover resumes from the last checkpoint")

	before := b.lookup(t, "ns", "k")
	_, err = b.store.Heartbeat(ctx, ledger.HeartbeatRequest{Namespace: "ns", Key: "k", FencingToken: old.FencingToken})
	require.ErrorIs(t, err, ledger.ErrLeaseLost)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: old.FencingToken, Result: []byte("stale")})
	require.ErrorIs(t, err, ledger.ErrLeaseLost)
	_, err = b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "k", FencingToken: old.FencingToken, Error: &ledger.WorkError{Message: "x"}})
	require.ErrorIs(t, err, ledger.ErrLeaseLost)
	_, err = b.store.Release(ctx, ledger.ReleaseRequest{Namespace: "ns", Key: "k", FencingToken: old.FencingToken})
	require.ErrorIs(t, err, ledger.ErrLeaseLost)
	require.Equal(t, before, b.lookup(t, "ns", "k"), "refused calls change nothing")

	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: taken.FencingToken, Result: []byte("good")})
	require.NoError(t, err)
	e := b.lookup(t, "ns", "k")
	require.Equal(t, ledger.StateCompleted, e.State)
	require.Equal(t, []byte("good"), e.Result)
	require.Equal(t, "rescuer", e.Owner)
	require.Equal(t, 2, e.Attempts)

	// The history: the grant, the zombie's (first, sampled) heartbeat, the
	// reclaim of its expired lease, its four refused calls, and the
	// rescuer's completion.
	events := b.events(t, "ns", "k")
	kinds := make([]string, len(events))
	for i, e := range events {
		kinds[i] = e.Kind
	}
	require.Equal(t, []string{"reserved", "heartbeat", "reclaimed", "refused_stale_token", "refused_stale_token",
		"refused_stale_token", "refused_stale_token", "completed"}, kinds)
	require.Equal(t, "zombie", events[1].Owner)
	require.Equal(t, float64(8), events[1].Detail["checkpoint_bytes"])
	require.Equal(t, int64(2), events[2].FencingToken)
	require.Equal(t, "rescuer", events[2].Owner)
	require.Equal(t, map[string]any{"previous_owner": "zombie", "previous_token": float64(1), "previous_state": "leased"}, events[2].Detail)
	for i, operation := range []string{"heartbeat", "complete", "fail", "release"} {
		refusal := events[3+i]
		require.Equal(t, int64(1), refusal.FencingToken, "the refused token")
		require.Equal(t, "zombie", refusal.Owner, "the refused token's owner")
		require.Equal(t, map[string]any{"operation": operation, "current_token": float64(2), "current_state": "leased",
			"current_owner": "rescuer"}, refusal.Detail)
	}
	require.Equal(t, int64(2), events[7].FencingToken)
}

func TestReplayCompletedAndFailed(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)

	r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "done", Owner: "w1"}, ledger.Acquired)
	c, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "done", FencingToken: r.FencingToken, Result: []byte(`{"ok":true}`)})
	require.NoError(t, err)
	replay := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "done", Owner: "w2"}, ledger.Completed)
	require.Equal(t, []byte(`{"ok":true}`), replay.Result)
	require.Equal(t, r.FencingToken, replay.FencingToken)
	require.Equal(t, "w1", replay.Owner)
	require.WithinDuration(t, c.CompletedAt, replay.FinishedAt, 0)

	// A replay writes nothing: no new event, no change to the entry.
	before := b.lookup(t, "ns", "done")
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "done", Owner: "w3"}, ledger.Completed)
	require.Equal(t, before, b.lookup(t, "ns", "done"))
	require.Len(t, b.events(t, "ns", "done"), 2)

	r = b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "broken", Owner: "w1"}, ledger.Acquired)
	f, err := b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "broken", FencingToken: r.FencingToken,
		Error: &ledger.WorkError{Code: "bad_input", Message: "row 7 is not valid JSON"}})
	require.NoError(t, err)
	require.Equal(t, ledger.StateFailed, f.State)
	failed := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "broken", Owner: "w2"}, ledger.Failed)
	require.Equal(t, &ledger.WorkError{Code: "bad_input", Message: "row 7 is not valid JSON"}, failed.Error)
	require.Equal(t, 1, failed.Attempt)
	e := b.lookup(t, "ns", "broken")
	require.Equal(t, ledger.StateFailed, e.State)
	require.False(t, e.FinishedAt.IsZero())
	events := b.events(t, "ns", "broken")
	require.Len(t, events, 2)
	require.Equal(t, "failed", events[1].Kind)
	require.Equal(t, false, events[1].Detail["retryable"])
}

// TestFingerprintMismatchOnEveryPath: a Reserve with a different
// fingerprint is refused whatever state the key is in, and changes nothing.
func TestFingerprintMismatchOnEveryPath(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	fp := []byte("sha256:aaaa")
	other := []byte("sha256:bbbb")
	reserve := func(key, owner string, ttl time.Duration) ledger.Reservation {
		return b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: key, Owner: owner, Fingerprint: fp, LeaseTTL: ttl}, ledger.Acquired)
	}

	held := reserve("held", "w1", time.Hour)
	_ = held
	completed := reserve("completed", "w1", time.Hour)
	_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "completed", FencingToken: completed.FencingToken, Result: []byte("r")})
	require.NoError(t, err)
	failed := reserve("failed", "w1", time.Hour)
	_, err = b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "failed", FencingToken: failed.FencingToken, Error: &ledger.WorkError{Message: "no"}})
	require.NoError(t, err)
	released := reserve("released", "w1", time.Hour)
	_, err = b.store.Release(ctx, ledger.ReleaseRequest{Namespace: "ns", Key: "released", FencingToken: released.FencingToken})
	require.NoError(t, err)
	reserve("expired", "w1", 20*time.Millisecond)
	b.waitExpired(t, "ns", "expired")

	cases := []struct {
		name, key, owner string
		fingerprint      []byte
	}{
		{"held by another owner", "held", "w2", other},
		{"held by the same owner", "held", "w1", other},
		{"completed", "completed", "w2", other},
		{"failed", "failed", "w2", other},
		{"released", "released", "w2", other},
		{"expired", "expired", "w2", other},
		{"no fingerprint against a stored one", "held", "w2", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := b.lookup(t, "ns", tc.key)
			_, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: tc.key, Owner: tc.owner, Fingerprint: tc.fingerprint})
			require.ErrorIs(t, err, ledger.ErrFingerprintMismatch)
			require.Equal(t, before, b.lookup(t, "ns", tc.key))
		})
	}

	// A stored empty fingerprint matches only an empty one.
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "plain", Owner: "w1", LeaseTTL: time.Hour}, ledger.Acquired)
	_, err = b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "plain", Owner: "w2", Fingerprint: fp})
	require.ErrorIs(t, err, ledger.ErrFingerprintMismatch)

	// The matching fingerprint gets the normal answers.
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "completed", Owner: "w2", Fingerprint: fp}, ledger.Completed)
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "held", Owner: "w2", Fingerprint: fp}, ledger.InProgress)
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "expired", Owner: "w2", Fingerprint: fp}, ledger.Acquired)
}

// TestMaxAttemptsOnExpiredLeases: a key whose worker crashes every time
// (its lease expires) fails for good after max_attempts grants.
func TestMaxAttemptsOnExpiredLeases(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	two := 2
	_, err := b.store.CreateNamespace(ctx, "ns", ledger.NamespaceUpdate{MaxAttempts: &two}, "poison pills")
	require.NoError(t, err)
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "pill", Owner: "w1", LeaseTTL: 20 * time.Millisecond}, ledger.Acquired)
	b.waitExpired(t, "ns", "pill")
	second := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "pill", Owner: "w2", LeaseTTL: 20 * time.Millisecond}, ledger.Acquired)
	require.Equal(t, 2, second.Attempt)
	b.waitExpired(t, "ns", "pill")

	failed := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "pill", Owner: "w3"}, ledger.Failed)
	require.Equal(t, "attempts_exhausted", failed.Error.Code)
	require.Contains(t, failed.Error.Message, "attempt 2 of 2")
	e := b.lookup(t, "ns", "pill")
	require.Equal(t, ledger.StateFailed, e.State)
	require.Equal(t, 2, e.Attempts)
	events := b.events(t, "ns", "pill")
	last := events[len(events)-1]
	require.Equal(t, "failed", last.Kind)
	require.Equal(t, true, last.Detail["attempts_exhausted"])
	require.Equal(t, true, last.Detail["lease_expired"])
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "pill", Owner: "w4"}, ledger.Failed)
}
