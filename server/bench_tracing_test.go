package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// BenchmarkLookupRPC is a Lookup through the whole server (interceptors,
// the request log written as JSON, coalescing on, 16 connections) over an
// in-memory connection, with tracing off (as without OTEL_* variables)
// and on (every call sampled, spans batched to an exporter that drops
// them, so that what is measured is ledgerd's side of tracing). One op is
// one Lookup; 16 callers at once.
func BenchmarkLookupRPC(b *testing.B) {
	b.Run("tracing=off", func(b *testing.B) { benchLookupRPC(b, nil) })
	b.Run("tracing=on", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		benchLookupRPC(b, tp)
	})
}

func benchLookupRPC(b *testing.B, tp trace.TracerProvider) {
	b.Helper()
	config, err := pgxpool.ParseConfig(pgtest.Schema(b))
	require.NoError(b, err)
	var options []ledger.PoolOption
	if tp != nil {
		options = append(options, ledger.WithTracerProvider(tp))
	}
	ledger.ConfigurePool(config, options...)
	config.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(context.Background(), config)
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	_, err = ledger.Migrate(context.Background(), pool, nil)
	require.NoError(b, err)
	store, err := ledger.New(pool, ledger.Config{})
	require.NoError(b, err)

	//nolint:sloglint // the request log is written, as ledgerd writes it at its default level
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	srv, err := server.New(store, server.Config{Logger: logger, TracerProvider: tp})
	require.NoError(b, err)
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	require.NoError(b, err)
	b.Cleanup(func() { _ = conn.Close() })
	client := ledgerv1.NewLedgerServiceClient(conn)
	ctx := context.Background()
	_, err = client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "bench", Key: "k", Owner: "w"})
	require.NoError(b, err)

	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "bench", Key: "k"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
