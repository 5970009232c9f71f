package ledger_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/devcluster"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// standbyPatience bounds every wait of the read-pool tests: for a cluster
// to start, a standby to replay, a read to move back to the standby.
// Generous, for a loaded machine; nothing is timed.
const standbyPatience = time.Minute

// readPoolStores returns a Store over a fresh schema (its "primary") whose
// read pool reaches, through a proxy, another schema (its "standby"), and
// a Store over that other schema, to write what only the read pool shows.
// The two schemas are told apart by what they hold: a read answered with
// the standby's rows came from the read pool.
func readPoolStores(t *testing.T, cfg ledger.Config) (primary, standby ledgertest.Bundle, proxy *devcluster.Link, logs *ledgertest.LogBuffer) {
	t.Helper()
	standbyURL := pgtest.Schema(t)
	standby = ledgertest.StoreAt(t, standbyURL, testConfig)
	proxy = newLink(t, hostOf(t, standbyURL))
	logs = &ledgertest.LogBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.ReadPool = ledgertest.ReadPool(t, withHost(t, standbyURL, proxy.Addr()))
	primary = ledgertest.Store(t, cfg)
	return primary, standby, proxy, logs
}

// TestReadPoolServesTheAuditReads: ListEntries, GetHistory and ListEvents
// read from the read pool; Lookup and every write stay on the primary, and
// so do the reads of a context made with WithPrimaryReads.
func TestReadPoolServesTheAuditReads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := testConfig
	cfg.EventSettlingDelay = time.Hour // every event is unsettled: SettledUntil is set
	primary, standby, _, _ := readPoolStores(t, cfg)
	completeOne(t, primary.Store, "ns", "on-primary")
	completeOne(t, standby.Store, "ns", "on-standby")

	entries, _, err := primary.Store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns"}, ledger.Page{})
	require.NoError(t, err)
	require.Equal(t, []string{"on-standby"}, entryKeys(entries))
	history, _, err := primary.Store.GetHistory(ctx, "ns", "on-standby", ledger.Page{})
	require.NoError(t, err)
	require.Equal(t, []ledger.EventKind{ledger.EventReserved, ledger.EventCompleted}, eventKinds(history))
	events, err := primary.Store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns", Kinds: keyEvents, IncludeUnsettled: true}, ledger.Page{})
	require.NoError(t, err)
	require.Equal(t, []string{"on-standby", "on-standby"}, eventKeys(events.Events))
	// Not a standby (pg_is_in_recovery is false): the settling delay
	// counts from the read database's now.
	settled, err := primary.Store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns"}, ledger.Page{})
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(-time.Hour), settled.SettledUntil, time.Minute)
	require.Positive(t, primary.Store.ReadPoolStat().AcquireCount())

	e, err := primary.Store.Lookup(ctx, "ns", "on-primary")
	require.NoError(t, err)
	require.Equal(t, ledger.StateCompleted, e.State)
	_, err = primary.Store.Lookup(ctx, "ns", "on-standby")
	require.ErrorIs(t, err, ledger.ErrNotFound, "Lookup reads the primary")

	onPrimary := ledger.WithPrimaryReads(ctx)
	entries, _, err = primary.Store.ListEntries(onPrimary, ledger.EntryFilter{Namespace: "ns"}, ledger.Page{})
	require.NoError(t, err)
	require.Equal(t, []string{"on-primary"}, entryKeys(entries))
	history, _, err = primary.Store.GetHistory(onPrimary, "ns", "on-primary", ledger.Page{})
	require.NoError(t, err)
	require.Len(t, history, 2)
	events, err = primary.Store.ListEvents(onPrimary, ledger.EventFilter{Namespace: "ns", Kinds: keyEvents, IncludeUnsettled: true}, ledger.Page{})
	require.NoError(t, err)
	require.Equal(t, []string{"on-primary", "on-primary"}, eventKeys(events.Events))

	withoutReadPool := ledgertest.Replica(t, primary, testConfig)
	require.Nil(t, withoutReadPool.Store.ReadPoolStat())
	entries, _, err = withoutReadPool.Store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns"}, ledger.Page{})
	require.NoError(t, err)
	require.Equal(t, []string{"on-primary"}, entryKeys(entries), "without a read pool, the primary serves the reads")
}

