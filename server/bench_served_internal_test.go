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
			lis := bufconn.Listen(1 << 20)
			go func() { _ = server.serve(lis) }()
			b.Cleanup(server.stop)
			conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
			require.NoError(b, err)
			b.Cleanup(func() { _ = conn.Close() })
			benchCalls(b, conn)
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

// benchStore is a Store (coalescing on, a pool of 16) over a fresh schema.
func benchStore(b *testing.B) *ledger.Store {
	b.Helper()
	config, err := pgxpool.ParseConfig(pgtest.Schema(b))
	require.NoError(b, err)
	ledger.ConfigurePool(config)
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
