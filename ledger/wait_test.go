package ledger_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
)

// The wait tests give waiters a long WaitTimeout (longWait) and holders a
// longer lease, and expect the answer well before that (wokenWithin): a
// waiter that answers before its wait ran out was woken by the change
// itself, not by a timer.
const (
	longWait    = 30 * time.Minute // testConfig's MaxWait allows it
	wokenWithin = 2 * time.Minute  // generous for a busy machine, far below longWait
)

func (b testBundle) waitListening(t *testing.T) {
	t.Helper()
	require.Eventually(t, b.store.Listening, time.Minute, 5*time.Millisecond)
}

// startWaiting starts a waiting Reserve and returns its answer channel once
// the waiter has flagged the key (it then sleeps until woken).
func (b testBundle) startWaiting(t *testing.T, store *ledger.Store, req ledger.ReserveRequest) <-chan waited {
	t.Helper()
	before := store.Waiters()
	answer := make(chan waited, 1)
	go func() {
		r, err := store.Reserve(context.Background(), req)
		answer <- waited{r, err}
	}()
	require.Eventually(t, func() bool {
		var flagged bool
		require.NoError(t, b.pool.QueryRow(context.Background(),
			`SELECT waiters FROM entries WHERE namespace = $1 AND key = $2`, req.Namespace, req.Key).Scan(&flagged))
		return flagged && store.Waiters() > before
	}, time.Minute, 5*time.Millisecond)
	return answer
}

// waited is the answer of a waiting Reserve, for the test's goroutine to
// check.
type waited struct {
	r   ledger.Reservation
	err error
}

// receive requires an answer within wokenWithin, and no error.
func receive(t *testing.T, answer <-chan waited) ledger.Reservation {
	t.Helper()
	select {
	case w := <-answer:
		require.NoError(t, w.err)
		return w.r
	case <-time.After(wokenWithin):
		t.Fatalf("the waiter was not woken within %s (its wait is %s)", wokenWithin, longWait)
		return ledger.Reservation{}
	}
}