// TestReadPoolUnreachable: while the read pool's database cannot be
// reached, refused or cut off under its idle connections, the three reads
// are served by the primary, and ledgerd says so once; once it answers
// again, they go back to it.
func TestReadPoolUnreachable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := testConfig
	cfg.ReadPoolRetryInterval = 10 * time.Millisecond
	primary, standby, proxy, logs := readPoolStores(t, cfg)
	completeOne(t, primary.Store, "ns", "on-primary")
	completeOne(t, standby.Store, "ns", "on-standby")
	// reads returns the key each read found first ("" for none). Each read
	// picks its database itself: while the standby comes back, one may be
	// served by each (the history of the primary's key is then empty).
	reads := func() []string {
		t.Helper()
		entries, _, err := primary.Store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns"}, ledger.Page{})
		require.NoError(t, err)
		require.Len(t, entries, 1)
		got := []string{entries[0].Key, "", ""}
		history, _, err := primary.Store.GetHistory(ctx, "ns", entries[0].Key, ledger.Page{})
		require.NoError(t, err)
		if len(history) > 0 {
			got[1] = history[0].Key
		}
		events, err := primary.Store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns", Kinds: keyEvents}, ledger.Page{})
		require.NoError(t, err)
		if len(events.Events) > 0 {
			got[2] = events.Events[0].Key
		}
		return got
	}
	require.Equal(t, []string{"on-standby", "on-standby", "on-standby"}, reads())

	proxy.Cut() // the idle connections break, new ones are refused
	for range 3 {
		require.Equal(t, []string{"on-primary", "on-primary", "on-primary"}, reads())
	}
	require.Equal(t, 1, strings.Count(logs.String(), "read database unreachable"), logs.String())

	proxy.Heal()
	// The connections the cut broke are found out one read at a time.
	require.Eventually(t, func() bool {
		return slices.Equal(reads(), []string{"on-standby", "on-standby", "on-standby"})
	}, standbyPatience, 10*time.Millisecond)
	require.Contains(t, logs.String(), "read database reachable again")

	// A read pool whose database nothing listens at: the reads are the
	// primary's from the first.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := withHost(t, pgtest.Schema(t), lis.Addr().String())
	require.NoError(t, lis.Close())
	cfg.ReadPool = ledgertest.ReadPool(t, closed)
	cfg.Logger = slog.New(slog.DiscardHandler)
	nowhere := ledgertest.Replica(t, primary, cfg)
	entries, _, err := nowhere.Store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns"}, ledger.Page{})
	require.NoError(t, err)
	require.Equal(t, []string{"on-primary"}, entryKeys(entries))
}

