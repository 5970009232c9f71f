package gotest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
)

// value returns work that returns v.
func value(v string) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) { return []byte(v), nil }
}

// mustNotRun is work for a Do that must replay or fail without running it.
func mustNotRun(t *testing.T) func(context.Context) ([]byte, error) {
	t.Helper()
	return func(context.Context) ([]byte, error) {
		t.Error("work ran, but should not have")
		return nil, errors.New("work ran")
	}
}

func TestDo(t *testing.T) {
	noLeaks(t)

	t.Run("runs the work on a fresh key once and records its result", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var runs atomic.Int32
		result, err := b.client.Do(t.Context(), namespace, "k", func(ctx context.Context) ([]byte, error) {
			runs.Add(1)
			lease, ok := ledgerclient.LeaseFromContext(ctx)
			require.True(t, ok)
			require.Equal(t, int64(1), lease.FencingToken)
			require.Equal(t, 1, lease.Attempt)
			require.False(t, lease.Takeover)
			require.Empty(t, lease.Checkpoint)
			return []byte("receipt"), nil
		}, ledgerclient.WithOwner("worker-a"), ledgerclient.WithMetadata(map[string]string{"run": "2024-06-01"}))
		require.NoError(t, err)

		require.Equal(t, int32(1), runs.Load())
		require.Equal(t, []byte("receipt"), result.Value)
		require.Equal(t, int64(1), result.FencingToken)
		require.Equal(t, 1, result.Attempt)
		require.False(t, result.Replayed)
		require.False(t, result.CompletedAt.IsZero())

		row := readEntry(t, b.pool, "k")
		require.Equal(t, "completed", row.State)
		require.Equal(t, "worker-a", row.Owner)
		require.Equal(t, []byte("receipt"), row.Result)
		require.Equal(t, int64(1), row.FencingToken)
		require.Equal(t, []string{"reserved", "completed"}, eventKinds(t, b.pool, "k"))

		found, err := b.client.Lookup(t.Context(), &ledgerv1.LookupRequest{Namespace: namespace, Key: "k"})
		require.NoError(t, err)
		require.Equal(t, map[string]string{"run": "2024-06-01"}, found.GetEntry().GetMetadata())
	})

	t.Run("replays a completed key without running the work", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		first, err := b.client.Do(t.Context(), namespace, "k", value("receipt"))
		require.NoError(t, err)

		replay, err := b.client.Do(t.Context(), namespace, "k", mustNotRun(t))
		require.NoError(t, err)
		require.True(t, replay.Replayed)
		require.Equal(t, []byte("receipt"), replay.Value)
		require.Equal(t, int64(1), replay.FencingToken)
		require.Zero(t, replay.Attempt)
		require.True(t, first.CompletedAt.Equal(replay.CompletedAt))
		require.Equal(t, []string{"reserved", "completed"}, eventKinds(t, b.pool, "k"), "a replay changes nothing")
	})

	t.Run("a work error is a retryable failure: the next Do runs the work again", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		errUpstream := errors.New("upstream timed out")
		_, err := b.client.Do(t.Context(), namespace, "k", func(context.Context) ([]byte, error) {
			return nil, errUpstream
		}, ledgerclient.WithOwner("worker-a"))
		require.ErrorIs(t, err, errUpstream)
		require.NotErrorIs(t, err, ledgerclient.ErrFailed)

		row := readEntry(t, b.pool, "k")
		require.Equal(t, "released", row.State)
		require.Equal(t, "upstream timed out", row.ErrorMessage)

		result, err := b.client.Do(t.Context(), namespace, "k", func(ctx context.Context) ([]byte, error) {
			lease, _ := ledgerclient.LeaseFromContext(ctx)
			require.Equal(t, 2, lease.Attempt)
			require.Equal(t, int64(2), lease.FencingToken)
			require.True(t, lease.Takeover)
			require.Equal(t, "worker-a", lease.PreviousOwner)
			return []byte("receipt"), nil
		})
		require.NoError(t, err)
		require.Equal(t, 2, result.Attempt)
		require.Equal(t, int64(2), result.FencingToken)
		require.Equal(t, []byte("receipt"), result.Value)

		row = readEntry(t, b.pool, "k")
		require.Equal(t, "completed", row.State)
		require.Equal(t, 2, row.Attempts)
		require.Equal(t, []string{"reserved", "failed", "taken_over", "completed"}, eventKinds(t, b.pool, "k"))
	})

	t.Run("a Permanent error fails the key for good", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		errMalformed := errors.New("invoice has no lines")
		_, err := b.client.Do(t.Context(), namespace, "k", func(context.Context) ([]byte, error) {
			return nil, ledgerclient.Permanent(errMalformed)
		})
		require.ErrorIs(t, err, errMalformed)
		var permanent *ledgerclient.PermanentError
		require.ErrorAs(t, err, &permanent)

		row := readEntry(t, b.pool, "k")
		require.Equal(t, "failed", row.State)
		require.Equal(t, "invoice has no lines", row.ErrorMessage)

		_, err = b.client.Do(t.Context(), namespace, "k", mustNotRun(t))
		require.ErrorIs(t, err, ledgerclient.ErrFailed)
		var failed *ledgerclient.FailedError
		require.ErrorAs(t, err, &failed)
		require.Equal(t, "invoice has no lines", failed.Message)
		require.Equal(t, int64(1), failed.FencingToken)
		require.Equal(t, 1, failed.Attempts)
		require.Equal(t, []string{"reserved", "failed"}, eventKinds(t, b.pool, "k"))
	})

	t.Run("waits while another worker holds the key, then replays its result", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		finish, holderDone := b.holdKey(t, "k", []byte("from the holder"))

		waiterDone := make(chan struct{})
		var replay ledgerclient.Result
		var waitErr error
		go func() {
			defer close(waiterDone)
			replay, waitErr = b.client.Do(t.Context(), namespace, "k", mustNotRun(t))
		}()
		select {
		case <-waiterDone:
			t.Fatalf("Do returned while another worker held the key: %v, %v", replay, waitErr)
		case <-time.After(300 * time.Millisecond):
		}

		close(finish)
		require.NoError(t, <-holderDone)
		<-waiterDone
		require.NoError(t, waitErr)
		require.True(t, replay.Replayed)
		require.Equal(t, []byte("from the holder"), replay.Value)
		require.Equal(t, int64(1), replay.FencingToken)
	})

	t.Run("the wait for the holder happens on the server, in one Reserve", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		finish, holderDone := b.holdKey(t, "k", []byte("from the holder"))

		counted := &countingConn{ClientConnInterface: b.conn}
		waiter := ledgerclient.NewFromConn(counted)
		waiterDone := make(chan error, 1)
		go func() {
			_, err := waiter.Do(t.Context(), namespace, "k", mustNotRun(t))
			waiterDone <- err
		}()
		require.Eventually(t, func() bool { return counted.reserves.Load() >= 1 }, patience, time.Millisecond,
			"the waiter asked")
		// The window in which a client that polled would ask again: longer
		// than its 1s between two Reserves (plus jitter). Only a
		// server-side wait asks once.
		time.Sleep(2500 * time.Millisecond)
		close(finish)
		require.NoError(t, <-holderDone)
		require.NoError(t, <-waiterDone)
		require.Equal(t, int64(1), counted.reserves.Load(), "one Reserve, held by the server until the holder completed")
	})

	t.Run("heartbeats keep the lease while the work runs past its TTL", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		const ttl = 3 * time.Second
		leaseEnd := func() (time.Time, error) {
			found, err := b.client.Lookup(t.Context(), &ledgerv1.LookupRequest{Namespace: namespace, Key: "k"})
			return found.GetEntry().GetLeaseExpiresAt().AsTime(), err
		}
		// A heartbeat every 100ms: the lease would run out only if none got
		// through for 2.7s (its TTL less the client's margin).
		result, err := b.client.Do(t.Context(), namespace, "k", func(ctx context.Context) ([]byte, error) {
			grantedUntil, err := leaseEnd()
			require.NoError(t, err)
			// Work until a heartbeat has moved the lease's end a whole TTL
			// past where the grant put it: the lease has outlived its TTL.
			require.Eventually(t, func() bool {
				end, err := leaseEnd()
				return err == nil && !end.Before(grantedUntil.Add(ttl))
			}, patience, 10*time.Millisecond, "a heartbeat extended the lease past its first TTL")
			competitor, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: namespace, Key: "k", Owner: "competitor"})
			require.NoError(t, err)
			require.NotNil(t, competitor.GetInProgress(), "the competitor got the key while the work ran: %v", competitor)
			return []byte("from the holder"), nil
		}, ledgerclient.WithLeaseTTL(ttl), ledgerclient.WithHeartbeatInterval(100*time.Millisecond))
		require.NoError(t, err)
		require.Equal(t, int64(1), result.FencingToken)
		require.Equal(t, []string{"reserved", "heartbeat", "completed"}, eventKinds(t, b.pool, "k"),
			"one grant; heartbeat events are sampled (one a minute)")
	})

	t.Run("a superseded worker's Complete is refused with ErrLeaseLost", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// A worker that stops heartbeating (as if paused) while its work runs.
		finish, zombieDone := b.holdKey(t, "k", []byte("from the zombie"),
			ledgerclient.WithOwner("zombie"), ledgerclient.WithLeaseTTL(200*time.Millisecond),
			ledgerclient.WithHeartbeatInterval(time.Hour))

		// Another worker waits for the lease to run out and takes the key over.
		result := b.takeOver(t, "k", "zombie")
		require.Equal(t, int64(2), result.FencingToken)

		close(finish)
		err := <-zombieDone
		require.ErrorIs(t, err, ledgerclient.ErrLeaseLost)
		require.Equal(t, "LEASE_LOST", ledgerclient.Reason(err))

		row := readEntry(t, b.pool, "k")
		require.Equal(t, "completed", row.State)
		require.Equal(t, "successor", row.Owner)
		require.Equal(t, int64(2), row.FencingToken)
		require.Equal(t, []byte("from the successor"), row.Result)
		require.Equal(t, []string{"reserved", "reclaimed", "completed", "refused_stale_token"}, eventKinds(t, b.pool, "k"),
			"the zombie's Complete was refused and audited")
	})

	t.Run("a heartbeat that finds the lease lost cancels the work", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		started := make(chan struct{})
		zombieDone := make(chan error, 1)
		var cause error
		go func() {
			_, err := b.client.Do(t.Context(), namespace, "k", func(ctx context.Context) ([]byte, error) {
				close(started)
				<-ctx.Done()
				cause = context.Cause(ctx)
				return nil, ctx.Err()
			}, ledgerclient.WithOwner("zombie"), ledgerclient.WithLeaseTTL(5*time.Minute),
				ledgerclient.WithHeartbeatInterval(50*time.Millisecond))
			zombieDone <- err
		}()
		<-started
		require.Eventually(t, func() bool {
			kinds, err := queryEventKinds(b.pool, "k")
			return err == nil && slices.Contains(kinds, "heartbeat")
		}, patience, 10*time.Millisecond, "the zombie's heartbeats keep its lease")

		// The lease ends while the work runs (an admin's ForceRelease: a
		// lease left to run out would race the heartbeat that extends it).
		_, err := b.client.Admin().ForceRelease(t.Context(), &ledgerv1.ForceReleaseRequest{Namespace: namespace, Key: "k", Reason: "test"})
		require.NoError(t, err)
		select {
		case err = <-zombieDone:
		case <-time.After(patience):
			t.Fatal("the zombie's work went on after its lease was lost")
		}
		require.ErrorIs(t, err, ledgerclient.ErrLeaseLost)
		require.ErrorIs(t, cause, ledgerclient.ErrLeaseLost, "the work's context is canceled with the cause")
		require.NotErrorIs(t, cause, ledgerclient.ErrUnavailable)

		b.takeOver(t, "k", "zombie")

		row := readEntry(t, b.pool, "k")
		require.Equal(t, "completed", row.State)
		require.Equal(t, "successor", row.Owner)
		require.Equal(t, int64(3), row.FencingToken, "the release moved the token on, the takeover again")
		require.Equal(t, []byte("from the successor"), row.Result)
		require.Equal(t, []string{"reserved", "heartbeat", "force_released", "refused_stale_token", "taken_over", "completed"},
			eventKinds(t, b.pool, "k"), "the zombie's only trace after the release is its refused heartbeat")
	})

	t.Run("a checkpoint stored by a heartbeat reaches the worker that takes over", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.client.Do(t.Context(), namespace, "k", func(ctx context.Context) ([]byte, error) {
			require.NoError(t, ledgerclient.SetCheckpoint(ctx, []byte("offset=300")))
			require.Eventually(t, func() bool {
				var checkpoint []byte
				err := b.pool.QueryRow(context.Background(),
					`SELECT checkpoint FROM entries WHERE namespace = $1 AND key = $2`, namespace, "k").Scan(&checkpoint)
				return err == nil && bytes.Equal(checkpoint, []byte("offset=300"))
			}, patience, 10*time.Millisecond, "a heartbeat stores the checkpoint")
			return nil, errors.New("crashed at offset 300")
		}, ledgerclient.WithHeartbeatInterval(10*time.Millisecond))
		require.Error(t, err)

		_, err = b.client.Do(t.Context(), namespace, "k", func(ctx context.Context) ([]byte, error) {
			lease, _ := ledgerclient.LeaseFromContext(ctx)
			require.Equal(t, []byte("offset=300"), lease.Checkpoint)
			return []byte("done"), nil
		})
		require.NoError(t, err)
	})

	t.Run("a checkpoint staged just before a failure is stored too", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.client.Do(t.Context(), namespace, "k", func(ctx context.Context) ([]byte, error) {
			require.NoError(t, ledgerclient.SetCheckpoint(ctx, []byte("offset=10")))
			require.NoError(t, ledgerclient.SetCheckpoint(ctx, []byte("offset=20")))
			return nil, errors.New("crashed at offset 20")
		}, ledgerclient.WithHeartbeatInterval(time.Hour))
		require.Error(t, err)

		_, err = b.client.Do(t.Context(), namespace, "k", func(ctx context.Context) ([]byte, error) {
			lease, _ := ledgerclient.LeaseFromContext(ctx)
			require.Equal(t, []byte("offset=20"), lease.Checkpoint)
			return []byte("done"), nil
		})
		require.NoError(t, err)
	})

	t.Run("canceling ctx while the work runs releases the lease", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx, cancel := context.WithCancel(t.Context())
		_, err := b.client.Do(ctx, namespace, "k", func(ctx context.Context) ([]byte, error) {
			cancel()
			<-ctx.Done()
			return nil, ctx.Err()
		})
		require.ErrorIs(t, err, context.Canceled)
		require.Equal(t, "released", readEntry(t, b.pool, "k").State)
		require.Equal(t, []string{"reserved", "released"}, eventKinds(t, b.pool, "k"))

		// The next worker gets the key at once, not when the lease (30s, the
		// namespace default) would have run out.
		quick, cancelQuick := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancelQuick()
		result, err := b.client.Do(quick, namespace, "k", value("receipt"))
		require.NoError(t, err)
		require.Equal(t, 2, result.Attempt)
	})

	t.Run("a result returned after ctx was canceled is still recorded", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		ctx, cancel := context.WithCancel(t.Context())
		result, err := b.client.Do(ctx, namespace, "k", func(context.Context) ([]byte, error) {
			cancel()
			return []byte("receipt"), nil
		})
		require.NoError(t, err)
		require.Equal(t, []byte("receipt"), result.Value)
		require.Equal(t, "completed", readEntry(t, b.pool, "k").State)
	})

	t.Run("a heartbeat refused for a bad checkpoint ends the work and releases the lease", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.client.Do(t.Context(), namespace, "k", func(ctx context.Context) ([]byte, error) {
			require.NoError(t, ledgerclient.SetCheckpoint(ctx, make([]byte, 100<<10))) // above the 64 KiB limit
			<-ctx.Done()
			return nil, ctx.Err()
		}, ledgerclient.WithHeartbeatInterval(10*time.Millisecond))
		require.ErrorIs(t, err, ledgerclient.ErrInvalidArgument)
		var apiErr *ledgerclient.Error
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, "checkpoint", apiErr.Field)
		require.Equal(t, "released", readEntry(t, b.pool, "k").State)
	})

	t.Run("a result the ledger refuses is recorded as a retryable failure", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.client.Do(t.Context(), namespace, "k", func(context.Context) ([]byte, error) {
			return make([]byte, 1<<20+1), nil // the default namespace allows 1 MiB
		})
		require.ErrorIs(t, err, ledgerclient.ErrInvalidArgument)
		var apiErr *ledgerclient.Error
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, "result", apiErr.Field)

		row := readEntry(t, b.pool, "k")
		require.Equal(t, "released", row.State)
		require.Contains(t, row.ErrorMessage, "invalid result")
	})

	t.Run("a panic in the work is recorded as a retryable failure and re-raised", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		require.PanicsWithValue(t, "boom", func() {
			_, _ = b.client.Do(t.Context(), namespace, "k", func(context.Context) ([]byte, error) {
				panic("boom")
			})
		})
		row := readEntry(t, b.pool, "k")
		require.Equal(t, "released", row.State)
		require.Equal(t, "panic: boom", row.ErrorMessage)
	})

	t.Run("work that exits its goroutine releases the lease", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		exited := make(chan struct{})
		go func() {
			defer close(exited)
			_, _ = b.client.Do(t.Context(), namespace, "k", func(context.Context) ([]byte, error) {
				runtime.Goexit() // as t.FailNow does
				return nil, nil
			})
		}()
		<-exited
		require.Equal(t, "released", readEntry(t, b.pool, "k").State)
	})
}

