package ledger_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/ledgertest"
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
		events, next, err := b.store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns"}, ledger.Page{Size: 9, Token: token})
		require.NoError(t, err)
		for _, e := range events {
			allEvents[e.ID]++
		}
		if next == "" {
			break
		}
		token = next
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
	_, _, err = b.store.ListEvents(ctx, ledger.EventFilter{Namespace: "nss"}, ledger.Page{})
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
		events, _, err := b.store.ListEvents(ctx, filter, ledger.Page{})
		require.NoError(t, err)
		kinds := []ledger.EventKind{}
		for _, e := range events {
			kinds = append(kinds, e.Kind)
		}
		return kinds
	}
	require.Equal(t, []ledger.EventKind{ledger.EventNamespaceChanged, ledger.EventReserved, ledger.EventCompleted},
		kindsOf(ledger.EventFilter{Namespace: "ns"}), "the namespace was created by its first Reserve")
	require.Equal(t, []ledger.EventKind{ledger.EventCompleted}, kindsOf(ledger.EventFilter{Namespace: "ns", Start: middle}))
	require.Equal(t, []ledger.EventKind{ledger.EventNamespaceChanged, ledger.EventReserved}, kindsOf(ledger.EventFilter{Namespace: "ns", End: middle}))
	require.Equal(t, []ledger.EventKind{ledger.EventCompleted}, kindsOf(ledger.EventFilter{Namespace: "ns", Kinds: []ledger.EventKind{ledger.EventCompleted}}))
}

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

func TestNamespaces(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	ctx := ledger.WithCaller(context.Background(), "platform@ops")
	minute, hour := time.Minute, time.Hour
	size := 1024

	created, err := b.store.CreateNamespace(ctx, "payments", ledger.NamespaceUpdate{DefaultLeaseTTL: &minute, MaxResultBytes: &size}, "new team")
	require.NoError(t, err)
	require.Equal(t, time.Minute, created.Settings.DefaultLeaseTTL)
	require.Equal(t, 1024, created.Settings.MaxResultBytes)
	require.Equal(t, time.Hour, created.Settings.MaxLeaseTTL, "unset: the server's default")
	_, err = b.store.CreateNamespace(ctx, "payments", ledger.NamespaceUpdate{}, "again")
	require.ErrorIs(t, err, ledger.ErrAlreadyExists)
	_, err = b.store.CreateNamespace(ctx, "bad", ledger.NamespaceUpdate{MaxLeaseTTL: &minute, DefaultLeaseTTL: &hour}, "x")
	require.ErrorContains(t, err, "settings.max_lease_ttl")
	_, err = b.store.CreateNamespace(ctx, "nameless", ledger.NamespaceUpdate{}, "")
	require.ErrorContains(t, err, "reason")

	// The new settings apply to the hot path at once on this replica.
	r := b.reserve(t, ledger.ReserveRequest{Namespace: "payments", Key: "k", Owner: "w"}, ledger.Acquired)
	require.Equal(t, time.Minute, r.LeaseTTL)
	_, err = b.store.Complete(context.Background(), ledger.CompleteRequest{Namespace: "payments", Key: "k", FencingToken: r.FencingToken, Result: make([]byte, 1025)})
	require.ErrorContains(t, err, "at most 1024 bytes")

	five := 5
	updated, err := b.store.UpdateNamespace(ctx, "payments", ledger.NamespaceUpdate{MaxAttempts: &five}, "cap retries")
	require.NoError(t, err)
	require.Equal(t, 5, updated.Settings.MaxAttempts)
	require.Equal(t, time.Minute, updated.Settings.DefaultLeaseTTL, "unset fields are kept")
	_, err = b.store.UpdateNamespace(ctx, "nope", ledger.NamespaceUpdate{}, "x")
	require.ErrorIs(t, err, ledger.ErrNotFound)
	negative := -1
	_, err = b.store.UpdateNamespace(ctx, "payments", ledger.NamespaceUpdate{MaxAttempts: &negative}, "x")
	require.ErrorContains(t, err, "settings.max_attempts")
	got, err := b.store.GetNamespace(ctx, "payments")
	require.NoError(t, err)
	require.Equal(t, 5, got.Settings.MaxAttempts, "the refused update changed nothing")

	for _, name := range []string{"a", "b", "c", "d"} {
		_, err := b.store.CreateNamespace(ctx, name, ledger.NamespaceUpdate{}, "test")
		require.NoError(t, err)
	}
	var names []string
	token := ""
	for {
		page, next, err := b.store.ListNamespaces(ctx, ledger.Page{Size: 2, Token: token})
		require.NoError(t, err)
		for _, ns := range page {
			names = append(names, ns.Name)
		}
		if next == "" {
			break
		}
		token = next
	}
	require.Equal(t, []string{"a", "b", "c", "d", "payments"}, names)

	events := b.events(t, "payments", "")
	require.Len(t, events, 2)
	require.Equal(t, "namespace_changed", events[0].Kind)
	require.Equal(t, "platform@ops", events[0].Caller)
	require.Equal(t, "new team", events[0].Detail["reason"])
	require.Equal(t, "cap retries", events[1].Detail["reason"])
	previous := events[1].Detail["previous"].(map[string]any)
	require.Equal(t, float64(0), previous["max_attempts"])
}