func TestWaitIsWokenByTheHoldersChange(t *testing.T) {
	t.Parallel()

	t.Run("complete: the waiter replays the result", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		b.waitListening(t)
		holder := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder", LeaseTTL: time.Hour}, ledger.Acquired)
		answer := b.startWaiting(t, b.store, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: longWait})

		_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: holder.FencingToken, Result: []byte("r")})
		require.NoError(t, err)
		r := receive(t, answer)
		require.Equal(t, ledger.Completed, r.Outcome)
		require.Equal(t, []byte("r"), r.Result)
		require.Zero(t, b.store.Waiters())

		var flagged bool
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT waiters FROM entries WHERE key = 'k'`).Scan(&flagged))
		require.False(t, flagged, "the change clears the flag")
	})

	t.Run("permanent fail: the waiter gets FAILED", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		b.waitListening(t)
		holder := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder", LeaseTTL: time.Hour}, ledger.Acquired)
		answer := b.startWaiting(t, b.store, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: longWait})
		_, err := b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "k", FencingToken: holder.FencingToken, Error: &ledger.WorkError{Message: "bad"}})
		require.NoError(t, err)
		r := receive(t, answer)
		require.Equal(t, ledger.Failed, r.Outcome)
		require.Equal(t, "bad", r.Error.Message)
	})

	t.Run("release: the waiter takes over", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		b.waitListening(t)
		holder := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder", LeaseTTL: time.Hour}, ledger.Acquired)
		answer := b.startWaiting(t, b.store, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: longWait})
		_, err := b.store.Release(ctx, ledger.ReleaseRequest{Namespace: "ns", Key: "k", FencingToken: holder.FencingToken})
		require.NoError(t, err)
		r := receive(t, answer)
		require.Equal(t, ledger.Acquired, r.Outcome)
		require.Equal(t, holder.FencingToken+1, r.FencingToken)
		require.Equal(t, "holder", r.PreviousOwner)
	})

	t.Run("a change made through another replica", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		replica := ledgertest.Replica(t, ledgertest.Bundle{Store: b.store, Pool: b.pool}, testConfig)
		b.waitListening(t)
		holder := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder", LeaseTTL: time.Hour}, ledger.Acquired)
		answer := b.startWaiting(t, b.store, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: longWait})
		_, err := replica.Store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: holder.FencingToken, Result: []byte("from the replica")})
		require.NoError(t, err)
		r := receive(t, answer)
		require.Equal(t, ledger.Completed, r.Outcome)
		require.Equal(t, []byte("from the replica"), r.Result)
	})
}

func TestWaitEndsWithTheLeaseOrTheTimeout(t *testing.T) {
	t.Parallel()

	t.Run("the holder's lease runs out: takeover", func(t *testing.T) {
		t.Parallel()
		_, b := setup(t)
		b.waitListening(t)
		holder := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder", LeaseTTL: 300 * time.Millisecond}, ledger.Acquired)
		r, err := b.store.Reserve(context.Background(), ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: longWait})
		require.NoError(t, err)
		require.Equal(t, ledger.Acquired, r.Outcome)
		require.Equal(t, holder.FencingToken+1, r.FencingToken)
		require.True(t, r.Takeover)
	})

	t.Run("the wait runs out: IN_PROGRESS", func(t *testing.T) {
		t.Parallel()
		_, b := setup(t)
		b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder", LeaseTTL: time.Hour}, ledger.Acquired)
		start := time.Now()
		r, err := b.store.Reserve(context.Background(), ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: 200 * time.Millisecond})
		require.NoError(t, err)
		require.Equal(t, ledger.InProgress, r.Outcome)
		require.Equal(t, "holder", r.Owner)
		require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "it did wait")
	})

	t.Run("the request's deadline bounds the wait", func(t *testing.T) {
		t.Parallel()
		_, b := setup(t)
		b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder", LeaseTTL: time.Hour}, ledger.Acquired)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		r, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: longWait})
		require.NoError(t, err, "an answer, not a deadline error")
		require.Equal(t, ledger.InProgress, r.Outcome)
	})

	t.Run("the end of the wait takes no connection", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		b.waitListening(t)
		b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder", LeaseTTL: time.Hour}, ledger.Acquired)
		answer := b.startWaiting(t, b.store, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: 3 * time.Second})
		// Every connection of the pool is busy when the wait runs out, as
		// when thousands of waits end together: the waiter answers what it
		// read, without waiting for a connection.
		var held []*pgxpool.Conn
		for range b.pool.Config().MaxConns {
			conn, err := b.pool.Acquire(ctx)
			require.NoError(t, err)
			held = append(held, conn)
		}
		defer func() {
			for _, conn := range held {
				conn.Release()
			}
		}()
		r := receive(t, answer)
		require.Equal(t, ledger.InProgress, r.Outcome)
		require.Equal(t, "holder", r.Owner)
	})

	t.Run("EndWaits answers waiting Reserves at once", func(t *testing.T) {
		t.Parallel()
		_, b := setup(t)
		b.waitListening(t)
		b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder", LeaseTTL: time.Hour}, ledger.Acquired)
		answer := b.startWaiting(t, b.store, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: longWait})
		b.store.EndWaits()
		require.Equal(t, ledger.InProgress, receive(t, answer).Outcome)
	})

	t.Run("a negative wait is refused", func(t *testing.T) {
		t.Parallel()
		ctx, b := setup(t)
		_, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w", WaitTimeout: -time.Second})
		var validation *ledger.ValidationError
		require.ErrorAs(t, err, &validation)
		require.Equal(t, "wait_timeout", validation.Field)
		require.Zero(t, b.count(t, "entries"))
	})
}

// TestManyWaitersHoldNoConnections parks many waiters on one key: none of
// them holds a database connection while it waits, and all are woken by the
// one change.
func TestManyWaitersHoldNoConnections(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	b.waitListening(t)
	holder := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "holder", LeaseTTL: time.Hour}, ledger.Acquired)

	const waiters = 500
	answers := make(chan waited, waiters)
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() {
			r, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "waiter", WaitTimeout: longWait})
			answers <- waited{r, err}
		})
	}
	require.Eventually(t, func() bool { return b.store.Waiters() == waiters && b.pool.Stat().AcquiredConns() == 0 },
		20*time.Second, 10*time.Millisecond, "all waiting, no connection held")
	require.LessOrEqual(t, b.pool.Stat().TotalConns(), b.pool.Config().MaxConns)

	_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: holder.FencingToken, Result: []byte("r")})
	require.NoError(t, err)
	for range waiters {
		require.Equal(t, ledger.Completed, receive(t, answers).Outcome)
	}
	wg.Wait()
}

// TestOnlyWaitedKeysNotify: a NOTIFY makes its transaction take a global
// lock at commit, so the hot path must not notify when nobody waits.
func TestOnlyWaitedKeysNotify(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	b.waitListening(t)
	conn, err := pgx.ConnectConfig(ctx, b.pool.Config().ConnConfig.Copy())
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `LISTEN ledgerd_waiters`)
	require.NoError(t, err)

	quiet := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "nobody-waits", Owner: "w", LeaseTTL: time.Hour}, ledger.Acquired)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "nobody-waits", FencingToken: quiet.FencingToken})
	require.NoError(t, err)

	holder := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "awaited", Owner: "w", LeaseTTL: time.Hour}, ledger.Acquired)
	answer := b.startWaiting(t, b.store, ledger.ReserveRequest{Namespace: "ns", Key: "awaited", Owner: "waiter", WaitTimeout: longWait})
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "awaited", FencingToken: holder.FencingToken})
	require.NoError(t, err)
	receive(t, answer)

	// The channel is shared by every ledger in the database (other tests'
	// schemas): keep this schema's notifications only.
	var schema string
	require.NoError(t, conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema))
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		n, err := conn.WaitForNotification(waitCtx)
		require.NoError(t, err)
		var payload []*string
		require.NoError(t, json.Unmarshal([]byte(n.Payload), &payload))
		require.Len(t, payload, 3)
		if *payload[0] != schema {
			continue
		}
		require.Equal(t, "ns", *payload[1])
		require.Equal(t, "awaited", *payload[2], "the first notification is the awaited key's: the other key sent none")
		break
	}
}
