package ledger_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestCompleteBatchPlanProbesEachKey pins the plan of complete_batch.sql,
// the statement of CompleteBatch and of the coalesced Completes. With
// statistics that (rightly) call the leased entries few among many, its
// cached generic plan once joined the items with a scan of the whole partial
// index entries_leased_idx: small by the statistics, but holding an entry
// for every lease granted since the last vacuum, so each coalesced Complete
// read thousands of them after seconds of load. The plan must instead probe
// the entries by key, one item at a time.
func TestCompleteBatchPlanProbesEachKey(t *testing.T) {
	ctx, b := setup(t)
	_, err := b.pool.Exec(ctx, `
		INSERT INTO entries (namespace, key, state, owner, fencing_token, lease_expires_at, attempts,
		                     fingerprint, result, created_at, updated_at, finished_at, expires_at)
		SELECT 'plan', 'k' || g, CASE WHEN g <= 20 THEN 'leased' ELSE 'completed' END, 'w', 1,
		       CASE WHEN g <= 20 THEN now() + interval '1 minute' END, 1, '',
		       CASE WHEN g > 20 THEN ''::bytea END, now(), now(),
		       CASE WHEN g > 20 THEN now() END, CASE WHEN g > 20 THEN now() + interval '1 day' END
		FROM generate_series(1, 20000) g`)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, "ANALYZE entries")
	require.NoError(t, err)

	text, err := ledger.Statement("complete_batch")
	require.NoError(t, err)
	conn, err := b.pool.Acquire(ctx)
	require.NoError(t, err)
	defer func() {
		_, _ = conn.Exec(ctx, "DEALLOCATE plan_test")
		_, _ = conn.Exec(ctx, "RESET plan_cache_mode")
		conn.Release()
	}()
	for _, sql := range []string{
		"SET plan_cache_mode = force_generic_plan",
		"PREPARE plan_test (text[], text[], bigint[], bytea[], bigint[], text[]) AS " + text,
	} {
		_, err := conn.Exec(ctx, sql)
		require.NoError(t, err, sql)
	}

	plan := planText(t, conn, `EXPLAIN EXECUTE plan_test ('{plan,plan}', '{k1,k2}', '{1,1}', '{x,y}', '{1000,1000}', '{c,c}')`)

	// The UPDATE finds its rows through the primary key, an index
	// condition per item; nothing reads all of entries or all its leases.
	_, update, found := strings.Cut(plan, "Update on entries")
	require.True(t, found, plan)
	update, _, found = strings.Cut(update, "CTE event")
	require.True(t, found, plan)
	require.Contains(t, update, "entries_pkey", plan)
	require.Contains(t, update, "Index Cond: ((namespace = ", plan)
	require.NotContains(t, plan, "entries_leased_idx", plan)
	require.NotContains(t, plan, "Seq Scan on entries", plan)
}

// TestCompleteBatchReadsItsItemsOnce runs complete_batch.sql for many items
// under EXPLAIN ANALYZE: its input is read once per use, not once per item
// (a plan that did turned a 1,000-key CompleteBatch into a million rows).
func TestCompleteBatchReadsItsItemsOnce(t *testing.T) {
	ctx, b := setup(t)
	const items = 200
	_, err := b.pool.Exec(ctx, `
		INSERT INTO entries (namespace, key, state, owner, fencing_token, lease_expires_at, attempts,
		                     fingerprint, created_at, updated_at)
		SELECT 'once', 'k' || g, 'leased', 'w', 1, now() + interval '1 minute', 1, '', now(), now()
		FROM generate_series(1, $1::int) g`, items)
	require.NoError(t, err)
	keys, namespaces, tokens, results, retentions, callers := []string{}, []string{}, []int64{}, [][]byte{}, []int64{}, []string{}
	for i := 1; i <= items; i++ {
		keys, namespaces = append(keys, fmt.Sprint("k", i)), append(namespaces, "once")
		tokens, results = append(tokens, 1), append(results, []byte("r"))
		retentions, callers = append(retentions, time.Hour.Milliseconds()), append(callers, "c")
	}
	text, err := ledger.Statement("complete_batch")
	require.NoError(t, err)
	plan := planText(t, b.pool, "EXPLAIN (ANALYZE, COSTS OFF) "+text, namespaces, keys, tokens, results, retentions, callers)
	scans := regexp.MustCompile(`CTE Scan on input \S+ \(actual [^)]* loops=(\d+)\)`).FindAllStringSubmatch(plan, -1)
	require.NotEmpty(t, scans, plan)
	for _, scan := range scans {
		require.Equal(t, "1", scan[1], "the items were read once per item:\n%s", plan)
	}
	var completed int
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM entries WHERE namespace = 'once' AND state = 'completed'").Scan(&completed))
	require.Equal(t, items, completed, "the statement ran")
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
	events := plan(read("list_events"), "ns3", time.Now().Add(-time.Hour), time.Now(), nil, 0, nil, 101)
	require.Contains(t, events, `"Index Name":"events_namespace_at_idx"`, events)
	stuck := plan(read("list_entries_leased"), "ns3", nil, "", nil, nil, "", nil, nil, true, 101)
	require.Contains(t, stuck, `"Index Name":"entries_leased_idx"`, stuck)
	leases := plan(read("namespace_leases"), "ns3")
	require.Contains(t, leases, `"Index Name":"entries_leased_idx"`, leases)
	sweep := plan(`SELECT namespace, key FROM entries WHERE expires_at < now() ORDER BY expires_at LIMIT 500`)
	require.Contains(t, sweep, `"Index Name":"entries_expires_at_idx"`, sweep)
}