// TestSweeper: retention removes exactly the entries past it, in batches,
// and Lookup reports them purged; event retention removes old events; two
// sweepers at once neither double-delete nor deadlock.
func TestSweeper(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	replica := ledgertest.Replica(t, ledgertest.Bundle{Store: b.store, Pool: b.pool}, testConfig)
	short := 50 * time.Millisecond
	_, err := b.store.CreateNamespace(ctx, "short", ledger.NamespaceUpdate{Retention: &short}, "test")
	require.NoError(t, err)

	// 1,200 finished entries past retention (more than two batches),
	// written directly, plus entries that must stay.
	_, err = b.pool.Exec(ctx, `
		INSERT INTO entries (namespace, key, state, owner, fencing_token, attempts, fingerprint, result,
		                     created_at, updated_at, finished_at, expires_at)
		SELECT 'short', 'old-' || i, 'completed', 'w', 1, 1, '', 'r', now(), now(), now(), now() - interval '1 second'
		FROM generate_series(1, 1200) AS i`)
	require.NoError(t, err)
	done := b.reserve(t, ledger.ReserveRequest{Namespace: "short", Key: "fresh", Owner: "w"}, ledger.Acquired)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "short", Key: "fresh", FencingToken: done.FencingToken})
	require.NoError(t, err)
	b.reserve(t, ledger.ReserveRequest{Namespace: "short", Key: "held", Owner: "w", LeaseTTL: time.Hour}, ledger.Acquired)
	kept := b.reserve(t, ledger.ReserveRequest{Namespace: "long", Key: "done", Owner: "w"}, ledger.Acquired)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "long", Key: "done", FencingToken: kept.FencingToken})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return b.lookup(t, "short", "fresh").ExpiresAt.Before(time.Now().Add(-10 * time.Millisecond))
	},
		10*time.Second, 10*time.Millisecond)
	var expired int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM entries WHERE expires_at < now()`).Scan(&expired))
	require.Equal(t, 1201, expired)

	reports := make([]ledger.SweepReport, 2)
	var wg sync.WaitGroup
	for i, store := range []*ledger.Store{b.store, replica.Store} {
		wg.Go(func() { reports[i] = store.Sweep(ctx) })
	}
	wg.Wait()
	var total int64
	for _, r := range reports {
		require.NoError(t, r.Err)
		total += r.PurgedEntries["short"]
		require.Zero(t, r.PurgedEntries["long"])
	}
	require.Equal(t, int64(1201), total, "every expired entry purged exactly once")

	var left int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM entries`).Scan(&left))
	require.Equal(t, 2, left, "the held entry and the other namespace's stay")
	var purgedEvents int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE kind = 'purged'`).Scan(&purgedEvents))
	require.Equal(t, 1201, purgedEvents)

	e := b.lookup(t, "short", "fresh")
	require.Equal(t, ledger.StatePurged, e.State)
	require.False(t, e.PurgedAt.IsZero())
	require.Equal(t, done.FencingToken, e.FencingToken)
	require.Equal(t, ledger.StatePurged, b.lookup(t, "short", "old-7").State)
	require.Equal(t, ledger.StateLeased, b.lookup(t, "short", "held").State)
	require.Equal(t, ledger.StateCompleted, b.lookup(t, "long", "done").State)
	_, err = b.store.Lookup(ctx, "short", "never-seen")
	require.ErrorIs(t, err, ledger.ErrNotFound)

	// A purged key can be reserved again (a new entry), with a token above
	// the one it had: a worker from before the purge is still refused.
	again := b.reserve(t, ledger.ReserveRequest{Namespace: "short", Key: "fresh", Owner: "w"}, ledger.Acquired)
	require.Equal(t, done.FencingToken+1, again.FencingToken)
	_, err = b.store.Complete(ctx, ledger.CompleteRequest{Namespace: "short", Key: "fresh", FencingToken: done.FencingToken})
	require.ErrorIs(t, err, ledger.ErrLeaseLost, "the pre-purge token is stale")

	// Event retention: age the long namespace's events, then sweep.
	tiny := time.Millisecond
	_, err = b.store.UpdateNamespace(ctx, "long", ledger.NamespaceUpdate{EventRetention: &tiny}, "test")
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond)
	var before, shortEvents int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE namespace = 'short'`).Scan(&shortEvents))
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE namespace = 'long'`).Scan(&before))
	require.Positive(t, before)
	report := b.store.Sweep(ctx)
	require.NoError(t, report.Err)
	require.GreaterOrEqual(t, report.DeletedEvents, int64(before))
	var after, shortAfter int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE namespace = 'long'`).Scan(&after))
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE namespace = 'short'`).Scan(&shortAfter))
	require.Zero(t, after)
	require.Equal(t, shortEvents, shortAfter, "the other namespace's events (30 days) stay")
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
	}, 10*time.Second, 10*time.Millisecond)
	n, err := b.store.PurgeExpired(ctx, "ns", "again")
	require.NoError(t, err)
	require.Zero(t, n)
	events := b.events(t, "ns", "k")
	purged := events[len(events)-1]
	require.Equal(t, "purged", purged.Kind)
	require.Equal(t, "bob@ops", purged.Caller)
	require.Equal(t, "disk pressure", purged.Detail["reason"])
}

// TestQueryPlans checks, on a ledger big enough for the planner to care,
// that the listings and the sweeper use their indexes.
func TestQueryPlans(t *testing.T) {
	t.Parallel()
	ctx, b := setup(t)
	_, err := b.pool.Exec(ctx, `
		INSERT INTO entries (namespace, key, state, owner, fencing_token, attempts, fingerprint, result,
		                     created_at, updated_at, finished_at, expires_at)
		SELECT 'ns' || (i % 20), 'key-' || i, 'completed', 'w', 1, 1, '', 'r', now(), now(), now(), now() + interval '1 day'
		FROM generate_series(1, 20000) AS i;
		INSERT INTO events (namespace, key, kind, fencing_token, owner, attempt, caller, at)
		SELECT 'ns' || (i % 20), 'key-' || i, 'completed', 1, 'w', 1, 'x', now() - (i || ' seconds')::interval
		FROM generate_series(1, 20000) AS i;
		ANALYZE entries; ANALYZE events;`)
	require.NoError(t, err)

	plan := func(sql string, args ...any) string {
		var lines []string
		rows, err := b.pool.Query(ctx, "EXPLAIN (FORMAT JSON) "+sql, args...)
		require.NoError(t, err)
		for rows.Next() {
			var doc []any
			require.NoError(t, rows.Scan(&doc))
			raw, err := json.Marshal(doc)
			require.NoError(t, err)
			lines = append(lines, string(raw))
		}
		require.NoError(t, rows.Err())
		return strings.Join(lines, "\n")
	}
	read := ledger.QueryText

	listEntries := plan(read("list_entries"), "ns3", nil, "key-1", "key-2", nil, "", nil, nil, false, 101)
	require.Contains(t, listEntries, `"Index Name":"entries_pkey"`, listEntries)
	history := plan(read("get_history"), "ns3", "key-3", 0, 101)
	require.Contains(t, history, `"Index Name":"events_namespace_key_id_idx"`, history)
	events := plan(read("list_events"), "ns3", time.Now().Add(-time.Hour), time.Now(), nil, 0, nil, 101, 0)
	require.Contains(t, events, `"Index Name":"events_namespace_at_idx"`, events)
	stuck := plan(read("list_entries_leased"), "ns3", nil, "", nil, nil, "", nil, nil, true, 101)
	require.Contains(t, stuck, `"Index Name":"entries_leased_idx"`, stuck)
	sweep := plan(`SELECT namespace, key FROM entries WHERE expires_at < now() ORDER BY expires_at LIMIT 500`)
	require.Contains(t, sweep, `"Index Name":"entries_expires_at_idx"`, sweep)
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