// TestReadsFromAStandby runs a Store over a Patroni cluster, writing to
// the primary and reading from the synchronous standby, whose replay the
// test pauses to make it lag as long as it likes.
func TestReadsFromAStandby(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ha, standby := startHA(t)
	standbyURL := standby.MemberURL()
	proxy := newLink(t, hostOf(t, standbyURL))
	cfg := testConfig
	cfg.ReadPoolRetryInterval = 10 * time.Millisecond
	cfg.EventSettlingDelay = 3 * time.Second // longer than any statement here takes, on a loaded machine too
	cfg.ReadPool = ledgertest.ReadPool(t, withHost(t, standbyURL, proxy.Addr()))
	cfg.Logger = slog.New(slog.DiscardHandler)
	b := ledgertest.StoreAt(t, ha.URL(), cfg)
	replay := newReplayControl(t, standby)
	// The standby has the schema and a namespace once it has replayed them.
	completeOne(t, b.Store, "ns", "first")
	awaitOnStandby(t, b.Store, "ns", "first")

	t.Run("the reads come from the standby", func(t *testing.T) {
		var inRecovery bool
		require.NoError(t, cfg.ReadPool.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery))
		require.True(t, inRecovery, "the read pool reaches the standby")

		replay.pause(t)
		completeOne(t, b.Store, "ns", "while-paused")
		e, err := b.Store.Lookup(ctx, "ns", "while-paused")
		require.NoError(t, err, "Lookup reads the primary")
		require.Equal(t, ledger.StateCompleted, e.State)
		entries, _, err := b.Store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns"}, ledger.Page{})
		require.NoError(t, err)
		require.Equal(t, []string{"first"}, entryKeys(entries), "the standby has not replayed the new key")
		history, _, err := b.Store.GetHistory(ctx, "ns", "while-paused", ledger.Page{})
		require.NoError(t, err)
		require.Empty(t, history)
		events, err := b.Store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns", Kinds: keyEvents, IncludeUnsettled: true}, ledger.Page{})
		require.NoError(t, err)
		require.Equal(t, []string{"first", "first"}, eventKeys(events.Events))

		// settled_until stops the settling delay before the last replayed
		// commit, not before the standby's now.
		var replayed time.Time
		require.NoError(t, replay.conn.QueryRow(ctx, "SELECT pg_last_xact_replay_timestamp()").Scan(&replayed))
		settled, err := b.Store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns"}, ledger.Page{})
		require.NoError(t, err)
		require.False(t, settled.SettledUntil.After(replayed.Add(-cfg.EventSettlingDelay)),
			"settled until %s, replayed until %s", settled.SettledUntil, replayed)

		replay.resume(t)
		awaitOnStandby(t, b.Store, "ns", "while-paused")
		history, _, err = b.Store.GetHistory(ctx, "ns", "while-paused", ledger.Page{})
		require.NoError(t, err)
		require.Equal(t, []ledger.EventKind{ledger.EventReserved, ledger.EventCompleted}, eventKinds(history))
	})

	t.Run("an export that follows settled_until skips no event", func(t *testing.T) {
		// Writers complete keys while the standby's replay is paused, for
		// longer than the settling delay, and resumed, over and over; all
		// along, a follower pages through the events from the standby, and
		// starts each new listing at the last one's settled_until. The
		// standby's replay time moves only with new commits, so a ticker
		// keeps committing elsewhere until the follower has settled past
		// the last write.
		background, stopBackground := context.WithCancel(ctx)
		defer stopBackground()
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() {
			for i := 0; background.Err() == nil; i++ {
				completeOne(t, b.Store, "tick", fmt.Sprintf("t%d", i))
				time.Sleep(50 * time.Millisecond)
			}
		})
		completeOne(t, b.Store, "follow", "first") // the namespace exists
		lastWrite := make(chan time.Time, 1)
		followed := make(chan []int64, 1)
		wg.Go(func() { followed <- followEvents(t, b.Store, "follow", lastWrite) })

		writing, stopWriting := context.WithCancel(ctx)
		var writers sync.WaitGroup
		for w := range 3 {
			writers.Go(func() {
				for i := 0; writing.Err() == nil; i++ {
					completeOne(t, b.Store, "follow", fmt.Sprintf("w%d-%d", w, i))
				}
			})
		}
		for range 3 {
			replay.pause(t)
			time.Sleep(cfg.EventSettlingDelay + time.Second) // a lag beyond the delay; the test asserts no duration
			replay.resume(t)
			time.Sleep(time.Second)
		}
		stopWriting()
		writers.Wait()
		var last time.Time
		require.NoError(t, b.Pool.QueryRow(ctx, "SELECT max(at) FROM events WHERE namespace = 'follow'").Scan(&last))
		lastWrite <- last
		ids := <-followed
		stopBackground()

		rows, err := b.Pool.Query(ctx, "SELECT id FROM events WHERE namespace = 'follow' ORDER BY at, id")
		require.NoError(t, err)
		written, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
		require.Greater(t, len(written), 10)
		requireSameEvents(t, written, ids)
	})

	t.Run("a standby that is down", func(t *testing.T) {
		replay.pause(t) // what the standby answers lags; the primary's is fresh
		defer replay.resume(t)
		proxy.Cut()
		completeOne(t, b.Store, "ns", "while-down")
		entries, _, err := b.Store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns", KeyPrefix: "while-down"}, ledger.Page{})
		require.NoError(t, err)
		require.Equal(t, []string{"while-down"}, entryKeys(entries), "the primary serves the reads")
		history, _, err := b.Store.GetHistory(ctx, "ns", "while-down", ledger.Page{})
		require.NoError(t, err)
		require.Len(t, history, 2)
		events, err := b.Store.ListEvents(ctx, ledger.EventFilter{Namespace: "ns", Kinds: keyEvents, IncludeUnsettled: true}, ledger.Page{})
		require.NoError(t, err)
		require.Contains(t, eventKeys(events.Events), "while-down")

		proxy.Heal()
		require.Eventually(t, func() bool { // a key the paused standby lacks
			entries, _, err := b.Store.ListEntries(ctx, ledger.EntryFilter{Namespace: "ns", KeyPrefix: "while-down"}, ledger.Page{})
			require.NoError(t, err)
			return len(entries) == 0
		}, standbyPatience, 10*time.Millisecond, "the reads did not go back to the standby")
	})
}

