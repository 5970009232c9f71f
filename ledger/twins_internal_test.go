package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/pgtest"
)

// The statements of Reserve, Complete and Lookup each have a twin for many
// keys (reserve_insert.sql and reserve_insert_batch.sql, complete.sql and
// complete_batch.sql, lookup.sql and lookup_batch.sql, lookup_purged.sql
// and lookup_purged_batch.sql): the singleton runs when coalescing is off
// or a call gathers nothing, the twin for batches and gathered calls. The
// tests below run the same fixtures through both, each on a ledger of its
// own, and require the same answers and the same rows afterwards, so that
// a change to one twin that is not made to the other fails.

// twinLedger is one of the two identical ledgers of a twin test.
type twinLedger struct {
	store *Store
	pool  interface {
		querier
		QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	}
}

// newTwinLedgers returns two ledgers in the same state: each in a fresh
// schema, with coalescing off (the statements are called directly), and
// the fixtures every twin test starts from.
func newTwinLedgers(t *testing.T) [2]twinLedger {
	t.Helper()
	var twins [2]twinLedger
	for i := range twins {
		pool := pgtest.Pool(t)
		_, err := Migrate(context.Background(), pool, nil)
		require.NoError(t, err)
		store, err := New(pool, Config{
			Limits:             Limits{MinLeaseTTL: time.Millisecond},
			Coalesce:           CoalesceConfig{Disabled: true},
			EventSettlingDelay: -1,
		})
		require.NoError(t, err)
		twins[i] = twinLedger{store: store, pool: pool}
		twins[i].fixtures(t)
	}
	return twins
}

// fixtures puts keys in every state a first statement can meet, in
// namespace "ns" and in "quota" (a stored-bytes quota, whose usage a
// Complete updates):
//
//	leased       held by "holder", token 1, for an hour
//	expired      held by "holder", token 1, lease run out
//	released     released by its holder, token 1
//	completed    completed by "holder" with result "done", token 1
//	failed       failed permanently, token 1
//	retried      failed retryably once (token 1), then held again (token 2)
//	purged       completed, then removed by retention (its purged event kept)
func (l twinLedger) fixtures(t *testing.T) {
	t.Helper()
	ctx := WithCaller(context.Background(), "fixture")
	_, err := l.store.CreateNamespace(ctx, "short", NamespaceUpdate{Retention: ptrTo(time.Millisecond)}, "fixture")
	require.NoError(t, err)
	_, err = l.store.CreateNamespace(ctx, "quota", NamespaceUpdate{MaxStoredBytes: ptrTo(int64(1 << 20))}, "fixture")
	require.NoError(t, err)
	grant := func(ns, key string, ttl time.Duration) Reservation {
		r, err := l.store.Reserve(ctx, ReserveRequest{Namespace: ns, Key: key, Owner: "holder", LeaseTTL: ttl,
			Fingerprint: []byte("fp"), Metadata: map[string]string{"k": key}})
		require.NoError(t, err)
		require.Equal(t, Acquired, r.Outcome, "%s/%s", ns, key)
		return r
	}
	for _, ns := range []string{"ns", "quota"} {
		grant(ns, "leased", time.Hour)
		grant(ns, "expired", time.Millisecond)
		r := grant(ns, "released", time.Hour)
		_, err := l.store.Release(ctx, ReleaseRequest{Namespace: ns, Key: "released", FencingToken: r.FencingToken})
		require.NoError(t, err)
		r = grant(ns, "completed", time.Hour)
		_, err = l.store.Complete(ctx, CompleteRequest{Namespace: ns, Key: "completed", FencingToken: r.FencingToken, Result: []byte("done")})
		require.NoError(t, err)
		r = grant(ns, "failed", time.Hour)
		_, err = l.store.Fail(ctx, FailRequest{Namespace: ns, Key: "failed", FencingToken: r.FencingToken, Error: &WorkError{Code: "E", Message: "broken"}})
		require.NoError(t, err)
		r = grant(ns, "retried", time.Hour)
		_, err = l.store.Fail(ctx, FailRequest{Namespace: ns, Key: "retried", FencingToken: r.FencingToken, Error: &WorkError{Message: "flaky"}, Retryable: true})
		require.NoError(t, err)
		grant(ns, "retried", time.Hour)
	}
	r := grant("short", "purged", time.Hour)
	_, err = l.store.Complete(ctx, CompleteRequest{Namespace: "short", Key: "purged", FencingToken: r.FencingToken})
	require.NoError(t, err)
	require.Eventually(t, func() bool { // the retention of 1ms runs out by the database's clock
		purged, err := l.store.PurgeExpired(ctx, "short", "fixture")
		require.NoError(t, err)
		return purged == 1
	}, time.Minute, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		e, err := l.store.Lookup(ctx, "ns", "expired")
		require.NoError(t, err)
		return e.LeaseExpired
	}, time.Minute, 5*time.Millisecond)
}

