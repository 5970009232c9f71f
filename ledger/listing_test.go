package ledger_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestHistoryOfAKey follows one key through reserve, reclaim, a refused
// stale Complete, complete, reset and reserve again: the history shows
// every event in order, with tokens, owners and the callers' identities.
func TestHistoryOfAKey(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	as := func(caller string) context.Context { return ledger.WithCaller(context.Background(), caller) }

	first, err := b.store.Reserve(as("svc:worker-a"), ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "a", LeaseTTL: 20 * time.Millisecond})
	require.NoError(t, err)
	b.waitExpired(t, "ns", "k")
	second, err := b.store.Reserve(as("svc:worker-b"), ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "b", LeaseTTL: time.Minute})
	require.NoError(t, err)
	_, err = b.store.Complete(as("svc:worker-a"), ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: first.FencingToken, Result: []byte("late")})
	require.ErrorIs(t, err, ledger.ErrLeaseLost)
	_, err = b.store.Complete(as("svc:worker-b"), ledger.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: second.FencingToken, Result: []byte("v1")})
	require.NoError(t, err)
	_, err = b.store.ResetKey(as("alice@ops"), ledger.ResetKeyRequest{Namespace: "ns", Key: "k", Reason: "bad deploy 2026-11-27"})
	require.NoError(t, err)
	third, err := b.store.Reserve(as("svc:worker-c"), ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "c"})
	require.NoError(t, err)
	require.Equal(t, ledger.Acquired, third.Outcome)
	require.Equal(t, int64(4), third.FencingToken, "the reset moved the token on (3), the grant too (4)")
	require.Equal(t, 1, third.Attempt, "a reset starts the attempts again")

	events, next, err := b.store.GetHistory(context.Background(), "ns", "k", ledger.Page{})
	require.NoError(t, err)
	require.Empty(t, next)
	type step struct {
		kind   ledger.EventKind
		token  int64
		owner  string
		caller string
	}
	var got []step
	for _, e := range events {
		got = append(got, step{e.Kind, e.FencingToken, e.Owner, e.Caller})
	}
	require.Equal(t, []step{
		{ledger.EventReserved, 1, "a", "svc:worker-a"},
		{ledger.EventReclaimed, 2, "b", "svc:worker-b"},
		{ledger.EventRefusedStaleToken, 1, "a", "svc:worker-a"},
		{ledger.EventCompleted, 2, "b", "svc:worker-b"},
		{ledger.EventReset, 3, "b", "alice@ops"},
		{ledger.EventTakenOver, 4, "c", "svc:worker-c"},
	}, got)
	require.Equal(t, "bad deploy 2026-11-27", events[4].Detail["reason"])
	require.Equal(t, "completed", events[4].Detail["previous_state"])
	for i := 1; i < len(events); i++ {
		require.Greater(t, events[i].ID, events[i-1].ID)
		require.False(t, events[i].At.Before(events[i-1].At))
	}
}

