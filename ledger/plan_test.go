package ledger_test

import (
	"strings"
	"testing"

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

	rows, err := conn.Query(ctx, `EXPLAIN EXECUTE plan_test ('{plan,plan}', '{k1,k2}', '{1,1}', '{x,y}', '{1000,1000}', '{c,c}')`)
	require.NoError(t, err)
	var plan strings.Builder
	for rows.Next() {
		var line string
		require.NoError(t, rows.Scan(&line))
		plan.WriteString(line + "\n")
	}
	require.NoError(t, rows.Err())

	// The UPDATE finds its rows through the primary key, an index
	// condition per item; nothing reads all of entries or all its leases.
	update := plan.String()[strings.Index(plan.String(), "Update on entries"):]
	update = update[:strings.Index(update, "CTE event")]
	require.Contains(t, update, "entries_pkey", plan.String())
	require.Contains(t, update, "Index Cond: ((namespace = ", plan.String())
	require.NotContains(t, plan.String(), "entries_leased_idx", plan.String())
	require.NotContains(t, plan.String(), "Seq Scan on entries", plan.String())
}