// BenchmarkStandbyStaleness measures how stale the reads of a read pool on
// the synchronous standby of a Patroni cluster are, while writers keep the
// primary busy: each op completes a key on the primary and waits until
// ListEntries, from the standby, shows it completed. It reports the
// commit-to-visible time (p50, p99, max, in ms), the standby's replay lag
// as the primary sees it (pg_stat_replication, its largest sample), and
// the write load (pairs/s). docs/operations.md ("Reads from a standby")
// has the figures:
//
//	scripts/test.sh -run '^$' -bench StandbyStaleness -benchtime 2000x ./ledger/
func BenchmarkStandbyStaleness(b *testing.B) {
	ctx := context.Background()
	ha, standby := startHA(b)
	cfg := testConfig
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.ReadPool = ledgertest.ReadPool(b, standby.MemberURL())
	bundle := ledgertest.StoreAt(b, ha.URL(), cfg)
	store := bundle.Store
	completeOne(b, store, "stale", "first")
	require.Eventually(b, func() bool { // the standby has the schema and the namespace
		entries, _, err := store.ListEntries(ctx, ledger.EntryFilter{Namespace: "stale"}, ledger.Page{})
		return err == nil && len(entries) == 1
	}, standbyPatience, 10*time.Millisecond)

	runs := 0 // the sub-benchmark runs more than once: each run has keys of its own
	b.Run("under-load", func(b *testing.B) {
		runs++
		load, stopLoad := context.WithCancel(ctx)
		var wg sync.WaitGroup
		defer wg.Wait()
		defer stopLoad() // first: the writers stop, then they are waited for
		var pairs atomic.Int64
		for w := range 8 {
			wg.Go(func() {
				for i := 0; load.Err() == nil; i++ {
					completeOne(b, store, "load", fmt.Sprintf("r%d-w%d-%d", runs, w, i))
					pairs.Add(1)
				}
			})
		}
		var maxReplayLag atomic.Int64 // microseconds
		wg.Go(func() {
			for load.Err() == nil {
				var us *int64
				err := bundle.Pool.QueryRow(ctx, "SELECT (extract(epoch FROM max(replay_lag)) * 1000000)::bigint FROM pg_stat_replication").Scan(&us)
				if err == nil && us != nil && *us > maxReplayLag.Load() {
					maxReplayLag.Store(*us)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
		lags := make([]time.Duration, 0, b.N)
		started := time.Now()
		b.ResetTimer()
		for i := range b.N {
			key := fmt.Sprintf("r%d-%d", runs, i)
			completeOne(b, store, "stale", key)
			committed := time.Now()
			for {
				entries, _, err := store.ListEntries(ctx, ledger.EntryFilter{Namespace: "stale", KeyPrefix: key}, ledger.Page{})
				require.NoError(b, err)
				if len(entries) == 1 && entries[0].State == ledger.StateCompleted {
					break
				}
				if time.Since(committed) > standbyPatience {
					b.Fatalf("%s never showed on the standby", key)
				}
			}
			lags = append(lags, time.Since(committed))
		}
		b.StopTimer()
		elapsed := time.Since(started)
		slices.Sort(lags)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		b.ReportMetric(ms(lags[len(lags)/2]), "visible-p50-ms")
		b.ReportMetric(ms(lags[len(lags)*99/100]), "visible-p99-ms")
		b.ReportMetric(ms(lags[len(lags)-1]), "visible-max-ms")
		b.ReportMetric(float64(maxReplayLag.Load())/1000, "replay-lag-max-ms")
		b.ReportMetric(float64(pairs.Load())/elapsed.Seconds(), "load-pairs/s")
	})
}

// startHA starts a Patroni cluster for the test, and returns it with its
// standby member.
func startHA(tb testing.TB) (*devcluster.HACluster, *devcluster.HAMember) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*standbyPatience)
	defer cancel()
	ha, err := devcluster.StartHA(ctx, devcluster.HAConfig{})
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, ha.Destroy()) })
	primary, err := ha.Primary(ctx)
	require.NoError(tb, err)
	for _, m := range ha.Members() {
		if m != primary {
			return ha, m
		}
	}
	tb.Fatal("the cluster has no standby")
	return nil, nil
}

