package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

func requireField(t *testing.T, err error, field string) {
	t.Helper()
	var validation *ledger.ValidationError
	require.ErrorAs(t, err, &validation)
	require.Equal(t, field, validation.Field)
}

func TestReserveBatch(t *testing.T) {
	ctx, b := setup(t)
	ctx = ledger.WithCaller(ctx, "alice")
	// The keys' states before the batch.
	done := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "done", Owner: "w0"}, ledger.Acquired)
	_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "done", FencingToken: done.FencingToken, Result: []byte("r")})
	require.NoError(t, err)
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "held", Owner: "w0"}, ledger.Acquired)
	mine := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "mine", Owner: "w1"}, ledger.Acquired)
	released := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "released", Owner: "w0"}, ledger.Acquired)
	_, err = b.store.Release(ctx, ledger.ReleaseRequest{Namespace: "ns", Key: "released", FencingToken: released.FencingToken})
	require.NoError(t, err)
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "printed", Owner: "w0", Fingerprint: []byte{1}}, ledger.Acquired)

	item := func(key string) ledger.ReserveBatchItem {
		return ledger.ReserveBatchItem{Key: key, Metadata: map[string]string{"batch": "1"}}
	}
	items := []ledger.ReserveBatchItem{
		item("fresh-1"), item("done"), item("held"), item("mine"), item("released"), item(""),
		item("fresh-1"), item("printed"), item("fresh-2"),
	}
	badMetadata := item("fresh-3")
	badMetadata.Metadata = map[string]string{"": "x"}
	items = append(items, badMetadata)

	results, err := b.store.ReserveBatch(ctx, ledger.ReserveBatchRequest{Namespace: "ns", Owner: "w1", Items: items})
	require.NoError(t, err)
	require.Len(t, results, len(items))
	outcome := func(i int) ledger.Reservation {
		t.Helper()
		require.NoError(t, results[i].Err, "item %d", i)
		return results[i].Reservation
	}
	require.Equal(t, ledger.Acquired, outcome(0).Outcome)
	require.Equal(t, ledger.Completed, outcome(1).Outcome)
	require.Equal(t, []byte("r"), outcome(1).Result)
	require.Equal(t, ledger.InProgress, outcome(2).Outcome)
	require.Equal(t, "w0", outcome(2).Owner)
	require.Equal(t, ledger.Acquired, outcome(3).Outcome)
	require.Equal(t, mine.FencingToken, outcome(3).FencingToken, "the holder's retry keeps its token")
	require.Equal(t, ledger.Acquired, outcome(4).Outcome)
	require.True(t, outcome(4).Takeover)
	require.Equal(t, released.FencingToken+1, outcome(4).FencingToken)
	requireField(t, results[5].Err, "items[5].key")
	requireField(t, results[6].Err, "items[6].key")
	require.ErrorContains(t, results[6].Err, "repeats items[0]")
	require.ErrorIs(t, results[7].Err, ledger.ErrFingerprintMismatch)
	require.Equal(t, ledger.Acquired, outcome(8).Outcome)
	requireField(t, results[9].Err, "items[9].metadata key")

	// The rows and events are those of singleton Reserves.
	fresh := b.lookup(t, "ns", "fresh-1")
	require.Equal(t, ledger.StateLeased, fresh.State)
	require.Equal(t, "w1", fresh.Owner)
	require.Equal(t, map[string]string{"batch": "1"}, fresh.Metadata)
	require.Equal(t, []event{{Kind: "reserved", FencingToken: 1, Owner: "w1", Attempt: 1, Caller: "alice", Detail: map[string]any{}}}, b.events(t, "ns", "fresh-1"))
	require.Equal(t, "refused_fingerprint", b.events(t, "ns", "printed")[1].Kind)
	require.Equal(t, "taken_over", b.events(t, "ns", "released")[2].Kind)
	_, err = b.store.Lookup(ctx, "ns", "fresh-3")
	require.ErrorIs(t, err, ledger.ErrNotFound, "a refused item changes nothing")
}

