package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/devcluster"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/internal/pgtest"
	"github.com/ledgerd/ledgerd/ledger"
	"github.com/ledgerd/ledgerd/server"
)

// patience bounds every wait for a condition: generous, so that a busy
// machine cannot break a test.
const patience = time.Minute

// healthServices are the services the health service reports on.
var healthServices = []string{"", ledgerv1.LedgerService_ServiceDesc.ServiceName, ledgerv1.LedgerAdminService_ServiceDesc.ServiceName}

// healthBundle is a server with its HTTP port (see serveHTTP), and gRPC
// clients of it.
type healthBundle struct {
	httpBundle
	conn   *grpc.ClientConn
	health healthpb.HealthClient
	client ledgerv1.LedgerServiceClient
}

// serveHealth serves b's store with cfg until the test's cleanup.
func serveHealth(t *testing.T, b ledgertest.Bundle, cfg server.Config) healthBundle {
	t.Helper()
	h := serveHTTPWith(t, b, cfg)
	conn, err := grpc.NewClient(h.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return healthBundle{httpBundle: h, conn: conn, health: healthpb.NewHealthClient(conn), client: ledgerv1.NewLedgerServiceClient(conn)}
}

// requireHealth checks that every service reports want.
func (b healthBundle) requireHealth(t *testing.T, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	for _, service := range healthServices {
		res, err := b.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		require.NoError(t, err, "service %q", service)
		require.Equal(t, want, res.GetStatus(), "service %q", service)
	}
}

// readyz returns /readyz's status code and reason.
func (b healthBundle) readyz(t *testing.T) (int, string) {
	t.Helper()
	code, body := b.get(t, "/readyz")
	var answer struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &answer), body)
	return code, answer.Reason
}

// requireServing checks that the server serves again: the watcher (next)
// is told, Check and /readyz agree, and a Reserve claims a key.
func (b healthBundle) requireServing(t *testing.T, next func() healthpb.HealthCheckResponse_ServingStatus, key string) {
	t.Helper()
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, next(), "the watcher is told")
	b.requireHealth(t, healthpb.HealthCheckResponse_SERVING)
	code, _ := b.readyz(t)
	require.Equal(t, http.StatusOK, code)
	res, err := b.client.Reserve(context.Background(), &ledgerv1.ReserveRequest{Namespace: "ns", Key: key, Owner: "w"})
	require.NoError(t, err)
	require.NotNil(t, res.GetAcquired(), "%v", res)
}

// watch opens a Watch stream on service and returns a function that
// receives its next status.
func (b healthBundle) watch(t *testing.T, service string) func() healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*patience)
	t.Cleanup(cancel)
	stream, err := b.health.Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	require.NoError(t, err)
	return func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		res, err := stream.Recv()
		require.NoError(t, err)
		return res.GetStatus()
	}
}

// count returns how many lines of the log have the message msg.
func (b healthBundle) count(msg string) int {
	return strings.Count(b.log.String(), `"msg":"`+msg+`"`)
}

const (
	dbLost     = "database health check failed: reporting NOT_SERVING"
	dbRegained = "database health check passed again: reporting SERVING"
)

// TestHealthFollowsTheDatabase stops the PostgreSQL of a server (a private
// cluster, so that the other tests go on) and starts it again: the health
// service's Check and Watch, for every service, turn NOT_SERVING and back
// to SERVING, /readyz agrees all along, each change is logged once however
// many checks see it, and the ledger serves again afterwards.
func TestHealthFollowsTheDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := pgtest.Private(t, devcluster.Throwaway)
	pool, err := pgxpool.New(ctx, pg.URL())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = ledger.Migrate(ctx, pool, nil)
	require.NoError(t, err)
	store, err := ledger.New(pool, ledgertest.Config(ledger.Config{}))
	require.NoError(t, err)
	b := serveHealth(t, ledgertest.Bundle{Store: store, Pool: pool}, server.Config{HealthCheckInterval: 20 * time.Millisecond, HealthCheckTimeout: 10 * time.Second})

	next := b.watch(t, ledgerv1.LedgerService_ServiceDesc.ServiceName)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, next())
	b.requireHealth(t, healthpb.HealthCheckResponse_SERVING)
	code, _ := b.readyz(t)
	require.Equal(t, http.StatusOK, code)

	require.NoError(t, pg.Stop(ctx))
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next(), "the watcher is told")
	b.requireHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
	code, reason := b.readyz(t)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "database unreachable", reason)
	_, err = b.client.Lookup(ctx, &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	requireReason(t, err, codes.Unavailable, server.ReasonUnavailable)

	require.NoError(t, pg.Start(context.Background())) // meanwhile the checks went on failing, every 20ms
	b.requireServing(t, next, "k")

	require.Equal(t, 1, b.count(dbLost), "logged once, not on every failed check:\n%s", b.log)
	require.Equal(t, 1, b.count(dbRegained), b.log.String())
	require.Contains(t, b.log.String(), `"level":"WARN","msg":"`+dbLost+`","reason":"database unreachable"`)
}