// TestPaginationUnderConcurrentInserts pages through entries, a key's
// history and a namespace's events while other goroutines insert more:
// every row that existed before the listing started is returned exactly
// once.
func TestPaginationUnderConcurrentInserts(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	const existing = 120
	for i := range existing {
		b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: fmt.Sprintf("k%03d", i), Owner: "w", LeaseTTL: time.Hour}, ledger.Acquired)
	}
	for i := range 30 { // a long history for one key
		_, err := b.store.Heartbeat(ctx, ledger.HeartbeatRequest{Namespace: "ns", Key: "k000", FencingToken: 1, Checkpoint: []byte{byte(i)}})
		require.NoError(t, err)
	}
	historyBefore, _, err := b.store.GetHistory(ctx, "ns", "k000", ledger.Page{Size: ledger.MaxPageSize})
	require.NoError(t, err)
	var eventsBefore []int64
	require.NoError(t, pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id FROM events WHERE namespace = 'ns'`)
		if err != nil {
			return err
		}
		eventsBefore, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	}))

	stop := make(chan struct{})
	var inserters sync.WaitGroup
	for w := range 3 {
		inserters.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// New keys sort before, among and after the existing ones.
				for _, key := range []string{fmt.Sprintf("a-%d-%d", w, i), fmt.Sprintf("k%03d-%d-%d", i%existing, w, i), fmt.Sprintf("z-%d-%d", w, i)} {
					_, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: key, Owner: "w", LeaseTTL: time.Hour})
					require.NoError(t, err)
				}
				_, err := b.store.Heartbeat(ctx, ledger.HeartbeatRequest{Namespace: "ns", Key: "k000", FencingToken: 1, Checkpoint: []byte("x")})
				require.NoError(t, err)
			}
		})
	}
	defer func() { close(stop); inserters.Wait() }()

	seen := map[string]int{}
	token := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 1000)
		entries, next, err := b.store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns"}, ledger.Page{Size: 7, Token: token})
		require.NoError(t, err)
		for i, e := range entries {
			seen[e.Key]++
			if i > 0 {
				require.Less(t, entries[i-1].Key, e.Key, "key order")
			}
		}
		if next == "" {
			break
		}
		token = next
	}
	for i := range existing {
		require.Equal(t, 1, seen[fmt.Sprintf("k%03d", i)], "k%03d", i)
	}
	for key, n := range seen {
		require.Equal(t, 1, n, key)
	}

	seenEvents := map[int64]int{}
	token = ""
	for {
		events, next, err := b.store.GetHistory(ctx, "ns", "k000", ledger.Page{Size: 4, Token: token})
		require.NoError(t, err)
		for _, e := range events {
			seenEvents[e.ID]++
		}
		if next == "" {
			break
		}
		token = next
	}
	for _, e := range historyBefore {
		require.Equal(t, 1, seenEvents[e.ID])
	}

	allEvents := map[int64]int{}
	token = ""
	for {
		page, err := b.store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns"}, ledger.Page{Size: 9, Token: token})
		require.NoError(t, err)
		for _, e := range page.Events {
			allEvents[e.ID]++
		}
		if page.NextPageToken == "" {
			break
		}
		token = page.NextPageToken
	}
	for id, n := range allEvents {
		require.Equal(t, 1, n, "event %d", id)
	}
	for _, id := range eventsBefore {
		require.Equal(t, 1, allEvents[id], "event %d, there before the export began, was exported once", id)
	}
}

func TestListEntriesFilters(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	keys := func(entries []ledger.Entry) []string {
		out := []string{}
		for _, e := range entries {
			out = append(out, e.Key)
		}
		return out
	}
	list := func(filter ledger.EntryFilter) []string {
		filter.Namespace = "ns"
		entries, next, err := b.store.ListEntries(ctx, filter, ledger.Page{Size: ledger.MaxPageSize})
		require.NoError(t, err)
		require.Empty(t, next)
		for _, e := range entries {
			require.Nil(t, e.Result, "listings leave results out")
		}
		return keys(entries)
	}

	held := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "orders/1", Owner: "alice", LeaseTTL: time.Hour}, ledger.Acquired)
	_ = held
	done := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "orders/2", Owner: "bob"}, ledger.Acquired)
	_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "orders/2", FencingToken: done.FencingToken, Result: []byte("r")})
	require.NoError(t, err)
	failed := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "refunds/1", Owner: "bob"}, ledger.Acquired)
	_, err = b.store.Fail(ctx, ledger.FailRequest{Namespace: "ns", Key: "refunds/1", FencingToken: failed.FencingToken, Error: &ledger.WorkError{Message: "no"}})
	require.NoError(t, err)
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "orders/3", Owner: "carol", LeaseTTL: 20 * time.Millisecond}, ledger.Acquired)
	b.waitExpired(t, "ns", "orders/3")
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "orders0", Owner: "dave"}, ledger.Acquired) // "orders0" > "orders/" but no prefix match
	b.reserve(t, ledger.ReserveRequest{Namespace: "other", Key: "orders/9", Owner: "alice"}, ledger.Acquired)
	var cutoff time.Time
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT now()`).Scan(&cutoff))
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "orders/4", Owner: "erin"}, ledger.Acquired)

	require.Equal(t, []string{"orders/1", "orders/2", "orders/3", "orders/4", "orders0", "refunds/1"}, list(ledger.EntryFilter{}))
	require.Equal(t, []string{"orders/1", "orders/2", "orders/3", "orders/4"}, list(ledger.EntryFilter{KeyPrefix: "orders/"}))
	require.Equal(t, []string{"orders/2"}, list(ledger.EntryFilter{States: []ledger.State{ledger.StateCompleted}}))
	require.Equal(t, []string{"orders/2", "refunds/1"}, list(ledger.EntryFilter{States: []ledger.State{ledger.StateCompleted, ledger.StateFailed}}))
	require.Equal(t, []string{"orders/2", "refunds/1"}, list(ledger.EntryFilter{Owner: "bob"}))
	require.Equal(t, []string{"orders/3"}, list(ledger.EntryFilter{Stuck: true}))
	require.Equal(t, []string{"orders/4"}, list(ledger.EntryFilter{UpdatedAfter: cutoff}))
	require.NotContains(t, list(ledger.EntryFilter{UpdatedBefore: cutoff}), "orders/4")
	require.Equal(t, []string{"orders/1", "orders/3"}, list(ledger.EntryFilter{KeyPrefix: "orders/", States: []ledger.State{ledger.StateLeased}, UpdatedBefore: cutoff}))

	_, _, err = b.store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns"}, ledger.Page{Size: ledger.MaxPageSize + 1})
	require.ErrorIs(t, err, ledger.ErrInvalidArgument)
	_, _, err = b.store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns"}, ledger.Page{Token: "garbage!"})
	require.ErrorContains(t, err, "page_token")
	_, _, err = b.store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns", States: []ledger.State{"weird"}}, ledger.Page{})
	require.ErrorContains(t, err, "states")
	_, _, err = b.store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns", UpdatedAfter: cutoff, UpdatedBefore: cutoff.Add(-time.Second)}, ledger.Page{})
	require.ErrorContains(t, err, "updated_before")

	// A misspelt namespace is not an empty one.
	_, _, err = b.store.ListEntries(ctx, ledger.EntryFilter{Namespace: "nss"}, ledger.Page{})
	require.ErrorIs(t, err, ledger.ErrNotFound)
	_, err = b.store.ListEvents(ctx, ledger.EventFilter{Namespace: "nss"}, ledger.Page{})
	require.ErrorIs(t, err, ledger.ErrNotFound)
	_, _, err = b.store.GetHistory(ctx, "nss", "orders/1", ledger.Page{})
	require.ErrorIs(t, err, ledger.ErrNotFound)
	_, err = b.store.PurgeExpired(ctx, "nss", "test")
	require.ErrorIs(t, err, ledger.ErrNotFound)
}