func ptrTo[T any](v T) *T { return &v }

// rows returns the ledger's tables as comparable text: every column but
// the ids and the times, which differ between two runs; the lease and
// retention durations instead of their end times.
func (l twinLedger) rows(t *testing.T) string {
	t.Helper()
	var dump string
	err := l.pool.QueryRow(context.Background(), `
		SELECT jsonb_build_object(
		  'entries', (SELECT jsonb_agg(jsonb_build_object(
		      'ns', namespace, 'key', key, 'state', state, 'owner', owner, 'token', fencing_token,
		      'attempts', attempts, 'fingerprint', fingerprint, 'result', result,
		      'error_code', error_code, 'error_message', error_message, 'checkpoint', checkpoint,
		      'metadata', metadata, 'waiters', waiters,
		      'leased', lease_expires_at IS NOT NULL, 'finished', finished_at IS NOT NULL,
		      'retained_ms', round(extract(epoch FROM expires_at - finished_at) * 1000))
		    ORDER BY namespace, key) FROM entries),
		  'events', (SELECT jsonb_agg(jsonb_build_object(
		      'ns', namespace, 'key', key, 'kind', kind, 'token', fencing_token, 'owner', owner,
		      'attempt', attempt, 'caller', caller, 'detail', detail - 'finished_at')
		    ORDER BY namespace, key, id) FROM events),
		  'usage', (SELECT jsonb_agg(jsonb_build_object('ns', namespace, 'bytes', stored_bytes)
		    ORDER BY namespace) FROM namespace_usage))::text`).Scan(&dump)
	require.NoError(t, err)
	return dump
}

// answer is a statement's returned row as comparable text, without the
// times and the remaining lease, which differ between two runs.
func answer(t *testing.T, row any) string {
	t.Helper()
	switch r := row.(type) {
	case *reserveRow:
		if r != nil {
			c := *r
			c.LeaseExpiresAt, c.LeaseRemainingMS, c.CreatedAt, c.UpdatedAt, c.FinishedAt, c.ExpiresAt = nil, 0, time.Time{}, time.Time{}, nil, nil
			row = c
		}
	case *guardRow:
		if r != nil {
			c := *r
			c.FinishedAt = nil
			row = c
		}
	case *entryRow:
		if r != nil {
			c := *r
			c.LeaseExpiresAt, c.LeaseRemainingMS, c.CreatedAt, c.UpdatedAt, c.FinishedAt, c.ExpiresAt = nil, 0, time.Time{}, time.Time{}, nil, nil
			row = c
		}
	case *purgedRow:
		if r != nil {
			c := *r
			c.At = time.Time{}
			row = c
		}
	}
	text, err := json.Marshal(row)
	require.NoError(t, err)
	return string(text)
}

// requireTwins requires the same answers and the same rows of both
// ledgers.
func requireTwins[O any](t *testing.T, twins [2]twinLedger, one, many []O) {
	t.Helper()
	require.Len(t, many, len(one))
	for i := range one {
		require.Equal(t, answer(t, one[i]), answer(t, many[i]), "item %d", i)
	}
	require.JSONEq(t, twins[0].rows(t), twins[1].rows(t))
}

func TestTwinsReserveInsert(t *testing.T) {
	t.Parallel()
	twins := newTwinLedgers(t)
	ctx := WithCaller(context.Background(), "twin")
	var items []reserveItem
	for _, ns := range []string{"ns", "quota"} {
		for _, key := range []string{"fresh", "leased", "expired", "released", "completed", "failed", "retried"} {
			req := ReserveRequest{Namespace: ns, Key: key, Owner: "twin", Fingerprint: []byte("fp"), Metadata: map[string]string{"by": "twin"}}
			items = append(items, newReserveItem(ctx, req, 42*time.Second))
		}
	}
	// Nil fingerprint and labels (stored empty), and a key after its purge
	// (its token continues above the purged one).
	items = append(items, newReserveItem(ctx, ReserveRequest{Namespace: "ns", Key: "bare", Owner: "twin"}, time.Minute),
		newReserveItem(ctx, ReserveRequest{Namespace: "short", Key: "purged", Owner: "twin"}, time.Minute))

	var one []*reserveRow
	for _, item := range items {
		row, err := insertOrReadOne(ctx, twins[0].pool, item)
		require.NoError(t, err)
		require.NotNil(t, row, "%s/%s", item.namespace, item.key)
		one = append(one, row)
	}
	many, err := insertOrReadMany(ctx, twins[1].pool, items)
	require.NoError(t, err)
	requireTwins(t, twins, one, many)

	inserted := map[string]int64{}
	for _, row := range one {
		if row.Inserted {
			inserted[row.Namespace+"/"+row.Key] = row.FencingToken
		}
	}
	require.Equal(t, map[string]int64{"ns/fresh": 1, "quota/fresh": 1, "ns/bare": 1, "short/purged": 2}, inserted,
		"only the fresh keys are inserted; a purged key's token goes on")
}

