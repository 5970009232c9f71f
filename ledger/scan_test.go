package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/ledger"
)

// TestDirectScansMatchStatements checks that every statement of the hot
// path returns exactly the columns its row type scans directly, in the
// same order: a statement that drifts would still be read right (by name),
// but slowly, and this test says so.
func TestDirectScansMatchStatements(t *testing.T) {
	ctx, b := setup(t)
	conn, err := b.pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for name, columns := range ledger.DirectScans {
		text, err := ledger.Statement(name)
		require.NoError(t, err)
		described, err := conn.Conn().Prepare(ctx, "", text)
		require.NoError(t, err, name)
		var names []string
		for _, field := range described.Fields {
			names = append(names, field.Name)
		}
		require.Equal(t, columns(), names, name)
	}
}

// TestCollectDirectReadsByNameWhenColumnsDiffer reads the same entry
// through a result in the row type's order (scanned directly) and through
// one in another order (mapped by name): both give the same, right entry.
func TestCollectDirectReadsByNameWhenColumnsDiffer(t *testing.T) {
	ctx, b := setup(t)
	r, err := b.store.Reserve(ctx, ledger.ReserveRequest{Namespace: "scan", Key: "k", Owner: "w", LeaseTTL: time.Minute,
		Metadata: map[string]string{"team": "a"}})
	require.NoError(t, err)

	const columns = `namespace, key, state, owner, fencing_token, lease_expires_at,
		lease_expires_at <= now() AS lease_expired, 5::bigint AS lease_remaining_ms, attempts, fingerprint, result,
		error_code, error_message, checkpoint, metadata, created_at, updated_at, finished_at, expires_at`
	const shuffled = `metadata, key, expires_at, state, 5::bigint AS lease_remaining_ms, owner, namespace, fencing_token,
		attempts, lease_expires_at, lease_expires_at <= now() AS lease_expired, result, error_message, fingerprint,
		error_code, checkpoint, updated_at, created_at, finished_at`
	var read [][]ledger.Entry
	for _, list := range []string{columns, shuffled} {
		rows, err := b.pool.Query(ctx, "SELECT "+list+" FROM entries WHERE namespace = 'scan'")
		require.NoError(t, err)
		entries, err := ledger.CollectDirect(rows)
		require.NoError(t, err)
		require.Len(t, entries, 1)
		read = append(read, entries)
	}
	require.Equal(t, read[0], read[1])
	e := read[0][0]
	require.Equal(t, "scan", e.Namespace)
	require.Equal(t, "k", e.Key)
	require.Equal(t, ledger.StateLeased, e.State)
	require.Equal(t, "w", e.Owner)
	require.Equal(t, r.FencingToken, e.FencingToken)
	require.Equal(t, map[string]string{"team": "a"}, e.Metadata)
}
