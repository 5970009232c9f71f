package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/ledgerd/ledgerd/clients/go/ledgerclient"
	ledgerv1 "github.com/ledgerd/ledgerd/gen/ledger/v1"
	"github.com/ledgerd/ledgerd/internal/ledgertest"
	"github.com/ledgerd/ledgerd/server"
)

// TestRateLimits: a principal over its limit gets RESOURCE_EXHAUSTED with a
// retry delay, while another principal in parallel is unaffected; refused
// calls change nothing.
func TestRateLimits(t *testing.T) {
	t.Parallel()
	b := setupAuth(t)
	srv, err := server.New(b.ledger.Store, server.Config{
		Logger:     slog.New(slog.DiscardHandler),
		Auth:       b.auth,
		RateLimits: server.RateLimits{PerPrincipal: server.Rate{PerSecond: 1, Burst: 5}},
	})
	require.NoError(t, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() { srv.Shutdown(context.Background()); require.NoError(t, <-served) }()
	client := ledgerv1.NewLedgerServiceClient(ledgertest.Dial(t, lis))
	ctx := context.Background()

	var wg sync.WaitGroup
	var noisyCodes, quietCodes []codes.Code
	var retryDelay time.Duration
	wg.Go(func() {
		for i := range 20 {
			_, err := client.Lookup(as(ctx, b.tokens["worker"]), &ledgerv1.LookupRequest{Namespace: "ns", Key: "k" + string(rune('a'+i))})
			noisyCodes = append(noisyCodes, status.Code(err))
			if status.Code(err) == codes.ResourceExhausted && retryDelay == 0 {
				for _, d := range status.Convert(err).Details() {
					if info, ok := d.(*errdetails.RetryInfo); ok {
						retryDelay = info.GetRetryDelay().AsDuration()
					}
				}
			}
		}
	})
	wg.Go(func() {
		for range 5 { // within the other principal's burst
			_, err := client.Lookup(as(ctx, b.tokens["reader"]), &ledgerv1.LookupRequest{Namespace: "ns", Key: "k"})
			quietCodes = append(quietCodes, status.Code(err))
		}
	})
	wg.Wait()

	limited := 0
	for _, code := range noisyCodes {
		if code == codes.ResourceExhausted {
			limited++
		} else {
			require.Equal(t, codes.NotFound, code, "an admitted Lookup of a missing key")
		}
	}
	require.GreaterOrEqual(t, limited, 14, "a burst of 5 and 1/s: most of 20 quick calls are refused")
	require.Positive(t, retryDelay)
	require.LessOrEqual(t, retryDelay, time.Second)
	for _, code := range quietCodes {
		require.Equal(t, codes.NotFound, code, "the other principal is not limited")
	}

	before := counts(t, b.ledger)
	_, err = client.Reserve(as(ctx, b.tokens["worker"]), &ledgerv1.ReserveRequest{Namespace: "ns", Key: "new", Owner: "w"})
	require.Equal(t, codes.ResourceExhausted, status.Code(err))
	require.Equal(t, before, counts(t, b.ledger), "a refused call changes nothing")
}

// TestGoClientWaitsOutRateLimits: the Go client retries a rate-limited call
// after the server's RetryInfo delay, so a steady pipeline slows down
// instead of failing.
func TestGoClientWaitsOutRateLimits(t *testing.T) {
	t.Parallel()
	b := setupAuth(t)
	srv, err := server.New(b.ledger.Store, server.Config{
		Logger:     slog.New(slog.DiscardHandler),
		Auth:       b.auth,
		RateLimits: server.RateLimits{PerPrincipal: server.Rate{PerSecond: 10, Burst: 1}},
	})
	require.NoError(t, err)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() { srv.Shutdown(context.Background()); require.NoError(t, <-served) }()
	dial := grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) })
	var limited atomic.Int64
	count := grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if status.Code(err) == codes.ResourceExhausted {
			limited.Add(1)
		}
		return err
	})
	client, err := ledgerclient.New("passthrough:///bufconn", ledgerclient.WithInsecure(),
		ledgerclient.WithToken(b.tokens["worker"]), ledgerclient.WithDialOptions(dial, count))
	require.NoError(t, err)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 5 {
		_, err := client.Do(ctx, "ns", fmt.Sprintf("paced-%d", i), func(context.Context) ([]byte, error) { return []byte("ok"), nil })
		require.NoError(t, err)
	}
	require.Positive(t, limited.Load(), "some calls were rate-limited, and retried")
}
