package ledger_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// benchStore is a Store over a fresh schema with a pool of 16 connections,
// the size ledgerd runs with by default.
func benchStore(b *testing.B) *ledger.Store {
	b.Helper()
	return benchStoreWith(b, ledger.Config{Coalesce: ledger.CoalesceConfig{Disabled: true}})
}

func benchStoreWith(b *testing.B, cfg ledger.Config) *ledger.Store {
	b.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.Schema(b)+"&pool_max_conns=16")
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	_, err = ledger.Migrate(context.Background(), pool, nil)
	require.NoError(b, err)
	store, err := ledger.New(pool, cfg)
	require.NoError(b, err)
	return store
}

// The benchmarks run 16 concurrent callers (SetParallelism(8) on 2 cores),
// about where PostgreSQL's own throughput peaks on such a machine. Run them with `make bench`,
// which uses a cluster with fsync on.

// BenchmarkPair is the common pipeline step: Reserve a fresh key, then
// Complete it. One op is one pair.
func BenchmarkPair(b *testing.B) { benchmarkPair(b, benchStore(b)) }

// BenchmarkPairCoalesced is BenchmarkPair with the coalescing of
// concurrent Reserves and Completes on (ledgerd's default).
func BenchmarkPairCoalesced(b *testing.B) { benchmarkPair(b, benchStoreWith(b, ledger.Config{})) }

// BenchmarkPairWithQuotas is BenchmarkPair in a namespace with both quotas
// (never reached): the cost of enforcing them, which serializes the
// namespace's grants and its results (see ledger/quota.go).
func BenchmarkPairWithQuotas(b *testing.B) {
	store := benchStore(b)
	leases, bytes := int64(1_000_000), int64(1<<40)
	_, err := store.CreateNamespace(context.Background(), "bench", ledger.NamespaceUpdate{MaxHeldLeases: &leases, MaxStoredBytes: &bytes}, "benchmark")
	require.NoError(b, err)
	benchmarkPair(b, store)
}

func benchmarkPair(b *testing.B, store *ledger.Store) {
	b.Helper()
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			key := fmt.Sprintf("k%d", next.Add(1))
			r, err := store.Reserve(ctx, ledger.ReserveRequest{Namespace: "bench", Key: key, Owner: "w"})
			if err != nil || r.Outcome != ledger.Acquired {
				b.Fatalf("reserve: %v %v", r.Outcome, err)
			}
			if _, err := store.Complete(ctx, ledger.CompleteRequest{Namespace: "bench", Key: key, FencingToken: r.FencingToken, Result: []byte("ok")}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReplay is the retry path: Reserve of a completed key.
func BenchmarkReplay(b *testing.B) {
	store := benchStore(b)
	ctx := context.Background()
	const keys = 1000
	for i := range keys {
		key := fmt.Sprintf("k%d", i)
		r, err := store.Reserve(ctx, ledger.ReserveRequest{Namespace: "bench", Key: key, Owner: "w"})
		require.NoError(b, err)
		_, err = store.Complete(ctx, ledger.CompleteRequest{Namespace: "bench", Key: key, FencingToken: r.FencingToken, Result: []byte("ok")})
		require.NoError(b, err)
	}
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := fmt.Sprintf("k%d", next.Add(1)%keys)
			r, err := store.Reserve(ctx, ledger.ReserveRequest{Namespace: "bench", Key: key, Owner: "other"})
			if err != nil || r.Outcome != ledger.Completed {
				b.Fatalf("replay: %v %v", r.Outcome, err)
			}
		}
	})
}

// BenchmarkLookup reads one entry.
func BenchmarkLookup(b *testing.B) {
	store := benchStore(b)
	ctx := context.Background()
	_, err := store.Reserve(ctx, ledger.ReserveRequest{Namespace: "bench", Key: "k", Owner: "w"})
	require.NoError(b, err)
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := store.Lookup(ctx, "bench", "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