// TestLameDuck: LameDuck turns every service NOT_SERVING, for Check, Watch
// and /readyz, and for good (passing database checks do not bring SERVING
// back), while calls are still served; Shutdown then ends the Watch streams
// and drains without being held up by them.
func TestLameDuck(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := serveHealth(t, ledgertest.Store(t, ledger.Config{}), server.Config{HealthCheckInterval: 10 * time.Millisecond})
	next := b.watch(t, "")
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, next())

	b.server.LameDuck()
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next(), "the watcher is told")
	for range 20 { // while many database checks pass
		b.requireHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
		code, reason := b.readyz(t)
		require.Equal(t, http.StatusServiceUnavailable, code)
		require.Equal(t, "shutting down", reason)
		res, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
		require.NoError(t, err, "calls are served as usual")
		require.NotNil(t, res.GetAcquired(), "%v", res)
	}

	shutdownCtx, cancel := context.WithTimeout(ctx, patience)
	defer cancel()
	b.server.Shutdown(shutdownCtx)
	require.NoError(t, shutdownCtx.Err(), "drained without falling back to a hard stop")
	require.Zero(t, b.count(dbLost)+b.count(dbRegained), b.log.String())
}

// TestStartGatesTheLedger: a server made with Starting reports NOT_SERVING
// and answers the ledger's RPCs (over gRPC and HTTP) with UNAVAILABLE,
// saying it is starting, while Start retries a failing prepare, logging a
// database out of reach at WARN and what needs an operator at ERROR; once
// prepare succeeds it serves.
func TestStartGatesTheLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := serveHealth(t, ledgertest.Store(t, ledger.Config{}), server.Config{Starting: true, HealthCheckInterval: 10 * time.Millisecond})

	failures := make(chan error)
	started := make(chan error, 1)
	go func() {
		started <- b.server.Start(ctx, func(ctx context.Context) error {
			select {
			case err := <-failures:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	failures <- fmt.Errorf("connect: %w", ledger.ErrUnavailable)
	failures <- fmt.Errorf("check schema: %w", ledger.ErrSchemaTooNew)
	failures <- fmt.Errorf("check schema: %w", ledger.ErrSchemaTooNew)
	// The second failure is logged (the third, at the same level so soon
	// after, is not), and the fourth attempt waits for the test.

	next := b.watch(t, ledgerv1.LedgerAdminService_ServiceDesc.ServiceName)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next())
	b.requireHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
	code, reason := b.readyz(t)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "starting: waiting for the database", reason)
	_, err := b.client.Reserve(ctx, &ledgerv1.ReserveRequest{Namespace: "ns", Key: "k", Owner: "w"})
	st := requireReason(t, err, codes.Unavailable, server.ReasonUnavailable)
	require.Contains(t, st.Message(), "ledgerd is starting")
	_, err = ledgerv1.NewLedgerAdminServiceClient(b.conn).ListNamespaces(ctx, &ledgerv1.ListNamespacesRequest{})
	requireReason(t, err, codes.Unavailable, server.ReasonUnavailable)
	code, answer := b.call(t, "Lookup", `{"namespace": "ns", "key": "k"}`)
	requireHTTPError(t, http.StatusServiceUnavailable, 14, server.ReasonUnavailable, code, answer)
	require.Contains(t, answer["message"], "ledgerd is starting")

	log := b.log.String()
	require.Contains(t, log, `"level":"WARN","msg":"start-up failed: not serving yet, retrying","attempt":1`)
	require.Contains(t, log, `"level":"ERROR","msg":"start-up failed: not serving yet, retrying","attempt":2`)
	require.Contains(t, log, "newer than this ledgerd")

	failures <- nil
	require.NoError(t, <-started)
	b.requireServing(t, next, "k")
	require.Contains(t, b.log.String(), `"msg":"start-up succeeded","attempts":4`)
}

// TestStartEndsWithItsContext: Start gives up when its context ends, and
// the server never serves.
func TestStartEndsWithItsContext(t *testing.T) {
	t.Parallel()
	b := serveHealth(t, ledgertest.Store(t, ledger.Config{}), server.Config{Starting: true})
	ctx, cancel := context.WithCancel(context.Background())
	attempts := 0
	err := b.server.Start(ctx, func(context.Context) error {
		attempts++
		if attempts == 3 {
			cancel()
		}
		return ledger.ErrUnavailable
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 3, attempts)
	b.requireHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
	_, err = b.client.Lookup(context.Background(), &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
	requireReason(t, err, codes.Unavailable, server.ReasonUnavailable)
}

// TestHealthCheckConfig: negative health-check settings are refused.
func TestHealthCheckConfig(t *testing.T) {
	t.Parallel()
	store := ledgertest.Store(t, ledger.Config{}).Store
	_, err := server.New(store, server.Config{HealthCheckInterval: -time.Second})
	require.ErrorContains(t, err, "HealthCheckInterval")
	_, err = server.New(store, server.Config{HealthCheckTimeout: -time.Second})
	require.ErrorContains(t, err, "HealthCheckTimeout")
}