func TestTwinsComplete(t *testing.T) {
	t.Parallel()
	twins := newTwinLedgers(t)
	ctx := WithCaller(context.Background(), "twin")
	ns := NamespaceSettings{Retention: 90 * time.Minute}
	var items []completeItem
	for _, namespace := range []string{"ns", "quota"} {
		for _, c := range []struct {
			key    string
			token  int64
			result []byte
		}{
			{"leased", 1, []byte("result")},    // the holder: completed
			{"expired", 1, nil},                // lease run out, nobody took over: completed, empty result
			{"retried", 1, []byte("late")},     // a stale token: refused
			{"retried", 2, []byte("r")},        // (repeated key: in a later statement, see below)
			{"completed", 1, []byte("done")},   // a retry with the same result
			{"failed", 1, []byte("x")},         // failed: refused
			{"released", 1, []byte("x")},       // released: refused
			{"never-held", 1, []byte("x")},     // no entry
			{"completed", 1, []byte("other")},  // a retry with another result
			{"leased", 7, []byte("too-early")}, // a token never granted
		} {
			items = append(items, newCompleteItem(ctx, CompleteRequest{Namespace: namespace, Key: c.key, FencingToken: c.token, Result: c.result}, ns))
		}
	}
	// A statement for many keys holds each key once: split the items into
	// rounds of distinct keys, run in the same order on both ledgers.
	var rounds [][]completeItem
	for _, item := range items {
		placed := false
		for r := range rounds {
			if !containsKey(rounds[r], item.id()) {
				rounds[r] = append(rounds[r], item)
				placed = true
				break
			}
		}
		if !placed {
			rounds = append(rounds, []completeItem{item})
		}
	}
	var one, many []*guardRow
	for _, round := range rounds {
		for _, item := range round {
			row, err := completeOne(ctx, twins[0].pool, item)
			require.NoError(t, err)
			one = append(one, row)
		}
		rows, err := completeMany(ctx, twins[1].pool, round)
		require.NoError(t, err)
		many = append(many, rows...)
	}
	requireTwins(t, twins, one, many)
	changed := 0
	for _, row := range one {
		if row != nil && row.Changed {
			changed++
		}
	}
	require.Equal(t, 6, changed, "leased, expired and retried (token 2), in both namespaces")
}

func containsKey(items []completeItem, id string) bool {
	for _, it := range items {
		if it.id() == id {
			return true
		}
	}
	return false
}

func TestTwinsLookup(t *testing.T) {
	t.Parallel()
	twins := newTwinLedgers(t)
	ctx := context.Background()
	var items []lookupItem
	for _, ns := range []string{"ns", "quota", "short", "nowhere"} {
		for _, key := range []string{"leased", "expired", "released", "completed", "failed", "retried", "purged", "never-held"} {
			items = append(items, lookupItem{namespace: ns, key: key})
		}
	}
	var one []*entryRow
	for _, item := range items {
		row, err := lookupOne(ctx, twins[0].pool, item)
		require.NoError(t, err)
		one = append(one, row)
	}
	many, err := lookupMany(ctx, twins[1].pool, items)
	require.NoError(t, err)
	requireTwins(t, twins, one, many)
	found := 0
	for _, row := range one {
		if row != nil {
			found++
		}
	}
	require.Equal(t, 12, found, "six keys in each of ns and quota")

	var purgedOnes []*purgedRow
	keys := []string{"purged", "never-held", "leased"}
	for _, key := range keys {
		row, err := purgedOne(ctx, twins[0].pool, "short", key)
		require.NoError(t, err)
		purgedOnes = append(purgedOnes, row)
	}
	purgedMany, err := purgedMany(ctx, twins[1].pool, "short", keys)
	require.NoError(t, err)
	requireTwins(t, twins, purgedOnes, purgedMany)
	require.NotNil(t, purgedOnes[0])
	require.Equal(t, fmt.Sprint(int64(1)), fmt.Sprint(purgedOnes[0].FencingToken))
	require.Nil(t, purgedOnes[1])
}
