package server_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// TestGracefulShutdown: an RPC in flight when shutdown starts finishes with
// success, health turns NOT_SERVING, and new RPCs are refused.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := ledgertest.Store(t, ledger.Config{})
	srv, err := server.New(b.Store, server.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn := ledgertest.Dial(t, lis)
	client := ledgerv1.NewLedgerServiceClient(conn)

	res, err := client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	require.NoError(t, err)
	token := res.GetAcquired().GetFencingToken()

	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, first.GetStatus())

	// Hold the entry's row lock in another transaction, so that a Complete
	// is in flight (blocked in the database) when shutdown begins.
	tx, err := b.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT 1 FROM entries WHERE namespace = 'ns' AND key = 'k' FOR UPDATE`)
	require.NoError(t, err)
	completed := make(chan error, 1)
	go func() {
		_, err := client.Complete(ctx, &ledgerv1.CompleteRequest{Namespace: "ns", Key: "k", FencingToken: token, Result: []byte("r")})
		completed <- err
	}()
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, b.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%completed%'`).Scan(&waiting))
		return waiting == 1
	}, time.Minute, 10*time.Millisecond, "the Complete is blocked on the row lock")

	shutdownCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	shutdownDone := make(chan struct{})
	go func() { srv.Shutdown(shutdownCtx); close(shutdownDone) }()

	next, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next.GetStatus())

	require.NoError(t, tx.Rollback(ctx)) // let the in-flight Complete proceed
	require.NoError(t, <-completed, "the in-flight RPC finished")
	<-shutdownDone
	require.NoError(t, shutdownCtx.Err(), "drained without falling back to a hard stop (an open health Watch must not hold it)")
	require.NoError(t, <-served)

	e, err := b.Store.Lookup(ctx, "ns", "k")
	require.NoError(t, err)
	require.Equal(t, ledger.StateCompleted, e.State)

	_, err = client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	require.Error(t, err, "a stopped server takes no new RPCs")
}