func TestBatchSizes(t *testing.T) {
	ctx, b := setup(t)
	_, err := b.store.ReserveBatch(ctx, ledger.ReserveBatchRequest{Namespace: "ns", Owner: "w"})
	requireField(t, err, "items")
	_, err = b.store.ReserveBatch(ctx, ledger.ReserveBatchRequest{Namespace: "ns", Items: []ledger.ReserveBatchItem{{Key: "k"}}})
	requireField(t, err, "owner")
	_, err = b.store.ReserveBatch(ctx, ledger.ReserveBatchRequest{Namespace: "ns", Owner: "w", LeaseTTL: time.Microsecond, Items: []ledger.ReserveBatchItem{{Key: "k"}}})
	requireField(t, err, "lease_ttl")
	_, err = b.store.CompleteBatch(ctx, "ns", make([]ledger.CompleteBatchItem, 1001))
	requireField(t, err, "items")
	require.ErrorContains(t, err, "must hold 1 to 1000 items, got 1001")
	_, err = b.store.LookupBatch(ctx, "ns", make([]string, 1001))
	requireField(t, err, "keys")
	_, err = b.store.LookupBatch(ctx, "", []string{"k"})
	requireField(t, err, "namespace")
	require.Equal(t, 0, b.count(t, "entries"))
}

func TestCompleteBatch(t *testing.T) {
	ctx, b := setup(t)
	_, err := b.store.CreateNamespace(ctx, "ns", ledger.NamespaceUpdate{MaxResultBytes: ptr(8)}, "test")
	require.NoError(t, err)
	token := map[string]int64{}
	for _, key := range []string{"a", "b", "stale", "again", "conflict", "big"} {
		token[key] = b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: key, Owner: "w"}, ledger.Acquired).FencingToken
	}
	for _, key := range []string{"again", "conflict"} {
		_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: key, FencingToken: token[key], Result: []byte("first")})
		require.NoError(t, err)
	}
	item := func(key string, token int64, result string) ledger.CompleteBatchItem {
		return ledger.CompleteBatchItem{Key: key, FencingToken: token, Result: []byte(result)}
	}
	results, err := b.store.CompleteBatch(ctx, "ns", []ledger.CompleteBatchItem{
		item("a", token["a"], "ra"),
		item("stale", token["stale"]+1, "x"),
		item("again", token["again"], "first"),
		item("conflict", token["conflict"], "second"),
		item("missing", 1, "x"),
		item("big", token["big"], "123456789"),
		item("b", token["b"], ""),
		item("a", token["a"], "ra"),
	})
	require.NoError(t, err)
	require.NoError(t, results[0].Err)
	require.False(t, results[0].Completion.AlreadyCompleted)
	require.ErrorIs(t, results[1].Err, ledger.ErrLeaseLost)
	require.NoError(t, results[2].Err)
	require.True(t, results[2].Completion.AlreadyCompleted)
	require.ErrorIs(t, results[3].Err, ledger.ErrResultConflict)
	require.ErrorIs(t, results[4].Err, ledger.ErrLeaseLost)
	requireField(t, results[5].Err, "items[5].result")
	require.NoError(t, results[6].Err)
	requireField(t, results[7].Err, "items[7].key")

	require.Equal(t, []byte("ra"), b.lookup(t, "ns", "a").Result)
	require.Equal(t, []byte{}, b.lookup(t, "ns", "b").Result)
	require.Equal(t, ledger.StateLeased, b.lookup(t, "ns", "stale").State)
	require.Equal(t, ledger.StateLeased, b.lookup(t, "ns", "big").State)
	require.Equal(t, []byte("first"), b.lookup(t, "ns", "conflict").Result)
	require.Equal(t, []string{"reserved", "completed"}, kinds(b.events(t, "ns", "a")))
	require.Equal(t, map[string]any{"result_bytes": float64(2)}, b.events(t, "ns", "a")[1].Detail)
	require.Equal(t, []string{"reserved", "refused_stale_token"}, kinds(b.events(t, "ns", "stale")))
	require.Equal(t, []string{"reserved", "completed"}, kinds(b.events(t, "ns", "again")), "a repeat writes nothing")
}

