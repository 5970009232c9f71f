package ledger_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestCoalescedCalls runs many concurrent pairs, with coalescing made to
// gather them (one batch at a time), and checks that every caller got its
// own outcome and that the ledger holds exactly what singleton calls write.
func TestCoalescedCalls(t *testing.T) {
	cfg := testConfig
	cfg.Coalesce = ledger.CoalesceConfig{MaxInFlight: 1, MaxBatch: 16}
	b := setupWith(t, cfg)
	ctx := ledger.WithCaller(context.Background(), "bob")
	const workers, pairs = 32, 10
	concurrently(t, workers, pairs, func(w, p int) error {
		key := fmt.Sprintf("w%d-p%d", w, p)
		r, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: key, Owner: fmt.Sprint("w", w)})
		if err == nil && r.Outcome != ledger.Acquired {
			err = fmt.Errorf("%s: outcome %s", key, r.Outcome)
		}
		if err == nil {
			_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: key, FencingToken: r.FencingToken, Result: []byte(key)})
		}
		if err == nil {
			var replay ledger.Reservation
			replay, err = b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: key, Owner: "other"})
			if err == nil && !bytes.Equal(replay.Result, []byte(key)) {
				err = fmt.Errorf("%s: replayed %q", key, replay.Result)
			}
		}
		return err
	})
	var wrong, completed, events int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE convert_from(result, 'UTF8') <> key), count(*) FILTER (WHERE state = 'completed') FROM entries`).Scan(&wrong, &completed))
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE caller = 'bob' AND kind IN ('reserved', 'completed')`).Scan(&events))
	require.Zero(t, wrong, "every result is its own key's")
	require.Equal(t, workers*pairs, completed)
	require.Equal(t, 2*workers*pairs, events)
	stats := b.store.CoalesceStats()
	require.Equal(t, int64(2*workers*pairs), stats["reserve"].Items)
	require.Equal(t, int64(workers*pairs), stats["complete"].Items)
	require.Less(t, stats["reserve"].Batches, stats["reserve"].Items, "concurrent calls were gathered")
}

// TestCoalescedLookups runs many concurrent Lookups over two namespaces,
// with coalescing made to gather them, and checks that every caller got
// its own key's answer: held and completed entries, a key that retention
// purged, and keys the ledger never held.
func TestCoalescedLookups(t *testing.T) {
	cfg := testConfig
	cfg.Coalesce = ledger.CoalesceConfig{MaxInFlight: 1, MaxBatch: 16}
	b := setupWith(t, cfg)
	ctx := context.Background()
	old := b.purgedKey(t, "short", "old")
	const keys = 20
	for i := range keys {
		for _, ns := range []string{"a", "b"} {
			key := fmt.Sprint("k", i)
			r := b.reserve(t, ledger.ReserveRequest{Namespace: ns, Key: key, Owner: ns + key}, ledger.Acquired)
			if i%2 == 0 {
				_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: ns, Key: key, FencingToken: r.FencingToken, Result: []byte(ns + key)})
				require.NoError(t, err)
			}
		}
	}

	const workers, rounds = 32, 20
	concurrently(t, workers, rounds, func(w, r int) error {
		ns, key := []string{"a", "b"}[(w+r)%2], fmt.Sprint("k", (w*rounds+r)%(keys+2))
		e, err := b.store.Lookup(ctx, ns, key)
		switch n := (w*rounds + r) % (keys + 2); {
		case n >= keys: // never held
			if !errors.Is(err, ledger.ErrNotFound) {
				err = fmt.Errorf("%s/%s: got %v, %w; want not found", ns, key, e.State, err)
			} else {
				err = nil
			}
		case err != nil:
		case e.Namespace != ns || e.Key != key || e.Owner != ns+key:
			err = fmt.Errorf("%s/%s: got the entry of %s/%s (owner %s)", ns, key, e.Namespace, e.Key, e.Owner)
		case n%2 == 0 && (e.State != ledger.StateCompleted || string(e.Result) != ns+key):
			err = fmt.Errorf("%s/%s: got %s %q", ns, key, e.State, e.Result)
		case n%2 == 1 && e.State != ledger.StateLeased:
			err = fmt.Errorf("%s/%s: got %s, want leased", ns, key, e.State)
		}
		if err == nil && r%5 == 0 {
			var purged ledger.Entry
			purged, err = b.store.Lookup(ctx, "short", "old")
			if err == nil && (purged.State != ledger.StatePurged || purged.FencingToken != old.FencingToken) {
				err = fmt.Errorf("short/old: got %s token %d, want purged token %d", purged.State, purged.FencingToken, old.FencingToken)
			}
		}
		return err
	})
	stats := b.store.CoalesceStats()["lookup"]
	require.GreaterOrEqual(t, stats.Items, int64(workers*rounds))
	require.Less(t, stats.Batches, stats.Items, "concurrent lookups were gathered")
	require.Zero(t, stats.Fallbacks)
}

// concurrently runs op(w, r) for r in [0, rounds) on each of workers
// goroutines, and requires that no call failed.
func concurrently(t *testing.T, workers, rounds int, op func(w, r int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				errs <- op(w, r)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
