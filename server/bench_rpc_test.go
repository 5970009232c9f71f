package server_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// BenchmarkServedCall is one call through the whole server configured as
// ledgerbench starts `ledgerd serve` (development mode, the RPC metrics
// on, the request log at warn, so that its lines are dropped), over an
// in-memory connection, 16 callers at once: the health Check (what the
// transport and the interceptors cost, with no database) and a Lookup.
// allocs/op is the steadiest figure; ns/op includes the client's side.
func BenchmarkServedCall(b *testing.B) {
	//nolint:sloglint // the request log's lines are built and dropped, as at --log-level warn
	logger := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	conn := benchServer(b, nil, func(store *ledger.Store) server.Config {
		return server.Config{Logger: logger, Metrics: server.NewMetrics(store, server.MetricsConfig{Logger: logger})}
	})
	ctx := context.Background()
	ledgerClient := ledgerv1.NewLedgerServiceClient(conn)
	_, err := ledgerClient.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "bench", Key: "k", Owner: "w"})
	require.NoError(b, err)
	healthClient := healthpb.NewHealthClient(conn)

	calls := map[string]func() error{
		"health": func() error {
			_, err := healthClient.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		},
		"lookup": func() error {
			_, err := ledgerClient.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "bench", Key: "k"})
			return err
		},
	}
	for _, name := range []string{"health", "lookup"} {
		b.Run(name, func(b *testing.B) {
			call := calls[name]
			b.SetParallelism(8)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
