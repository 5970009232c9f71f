package server

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
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
)

// BenchmarkServedCall is one call through a served gRPC server over an
// in-memory connection, 16 callers at once: the health Check (the
// transport alone, no database) and a Lookup (coalesced). "served" is the
// server New builds, configured as ledgerbench starts `ledgerd serve`
// (development mode, the RPC metrics on, the request log at warn, so that
// its lines are built for nothing); "bare" serves the same services with
// none of New's interceptors and no stream guard (requestWaits). The
// difference is what those cost a call; ns/op and allocs/op include the
// client's share, which is the same in both.
func BenchmarkServedCall(b *testing.B) {
	store := benchStore(b)
	//nolint:sloglint // the request log's lines are dropped, as at --log-level warn
	logger := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	served, err := New(store, Config{Logger: logger, Metrics: NewMetrics(store, MetricsConfig{Logger: logger})})
	require.NoError(b, err)
	bare := grpc.NewServer(grpc.ForceServerCodecV2(newLenientCodec()))
	ledgerv1.RegisterLedgerServiceServer(bare, &service{store: store, logger: logger, waits: newWaitSlots(-1)})
	healthpb.RegisterHealthServer(bare, health.NewServer())

	for _, server := range []struct {
		name  string
		serve func(net.Listener) error
		stop  func()
	}{
		{"served", served.Serve, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			served.Shutdown(ctx)
		}},
		{"bare", bare.Serve, bare.Stop},
	} {
		b.Run(server.name, func(b *testing.B) {
			benchCalls(b, serveBench(b, server.serve, server.stop))
		})
	}
}

// benchCalls runs the health Check and Lookup sub-benchmarks over conn.
func benchCalls(b *testing.B, conn *grpc.ClientConn) {
	b.Helper()
	ctx := context.Background()
	ledgerClient := ledgerv1.NewLedgerServiceClient(conn)
	_, err := ledgerClient.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "bench", Key: "k", Owner: "w"})
	require.NoError(b, err)
	healthClient := healthpb.NewHealthClient(conn)
	calls := []struct {
		name string
		call func() error
	}{
		{"health", func() error {
			_, err := healthClient.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}},
		{"lookup", func() error {
			_, err := ledgerClient.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "bench", Key: "k"})
			return err
		}},
	}
	for _, c := range calls {
		b.Run(c.name, func(b *testing.B) {
			b.SetParallelism(8)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := c.call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

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
	var options []ledger.PoolOption
	if tp != nil {
		options = append(options, ledger.WithTracerProvider(tp))
	}
	//nolint:sloglint // the request log is written, as ledgerd writes it at its default level
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	srv, err := New(benchStore(b, options...), Config{Logger: logger, TracerProvider: tp})
	require.NoError(b, err)
	conn := serveBench(b, srv.Serve, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
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

// serveBench serves on an in-memory listener, stopped with stop at the
// end of the benchmark, and returns a client connection to it.
func serveBench(b *testing.B, serve func(net.Listener) error, stop func()) *grpc.ClientConn {
	b.Helper()
	lis := bufconn.Listen(1 << 20)
	go func() { _ = serve(lis) }()
	b.Cleanup(stop)
	conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	require.NoError(b, err)
	b.Cleanup(func() { _ = conn.Close() })
	return conn
}

// benchStore is a Store (coalescing on, a pool of 16 configured with
// options) over a fresh schema.
func benchStore(b *testing.B, options ...ledger.PoolOption) *ledger.Store {
	b.Helper()
	config, err := pgxpool.ParseConfig(pgtest.Schema(b))
	require.NoError(b, err)
	ledger.ConfigurePool(config, options...)
	config.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(context.Background(), config)
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	_, err = ledger.Migrate(context.Background(), pool, nil)
	require.NoError(b, err)
	store, err := ledger.New(pool, ledger.Config{})
	require.NoError(b, err)
	return store
}
