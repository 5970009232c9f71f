package gotest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
)

// upper is a batch work that returns each key in upper case, and records
// the keys it was given.
type upper struct {
	mu    sync.Mutex
	calls [][]string
}

func (u *upper) work(_ context.Context, keys []string) ([][]byte, error) {
	u.mu.Lock()
	u.calls = append(u.calls, slices.Clone(keys))
	u.mu.Unlock()
	values := make([][]byte, len(keys))
	for i, key := range keys {
		values[i] = []byte("R-" + key)
	}
	return values, nil
}

func TestDoBatch(t *testing.T) {
	noLeaks(t)
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*patience)
	defer cancel()
	// Before: "done" completed, "held" held by another worker, "dead"
	// failed for good.
	_, err := b.client.Do(ctx, namespace, "done", value("earlier"))
	require.NoError(t, err)
	_, err = b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: namespace, Key: "held", Owner: "other", LeaseTtl: durationpb.New(time.Hour)})
	require.NoError(t, err)
	_, err = b.client.Do(ctx, namespace, "dead", func(context.Context) ([]byte, error) { return nil, ledgerclient.Permanent(errors.New("bad")) })
	require.Error(t, err)

	u := &upper{}
	results, err := b.client.DoBatch(ctx, namespace, []string{"x", "done", "held", "y", "dead", "", "z"}, u.work, ledgerclient.WithOwner("me"))
	require.NoError(t, err)
	require.Equal(t, [][]string{{"x", "y", "z"}}, u.calls, "one work call, with the acquired keys in order")
	for _, i := range []int{0, 3, 6} {
		require.NoError(t, results[i].Err)
		require.Equal(t, []byte("R-"+results[i].Key), results[i].Result.Value)
		require.False(t, results[i].Result.Replayed)
		row := readEntry(t, b.pool, results[i].Key)
		require.Equal(t, "completed", row.State)
		require.Equal(t, "me", row.Owner)
		require.Equal(t, []string{"reserved", "completed"}, eventKinds(t, b.pool, results[i].Key))
	}
	require.True(t, results[1].Result.Replayed)
	require.Equal(t, []byte("earlier"), results[1].Result.Value)
	require.ErrorIs(t, results[2].Err, ledgerclient.ErrInProgress)
	require.ErrorIs(t, results[4].Err, ledgerclient.ErrFailed)
	require.ErrorIs(t, results[5].Err, ledgerclient.ErrInvalidArgument)
	var e *ledgerclient.Error
	require.ErrorAs(t, results[5].Err, &e)
	require.Equal(t, "items[5].key", e.Field)

	// A second run replays everything it can.
	again, err := b.client.DoBatch(ctx, namespace, []string{"x", "y"}, u.work)
	require.NoError(t, err)
	require.True(t, again[0].Result.Replayed)
	require.Len(t, u.calls, 1, "nothing left to do")
}

func TestDoBatchFailures(t *testing.T) {
	noLeaks(t)
	conn, bundle := ledgertest.Server(t, testConfig)
	client := ledgerclient.NewFromConn(conn)
	small := 4
	_, err := bundle.Store.CreateNamespace(context.Background(), namespace, ledger.NamespaceUpdate{MaxResultBytes: &small}, "test")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 4*patience)
	defer cancel()

	t.Run("a work error fails every key, retryable unless permanent", func(t *testing.T) {
		boom := errors.New("boom")
		results, err := client.DoBatch(ctx, namespace, []string{"r1", "r2"}, func(context.Context, []string) ([][]byte, error) { return nil, boom })
		require.NoError(t, err)
		for _, r := range results {
			require.ErrorIs(t, r.Err, boom)
			require.Equal(t, "released", readEntry(t, bundle.Pool, r.Key).State)
		}
		results, err = client.DoBatch(ctx, namespace, []string{"p1"}, func(context.Context, []string) ([][]byte, error) {
			return nil, ledgerclient.Permanent(boom)
		})
		require.NoError(t, err)
		require.ErrorIs(t, results[0].Err, boom)
		require.Equal(t, "failed", readEntry(t, bundle.Pool, "p1").State)
	})

	t.Run("a refused result fails its key alone", func(t *testing.T) {
		results, err := client.DoBatch(ctx, namespace, []string{"ok", "big"}, func(_ context.Context, keys []string) ([][]byte, error) {
			return [][]byte{[]byte("fit"), []byte("too large")}, nil
		})
		require.NoError(t, err)
		require.NoError(t, results[0].Err)
		require.ErrorIs(t, results[1].Err, ledgerclient.ErrInvalidArgument)
		require.Equal(t, "completed", readEntry(t, bundle.Pool, "ok").State)
		big := readEntry(t, bundle.Pool, "big")
		require.Equal(t, "released", big.State)
		require.Contains(t, big.ErrorMessage, "result")
	})

	t.Run("a wrong number of results is a work error", func(t *testing.T) {
		results, err := client.DoBatch(ctx, namespace, []string{"n1", "n2"}, func(context.Context, []string) ([][]byte, error) {
			return [][]byte{[]byte("one")}, nil
		})
		require.NoError(t, err)
		require.ErrorContains(t, results[1].Err, "work returned 1 results for 2 keys")
		require.Equal(t, "released", readEntry(t, bundle.Pool, "n2").State)
	})

	t.Run("a lease lost during the work cancels it; the other keys still complete", func(t *testing.T) {
		results, err := client.DoBatch(ctx, namespace, []string{"l1", "l2"}, func(workCtx context.Context, keys []string) ([][]byte, error) {
			_, _, err := bundle.Store.ForceRelease(context.Background(), ledger.ForceReleaseRequest{Namespace: namespace, Key: "l2", Reason: "test"})
			require.NoError(t, err)
			<-workCtx.Done() // the next heartbeat of l2 learns it
			require.ErrorIs(t, context.Cause(workCtx), ledgerclient.ErrLeaseLost)
			return [][]byte{[]byte("a"), []byte("b")}, nil
			// The other key's lease outlasts any stall: only l2's is lost.
		}, ledgerclient.WithLeaseTTL(5*time.Minute), ledgerclient.WithHeartbeatInterval(50*time.Millisecond))
		require.NoError(t, err)
		require.NoError(t, results[0].Err)
		require.ErrorIs(t, results[1].Err, ledgerclient.ErrLeaseLost)
		require.Equal(t, "completed", readEntry(t, bundle.Pool, "l1").State)
		require.Equal(t, "released", readEntry(t, bundle.Pool, "l2").State)
	})

	t.Run("more keys than a batch holds take several calls", func(t *testing.T) {
		keys := make([]string, ledgerclient.MaxBatchItems+1)
		for i := range keys {
			keys[i] = fmt.Sprint("many-", i)
		}
		u := &upper{}
		results, err := client.DoBatch(ctx, "many", keys, u.work)
		require.NoError(t, err)
		require.Len(t, u.calls, 2)
		require.Len(t, results, len(keys))
		require.Equal(t, []byte("R-many-1000"), results[1000].Result.Value)
	})
}

func TestItemErr(t *testing.T) {
	require.NoError(t, ledgerclient.ItemErr(nil))
	err := ledgerclient.ItemErr(&ledgerv1.ItemError{Code: 8, Reason: "QUOTA_EXCEEDED", Message: "m", Metadata: map[string]string{"quota": "max_held_leases"}})
	require.ErrorIs(t, err, ledgerclient.ErrQuotaExceeded)
	var e *ledgerclient.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "max_held_leases", e.Metadata["quota"])
}