func TestListEventsByTimeAndKind(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	r := b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "a", Owner: "w"}, ledger.Acquired)
	var middle time.Time
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&middle))
	_, err := b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "ns", Key: "a", FencingToken: r.FencingToken})
	require.NoError(t, err)
	b.reserve(t, ledger.ReserveRequest{Namespace: "elsewhere", Key: "a", Owner: "w"}, ledger.Acquired)

	kindsOf := func(filter ledger.EventFilter) []ledger.EventKind {
		page, err := b.store.ListEvents(ctx, filter, ledger.Page{})
		require.NoError(t, err)
		require.True(t, page.SettledUntil.IsZero(), "the tests' stores have no settling delay")
		kinds := []ledger.EventKind{}
		for _, e := range page.Events {
			kinds = append(kinds, e.Kind)
		}
		return kinds
	}
	require.Equal(t, []ledger.EventKind{ledger.EventNamespaceCreated, ledger.EventReserved, ledger.EventCompleted},
		kindsOf(ledger.EventFilter{Namespace: "ns"}), "the namespace was created by its first Reserve")
	require.Equal(t, []ledger.EventKind{ledger.EventCompleted}, kindsOf(ledger.EventFilter{Namespace: "ns", Start: middle}))
	require.Equal(t, []ledger.EventKind{ledger.EventNamespaceCreated, ledger.EventReserved}, kindsOf(ledger.EventFilter{Namespace: "ns", End: middle}))
	require.Equal(t, []ledger.EventKind{ledger.EventCompleted}, kindsOf(ledger.EventFilter{Namespace: "ns", Kinds: []ledger.EventKind{ledger.EventCompleted}}))
}

// TestListEventsSettling: without IncludeUnsettled, the listing stops the
// settling delay before the database's now and says where; with it, the
// newest events are listed too.
func TestListEventsSettling(t *testing.T) {
	t.Parallel()
	cfg := testConfig
	cfg.EventSettlingDelay = time.Hour // every event of this test is unsettled
	b := setupWith(t, cfg)
	ctx := context.Background()
	b.reserve(t, ledger.ReserveRequest{Namespace: "ns", Key: "a", Owner: "w"}, ledger.Acquired)
	var now time.Time
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT now()`).Scan(&now))

	settled, err := b.store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns"}, ledger.Page{})
	require.NoError(t, err)
	require.Empty(t, settled.Events)
	require.WithinDuration(t, now.Add(-time.Hour), settled.SettledUntil, time.Minute)

	all, err := b.store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns", IncludeUnsettled: true}, ledger.Page{})
	require.NoError(t, err)
	require.Len(t, all.Events, 2, "namespace_created and reserved")
	require.True(t, all.SettledUntil.IsZero())

	// An end before the settling point leaves nothing out for settling.
	early, err := b.store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns", End: now.Add(-2 * time.Hour)}, ledger.Page{})
	require.NoError(t, err)
	require.Empty(t, early.Events)
	require.True(t, early.SettledUntil.IsZero())
}