// replayControl pauses and resumes a standby's replay of the primary's
// WAL, over a connection of its own. Synchronous replication waits for the
// standby to flush the WAL, not to replay it: writes go on meanwhile.
//
// Patroni resumes a paused replay on its next loop unless it is in
// maintenance mode, so newReplayControl puts the cluster in maintenance
// mode until the test ends (no failover happens meanwhile).
type replayControl struct{ conn *pgx.Conn }

func newReplayControl(t *testing.T, standby *devcluster.HAMember) replayControl {
	t.Helper()
	ctx := context.Background()
	var conn *pgx.Conn
	require.Eventually(t, func() bool { // once the standby has the database
		var err error
		conn, err = pgx.Connect(ctx, standby.MemberURL())
		return err == nil
	}, standbyPatience, 50*time.Millisecond)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	patroniMaintenance(t, standby, true)
	t.Cleanup(func() { patroniMaintenance(t, standby, false) })
	return replayControl{conn}
}

// patroniMaintenance turns the cluster's maintenance mode (Patroni's
// pause) on or off through a member's REST API, and waits until that
// member has seen it.
func patroniMaintenance(t *testing.T, member *devcluster.HAMember, on bool) {
	t.Helper()
	api := fmt.Sprintf("http://127.0.0.1:%d", member.RESTPort)
	req, err := http.NewRequest(http.MethodPatch, api+"/config", strings.NewReader(fmt.Sprintf(`{"pause": %t}`, on)))
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Eventually(t, func() bool {
		res, err := http.Get(api + "/patroni")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var status struct {
			Pause bool `json:"pause"`
		}
		return json.NewDecoder(res.Body).Decode(&status) == nil && status.Pause == on
	}, standbyPatience, 50*time.Millisecond, "Patroni's maintenance mode did not turn %t", on)
}

func (r replayControl) pause(t *testing.T) {
	t.Helper()
	r.set(t, "pg_wal_replay_pause", "paused")
}

func (r replayControl) resume(t *testing.T) {
	t.Helper()
	r.set(t, "pg_wal_replay_resume", "not paused")
}

func (r replayControl) set(t *testing.T, function, state string) {
	t.Helper()
	ctx := context.Background()
	_, err := r.conn.Exec(ctx, "SELECT "+function+"()")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var now string
		require.NoError(t, r.conn.QueryRow(ctx, "SELECT pg_get_wal_replay_pause_state()").Scan(&now))
		return now == state
	}, standbyPatience, 10*time.Millisecond)
}

// awaitOnStandby waits until the Store's ListEntries, from the standby,
// shows the key completed.
func awaitOnStandby(t *testing.T, store *ledger.Store, namespace, key string) {
	t.Helper()
	var last error
	require.Eventually(t, func() bool {
		entries, _, err := store.ListEntries(context.Background(), ledger.EntryFilter{Namespace: namespace, KeyPrefix: key}, ledger.Page{})
		last = err
		return err == nil && len(entries) == 1 && entries[0].State == ledger.StateCompleted
	}, standbyPatience, 10*time.Millisecond, "%s/%s never showed on the standby; last error: %v", namespace, key, last)
}