func TestLookupBatch(t *testing.T) {
	ctx, b := setup(t)
	old := b.purgedKey(t, "ns", "old")
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "held", Owner: "w"}, ledger.Acquired)

	results, err := b.store.LookupBatch(ctx, "ns", []string{"held", "nope", "old", "", "held"})
	require.NoError(t, err)
	require.NoError(t, results[0].Err)
	require.Equal(t, b.lookup(t, "ns", "held"), results[0].Entry, "the same entry as Lookup's")
	require.ErrorIs(t, results[1].Err, ledger.ErrNotFound)
	require.NoError(t, results[2].Err)
	require.Equal(t, ledger.StatePurged, results[2].Entry.State)
	require.Equal(t, old.FencingToken, results[2].Entry.FencingToken)
	requireField(t, results[3].Err, "keys[3]")
	requireField(t, results[4].Err, "keys[4]")
	require.ErrorContains(t, results[4].Err, "repeats keys[0]: a batch holds each key once")
	require.Equal(t, ledger.Entry{}, results[4].Entry, "a repeated key is answered once")
}

// TestBatchesInQuotaNamespaces: the quota is kept, item by item.
func TestBatchesInQuotaNamespaces(t *testing.T) {
	ctx, b := setup(t)
	// Each entry stores 3 bytes (key "kN", owner "w"): two fit, with one
	// 2-byte result.
	_, err := b.store.CreateNamespace(ctx, "q", ledger.NamespaceUpdate{MaxHeldLeases: ptr[int64](2), MaxStoredBytes: ptr[int64](8)}, "test")
	require.NoError(t, err)
	var items []ledger.ReserveBatchItem
	for i := range 3 {
		items = append(items, ledger.ReserveBatchItem{Key: fmt.Sprint("k", i)})
	}
	results, err := b.store.ReserveBatch(ctx, ledger.ReserveBatchRequest{Namespace: "q", Owner: "w", Items: items})
	require.NoError(t, err)
	require.NoError(t, results[0].Err)
	require.NoError(t, results[1].Err)
	require.ErrorIs(t, results[2].Err, ledger.ErrQuotaExceeded)
	completes, err := b.store.CompleteBatch(ctx, "q", []ledger.CompleteBatchItem{
		{Key: "k0", FencingToken: results[0].Reservation.FencingToken, Result: []byte("ab")},
		{Key: "k1", FencingToken: results[1].Reservation.FencingToken, Result: []byte("cd")},
	})
	require.NoError(t, err)
	require.NoError(t, completes[0].Err)
	require.ErrorIs(t, completes[1].Err, ledger.ErrQuotaExceeded)
	require.Equal(t, int64(8), b.usage(t, "q").StoredBytes)
}

// TestBatchSlots: a batch waits while MaxConcurrentBatches others run, for
// as long as its context allows, and runs once a slot frees.
func TestBatchSlots(t *testing.T) {
	cfg := testConfig
	cfg.MaxConcurrentBatches = 2
	b := setupWith(t, cfg)
	release := b.store.TakeBatchSlots()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := b.store.ReserveBatch(ctx, ledger.ReserveBatchRequest{Namespace: "ns", Owner: "w", Items: []ledger.ReserveBatchItem{{Key: "k"}}})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, 0, b.count(t, "entries"), "a batch that never ran changed nothing")

	done := make(chan error, 1)
	go func() {
		_, err := b.store.ReserveBatch(context.Background(), ledger.ReserveBatchRequest{Namespace: "ns", Owner: "w", Items: []ledger.ReserveBatchItem{{Key: "k"}}})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the batch ran without a slot: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	require.NoError(t, <-done)
	require.Equal(t, 1, b.count(t, "entries"))
}