// holdKey starts a Do of key whose work runs until finish is closed and
// then returns result; it returns once the work runs. done receives Do's
// error.
func (b testBundle) holdKey(t *testing.T, key string, result []byte, opts ...ledgerclient.DoOption) (finish chan struct{}, done <-chan error) {
	t.Helper()
	started, finish := make(chan struct{}), make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		_, err := b.client.Do(t.Context(), namespace, key, func(context.Context) ([]byte, error) {
			close(started)
			<-finish
			return result, nil
		}, opts...)
		errs <- err
	}()
	<-started
	return finish, errs
}

// takeOver runs a Do of key by "successor" and requires it to take the key
// over from previousOwner and complete it with "from the successor".
func (b testBundle) takeOver(t *testing.T, key, previousOwner string) ledgerclient.Result {
	t.Helper()
	result, err := b.client.Do(t.Context(), namespace, key, func(ctx context.Context) ([]byte, error) {
		lease, _ := ledgerclient.LeaseFromContext(ctx)
		if !lease.Takeover || lease.PreviousOwner != previousOwner {
			return nil, fmt.Errorf("lease %+v: want a takeover from %s", lease, previousOwner)
		}
		return []byte("from the successor"), nil
	}, ledgerclient.WithOwner("successor"))
	require.NoError(t, err)
	return result
}
