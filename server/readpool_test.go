package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// A Lookup's history is read on the primary, as its entry is, even when a
// read pool serves the audit reads: a worker reads its own writes. The read
// pool here is another ledger's schema, which holds no history of the key.
func TestLookupHistoryStaysOnThePrimary(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	elsewhere := pgtest.Schema(t)
	ledgertest.StoreAt(t, elsewhere, ledger.Config{}) // migrated, empty
	conn, _ := ledgertest.Server(t, ledger.Config{ReadPool: ledgertest.ReadPool(t, elsewhere)})
	client := ledgerv1.NewLedgerServiceClient(conn)

	r, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	_, err = client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: r.GetAcquired().GetFencingToken(), Result: []byte("r")})
	require.NoError(t, err)

	lookup, err := client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k", IncludeHistory: true})
	require.NoError(t, err)
	kinds := make([]ledgerv1.EventKind, 0, len(lookup.GetHistory()))
	for _, e := range lookup.GetHistory() {
		kinds = append(kinds, e.GetKind())
	}
	require.Equal(t, []ledgerv1.EventKind{ledgerv1.EventKind_EVENT_KIND_RESERVED, ledgerv1.EventKind_EVENT_KIND_COMPLETED}, kinds)
}

// The read pool's statistics are exported beside the primary's, as
// ledgerd_db_read_pool_*, and only when there is a read pool.
func TestReadPoolMetrics(t *testing.T) {
	t.Parallel()
	plain := serveHTTP(t, ledgertest.Store(t, ledger.Config{}))
	_, metrics := plain.get(t, "/metrics")
	require.Contains(t, metrics, "ledgerd_db_pool_max_conns ")
	require.NotContains(t, metrics, "ledgerd_db_read_pool_")

	elsewhere := pgtest.Schema(t)
	ledgertest.StoreAt(t, elsewhere, ledger.Config{})
	reads := ledgertest.ReadPool(t, elsewhere)
	b := serveHTTP(t, ledgertest.Store(t, ledger.Config{ReadPool: reads}))
	ctx := context.Background()
	_, err := b.ledger.Store.Reserve(ctx, ledger.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"}) // the namespace
	require.NoError(t, err)
	_, _, err = b.ledger.Store.GetHistory(ctx, "ns", "k", ledger.Page{}) // through the read pool
	require.NoError(t, err)
	_, metrics = b.get(t, "/metrics")
	require.Contains(t, metrics, fmt.Sprintf("ledgerd_db_read_pool_max_conns %d\n", reads.Stat().MaxConns()))
	require.Contains(t, metrics, "ledgerd_db_read_pool_acquires_total 1\n")
	require.Contains(t, metrics, "ledgerd_db_pool_max_conns ")
}