// followEvents exports a namespace's events as a follower of the log
// would: page by page with page tokens, and after the last page a new
// listing from its settled_until, until that has passed the time it is
// sent on until. It returns the events' ids in the order listed; on a
// failure, it fails the test and returns nil.
func followEvents(t *testing.T, store *ledger.Store, namespace string, until <-chan time.Time) []int64 {
	t.Helper()
	var ids []int64
	var end time.Time // zero until told
	filter := ledger.EventFilter{Namespace: namespace}
	page := ledger.Page{Size: 50}
	deadline := time.Now().Add(5 * standbyPatience)
	for end.IsZero() || !filter.Start.After(end) {
		select {
		case end = <-until:
		default:
		}
		if time.Now().After(deadline) {
			t.Errorf("the export never settled past the last write (%s): it is at %s", end, filter.Start)
			return nil
		}
		events, err := store.ListEvents(context.Background(), filter, page)
		if err != nil {
			t.Errorf("list events: %v", err)
			return nil
		}
		for _, e := range events.Events {
			ids = append(ids, e.ID)
		}
		switch {
		case events.NextPageToken != "":
			page.Token = events.NextPageToken
		case events.SettledUntil.IsZero():
			t.Errorf("a listing of events without settled_until")
			return nil
		default:
			if events.SettledUntil.After(filter.Start) {
				filter.Start, page.Token = events.SettledUntil, ""
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return ids
}

// requireSameEvents checks that an export listed the events written, in
// their order, and says which it skipped or repeated if not.
func requireSameEvents(t *testing.T, written, listed []int64) {
	t.Helper()
	if slices.Equal(written, listed) {
		return
	}
	seen := map[int64]int{}
	for _, id := range listed {
		seen[id]++
	}
	var skipped, repeated []int64
	for _, id := range written {
		switch seen[id] {
		case 0:
			skipped = append(skipped, id)
		case 1:
		default:
			repeated = append(repeated, id)
		}
	}
	t.Fatalf("the export listed %d events of %d written: skipped %d (%v), repeated %d (%v), or out of order",
		len(listed), len(written), len(skipped), skipped[:min(len(skipped), 20)], len(repeated), repeated[:min(len(repeated), 20)])
}

// completeOne reserves and completes a key.
func completeOne(tb testing.TB, store *ledger.Store, namespace, key string) {
	tb.Helper()
	ctx := context.Background()
	r, err := store.Reserve(ctx, ledger.ReserveRequest{Namespace: namespace, Key: key, Owner: "w", LeaseTTL: time.Minute})
	require.NoError(tb, err)
	_, err = store.Complete(ctx, ledger.CompleteRequest{Namespace: namespace, Key: key, FencingToken: r.FencingToken, Result: []byte("done")})
	require.NoError(tb, err)
}

func entryKeys(entries []ledger.Entry) []string {
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
	}
	return keys
}

func eventKeys(events []ledger.Event) []string {
	keys := make([]string, len(events))
	for i, e := range events {
		keys[i] = e.Key
	}
	return keys
}

func eventKinds(events []ledger.Event) []ledger.EventKind {
	kinds := make([]ledger.EventKind, len(events))
	for i, e := range events {
		kinds[i] = e.Kind
	}
	return kinds
}

// keyEvents are the kinds of event that completeOne writes for its key.
var keyEvents = []ledger.EventKind{ledger.EventReserved, ledger.EventCompleted}

// hostOf returns the host:port of a postgres:// URL.
func hostOf(tb testing.TB, rawURL string) string {
	tb.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(tb, err)
	return u.Host
}

// withHost returns a postgres:// URL with its host:port replaced.
func withHost(tb testing.TB, rawURL, host string) string {
	tb.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(tb, err)
	u.Host = host
	return u.String()
}

// newLink is a devcluster.Link to backend, closed when the test ends.
func newLink(t *testing.T, backend string) *devcluster.Link {
	t.Helper()
	l, err := devcluster.NewLink(backend)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}
